#!/usr/bin/env python3
"""The exporter against a hostile client and its operators' tools, each case
a finding it once failed:

- /mcp: bodies over the limit are refused before they are read, bodies under
  it parse in linear time, memory stays bounded under parallel large bodies
  and /health stays reachable meanwhile;
- DNS rebinding: /mcp refuses a Host that names neither an IP address,
  localhost nor a configured --web.allowed-hosts entry;
- the shipped Kubernetes probes succeed against an exporter with basic auth;
- a flood of wrong passwords neither slows nor rate-limits a scrape whose
  credentials were verified before;
- secrets: --database.password-file, percent-encoded passwords hidden from
  ps, sslpassword never logged, core dumps off;
- signals: SIGHUP and SIGUSR1 do not stop the exporter, SIGQUIT stops it
  gracefully, a repeated SIGTERM (as `timeout` sends) still exits 0, and
  /health answers 503 "draining" before the port closes.

  exporter_hardening_test.py --exporter PATH --source-dir DIR

Exits 77 (skipped) when POOLSCOPE_TEST_DATABASE_URL is unset.
"""

import base64
import ctypes
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import yaml

import harness

EXPORTER = None
SOURCE_DIR = None
MCP_ACCEPT = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def bcrypt(password, cost=4):
    """A bcrypt hash from libxcrypt, the library the exporter checks with."""
    libcrypt = ctypes.CDLL("libcrypt.so.1")
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return libcrypt.crypt(password.encode(), libcrypt.crypt_gensalt(b"$2b$", cost, None, 0)).decode()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_temp(text, suffix):
    handle, path = tempfile.mkstemp(prefix="poolscope-hardening.", suffix=suffix)
    with os.fdopen(handle, "w") as file:
        file.write(text)
    return path


def ping_with_padding(size):
    """A valid MCP ping of about `size` bytes: params carry an array of empty
    objects, the shape that made the old parser quadratic."""
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"pad":['
    count = max(1, (size - len(head) - 10) // 3)
    return head + b"{}," * (count - 1) + b"{}]}}}"


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def wait_healthy(exporter, headers=None):
    harness.poll(lambda: harness.request(exporter.url("/health"), headers=headers).status == 200,
                 harness.START_TIMEOUT_S, what="/health 200")


class McpBodyTest(unittest.TestCase):
    """One exporter with the default /mcp limits (64 KiB bodies, 4 at once)."""

    @classmethod
    def setUpClass(cls):
        cls.exporter = harness.Exporter(EXPORTER, harness.test_database_url())
        cls.exporter.wait_listening()
        wait_healthy(cls.exporter)

    @classmethod
    def tearDownClass(cls):
        cls.exporter.__exit__(None, None, None)

    def post_mcp(self, body, headers=None, timeout=30):
        return harness.request(self.exporter.url("/mcp"), method="POST", body=body,
                               headers={**MCP_ACCEPT, **(headers or {})}, timeout=timeout)

    def post_raw(self, body, send_body=True):
        """POST /mcp on a raw socket: the exporter answers 413 without reading
        the body, which an HTTP library may report as a broken pipe."""
        head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return harness.status_of(harness.raw_exchange(self.exporter.port,
                                                      head + (body if send_body else b"")))

    def test_a_megabyte_body_is_refused_with_413_before_it_is_sent(self):
        self.assertEqual(self.post_raw(ping_with_padding(1 << 20), send_body=False), 413)
        self.assertIn(self.post_raw(ping_with_padding(1 << 20)), (413, None))
        self.assertEqual(harness.request(self.exporter.url("/health")).status, 200)

    def test_a_body_just_under_the_limit_is_parsed_and_answered(self):
        response = self.post_mcp(ping_with_padding(60 * 1024))
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body), {"jsonrpc": "2.0", "id": 1, "result": {}})

    def test_parallel_large_bodies_keep_memory_bounded_and_health_reachable(self):
        pid = self.exporter.process.pid
        before = rss_kib(pid, "VmHWM")
        big = ping_with_padding(1 << 20)        # refused by size
        allowed = ping_with_padding(63 * 1024)  # parsed, at most 4 at once
        statuses = []
        stop = threading.Event()

        def attacker(body):
            while not stop.is_set():
                statuses.append(self.post_raw(body))

        threads = [threading.Thread(target=attacker, args=(big if i % 2 else allowed,))
                   for i in range(16)]
        for thread in threads:
            thread.start()
        health = []
        try:
            for _ in range(20):
                health.append(harness.request(self.exporter.url("/health"), timeout=30).status)
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        after = rss_kib(pid, "VmHWM")
        self.assertEqual(health, [200] * 20)
        # None: the exporter closed a 1 MiB upload mid-way (after its 413).
        self.assertTrue(set(statuses) <= {200, 413, 503, None}, set(statuses))
        self.assertIn(200, statuses)
        self.assertIn(413, statuses)
        # Unbounded, 16 parallel 1 MiB bodies took hundreds of MB.
        self.assertLess(after - before, 32 * 1024, f"peak RSS grew from {before} to {after} KiB")


class HostValidationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                        args=["--web.allowed-hosts=exporter.example,.svc.example"])
        cls.exporter.wait_listening()

    @classmethod
    def tearDownClass(cls):
        cls.exporter.__exit__(None, None, None)

    def ping(self, host, origin=None):
        """A raw request, so that Host says exactly what a browser would send."""
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        head = (f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n")
        if origin:
            head += f"Origin: {origin}\r\n"
        return harness.status_of(harness.raw_exchange(self.exporter.port, head.encode() + b"\r\n" + body))

    def test_a_dns_rebinding_request_is_refused(self):
        port = self.exporter.port
        self.assertEqual(self.ping(f"evil.example:{port}", f"http://evil.example:{port}"), 403)
        self.assertEqual(self.ping(f"evil.example:{port}"), 403)
        self.assertEqual(self.ping(f"127.0.0.1.nip.io:{port}"), 403)
        self.assertEqual(self.ping(f"exporter.example.evil.example:{port}"), 403)

    def test_addresses_localhost_and_allowed_names_are_served(self):
        port = self.exporter.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "10.1.2.3",
                     f"EXPORTER.example:{port}", f"pod.ns.svc.example:{port}"):
            self.assertEqual(self.ping(host), 200, host)

    def test_other_paths_do_not_check_host(self):
        raw = harness.raw_exchange(self.exporter.port,
                                   b"GET /metrics HTTP/1.1\r\nHost: prometheus-target.example\r\n"
                                   b"Connection: close\r\n\r\n")
        self.assertEqual(harness.status_of(raw), 200)


class ProbesWithAuthTest(unittest.TestCase):
    """The shipped Deployment's arguments and probes against an exporter with basic auth."""

    def test_the_shipped_probes_succeed_with_basic_auth_on(self):
        manifest = pathlib.Path(SOURCE_DIR) / "deploy" / "kubernetes" / "deployment.yaml"
        documents = list(yaml.safe_load_all(manifest.read_text()))
        deployment = next(d for d in documents if d and d.get("kind") == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = [a for a in container["args"] if not a.startswith("--web.listen-address")]
        config = write_temp(f"basic_auth_users:\n  prometheus: '{bcrypt('scrape-pass')}'\n", ".yml")
        try:
            exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                        args=[*args, f"--web.config.file={config}"])
            with exporter:
                for name in ("readinessProbe", "livenessProbe"):
                    probe = container[name]
                    if "httpGet" in probe:
                        path = probe["httpGet"]["path"]
                        # kubelet: any status from 200 to 399 is success.
                        harness.poll(lambda: 200 <= harness.request(exporter.url(path)).status < 400,
                                     harness.START_TIMEOUT_S, what=f"{name} on {path}")
                    elif "tcpSocket" in probe:
                        socket.create_connection(("127.0.0.1", exporter.port), timeout=10).close()
                    else:
                        self.fail(f"{name}: unexpected probe {probe}")
                # Everything else still needs credentials.
                self.assertEqual(harness.request(exporter.url("/metrics")).status, 401)
                self.assertEqual(harness.request(exporter.url("/metrics"), headers={
                    "Authorization": basic("prometheus", "scrape-pass")}).status, 200)
                self.assertEqual(exporter.stop(), 0)
        finally:
            os.remove(config)

    def test_without_the_flag_health_needs_credentials(self):
        config = write_temp(f"basic_auth_users:\n  prometheus: '{bcrypt('scrape-pass')}'\n", ".yml")
        try:
            exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                        args=[f"--web.config.file={config}"])
            with exporter:
                self.assertEqual(harness.request(exporter.url("/health")).status, 401)
        finally:
            os.remove(config)


