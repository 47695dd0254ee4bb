#!/usr/bin/env python3
"""--web.config.file with a real exporter: basic auth (401 with
WWW-Authenticate on missing or wrong credentials), response headers, and
invalid files (unknown keys, bad hashes, unreadable TLS files) refused with exit 2 and one line.

  exporter_web_config_test.py --exporter PATH
"""

import base64
import ctypes
import json
import os
import subprocess
import tempfile
import unittest

import harness

EXPORTER = None


def bcrypt(password, prefix=b"$2b$", cost=4):
    """A bcrypt hash from libxcrypt, the library the exporter checks with."""
    libcrypt = ctypes.CDLL("libcrypt.so.1")
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = libcrypt.crypt_gensalt(prefix, cost, None, 0)
    return libcrypt.crypt(password.encode(), setting).decode()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_config(text):
    handle, path = tempfile.mkstemp(prefix="poolscope-web-config.", suffix=".yml")
    with os.fdopen(handle, "w") as config:
        config.write(text)
    return path


class BasicAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.config = write_config(
            "basic_auth_users:\n"
            f"  prometheus: '{bcrypt('scrape-pass')}'\n"
            f"  operator: '{bcrypt('op-pass', prefix=b'$2y$')}'\n"
            "http_server_config:\n"
            "  headers:\n"
            "    X-Content-Type-Options: nosniff\n")
        cls.exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                        args=[f"--web.config.file={cls.config}"])
        cls.exporter.wait_listening()

    @classmethod
    def tearDownClass(cls):
        cls.exporter.__exit__(None, None, None)
        os.remove(cls.config)

    def test_missing_credentials_get_401_with_a_challenge(self):
        for path in ("/metrics", "/health", "/", "/mcp", "/nope"):
            response = harness.request(self.exporter.url(path))
            self.assertEqual(response.status, 401, path)
            self.assertEqual(response.header("WWW-Authenticate"), 'Basic realm="poolscope"')

    def test_wrong_credentials_get_401(self):
        for user, password in (("prometheus", "wrong"), ("nobody", "scrape-pass"),
                               ("prometheus", ""), ("", "")):
            response = harness.request(self.exporter.url("/metrics"),
                                       headers={"Authorization": basic(user, password)})
            self.assertEqual(response.status, 401, user)
        response = harness.request(self.exporter.url("/metrics"),
                                   headers={"Authorization": "Basic not-base64!"})
        self.assertEqual(response.status, 401)

    def test_right_credentials_are_served_repeatedly(self):
        for _ in range(3):  # the second and third come from the cache
            response = harness.request(self.exporter.url("/metrics"),
                                       headers={"Authorization": basic("prometheus", "scrape-pass")})
            self.assertEqual(response.status, 200)
        response = harness.request(self.exporter.url("/health"),
                                   headers={"Authorization": basic("operator", "op-pass")})
        self.assertIn(response.status, (200, 503))

    def mcp(self, method, params=None):
        message = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            message["params"] = params
        response = harness.request(
            self.exporter.url("/mcp"), method="POST", body=json.dumps(message).encode(),
            headers={"Authorization": basic("operator", "op-pass"),
                     "Content-Type": "application/json",
                     "Accept": "application/json, text/event-stream"})
        self.assertEqual(response.status, 200)
        return json.loads(response.body)

    def metric(self, name, labels=""):
        text = harness.scrape(self.exporter,
                              headers={"Authorization": basic("prometheus", "scrape-pass")})
        _, samples = harness.parse_metrics(text)
        for series_labels, value in samples.get(name, []):
            if labels in series_labels:
                return value
        self.fail(f"no {name}{labels} in the scrape")

    def test_mcp_tools_resize_and_drain_the_live_pool(self):
        harness.poll(lambda: self.metric("codebase_mcp_pool_connections_total") > 0, 60,
                     what="the pool's first connections")
        tools = self.mcp("tools/list")["result"]["tools"]
        self.assertEqual([tool["name"] for tool in tools], ["pool_resize", "pool_drain"])

        resized = self.mcp("tools/call", {"name": "pool_resize",
                                          "arguments": {"max_size": 7, "min_size": 2}})["result"]
        self.assertFalse(resized["isError"], resized)
        self.assertEqual(resized["structuredContent"]["max_size"], 7)
        self.assertEqual(resized["structuredContent"]["min_size"], 2)
        self.assertEqual(self.metric("codebase_mcp_pool_max_connections"), 7)
        self.assertEqual(self.metric("codebase_mcp_pool_min_connections"), 2)
        self.assertEqual(self.metric("codebase_mcp_pool_resizes_total"), 2)  # max, then min

        refused = self.mcp("tools/call", {"name": "pool_resize",
                                          "arguments": {"min_size": 8}})["result"]
        self.assertTrue(refused["isError"])
        self.assertEqual(refused["content"][0]["text"],
                         "invalid min_size='8': must not exceed max_size (7); raise max_size first")
        bad = self.mcp("tools/call", {"name": "pool_resize", "arguments": {"max_size": "7"}})
        self.assertTrue(bad["result"]["isError"])
        self.assertIn("max_size must be a whole number", bad["result"]["content"][0]["text"])
        self.assertEqual(self.metric("codebase_mcp_pool_resizes_total"), 2)

        drained = self.mcp("tools/call", {"name": "pool_drain"})["result"]
        self.assertFalse(drained["isError"], drained)
        closed_idle = drained["structuredContent"]["closed_idle"]
        self.assertGreaterEqual(closed_idle, 1)  # nothing uses the pool: all were idle
        self.assertEqual(self.metric("codebase_mcp_pool_drains_total"), 1)
        # Plus any that was out for a background validation during the drain.
        self.assertGreaterEqual(
            self.metric("codebase_mcp_pool_connections_closed_total", 'reason="drain"'), closed_idle)
        # Replaced up to min_size by fresh connections.
        harness.poll(lambda: self.metric("codebase_mcp_pool_connections_total") >= 2, 60,
                     what="replacement connections after the drain")

    def test_health_lists_leaks(self):
        response = harness.request(self.exporter.url("/health"),
                                   headers={"Authorization": basic("operator", "op-pass")})
        leaks = json.loads(response.body)["leaks"]
        self.assertEqual(sorted(leaks), ["connections", "count", "oldest_held_seconds", "sites"])
        self.assertEqual((leaks["count"], leaks["connections"], leaks["sites"]), (0, [], []))

    def test_configured_headers_are_sent(self):
        response = harness.request(self.exporter.url("/health"))
        self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")


