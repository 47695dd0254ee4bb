#!/usr/bin/env python3
"""The exporter's command line as a process: every bad flag and variable exits
2 with exactly one line on stderr naming it and its value; --help, --version
and the --print-* flags. No database is contacted: every case fails (or
finishes) before the pool starts.

  exporter_cli_test.py --exporter PATH --source-dir DIR
"""

import os
import subprocess
import unittest

import harness

EXPORTER = None
SOURCE_DIR = None
PASSWORD = "pw-cli-test-4f1d9c"
# Parseable, never contacted (the port is closed): cases fail before connecting.
URL = f"postgresql://poolscope:{PASSWORD}@127.0.0.1:1/poolscope"

DURATION_VARIABLES = [
    "POOL_ACQUIRE_TIMEOUT", "POOL_INIT_TIMEOUT", "POOL_MAX_CONNECTION_LIFETIME",
    "POOL_MAX_IDLE_TIME", "POOL_COMMAND_TIMEOUT", "POOL_LEAK_DETECTION_TIMEOUT",
    "POOL_SHUTDOWN_TIMEOUT", "POOL_VALIDATION_IDLE_THRESHOLD", "POOL_PROBE_IDLE_THRESHOLD",
    "POOL_BARGING_WAIT_BOUND", "POOL_HEALTH_CHECK_INTERVAL",
]
BAD_VARIABLES = {
    **{name: "10 parsecs" for name in DURATION_VARIABLES},
    "POOL_MIN_SIZE": "two",
    "POOL_MAX_SIZE": "0",
    "POOL_QUEUE_POLICY": "lifo",
    "POOL_ENABLE_LEAK_DETECTION": "perhaps",
    "POOL_HEALTHY_HEADROOM": "1.5",
    "POOL_DEGRADED_HEADROOM": "-0.1",
    "POOL_DEGRADED_WAIT_THRESHOLD": "slow",
    "POOL_HEALTH_WINDOW": "500ms",
    "POOL_RECONNECT_BACKOFF": "1s,never",
    "POOL_NAME": "",
    "LOG_LEVEL": "LOUD",
    "LOG_FORMAT": "xml",
}
BAD_FLAGS = {
    "--pool.min-size": "two",
    "--pool.max-size": "-3",
    "--pool.acquire-timeout": "10 parsecs",
    "--pool.init-timeout": "0x10",
    "--pool.max-connection-lifetime": "forever",
    "--pool.max-idle-time": "5 minutes",
    "--pool.command-timeout": "-1s",
    "--pool.enable-leak-detection": "maybe",
    "--pool.leak-detection-timeout": "1y",
    "--pool.shutdown-timeout": "soon",
    "--pool.validation-idle-threshold": "x",
    "--pool.queue-policy": "random",
    "--pool.barging-wait-bound": "-1ms",
    "--pool.health-check-interval": "1ms",
    "--pool.healthy-headroom": "1.5",
    "--pool.degraded-headroom": "NaN",
    "--pool.degraded-wait-threshold": "slow",
    "--pool.health-window": "500ms",
    "--pool.reconnect-backoff": "1s,never",
    "--log.level": "LOUD",
    "--log.format": "xml",
    "--web.listen-address": "0.0.0.0",
    "--web.telemetry-path": "metrics",
    "--metrics.prefix": "9lives",
    "--workload.workers": "lots",
    "--workload.hold": "a while",
}


def run(args=(), env=None, with_url=True):
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("POOL_") and k not in ("DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT")}
    if with_url:
        environment["DATABASE_URL"] = URL
    environment.update(env or {})
    return subprocess.run([EXPORTER, "--web.listen-address=127.0.0.1:0", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, env=environment, timeout=60)


class BadInputTest(unittest.TestCase):
    def assert_usage_error(self, result, *fragments):
        stderr = result.stderr.decode(errors="replace")
        self.assertEqual(result.returncode, 2, stderr)
        lines = stderr.splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("poolscope-exporter: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertNotIn(PASSWORD, stderr)
        self.assertEqual(result.stdout, b"")

    def test_every_bad_variable_exits_2_naming_it(self):
        for name, value in BAD_VARIABLES.items():
            with self.subTest(variable=name):
                self.assert_usage_error(run(env={name: value}), name, value)

    def test_every_bad_flag_exits_2_naming_it(self):
        for flag, value in BAD_FLAGS.items():
            with self.subTest(flag=flag):
                self.assert_usage_error(run([f"{flag}={value}"]), flag, value)

    def test_a_flag_error_names_the_flag_even_when_the_variable_is_set(self):
        self.assert_usage_error(run(["--pool.max-size=zero"], env={"POOL_MAX_SIZE": "4"}),
                                "--pool.max-size", "zero")

    def test_unknown_flags_and_arguments(self):
        self.assert_usage_error(run(["--pool.maxsize=3"]), "--pool.maxsize")
        self.assert_usage_error(run(["serve"]), "serve")

    def test_missing_database_url(self):
        self.assert_usage_error(run(with_url=False), "DATABASE_URL")

    def test_unparseable_database_url_is_not_echoed(self):
        self.assert_usage_error(run(env={"DATABASE_URL": f"host=db password {PASSWORD} x"}),
                                "DATABASE_URL")
        self.assert_usage_error(run([f"--database.url=postgresql://u:{PASSWORD}@h/db?nonsense=1"]),
                                "--database.url")

    def test_port_in_use_is_a_runtime_error_not_a_usage_error(self):
        import socket
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = run([f"--web.listen-address=127.0.0.1:{port}"])
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(str(port).encode(), result.stderr)
        self.assertIn(b"--web.listen-address", result.stderr)
        self.assertNotIn(PASSWORD.encode(), result.stderr)


class InformationTest(unittest.TestCase):
    def test_help(self):
        result = run(["--help"], with_url=False)
        self.assertEqual(result.returncode, 0)
        text = result.stdout.decode()
        for expected in ("--web.listen-address", "--web.telemetry-path", "--web.config.file",
                         "--log.level", "--log.format", "--database.url", "DATABASE_URL",
                         "--pool.max-size", "POOL_MAX_SIZE", "--print-rules", "9839"):
            self.assertIn(expected, text)

    def test_version(self):
        result = run(["--version"], with_url=False)
        self.assertEqual(result.returncode, 0)
        self.assertRegex(result.stdout.decode(), r"^poolscope-exporter \d+\.\d+\.\d+")

    def test_print_flags_print_the_shipped_files(self):
        for flag, path in (("--print-rules", "rules/codebase-mcp-pool.yml"),
                           ("--print-alertmanager-config", "rules/alertmanager.yml"),
                           ("--print-dashboard", "grafana/connection-pool-dashboard.json")):
            with self.subTest(flag=flag):
                result = run([flag], with_url=False)
                source = os.path.join(SOURCE_DIR, path)
                if os.path.exists(source) and result.returncode == 0:
                    with open(source, "rb") as shipped:
                        self.assertEqual(result.stdout, shipped.read())
                else:
                    # Built before the file existed: a clear error, not an empty print.
                    self.assertEqual(result.returncode, 1)
                    self.assertIn(path.encode(), result.stderr)
                    self.assertEqual(result.stdout, b"")


if __name__ == "__main__":
    harness.run(globals(), "--source-dir", database=False)