class PasswordFloodTest(unittest.TestCase):
    def test_a_verified_scraper_stays_fast_and_is_never_rate_limited(self):
        # Cost 10: each wrong password costs tens of milliseconds of CPU.
        config = write_temp(
            f"basic_auth_users:\n  prometheus: '{bcrypt('scrape-pass', cost=10)}'\n"
            "rate_limit:\n  interval: 50ms\n  burst: 40\n", ".yml")
        good = {"Authorization": basic("prometheus", "scrape-pass")}
        try:
            exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                        args=[f"--web.config.file={config}"])
            with exporter:
                self.assertEqual(harness.request(exporter.url("/metrics"), headers=good).status, 200)
                stop = threading.Event()
                attacker_statuses = []

                def attacker(index):
                    bad = {"Authorization": basic("prometheus", f"guess-{index}")}
                    while not stop.is_set():
                        try:
                            attacker_statuses.append(
                                harness.request(exporter.url("/metrics"), headers=bad, timeout=60).status)
                        except OSError:
                            pass

                threads = [threading.Thread(target=attacker, args=(i,)) for i in range(100)]
                for thread in threads:
                    thread.start()
                scrapes = []
                try:
                    harness.poll(lambda: len(attacker_statuses) > 200, 60, what="the flood")
                    for _ in range(20):
                        started = time.monotonic()
                        status = harness.request(exporter.url("/metrics"), headers=good, timeout=60).status
                        scrapes.append((status, time.monotonic() - started))
                        time.sleep(0.2)
                finally:
                    stop.set()
                    for thread in threads:
                        thread.join()
                self.assertEqual([status for status, _ in scrapes], [200] * 20, scrapes)
                # Serialised bcrypt checks once held every worker: 6.7-8.1 s per scrape.
                slowest = max(seconds for _, seconds in scrapes)
                self.assertLess(slowest, 3.0, f"slowest scrape under the flood took {slowest:.2f} s")
                self.assertIn(429, attacker_statuses)
                self.assertNotIn(200, attacker_statuses)
                print(f"flood: {len(attacker_statuses)} attacker requests "
                      f"({attacker_statuses.count(429)} x 429, {attacker_statuses.count(401)} x 401, "
                      f"{attacker_statuses.count(503)} x 503); valid scrapes: slowest {slowest * 1000:.0f} ms, "
                      f"median {sorted(s for _, s in scrapes)[10] * 1000:.0f} ms")
        finally:
            os.remove(config)


def url_without_password(url):
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def percent_encoded(text):
    return "".join(f"%{byte:02X}" for byte in text.encode())


