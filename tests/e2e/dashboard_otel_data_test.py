#!/usr/bin/python3
"""The OpenTelemetry dashboard variant against an exporter run with
--metrics.naming=otel: every panel query outside the collapsed row "Needs
--metrics.naming=both" returns data, and every query inside it returns none
(the metrics it needs are not published with otel, which is what its title
says; nothing there is a silent gap).

One exporter under steady synthetic load on a throwaway PostgreSQL, scraped by
a real Prometheus. A brief database outage makes the pool open new
connections, so the connection-open-time quantiles have observations in the
window. Each query must show a finite value at least once within the bound;
the template variables must list the job, the instance and the pool.

  dashboard_otel_data_test.py --exporter PATH --pgctl PATH [--source-dir DIR]
"""

import json
import os
import unittest
import urllib.error
import urllib.request

import e2e_support as e2e
from dashboard_data_test import PHASE_TIMEOUT_S, POLL_INTERVAL_S, QueryWatch, RATE_INTERVAL, SCRAPE_INTERVAL
from e2e_support import stack
import loopback  # noqa: E402  (scripts/lib, on the path through e2e_support)

NEEDS_BOTH = "--metrics.naming=both"


def database_status(exporter: stack.StackExporter) -> str:
    """database.status of the exporter's /health document (503 when unhealthy
    still carries it)."""
    try:
        with urllib.request.urlopen(exporter.url("/health"), timeout=5) as response:
            document = json.load(response)
    except urllib.error.HTTPError as error:
        document = json.load(error)
    return document.get("database", {}).get("status", "")


def needs_both_panel_ids(dashboard: dict) -> set:
    """Ids of the panels folded into the collapsed "needs both" row."""
    return {panel.get("id") for row in dashboard.get("panels", [])
            if row.get("type") == "row" and row.get("collapsed") and NEEDS_BOTH in row.get("title", "")
            for panel in row.get("panels") or []}


class DashboardOtelDataTest(unittest.TestCase):
    def test_otel_panels_return_data_and_marked_panels_none(self):
        workdir = e2e.make_workdir(self, "poolscope-e2e-dashboard-otel.")
        cluster = e2e.make_cluster(self, workdir, "pg")
        exporters = [stack.ExporterSpec(cluster.database_url, pool_name="app", workload_workers=2,
                                        args=["--metrics.naming=otel", "--pool.reconnect-backoff=500ms",
                                              "--pool.health-check-interval=500ms"])]
        marked = needs_both_panel_ids(e2e.load_dashboard(e2e.OTEL_DASHBOARD))
        self.assertTrue(marked, "the variant has a collapsed 'needs --metrics.naming=both' row")
        queries = e2e.panel_queries(RATE_INTERVAL, e2e.OTEL_DASHBOARD)
        shown = [q for q in queries if q["panelId"] not in marked]
        hidden = [q for q in queries if q["panelId"] in marked]
        self.assertGreaterEqual(len(shown), 6)

        with stack.Stack(e2e.OPTIONS.exporter, exporters, rules=None,
                         scrape_interval=SCRAPE_INTERVAL, workdir=os.path.join(workdir, "stack")) as running, \
                e2e.report_failure(running):
            running.wait_until_scraped()
            watch = QueryWatch(running.prometheus, shown)
            watch.wait(lambda: watch.satisfied_for(("db_client_connection_wait_time_seconds_bucket",
                                                    "db_client_connection_use_time_seconds_bucket")),
                       PHASE_TIMEOUT_S, "the load to show in the latency panels")
            # The outage shows in no OpenTelemetry metric; /health says when the
            # pool has noticed it.
            cluster.stop("immediate")
            try:
                loopback.poll(lambda: database_status(running.exporters[0]) != "connected", PHASE_TIMEOUT_S,
                              interval_s=POLL_INTERVAL_S, what="the pool to notice the outage")
            finally:
                cluster.start()
            watch.wait(watch.all_satisfied, PHASE_TIMEOUT_S, "every OpenTelemetry panel query to show data")

            # The guide names really are absent: the marked panels are empty.
            for query in hidden:
                self.assertEqual(running.prometheus.query(query["expr"]), [], e2e.describe_query(query))

            variable_results = {v["variable"]: running.prometheus.query(v["expr"])
                                for v in e2e.variable_queries(e2e.OTEL_DASHBOARD)}
            self.assertEqual({s["metric"]["job"] for s in variable_results["job"]}, {stack.SCRAPE_JOB})
            self.assertEqual({s["metric"]["instance"] for s in variable_results["instance"]},
                             {e.target for e in running.exporters})
            self.assertEqual({s["metric"]["db_client_connection_pool_name"] for s in variable_results["pool"]},
                             {"app"})


if __name__ == "__main__":
    e2e.main()
