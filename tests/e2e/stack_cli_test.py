#!/usr/bin/python3
"""scripts/lib/stack.py as scripts/run uses it: `stack.py up` starts the
stack, prints where everything is, serves until SIGINT and then leaves
nothing behind (no process, no listening port, no work directory). When a
part cannot start it says which and why, exits 1 and also leaves nothing.

  stack_cli_test.py --exporter PATH --pgctl PATH [--source-dir DIR]
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import unittest

import e2e_support as e2e
from e2e_support import harness, stack

STACK_PY = os.path.join(e2e.SOURCE_DIR, "scripts", "lib", "stack.py")
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 120


def listening_addresses(port: int) -> set:
    """Local addresses with a socket listening on `port` (IPv4 and IPv6)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    addresses.add(address)
    return addresses


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def processes_mentioning(text: str) -> list:
    """PIDs whose command line contains `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


class StackCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = e2e.make_workdir(cls, "poolscope-e2e-cli.")
        cls.cluster = e2e.make_cluster(cls, cls.workdir, "pg")

    def start(self, *args):
        stderr = open(os.path.join(self.workdir, f"stack-{len(os.listdir(self.workdir))}.err"), "w+")
        process = subprocess.Popen(
            [sys.executable, STACK_PY, "up", "--exporter-binary", e2e.OPTIONS.exporter, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "DATABASE_URL": self.cluster.database_url})

        def cleanup():
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
            stderr.close()
        self.addCleanup(cleanup)
        return process, stderr

    @staticmethod
    def read_line(process, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                return process.stdout.readline().decode()
            if process.poll() is not None:
                return ""
        raise AssertionError("stack.py printed nothing in time")

    def test_up_serves_until_sigint_then_leaves_nothing(self):
        with open(e2e.source_path("rules", "alertmanager.yml"), "rb") as f:
            shipped_routing = f.read()
        process, stderr = self.start("--exporters", "2", "--workload-workers", "1", "--scrape-interval", "1s",
                                     "--speedup", "30", "--json")
        line = self.read_line(process, START_TIMEOUT_S)
        stderr.seek(0)
        self.assertTrue(line, f"stack.py exited with {process.poll()}:\n{stderr.read()}")
        urls = json.loads(line)
        self.assertEqual(len(urls["exporters"]), 2)

        for exporter in urls["exporters"]:
            for key in ("landing_page", "metrics", "health"):
                self.assertEqual(stack.http_get(exporter[key]).status, 200, exporter[key])
        self.assertEqual(stack.http_get(urls["prometheus"]["ui"] + "-/ready").status, 200)
        # The printed links to Prometheus' pages exist on this Prometheus.
        for key in ("targets", "alerts"):
            self.assertEqual(stack.http_get(urls["prometheus"][key]).status, 200, urls["prometheus"][key])
        # Each landing page links this Prometheus and this Alertmanager.
        for exporter in urls["exporters"]:
            page = stack.http_get(exporter["landing_page"]).text()
            self.assertIn(urls["prometheus"]["alerts"], page)
            self.assertIn(urls["alertmanager"]["ui"].rstrip("/"), page)
        self.assertEqual(stack.http_get(urls["alertmanager"]["ui"] + "-/ready").status, 200)
        self.assertIsInstance(stack.http_json(urls["receiver"]["url"]), list)
        self.assertTrue(os.path.isfile(urls["receiver"]["log"]))

        # Prometheus scrapes both exporters as job poolscope.
        prometheus_api = urls["prometheus"]["ui"] + "api/v1/targets"
        harness.poll(lambda: sorted((t["labels"]["job"], t["labels"]["instance"], t["health"])
                                    for t in stack.http_json(prometheus_api)["data"]["activeTargets"])
                     == sorted(("poolscope", e["instance"], "up") for e in urls["exporters"]),
                     START_TIMEOUT_S, interval_s=0.5, what="Prometheus to scrape both exporters")

        # Prometheus, Alertmanager and the receiver listen on loopback only.
        ports = {name: int(re.search(r":(\d+)/", urls[name]["ui" if name != "receiver" else "url"]).group(1))
                 for name in ("prometheus", "alertmanager", "receiver")}
        ports.update({f"exporter {i + 1}": int(e["instance"].rsplit(":", 1)[1])
                      for i, e in enumerate(urls["exporters"])})
        for name, port in ports.items():
            self.assertEqual(listening_addresses(port), {LOOPBACK_V4}, f"{name} on port {port}")

        workdir = urls["workdir"]
        self.assertTrue(processes_mentioning(workdir), "Prometheus and Alertmanager run from the work directory")
        self.assertNotIn(self.cluster.password, line)

        process.send_signal(signal.SIGINT)
        self.assertEqual(process.wait(timeout=STOP_TIMEOUT_S), 0)
        stderr.seek(0)
        messages = stderr.read()
        self.assertNotIn(self.cluster.password, messages)
        self.assertFalse(os.path.exists(workdir), "the work directory is removed")
        self.assertEqual(processes_mentioning(workdir), [], "no process of the stack is left")
        for name, port in ports.items():
            self.assertEqual(listening_addresses(port), set(), f"{name} still listens on {port}")
        with open(e2e.source_path("rules", "alertmanager.yml"), "rb") as f:
            self.assertEqual(f.read(), shipped_routing, "the shipped routing must not change")

    def test_a_part_that_cannot_start_is_named_and_nothing_is_left(self):
        broken_rules = os.path.join(self.workdir, "broken-rules.yml")
        with open(broken_rules, "w") as f:
            f.write("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: 'rate(('\n")
        process, stderr = self.start("--rules", broken_rules, "--scrape-interval", "1s")
        self.assertEqual(process.wait(timeout=START_TIMEOUT_S + STOP_TIMEOUT_S), 1)
        stderr.seek(0)
        messages = stderr.read()
        self.assertIn("prometheus exited", messages)
        self.assertIn("broken-rules.yml", messages, "the reason (Prometheus's own message) is shown")
        workdir = re.search(r" in (\S+)\n", messages).group(1)
        self.assertFalse(os.path.exists(workdir), "the work directory is removed")
        self.assertEqual(processes_mentioning(workdir), [])


if __name__ == "__main__":
    e2e.main()
