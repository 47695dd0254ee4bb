#!/usr/bin/env python3
"""The real exporter against the suite's PostgreSQL: scrapes, /health, the
landing page, MCP, malformed HTTP, SIGTERM and the password.

  exporter_live_test.py --exporter PATH

Exits 77 (skipped) when POOLSCOPE_TEST_DATABASE_URL is unset.
"""

import gzip
import json
import signal
import unittest

import harness

EXPORTER = None
PREFIX = "codebase_mcp_pool_"


def pool_series(samples, name, pool="default"):
    values = [value for labels, value in samples.get(PREFIX + name, []) if f'pool="{pool}"' in labels]
    assert len(values) == 1, f"{name}: expected one series for pool {pool}, got {values}"
    return values[0]


class LiveExporterTest(unittest.TestCase):
    """One exporter with synthetic load (6 workers on a pool of 4) for the whole class."""

    @classmethod
    def setUpClass(cls):
        cls.exporter = harness.Exporter(
            EXPORTER, harness.test_database_url(),
            args=["--workload.workers=6", "--workload.hold=5ms"],
            env={"POOL_MAX_SIZE": "4", "POOL_MIN_SIZE": "2", "POOL_HEALTH_CHECK_INTERVAL": "100ms"})
        cls.exporter.wait_listening()
        # Serve only once the pool is up and the synthetic load is visible.
        def busy():
            _, samples = harness.parse_metrics(harness.scrape(cls.exporter))
            return pool_series(samples, "acquisitions_total") > 0
        harness.poll(busy, harness.START_TIMEOUT_S, what="the synthetic load")

    @classmethod
    def tearDownClass(cls):
        cls.exporter.__exit__(None, None, None)

    def test_scrape_passes_promtool_check_metrics_silently(self):
        text = harness.scrape(self.exporter)
        code, output = harness.promtool_check_metrics(text)
        self.assertEqual((code, output), (0, ""))

    def test_gzipped_scrape_is_the_same_format(self):
        response = harness.request(self.exporter.url("/metrics"), headers={"Accept-Encoding": "gzip"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Encoding"), "gzip")
        text = gzip.decompress(response.body).decode()
        self.assertEqual(harness.promtool_check_metrics(text), (0, ""))

    def test_scrape_content_type_is_the_text_format(self):
        response = harness.request(self.exporter.url("/metrics"))
        self.assertEqual(response.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8")

    def test_the_guides_metrics_are_present_with_their_types(self):
        types, samples = harness.parse_metrics(harness.scrape(self.exporter))
        expected = {
            "connections_idle": "gauge",
            "connections_active": "gauge",
            "waiting_requests": "gauge",
            "acquisition_duration_seconds": "histogram",
            "acquisitions_total": "counter",
            "releases_total": "counter",
            "errors_total": "counter",
            "health_status": "gauge",
        }
        for name, kind in expected.items():
            self.assertEqual(types.get(PREFIX + name), kind, name)
        # connections_total ends in _total, which promtool rejects on a gauge,
        # so it may be exposed untyped; it must be there either way.
        self.assertIn(types.get(PREFIX + "connections_total"), ("gauge", "untyped"))
        self.assertIn(PREFIX + "acquisition_duration_seconds_bucket", samples)
        self.assertTrue(any('le="0.01"' in labels
                            for labels, _ in samples[PREFIX + "acquisition_duration_seconds_bucket"]))
        self.assertIn(pool_series(samples, "health_status"), (0.0, 1.0, 2.0))

    def test_total_is_idle_plus_active_in_every_scrape_under_load(self):
        saw_active = False
        for _ in range(150):
            _, samples = harness.parse_metrics(harness.scrape(self.exporter))
            total = pool_series(samples, "connections_total")
            idle = pool_series(samples, "connections_idle")
            active = pool_series(samples, "connections_active")
            self.assertEqual(total, idle + active, f"total={total} idle={idle} active={active}")
            saw_active = saw_active or active > 0
            document = json.loads(harness.request(self.exporter.url("/health")).body)
            pool = document["database"]["pool"]
            self.assertEqual(pool["total"], pool["idle"] + pool["active"], pool)
        self.assertTrue(saw_active, "the synthetic load never showed an active connection")

    def test_health_has_the_guides_schema(self):
        response = harness.request(self.exporter.url("/health"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "application/json")
        document = json.loads(response.body)
        self.assertEqual(set(document), {"status", "timestamp", "database", "leaks", "uptime_seconds"})
        self.assertEqual(set(document["database"]), {"status", "pool", "latency_ms", "last_error"})
        self.assertEqual(set(document["database"]["pool"]), {"total", "idle", "active", "waiting"})
        self.assertIn(document["status"], ("healthy", "degraded", "unhealthy"))
        self.assertRegex(document["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(document["database"]["status"], "connected")
        self.assertIsInstance(document["uptime_seconds"], (int, float))
        for key in ("total", "idle", "active", "waiting"):
            self.assertIsInstance(document["database"]["pool"][key], int)

    def test_landing_page_links_the_endpoints(self):
        response = harness.request(self.exporter.url("/"))
        self.assertEqual(response.status, 200)
        self.assertTrue(response.header("Content-Type").startswith("text/html"))
        for link in ('href="/metrics"', 'href="/health"', "/mcp"):
            self.assertIn(link, response.text())

    def test_unknown_paths_404_and_wrong_methods_405(self):
        for path in ("/nope", "/metrics/", "/Health", "/a/../metrics", "/%2e%2e/metrics", "//metrics"):
            self.assertEqual(harness.request(self.exporter.url(path)).status, 404, path)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = harness.request(self.exporter.url("/metrics"), method=method, body=b"")
            self.assertEqual(response.status, 405, method)
            self.assertEqual(response.header("Allow"), "GET, HEAD, OPTIONS")
        response = harness.request(self.exporter.url("/mcp"))
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header("Allow"), "POST")
        self.assertEqual(harness.request(self.exporter.url("/health?verbose=1")).status, 200)

    def test_head_has_no_body(self):
        response = harness.request(self.exporter.url("/health"), method="HEAD")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"")

    def test_keep_alive_reuses_the_connection(self):
        statuses, reused = harness.keep_alive_pair(self.exporter.port, "/health")
        self.assertEqual(statuses, [200, 200])
        self.assertTrue(reused)

    def test_mcp_serves_the_health_resource(self):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                           "params": {"uri": "health://connection-pool"}}).encode()
        response = harness.request(self.exporter.url("/mcp"), method="POST", body=body, headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        self.assertEqual(response.status, 200)
        content = json.loads(response.body)["result"]["contents"][0]
        self.assertEqual(set(json.loads(content["text"])), {"status", "timestamp", "database", "leaks", "uptime_seconds"})

    def test_malformed_requests_get_the_right_status_and_serving_continues(self):
        port = self.exporter.port
        cases = [
            (b"garbage\r\n\r\n", {400}),
            (bytes(range(256)) + b"\r\n\r\n", {400}),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n", {400, 413, 431}),
            (b"GET /health HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(500)) + b"\r\n",
             {200, 400, 431}),
            (b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405, 501}),
            (b"GET /metrics HTTP/7.0\r\nHost: x\r\n\r\n", {505}),
            (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"{" * 1000, {413}),
            (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", {400, 411}),
            (b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {400}),
            (b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {405}),
            (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {400, 404}),
            (b"GET /metrics%00.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {400}),
            (b"GET /health%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {400}),
        ]
        for data, allowed in cases:
            raw = harness.raw_exchange(port, data)
            self.assertIn(harness.status_of(raw), allowed, f"{data[:40]!r} -> {raw[:80]!r}")
            self.assertEqual(harness.request(self.exporter.url("/health")).status, 200,
                             f"not serving after {data[:40]!r}")
        # A client that connects and leaves, or sends half a request, changes nothing.
        for data in (b"", b"GET /heal"):
            harness.raw_exchange(port, data, timeout=1)
        chunked = (b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"100000\r\n" + b"x" * 0x100000 + b"\r\n" + b"100000\r\n" + b"x" * 0x100000
                   + b"\r\n0\r\n\r\n")
        self.assertEqual(harness.status_of(harness.raw_exchange(port, chunked)), 413)
        self.assertEqual(harness.request(self.exporter.url("/health")).status, 200)

    def test_the_password_appears_in_no_response_and_no_log(self):
        password = harness.test_database_password()
        self.assertTrue(password, "POOLSCOPE_TEST_DB_PASSWORD is not set")
        bodies = [harness.request(self.exporter.url(path)).body for path in ("/", "/metrics", "/health")]
        for uri in ("health://connection-pool", "stats://connection-pool"):
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                               "params": {"uri": uri}}).encode()
            bodies.append(harness.request(self.exporter.url("/mcp"), method="POST", body=body, headers={
                "Content-Type": "application/json", "Accept": "application/json"}).body)
        for body in bodies:
            self.assertNotIn(password.encode(), body)
        self.assertNotIn(password.encode(), self.exporter.output())


class IdleExporterTest(unittest.TestCase):
    def test_health_latency_comes_from_the_background_validation(self):
        # Validation picks an idle connection; without load there always is one.
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    env={"POOL_HEALTH_CHECK_INTERVAL": "100ms"})
        with exporter:
            def latency():
                document = json.loads(harness.request(exporter.url("/health")).body)
                value = document["database"]["latency_ms"]
                return value is not None and value >= 0
            harness.poll(latency, 60, what="latency_ms from the background validation")
            self.assertEqual(exporter.stop(), 0)


    def test_a_password_given_as_flag_is_hidden_from_ps(self):
        url = harness.test_database_url()
        password = harness.test_database_password()
        exporter = harness.Exporter(EXPORTER, "postgresql://ignored@127.0.0.1:1/x",
                                    args=[f"--database.url={url}"])
        with exporter:
            with open(f"/proc/{exporter.process.pid}/cmdline", "rb") as cmdline:
                arguments = cmdline.read()
            self.assertIn(b"--database.url=", arguments)
            self.assertNotIn(password.encode(), arguments)
            harness.poll(lambda: harness.request(exporter.url("/health")).status == 200,
                         harness.START_TIMEOUT_S, what="the flag's database to be used")
            self.assertEqual(exporter.stop(), 0)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_turns_health_503_then_exits_0(self):
        # Workers hold connections for 2 s, so the graceful shutdown takes a
        # while and /health can be seen answering 503 in the meantime.
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    args=["--workload.workers=2", "--workload.hold=2s"])
        with exporter:
            harness.poll(lambda: harness.request(exporter.url("/health")).status == 200,
                         harness.START_TIMEOUT_S, what="/health 200")
            harness.poll(lambda: json.loads(harness.request(exporter.url("/health")).body)
                         ["database"]["pool"]["active"] > 0, 30, what="active connections")
            exporter.process.send_signal(signal.SIGTERM)
            statuses = []
            def seen_503():
                try:
                    statuses.append(harness.request(exporter.url("/health"), timeout=5).status)
                except OSError:
                    return True  # already gone: checked below through the log
                return statuses[-1] == 503
            harness.poll(seen_503, harness.STOP_TIMEOUT_S, what="/health 503 after SIGTERM")
            self.assertEqual(exporter.wait_exit(), 0)
            self.assertIn(503, statuses, "never saw /health answer 503 during shutdown")
            log = exporter.output().decode(errors="replace")
            self.assertIn("Shutting down", log)
            self.assertIn("Exporter stopped", log)

    def test_a_second_sigint_ends_the_process_at_once(self):
        # Queries of 30 s would hold the graceful shutdown; an impatient
        # second Ctrl-C must not wait for them.
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    args=["--workload.workers=2", "--workload.hold=30s"])
        with exporter:
            harness.poll(lambda: json.loads(harness.request(exporter.url("/health")).body)
                         ["database"]["pool"]["active"] > 0, 30, what="active connections")
            exporter.process.send_signal(signal.SIGTERM)
            harness.poll(lambda: b"Shutting down" in exporter.output(), harness.STOP_TIMEOUT_S,
                         what="the graceful shutdown to start")
            self.assertEqual(exporter.stop(signal.SIGINT), 128 + signal.SIGINT)
            self.assertIn(b"Second signal", exporter.output())

    def test_sigint_exits_0(self):
        exporter = harness.Exporter(EXPORTER, harness.test_database_url())
        with exporter:
            self.assertEqual(exporter.stop(signal.SIGINT), 0)


if __name__ == "__main__":
    harness.run(globals())
