#!/usr/bin/env python3
"""The exporter's HTTP face under hostile and unusual clients, against the real
binary and a real PostgreSQL: 1,000 idle plus 100 slowloris connections and
wrk driving /metrics while /health and /metrics are timed; keep-alive
connections held idle; the connection bound; IPv6 and several addresses; TLS
checked with curl and with a real Prometheus scraping over https; mTLS
refusing a client without a certificate; SIGTERM with a request in flight;
more than 64 headers and two differing Content-Lengths.

  http_resilience_test.py --exporter PATH [--prometheus prometheus]
"""

import argparse
import json
import multiprocessing
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import yaml

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "support"))
import stack  # noqa: E402  (Prometheus on a free loopback port)

EXPORTER = None
PROMETHEUS = "prometheus"
# The latency bound the exporter promises for probes and scrapes under a flood.
P99_BOUND_S = 0.100
IDLE_CONNECTIONS = 1000
SLOWLORIS_CONNECTIONS = 100
# The exporter's defaults (HttpServer::Options): generous multiples are used
# when waiting for them to act.
HEADER_TIMEOUT_S = 5
KEEP_ALIVE_TIMEOUT_S = 2


def raise_open_file_limit(wanted=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile_99(samples):
    """Nearest-rank 99th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


def timed_get(port, path, timeout=2.0, host="127.0.0.1"):
    """One GET on a fresh connection, as a probe or a scraper makes it;
    returns (status or None, seconds)."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = harness.read_response(sock)
        return harness.status_of(data), time.monotonic() - start
    except OSError:
        return None, time.monotonic() - start


class Flood:
    """Holds `idle` connections that send nothing and `slow` connections that
    send one header byte a second, reopening any the server closes, on one
    selector thread. Counts how often the server cut each kind."""

    SLOW_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000

    def __init__(self, port, idle, slow, host="127.0.0.1"):
        self.port = port
        self.host = host
        self.selector = selectors.DefaultSelector()
        self.kinds = {}
        self.progress = {}
        self.cut = {"idle": 0, "slow": 0}
        self.open_count = {"idle": 0, "slow": 0}
        self.running = True
        for _ in range(idle):
            self._open("idle")
        for _ in range(slow):
            self._open("slow")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self, kind):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((self.host, self.port))
        self.selector.register(sock, selectors.EVENT_READ)
        self.kinds[sock] = kind
        self.progress[sock] = 0
        self.open_count[kind] += 1

    def _close(self, sock, reopen):
        kind = self.kinds.pop(sock)
        self.progress.pop(sock)
        self.selector.unregister(sock)
        sock.close()
        self.open_count[kind] -= 1
        if reopen:
            self.cut[kind] += 1
            self._open(kind)

    def _run(self):
        next_byte = time.monotonic() + 1
        while self.running:
            for key, _ in self.selector.select(0.1):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data and key.fileobj in self.kinds:
                    self._close(key.fileobj, reopen=self.running)
            if time.monotonic() >= next_byte:
                next_byte += 1
                for sock, kind in list(self.kinds.items()):
                    if kind != "slow":
                        continue
                    offset = self.progress[sock]
                    try:
                        if sock.send(self.SLOW_REQUEST[offset:offset + 1]) == 1:
                            self.progress[sock] = offset + 1
                    except OSError:
                        pass  # not connected yet, or being cut: the read side notices

    def close(self):
        self.running = False
        self.thread.join(timeout=10)
        for sock in list(self.kinds):
            self._close(sock, reopen=False)
        self.selector.close()


class FloodProcess:
    """A Flood in a child process, so its work on over a thousand sockets
    never holds up the measuring process (one interpreter lock) and inflates
    the latencies it records. `open_count` and `cut` read its counters."""

    def __init__(self, port, idle, slow):
        self._counters = multiprocessing.Array("l", 4)
        self._stop = multiprocessing.Event()
        self._process = multiprocessing.Process(
            target=FloodProcess._run, args=(port, idle, slow, self._counters, self._stop),
            daemon=True)
        self._process.start()

    @staticmethod
    def _run(port, idle, slow, counters, stop):
        raise_open_file_limit()
        flood = Flood(port, idle, slow)
        try:
            while not stop.wait(0.05):
                counters[:] = [flood.open_count["idle"], flood.open_count["slow"],
                               flood.cut["idle"], flood.cut["slow"]]
        finally:
            flood.close()

    @property
    def open_count(self):
        return {"idle": self._counters[0], "slow": self._counters[1]}

    @property
    def cut(self):
        return {"idle": self._counters[2], "slow": self._counters[3]}

    def close(self):
        self._stop.set()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certificates(directory):
    """A server CA and a client CA, a server certificate for localhost and
    127.0.0.1, a client certificate from the client CA and one from a CA the
    server does not trust."""
    for ca in ("ca", "client-ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}",
                cwd=directory)
    leaves = (("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"),
              ("client", "client-ca", "extendedKeyUsage=clientAuth"),
              ("rogue", "rogue-ca", "extendedKeyUsage=clientAuth"))
    for name, ca, extension in leaves:
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                cwd=directory)
        with open(os.path.join(directory, f"{name}.ext"), "w", encoding="utf-8") as ext:
            ext.write(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
                cwd=directory)