class SecretsTest(unittest.TestCase):
    def test_the_password_file_is_read_at_start_and_the_password_shown_nowhere(self):
        password = harness.test_database_password()
        secret_file = write_temp(password + "\n", ".password")
        try:
            exporter = harness.Exporter(EXPORTER, url_without_password(harness.test_database_url()),
                                        args=[f"--database.password-file={secret_file}"])
            with exporter:
                wait_healthy(exporter)
                with open(f"/proc/{exporter.process.pid}/cmdline", "rb") as cmdline:
                    self.assertNotIn(password.encode(), cmdline.read())
                self.assertEqual(exporter.stop(), 0)
                self.assertNotIn(password.encode(), exporter.output())
        finally:
            os.remove(secret_file)

    def test_a_missing_password_file_is_a_usage_error_naming_it(self):
        env = dict(os.environ, DATABASE_URL=url_without_password(harness.test_database_url()))
        result = subprocess.run([EXPORTER, "--database.password-file=/nonexistent/pw"],
                                capture_output=True, env=env, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"--database.password-file='/nonexistent/pw'", result.stderr)

    def test_a_percent_encoded_password_flag_is_hidden_from_ps(self):
        url = harness.test_database_url()
        password = harness.test_database_password()
        encoded = percent_encoded(password)
        parts = urllib.parse.urlsplit(url)
        flag_url = urllib.parse.urlunsplit(parts._replace(
            netloc=f"{parts.username}:{encoded}@{parts.hostname}:{parts.port}"))
        exporter = harness.Exporter(EXPORTER, "postgresql://ignored@127.0.0.1:1/x",
                                    args=[f"--database.url={flag_url}"])
        with exporter:
            with open(f"/proc/{exporter.process.pid}/cmdline", "rb") as cmdline:
                arguments = cmdline.read()
            self.assertIn(b"--database.url=postgresql://", arguments)
            self.assertNotIn(encoded.encode(), arguments)
            self.assertNotIn(password.encode(), arguments)
            wait_healthy(exporter)
            self.assertEqual(exporter.stop(), 0)

    def test_sslpassword_is_never_logged(self):
        url = harness.test_database_url() + "?sslpassword=client-key-secret&sslmode=disable"
        exporter = harness.Exporter(EXPORTER, url, env={"LOG_LEVEL": "DEBUG"})
        with exporter:
            wait_healthy(exporter)
            self.assertEqual(exporter.stop(), 0)
            output = exporter.output()
        self.assertIn(b"sslpassword=***", output)
        self.assertNotIn(b"client-key-secret", output)

    def test_core_dumps_are_off_and_sigquit_stops_gracefully(self):
        # SIGQUIT used to kill the process with a core dump that held the password.
        exporter = harness.Exporter(EXPORTER, harness.test_database_url())
        with exporter:
            with open(f"/proc/{exporter.process.pid}/limits") as limits:
                core = next(line for line in limits if line.startswith("Max core file size"))
            self.assertEqual(core.split()[4:6], ["0", "0"], core)
            self.assertEqual(exporter.stop(signal.SIGQUIT), 0)
            stopping = [json.loads(line) for line in exporter.output().splitlines()
                        if b"Shutting down" in line]
            self.assertEqual([entry["context"]["signal"] for entry in stopping], ["SIGQUIT"])


class SignalTest(unittest.TestCase):
    def test_sighup_and_sigusr1_do_not_stop_the_exporter(self):
        exporter = harness.Exporter(EXPORTER, harness.test_database_url())
        with exporter:
            wait_healthy(exporter)
            exporter.process.send_signal(signal.SIGHUP)
            exporter.process.send_signal(signal.SIGUSR1)
            harness.poll(lambda: b"Statistics (SIGUSR1)" in exporter.output(), 30,
                         what="the statistics line")
            harness.poll(lambda: b"SIGHUP ignored" in exporter.output(), 30, what="the SIGHUP line")
            self.assertIsNone(exporter.process.poll())
            self.assertEqual(harness.request(exporter.url("/health")).status, 200)
            line = next(l for l in exporter.output().splitlines() if b"Statistics (SIGUSR1)" in l)
            statistics = json.loads(line)["context"]["statistics"]
            self.assertIn("total_acquisitions", json.dumps(statistics))
            self.assertEqual(exporter.stop(), 0)

    def test_two_sigterms_still_exit_0(self):
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    args=["--web.shutdown-delay=1s"])
        with exporter:
            wait_healthy(exporter)
            exporter.process.send_signal(signal.SIGTERM)
            exporter.process.send_signal(signal.SIGTERM)
            self.assertEqual(exporter.wait_exit(), 0)
            self.assertIn(b"Exporter stopped", exporter.output())

    def test_under_timeout_the_exit_status_is_0(self):
        # timeout sends SIGTERM to the exporter and then to its process group,
        # so the exporter sees two; --preserve-status reports the exporter's status.
        env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_")}
        env["DATABASE_URL"] = harness.test_database_url()
        result = subprocess.run(["timeout", "--preserve-status", "3", EXPORTER,
                                 "--web.listen-address=127.0.0.1:0"],
                                stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn(b"Exporter stopped", result.stderr + result.stdout)

    def test_health_answers_503_draining_before_the_port_closes(self):
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    args=["--web.shutdown-delay=3s"])
        with exporter:
            wait_healthy(exporter)
            exporter.process.send_signal(signal.SIGTERM)
            seen = []

            def draining():
                response = harness.request(exporter.url("/health"), timeout=5)
                seen.append(response.status)
                return response.status == 503 and json.loads(response.body)["status"] == "draining"
            harness.poll(draining, 10, what="/health 503 draining")
            self.assertEqual(exporter.wait_exit(), 0)


if __name__ == "__main__":
    harness.run(globals(), "--source-dir")
