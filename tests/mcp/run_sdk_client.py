#!/usr/bin/env python3
"""End-to-end check of /mcp with the official MCP TypeScript SDK client.

Starts the real poolscope-exporter on 127.0.0.1 with a kernel-chosen port,
runs client/check_exporter.mjs against it, then stops the exporter. Two runs:
one against the test database (POOLSCOPE_TEST_DATABASE_URL), one against a
closed port with the same credentials, so the pool carries a connection error
while the client checks that the password shows up in no MCP response.

  run_sdk_client.py --exporter PATH [--client-dir DIR]

Installs the pinned SDK with `npm ci` when client/node_modules is missing.
Exits 77 (skipped) when POOLSCOPE_TEST_DATABASE_URL is unset.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import loopback  # noqa: E402

SKIPPED = 77
# Bounds on waiting for processes; generous because the suite shares 2 cores.
START_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30

# The exporter logs the address it bound once the server is up:
# "... INFO exporter: Listening on 127.0.0.1:41877 address=...". Earlier lines
# name other loopback addresses (the database's), so match the message itself.
BOUND_ADDRESS = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def with_port(database_url, port):
    parts = urllib.parse.urlsplit(database_url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Exporter:
    """The exporter as a child process whose output goes to a log file."""

    def __init__(self, binary, database_url, workdir, name):
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "w+b")
        env = dict(os.environ, DATABASE_URL=database_url)
        self.process = subprocess.Popen(
            [binary, "--web.listen-address=127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def wait_for_port(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = BOUND_ADDRESS.search(self.output())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                fail(f"exporter exited with {self.process.returncode} before listening:\n"
                     f"{self.output()}")
            time.sleep(0.05)
        fail(f"exporter printed no bound address within {START_TIMEOUT_S}s:\n{self.output()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def run_client(client_dir, port, expect, env):
    node = shutil.which("node")
    if node is None:
        fail("node not found: install Node.js (scripts/setup does)")
    return subprocess.run(
        [node, os.path.join(client_dir, "check_exporter.mjs"), f"http://127.0.0.1:{port}/mcp",
         f"--expect={expect}"],
        cwd=client_dir, env=env, timeout=CLIENT_TIMEOUT_S).returncode


def password_of(database_url):
    return urllib.parse.unquote(urllib.parse.urlsplit(database_url).password or "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", required=True, help="path to poolscope-exporter")
    parser.add_argument("--client-dir",
                        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "client"))
    args = parser.parse_args()

    database_url = os.environ.get("POOLSCOPE_TEST_DATABASE_URL", "")
    if not database_url:
        print("POOLSCOPE_TEST_DATABASE_URL is unset (scripts/test sets it): skipped")
        return SKIPPED
    password = os.environ.get("POOLSCOPE_TEST_DB_PASSWORD") or password_of(database_url)
    if not password:
        fail("the test database URL carries no password, so the leak check would prove nothing")

    loopback.ensure_npm_packages(args.client_dir, "@modelcontextprotocol/sdk")
    client_env = dict(os.environ, POOLSCOPE_TEST_DB_PASSWORD=password)
    client_env.pop("DATABASE_URL", None)

    failures = []
    with tempfile.TemporaryDirectory(prefix="poolscope-mcp-") as workdir:
        runs = [("database up", database_url, "up"),
                ("database unreachable", with_port(database_url, loopback.free_port()), "down")]
        for name, url, expect in runs:
            print(f"--- {name}", flush=True)
            exporter = Exporter(args.exporter, url, workdir, name.replace(" ", "-"))
            try:
                port = exporter.wait_for_port()
                if run_client(args.client_dir, port, expect, client_env) != 0:
                    failures.append(name)
            finally:
                exporter.stop()
            if failures and failures[-1] == name:
                print(f"exporter output ({name}):\n{exporter.output()}")

    if failures:
        fail(f"MCP client checks failed: {', '.join(failures)}")
    print("MCP SDK client checks passed in every run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