class InvalidConfigTest(unittest.TestCase):
    def run_with(self, text):
        path = write_config(text)
        try:
            env = dict(os.environ, DATABASE_URL=harness.test_database_url())
            return subprocess.run([EXPORTER, "--web.listen-address=127.0.0.1:0",
                                   f"--web.config.file={path}"],
                                  stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60)
        finally:
            os.remove(path)

    def assert_refused(self, text, *fragments):
        result = self.run_with(text)
        self.assertEqual(result.returncode, 2, result.stderr)
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(result.stdout, b"")
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        return lines[0]

    def test_unknown_key(self):
        self.assert_refused("basic_auth_user:\n  a: b\n", "unknown key 'basic_auth_user'", "line 1")

    def test_bad_hash_is_refused_without_echoing_it(self):
        line = self.assert_refused("basic_auth_users:\n  alice: plaintext-secret\n",
                                   "basic_auth_users.alice is not a bcrypt hash")
        self.assertNotIn("plaintext-secret", line)

    def test_tls_with_a_missing_certificate_file_is_refused_naming_it(self):
        self.assert_refused("tls_server_config:\n  cert_file: /nonexistent/server.crt\n"
                            "  key_file: /nonexistent/server.key\n",
                            "tls_server_config.cert_file", "/nonexistent/server.crt")

    def test_tls_client_allowed_sans_is_refused(self):
        self.assert_refused("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n"
                            "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
                            "  client_allowed_sans: [scraper]\n",
                            "client_allowed_sans is not supported")

    def test_yaml_syntax_error(self):
        self.assert_refused("basic_auth_users: [\n", "YAML syntax error")

    def test_missing_file(self):
        env = dict(os.environ, DATABASE_URL=harness.test_database_url())
        result = subprocess.run([EXPORTER, "--web.config.file=/nonexistent/web.yml"],
                                capture_output=True, env=env, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.decode().splitlines()), 1)


if __name__ == "__main__":
    harness.run(globals())
