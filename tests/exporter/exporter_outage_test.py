#!/usr/bin/env python3
"""/health follows the database: 200, 503 while PostgreSQL is down, 200 again
once it is back. Uses its own throwaway cluster (scripts/lib/pgctl), never
the suite's shared one.

  exporter_outage_test.py --exporter PATH --pgctl PATH
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

EXPORTER = None
PGCTL = None


def pgctl(*args):
    subprocess.run([PGCTL, *args], check=True, stdout=subprocess.DEVNULL, timeout=300)


class OutageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="poolscope-exporter-outage.")
        os.chmod(cls.workdir, 0o755)  # the server runs as postgres and must reach its data
        cls.cluster = os.path.join(cls.workdir, "pg")
        pgctl("create", cls.cluster)
        env = dict(line.split("=", 1) for line in open(os.path.join(cls.cluster, "env")).read().split())
        cls.database_url = env["DATABASE_URL"]
        cls.password = env["POOLSCOPE_DB_PASSWORD"]

    @classmethod
    def tearDownClass(cls):
        subprocess.run([PGCTL, "destroy", cls.cluster], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def health(self, exporter):
        response = harness.request(exporter.url("/health"))
        return response.status, json.loads(response.body)

    def test_health_is_503_while_the_database_is_down_and_200_after(self):
        # Frequent background validation and short backoff so the outage is
        # noticed and the recovery attempted within a few polls.
        exporter = harness.Exporter(
            EXPORTER, self.database_url,
            args=["--pool.reconnect-backoff=200ms", "--log.level=debug"],
            env={"POOL_HEALTH_CHECK_INTERVAL": "100ms", "POOL_INIT_TIMEOUT": "2s"},
            workdir=self.workdir)
        with exporter:
            harness.poll(lambda: self.health(exporter)[0] == 200, harness.START_TIMEOUT_S,
                         what="/health 200 with the database up")

            pgctl("stop", self.cluster, "immediate")
            status, document = harness.poll(
                lambda: (lambda s: s if s[0] == 503 else None)(self.health(exporter)), 120,
                what="/health 503 with the database down")
            self.assertNotEqual(document["database"]["status"], "connected")
            self.assertEqual(set(document), {"status", "timestamp", "database", "leaks", "uptime_seconds"})
            self.assertEqual(document["status"], "unhealthy")
            # Scrapes keep working during the outage.
            text = harness.scrape(exporter)
            self.assertEqual(harness.promtool_check_metrics(text), (0, ""))

            pgctl("start", self.cluster)
            status, document = harness.poll(
                lambda: (lambda s: s if s[0] == 200 else None)(self.health(exporter)), 120,
                what="/health 200 after the database came back")
            self.assertEqual(document["database"]["status"], "connected")
            self.assertGreater(document["database"]["pool"]["total"], 0)

            # The outage put connection errors into the pool's state and logs:
            # none of it may carry the password.
            for path in ("/health", "/metrics", "/"):
                self.assertNotIn(self.password.encode(), harness.request(exporter.url(path)).body)
            self.assertEqual(exporter.stop(), 0)
            self.assertNotIn(self.password.encode(), exporter.output())

    def test_exporter_starts_and_answers_503_while_the_database_is_down(self):
        pgctl("stop", self.cluster, "fast")
        try:
            exporter = harness.Exporter(EXPORTER, self.database_url,
                                        args=["--pool.reconnect-backoff=200ms"],
                                        env={"POOL_INIT_TIMEOUT": "500ms"}, workdir=self.workdir)
            with exporter:
                status, document = self.health(exporter)
                self.assertEqual(status, 503)
                self.assertNotEqual(document["database"]["status"], "connected")
                harness.poll(lambda: self.health(exporter)[1]["database"]["last_error"], 60,
                             what="a connection error in the health document")
                self.assertNotIn(self.password, json.dumps(self.health(exporter)[1]))
                self.assertEqual(exporter.stop(), 0)
                self.assertNotIn(self.password.encode(), exporter.output())
        finally:
            pgctl("start", self.cluster)


def main():
    global EXPORTER, PGCTL
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True)
    parser.add_argument("--pgctl", required=True)
    args, rest = parser.parse_known_args()
    EXPORTER, PGCTL = args.exporter, args.pgctl
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        print("SKIP PostgreSQL server binaries are not installed")
        sys.exit(harness.SKIPPED)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
