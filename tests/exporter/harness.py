"""Shared helpers for the exporter's process-level tests.

Starts the real poolscope-exporter binary on 127.0.0.1 with a kernel-chosen
port (read back from its "Listening on" log line), talks HTTP to it (urllib
for ordinary requests, raw sockets for malformed ones) and stops it with a
signal. Every wait is a bounded poll; nothing asserts on elapsed time.
"""

import argparse
import gzip
import http.client
import os
import re
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
from exporter_process import Exporter, START_TIMEOUT_S, STOP_TIMEOUT_S  # noqa: E402,F401
from loopback import Response, free_port, poll, wait_until  # noqa: E402,F401
from loopback import http_request as request  # noqa: E402,F401

SKIPPED = 77


def test_database_url():
    """The suite's shared database URL; exits 77 (skipped) when unset."""
    url = os.environ.get("POOLSCOPE_TEST_DATABASE_URL")
    if not url:
        print("SKIP POOLSCOPE_TEST_DATABASE_URL is not set (run through scripts/test)")
        sys.exit(SKIPPED)
    return url


def run(module_globals, *options, database=True):
    """The main() of an exporter test script: parses --exporter and the given
    required `options` ("--source-dir" sets SOURCE_DIR, ...) into the script's
    globals, exits 77 (skipped) without a test database when `database`, and
    runs the script's unittest cases with the remaining arguments."""
    parser = argparse.ArgumentParser()
    for option in ("--exporter", *options):
        parser.add_argument(option, required=True)
    args, rest = parser.parse_known_args()
    for name, value in vars(args).items():
        module_globals[name.upper()] = value
    if database:
        test_database_url()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


def test_database_password():
    return os.environ.get("POOLSCOPE_TEST_DB_PASSWORD", "")


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


def read_response(sock):
    """Reads one response from `sock`: until it is complete or the peer closes."""
    data = b""
    while not raw_response_complete(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


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
