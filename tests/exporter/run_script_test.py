#!/usr/bin/env python3
"""scripts/run --exporter-only as a user runs it in a terminal: the database
password on no process's command line, and one Ctrl-C (SIGINT to the whole
foreground process group) shutting the exporter down gracefully with exit 0.

  run_script_test.py --exporter PATH --source-dir DIR

Exits 77 (skipped) when POOLSCOPE_TEST_DATABASE_URL is unset.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import unittest

import harness

EXPORTER = None
SOURCE_DIR = None


def command_lines():
    """Every process's command line (as ps shows them to any local user)."""
    lines = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                lines.append(f.read().replace(b"\0", b" "))
        except OSError:
            pass
    return lines


class RunScriptTest(unittest.TestCase):
    def test_exporter_only_keeps_the_password_off_command_lines_and_stops_on_one_ctrl_c(self):
        database_url = harness.test_database_url()
        password = harness.test_database_password()
        self.assertTrue(password, "POOLSCOPE_TEST_DB_PASSWORD is needed to look for the password")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("POOL_")}
        environment.update({
            "DATABASE_URL": database_url,
            "POOLSCOPE_EXPORTER_BINARY": EXPORTER,
            "POOLSCOPE_LISTEN_ADDRESS": "127.0.0.1:0",
        })
        with tempfile.TemporaryFile() as output:
            # A session of its own, as a terminal's foreground job.
            script = subprocess.Popen(
                ["bash", os.path.join(SOURCE_DIR, "scripts", "run"), "--exporter-only",
                 "--log.format=text"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=environment,
                start_new_session=True)
            try:
                def read():
                    output.seek(0)
                    return output.read()

                def running():
                    if script.poll() is not None:
                        raise AssertionError(f"scripts/run exited with {script.returncode}:\n"
                                             f"{read().decode(errors='replace')}")
                    return b"poolscope-exporter is running" in read()
                harness.poll(running, harness.START_TIMEOUT_S, what="scripts/run to start the exporter")
                port = int(re.search(rb"Listening on 127\.0\.0\.1:(\d+)", read()).group(1))
                harness.poll(lambda: harness.request(f"http://127.0.0.1:{port}/health").status == 200,
                             harness.START_TIMEOUT_S, what="the pool to serve")
                self.assertFalse([line for line in command_lines() if password.encode() in line],
                                 "the password is on a command line")

                os.killpg(script.pid, signal.SIGINT)  # Ctrl-C
                self.assertEqual(script.wait(timeout=harness.STOP_TIMEOUT_S), 0,
                                 read().decode(errors="replace"))
                text = read().decode(errors="replace")
                self.assertIn("Exporter stopped", text)
                self.assertNotIn("Second signal", text)
                self.assertNotIn(password, text)
            finally:
                if script.poll() is None:
                    os.killpg(script.pid, signal.SIGKILL)
                    script.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True)
    parser.add_argument("--source-dir", required=True)
    args, rest = parser.parse_known_args()
    EXPORTER, SOURCE_DIR = args.exporter, args.source_dir
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