def curl(url, *args):
    """curl's exit code and the HTTP status it printed ("000" when there was none)."""
    result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             "--max-time", "10", *args, url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return result.returncode, result.stdout.strip(), result.stderr


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class ReadyExporter(harness.Exporter):
    """The exporter, entered once /health answers 200 (the pool has opened its
    connections); over TLS when `ca_file` is given."""

    def __init__(self, *args, ca_file=None, curl_args=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.ca_file = ca_file
        self.curl_args = curl_args

    def __enter__(self):
        super().__enter__()
        if self.ca_file:
            def ready():
                return curl(f"https://localhost:{self.port}/health", "--cacert", self.ca_file,
                            *self.curl_args)[1] == "200"
        else:
            def ready():
                return timed_get(self.port, "/health", timeout=5)[0] == 200
        harness.poll(ready, harness.START_TIMEOUT_S, interval_s=0.1, what="/health to answer 200")
        return self


class HttpResilienceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.database_url = harness.test_database_url()
        cls.fd_limit = raise_open_file_limit()

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="poolscope-http-resilience.")

    def tearDown(self):
        shutil.rmtree(self.workdir, ignore_errors=True)

    def exporter(self, *args, open_file_limit=None, tls=False, client="client"):
        """The exporter, limited to `open_file_limit` open files when given
        (soft and hard, so it cannot raise it); over TLS, its readiness is
        checked with the client certificate `client`."""
        binary = EXPORTER
        if open_file_limit is not None:
            binary = os.path.join(self.workdir, "limited-exporter")
            with open(binary, "w", encoding="utf-8") as wrapper:
                wrapper.write(f"#!/bin/sh\nulimit -Sn {open_file_limit} && ulimit -Hn {open_file_limit}"
                              f" && exec {EXPORTER} \"$@\"\n")
            os.chmod(binary, 0o755)
        ca_file = os.path.join(self.workdir, "ca.crt") if tls else None
        curl_args = ("--cert", os.path.join(self.workdir, f"{client}.crt"),
                     "--key", os.path.join(self.workdir, f"{client}.key")) if tls else ()
        return ReadyExporter(binary, self.database_url, args=args, ca_file=ca_file,
                             curl_args=curl_args)

    def web_config(self, text):
        path = os.path.join(self.workdir, "web.yml")
        with open(path, "w", encoding="utf-8") as config:
            config.write(text)
        return path

    def assert_fast(self, port, path, what):
        samples = [timed_get(port, path) for _ in range(100)]
        statuses = {status for status, _ in samples}
        self.assertEqual(statuses, {200}, f"{path} {what}: statuses {statuses}")
        ordered = sorted(seconds for _, seconds in samples)
        p99 = percentile_99(ordered)
        print(f"[http] {path} {what}: p99 {p99 * 1000:.1f} ms over 100 requests "
              f"(median {ordered[49] * 1000:.1f} ms, p90 {ordered[89] * 1000:.1f} ms, "
              f"max {ordered[-1] * 1000:.1f} ms)", flush=True)
        self.assertLess(p99, P99_BOUND_S, f"{path} {what}: p99 {p99 * 1000:.1f} ms")

    def test_probes_and_scrapes_answer_within_100_ms_during_a_flood(self):
        if self.fd_limit < IDLE_CONNECTIONS + SLOWLORIS_CONNECTIONS + 300:
            self.skipTest(f"open-file limit {self.fd_limit} is too low for the flood")
        with self.exporter() as exporter:
            self.assertEqual(timed_get(exporter.port, "/health")[0], 200)
            flood = FloodProcess(exporter.port, IDLE_CONNECTIONS, SLOWLORIS_CONNECTIONS)
            wrk = None
            try:
                harness.poll(lambda: flood.open_count["idle"] == IDLE_CONNECTIONS, 30,
                             what="the idle connections to open")
                wrk = subprocess.Popen(["wrk", "-c", "50", "-t", "2", "-d", "60s",
                                        exporter.url("/metrics")],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                time.sleep(1)
                self.assert_fast(exporter.port, "/health", "during the flood and wrk -c 50")
                self.assert_fast(exporter.port, "/metrics", "during the flood and wrk -c 50")
                # The flood was held while measuring, and the server cut the
                # slow and idle clients after its header timeout.
                self.assertGreaterEqual(flood.open_count["idle"] + flood.cut["idle"], IDLE_CONNECTIONS)
                harness.poll(lambda: flood.cut["slow"] >= SLOWLORIS_CONNECTIONS, 4 * HEADER_TIMEOUT_S,
                             what="the slowloris connections to be cut")
                harness.poll(lambda: flood.cut["idle"] >= IDLE_CONNECTIONS, 4 * HEADER_TIMEOUT_S,
                             what="the idle connections to be cut")
                self.assert_fast(exporter.port, "/health", "after the flood was cut and reopened")
            finally:
                if wrk is not None:
                    wrk.send_signal(signal.SIGINT)
                    output = wrk.communicate(timeout=60)[0]
                flood.close()
            print(f"[http] wrk during the flood:\n{output}", flush=True)
            requests = re.search(r"(\d+) requests in", output)
            self.assertIsNotNone(requests, output)
            self.assertGreater(int(requests.group(1)), 0)
            self.assertNotIn("Non-2xx", output)
            self.assertEqual(timed_get(exporter.port, "/health")[0], 200)

    def test_idle_keep_alive_connections_do_not_starve_probes_and_are_closed(self):
        with self.exporter() as exporter:
            hogs = []
            for _ in range(500):
                sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                data = harness.read_response(sock)
                self.assertIn(b"Connection: keep-alive", data)
                hogs.append(sock)
            try:
                self.assert_fast(exporter.port, "/health", "with 500 idle keep-alive connections")
                deadline = time.monotonic() + 5 * KEEP_ALIVE_TIMEOUT_S
                for sock in hogs:
                    sock.settimeout(max(0.1, deadline - time.monotonic()))
                    self.assertEqual(sock.recv(1), b"", "a kept-alive idle connection stayed open")
            finally:
                for sock in hogs:
                    sock.close()

    def test_the_connection_bound_logs_and_keeps_serving(self):
        # 600 descriptors leave the server a bound of 344 connections.
        with self.exporter(open_file_limit=600) as exporter:
            flood = FloodProcess(exporter.port, 800, 0)
            try:
                harness.poll(lambda: b"at its connection limit" in exporter.output(), 30,
                             what="the connection-limit log line")
                for _ in range(20):
                    self.assertEqual(timed_get(exporter.port, "/health", timeout=5)[0], 200)
            finally:
                flood.close()
            self.assertIn(b"Open-file limit lowers the HTTP connection bound", exporter.output())

    def test_listens_on_ipv6_and_several_addresses(self):
        if not ipv6_loopback_available():
            self.skipTest("no IPv6 loopback on this machine")
        with self.exporter("--web.listen-address=[::1]:0") as exporter:
            match = re.search(rb"Listening on \[::1\]:(\d+)", exporter.output())
            self.assertIsNotNone(match, exporter.output())
            port6 = int(match.group(1))
            code, status, error = curl(f"http://[::1]:{port6}/health", "-g")
            self.assertEqual((code, status), (0, "200"), error)
            self.assertEqual(timed_get(exporter.port, "/health")[0], 200)
            self.assertEqual(timed_get(port6, "/metrics", host="::1")[0], 200)

    def test_serves_tls_from_the_web_config_to_curl(self):
        make_certificates(self.workdir)
        config = self.web_config("tls_server_config:\n  cert_file: server.crt\n"
                                 "  key_file: server.key\n  min_version: TLS13\n")
        with self.exporter(f"--web.config.file={config}", tls=True) as exporter:
            ca = os.path.join(self.workdir, "ca.crt")
            url = f"https://localhost:{exporter.port}/health"
            code, status, error = curl(url, "--cacert", ca)
            self.assertEqual((code, status), (0, "200"), error)
            code, status, error = curl(f"https://localhost:{exporter.port}/metrics", "--cacert", ca)
            self.assertEqual((code, status), (0, "200"), error)
            # min_version TLS13 refuses TLS 1.2; plain HTTP gets no answer.
            code, status, _ = curl(url, "--cacert", ca, "--tls-max", "1.2")
            self.assertNotEqual(code, 0)
            self.assertEqual(status, "000")
            code, status, _ = curl(f"http://localhost:{exporter.port}/health")
            self.assertNotEqual(status, "200")
            self.assertIn(b"Listening on 127.0.0.1", exporter.output())

    def test_prometheus_scrapes_over_https(self):
        make_certificates(self.workdir)
        config = self.web_config("tls_server_config:\n  cert_file: server.crt\n"
                                 "  key_file: server.key\n")
        with self.exporter(f"--web.config.file={config}", tls=True) as exporter:
            prometheus = stack.Prometheus(os.path.join(self.workdir, "prometheus"),
                                          [f"localhost:{exporter.port}"], scrape_interval="1s",
                                          binary=PROMETHEUS)
            with open(prometheus.config_path, encoding="utf-8") as file:
                document = yaml.safe_load(file)
            job = document["scrape_configs"][0]
            job["scheme"] = "https"
            job["tls_config"] = {"ca_file": os.path.join(self.workdir, "ca.crt")}
            with open(prometheus.config_path, "w", encoding="utf-8") as file:
                json.dump(document, file)  # JSON is YAML
            with prometheus:
                def scraped_up():
                    targets = prometheus.targets()
                    return targets and targets[0]["health"] == "up" and targets[0]
                target = harness.poll(scraped_up, 60, interval_s=0.5, what="an https scrape")
                self.assertTrue(target["scrapeUrl"].startswith("https://"), target)
                def exporter_series():
                    result = prometheus.query('count({job="poolscope",__name__=~"codebase_mcp_pool_.+"})')
                    return result and float(result[0]["value"][1]) > 0
                harness.poll(exporter_series, 30, interval_s=0.5,
                             what="the exporter's series scraped over https in Prometheus")

    def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(self):
        make_certificates(self.workdir)
        config = self.web_config(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_ca_file: client-ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n")
        with self.exporter(f"--web.config.file={config}", tls=True) as exporter:
            ca = os.path.join(self.workdir, "ca.crt")
            url = f"https://localhost:{exporter.port}/health"
            code, status, _ = curl(url, "--cacert", ca)
            self.assertNotEqual(code, 0, "a client without a certificate was served")
            self.assertEqual(status, "000")
            code, status, _ = curl(url, "--cacert", ca,
                                   "--cert", os.path.join(self.workdir, "rogue.crt"),
                                   "--key", os.path.join(self.workdir, "rogue.key"))
            self.assertEqual(status, "000", "a certificate from an untrusted CA was accepted")
            code, status, error = curl(url, "--cacert", ca,
                                       "--cert", os.path.join(self.workdir, "client.crt"),
                                       "--key", os.path.join(self.workdir, "client.key"))
            self.assertEqual((code, status), (0, "200"), error)

    def test_sigterm_exits_0_quickly_when_idle(self):
        with self.exporter() as exporter:
            self.assertEqual(timed_get(exporter.port, "/health")[0], 200)
            idle = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(20)]
            try:
                start = time.monotonic()
                self.assertEqual(exporter.stop(), 0)
                elapsed = time.monotonic() - start
            finally:
                for sock in idle:
                    sock.close()
            print(f"[http] SIGTERM to exit, idle with 20 open connections: {elapsed * 1000:.0f} ms",
                  flush=True)
            self.assertLess(elapsed, 0.5)

    def test_sigterm_lets_a_request_in_flight_finish(self):
        with self.exporter() as exporter:
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                               "params": {"uri": "health://connection-pool"}}).encode()
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=30) as sock:
                sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                             b"Content-Type: application/json\r\nAccept: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % (exporter.port, len(body))
                             + body[:10])
                time.sleep(0.3)  # the server has the headers: the request is in progress
                exporter.process.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                sock.sendall(body[10:])
                data = harness.read_response(sock)
            self.assertEqual(harness.status_of(data), 200, data[:200])
            self.assertIn(b"Connection: close", data)
            self.assertIn(b'"result"', data)
            self.assertEqual(exporter.wait_exit(), 0)

    def test_more_than_64_headers_get_431(self):
        with self.exporter() as exporter:
            headers = b"".join(b"X-Header-%d: v\r\n" % i for i in range(63))
            request = b"GET /health HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
            self.assertEqual(harness.status_of(harness.raw_exchange(
                exporter.port, request % headers[:headers.index(b"X-Header-62")])), 200)
            raw = harness.raw_exchange(exporter.port, request % headers)
            self.assertEqual(harness.status_of(raw), 431, raw[:200])
            self.assertIn(b"too many header fields", raw)

    def test_two_differing_content_lengths_get_400(self):
        with self.exporter() as exporter:
            raw = harness.raw_exchange(
                exporter.port, b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                               b"Content-Length: 40\r\nConnection: close\r\n\r\n{}")
            self.assertEqual(harness.status_of(raw), 400, raw[:200])
            self.assertEqual(timed_get(exporter.port, "/health")[0], 200)


def main():
    global EXPORTER, PROMETHEUS
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True)
    parser.add_argument("--prometheus", default="prometheus")
    args, rest = parser.parse_known_args()
    EXPORTER = args.exporter
    PROMETHEUS = args.prometheus
    for tool in ("curl", "wrk", "openssl", PROMETHEUS):
        if shutil.which(tool) is None:
            print(f"SKIP {tool} not found; install it with scripts/setup")
            sys.exit(harness.SKIPPED)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
