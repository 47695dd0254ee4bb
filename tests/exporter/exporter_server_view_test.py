#!/usr/bin/env python3
"""The real exporter against the suite's PostgreSQL: the server view's metrics
on /metrics, the start-up warning about a pool larger than the server's
available slots, and the OpenTelemetry names (--metrics.naming).

  exporter_server_view_test.py --exporter PATH

Exits 77 (skipped) when POOLSCOPE_TEST_DATABASE_URL is unset.
"""

import re
import unittest

import harness

EXPORTER = None
PREFIX = "codebase_mcp_pool_"
OVERCOMMIT = b"max_size alone exceeds the database server's available connection slots"


def series(samples, name, **labels):
    """Values of `name` whose labels include every given label."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return [value for found, value in samples.get(name, []) if all(w in found for w in wanted)]


class ServerViewTest(unittest.TestCase):
    def test_server_view_and_both_namings_on_one_scrape(self):
        exporter = harness.Exporter(
            EXPORTER, harness.test_database_url(),
            args=["--metrics.naming=both", "--server-view.interval=1s"],
            env={"POOL_MIN_SIZE": "2", "POOL_MAX_SIZE": "4", "POOL_NAME": "viewed",
                 "POOL_APPLICATION_NAME": "e2e_server_view"})
        with exporter:
            # The pool opens min_size connections; the view sees them idle.
            def idle_sessions_seen():
                _, samples = harness.parse_metrics(harness.scrape(exporter))
                idle = series(samples, PREFIX + "server_sessions", pool="viewed", state="idle")
                return samples if idle == [2.0] else None
            samples = harness.poll(idle_sessions_seen, harness.START_TIMEOUT_S,
                                   what="2 idle sessions in server_sessions")
            [labels] = [found for found, _ in samples[PREFIX + "server_sessions"]
                        if 'state="active"' in found]
            server = re.search(r'server="([^"]+)"', labels).group(1)
            self.assertRegex(server, r"^127\.0\.0\.1:\d+/poolscope$")
            self.assertEqual(series(samples, PREFIX + "server_pool_max_connections", pool="viewed"), [4.0])
            [available] = series(samples, PREFIX + "server_available_connections", pool="viewed")
            [max_connections] = series(samples, PREFIX + "server_max_connections", pool="viewed")
            [reserved] = series(samples, PREFIX + "server_reserved_connections", pool="viewed")
            self.assertEqual(available, max_connections - reserved)
            self.assertGreater(available, 4)
            self.assertEqual(series(samples, PREFIX + "server_view_up", pool="viewed"), [1.0])
            self.assertEqual(series(samples, PREFIX + "server_view_errors_total", pool="viewed"), [0.0])
            # Both namings, from one snapshot.
            self.assertEqual(series(samples, PREFIX + "connections_idle", pool="viewed"), [2.0])
            self.assertEqual(series(samples, "db_client_connection_count",
                                    db_client_connection_pool_name="viewed",
                                    db_client_connection_state="idle"), [2.0])
            self.assertEqual(series(samples, "db_client_connection_max",
                                    db_client_connection_pool_name="viewed"), [4.0])
            self.assertNotIn(OVERCOMMIT, exporter.output())
            # promtool's linter reserves _count for histograms and summaries;
            # OpenTelemetry's db.client.connection.count keeps its name, and
            # that is the only complaint.
            code, output = harness.promtool_check_metrics(harness.scrape(exporter))
            self.assertEqual(output.splitlines(), [
                'db_client_connection_count non-histogram and non-summary metrics should not '
                'have "_count" suffix'])

    def test_otel_naming_publishes_no_guide_pool_metrics(self):
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(),
                                    args=["--server-view.interval=0"], env={"METRICS_NAMING": "otel"})
        with exporter:
            types, samples = harness.parse_metrics(harness.scrape(exporter))
            self.assertEqual(types.get("db_client_connection_count"), "gauge")
            self.assertEqual(types.get("db_client_connection_timeouts_total"), "counter")
            for histogram in ("create_time", "wait_time", "use_time"):
                self.assertEqual(types.get(f"db_client_connection_{histogram}_seconds"), "histogram")
            self.assertEqual([name for name in types if name.startswith(PREFIX)], [],
                             "otel naming and a disabled server view leave no guide name")

    def test_warns_at_start_when_the_pool_alone_exceeds_the_servers_slots(self):
        exporter = harness.Exporter(
            EXPORTER, harness.test_database_url(),
            env={"POOL_MIN_SIZE": "1", "POOL_MAX_SIZE": "5000",
                 "POOL_APPLICATION_NAME": "e2e_overcommit"})
        with exporter:
            harness.poll(lambda: OVERCOMMIT in exporter.output(), harness.START_TIMEOUT_S,
                         what="the overcommit warning")
            line = next(line for line in exporter.output().splitlines() if OVERCOMMIT in line)
            self.assertIn(b'"level":"WARNING"', line.replace(b" ", b""))
            self.assertIn(b'"pool_max_size":5000', line.replace(b" ", b""))
            self.assertEqual(exporter.stop(), 0)


if __name__ == "__main__":
    harness.run(globals())
