"""Shared helpers for the exporter's process-level tests.

Starts the real poolscope-exporter binary on 127.0.0.1 with a kernel-chosen
port (read back from its "Listening on" log line), talks HTTP to it (urllib
for ordinary requests, raw sockets for malformed ones) and stops it with a
signal. Every wait is a bounded poll; nothing asserts on elapsed time.
"""

import gzip
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIPPED = 77
# Bounds on waiting; generous because the whole suite shares two cores.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


def test_database_url():
    """The suite's shared database URL; exits 77 (skipped) when unset."""
    url = os.environ.get("POOLSCOPE_TEST_DATABASE_URL")
    if not url:
        print("SKIP POOLSCOPE_TEST_DATABASE_URL is not set (run through scripts/test)")
        sys.exit(SKIPPED)
    return url


def test_database_password():
    return os.environ.get("POOLSCOPE_TEST_DB_PASSWORD", "")


def poll(predicate, timeout_s, interval_s=0.05, what="condition"):
    """Calls predicate() until it returns a truthy value; raises after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)


class Exporter:
    """One poolscope-exporter child process; its stdout and stderr go to a file."""

    def __init__(self, binary, database_url, args=(), env=None, workdir=None):
        self.owns_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="poolscope-exporter-test.")
        self.log_path = os.path.join(self.workdir, "exporter.log")
        self.log = open(self.log_path, "w+b")
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith("POOL_") and k not in ("DATABASE_URL", "LOG_LEVEL",
                                                                   "LOG_FORMAT")}
        environment["DATABASE_URL"] = database_url
        environment.update(env or {})
        self.process = subprocess.Popen(
            [binary, "--web.listen-address=127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=environment)
        self.port = None
        self.returncode = None

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read()

    def wait_listening(self):
        def bound_port():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exporter exited with {self.process.returncode}:\n{self.output().decode(errors='replace')}")
            match = LISTENING.search(self.output())
            return int(match.group(1)) if match else None
        self.port = poll(bound_port, START_TIMEOUT_S, what="the exporter to listen")
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` (unless the process has ended) and returns the exit code. A
        second SIGINT makes the exporter skip its graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"exporter did not stop after {sig.name}:\n"
                                 f"{self.output().decode(errors='replace')}")
        return self.returncode

    def wait_exit(self):
        """Waits (bounded) for the process to end by itself; returns the exit code."""
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"exporter did not exit:\n{self.output().decode(errors='replace')}")
        return self.returncode

    def __enter__(self):
        return self.wait_listening()

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if exc and exc[0] is not None:
            # The test failed with the exporter running: show what it said.
            sys.stderr.write(self.output().decode(errors="replace")[-20000:])
        self.log.close()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def text(self):
        return self.body.decode("utf-8")


def request(url, method="GET", headers=None, body=None, timeout=30):
    """One HTTP request; HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


def scrape(exporter, headers=None, path="/metrics"):
    """The metrics text (decompressed when the exporter gzipped it)."""
    response = request(exporter.url(path), headers=headers)
    assert response.status == 200, f"scrape answered {response.status}"
    body = response.body
    if response.header("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return body.decode("utf-8")


def raw_exchange(port, data, timeout=10):
    """Sends raw bytes on a fresh connection; returns what came back until close or silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if raw_response_complete(b"".join(chunks)):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def raw_response_complete(data):
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def status_of(raw):
    match = re.match(rb"HTTP/[0-9.]+ (\d{3}) ", raw)
    return int(match.group(1)) if match else None


def keep_alive_pair(port, path):
    """Two GETs on one connection; returns both statuses (http.client reuses the socket)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses = []
    sockets = []
    for _ in range(2):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.append(connection.sock)
    connection.close()
    return statuses, sockets[0] is sockets[1] and sockets[0] is not None


def parse_metrics(text):
    """{family: type} from the # TYPE lines and {series_name: [(labels, value)]}."""
    types = {}
    samples = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
            if match:
                samples.setdefault(match.group(1), []).append((match.group(2) or "", float(match.group(3))))
    return types, samples


def promtool_check_metrics(text):
    """(returncode, combined output) of `promtool check metrics` on text."""
    result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return result.returncode, result.stdout.decode(errors="replace")
