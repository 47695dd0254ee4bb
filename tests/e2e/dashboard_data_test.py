#!/usr/bin/python3
"""Every query of grafana/connection-pool-dashboard.json returns data from a
real Prometheus scraping real exporters.

Two exporters on one throwaway PostgreSQL: "app" under steady synthetic load,
and "leaky", whose only worker holds each connection past the pool's
leak-detection timeout. After a brief database outage (errors, reconnects,
broken connections replaced by new ones) every panel query, sent to
/api/v1/query with the dashboard's "All" choices, must have returned

  - a non-empty result with a finite value (histogram quantiles are NaN
    without observations in the window, so this needs real traffic), and
  - for the panels that count events (acquisitions, errors, churn, leaks,
    reconnects) a value above zero: they show the event, not a flat zero.

The template variables' queries must list the job, the instances and pools.
Queries are polled during the test; each must meet its condition at least
once within the bound. Nothing is exempt.

  dashboard_data_test.py --exporter PATH --pgctl PATH [--source-dir DIR]
"""

import os
import time
import unittest

import e2e_support as e2e
from e2e_support import stack

SCRAPE_INTERVAL = "1s"
# Grafana's $__rate_interval is at least four scrape intervals; a little
# more keeps rates defined when a scrape is late on a busy machine.
RATE_INTERVAL = "8s"
PHASE_TIMEOUT_S = 90
POLL_INTERVAL_S = 0.5

# Panels whose metric counts events: they must show one (a value > 0), which
# the load, the leaky pool and the outage produce.
EVENT_METRICS = (
    "codebase_mcp_pool_acquisitions_total",
    "codebase_mcp_pool_releases_total",
    "codebase_mcp_pool_errors_total",
    "codebase_mcp_pool_connections_created_total",
    "codebase_mcp_pool_connections_closed_total",
    "codebase_mcp_pool_leaks_detected_total",
    "codebase_mcp_pool_connections_leaked",
    "codebase_mcp_pool_reconnect_attempts_total",
)
OUTAGE_METRICS = ("codebase_mcp_pool_errors_total", "codebase_mcp_pool_reconnect_attempts_total")


def needs_event(expr: str) -> bool:
    return any(metric + "{" in expr or metric + "[" in expr for metric in EVENT_METRICS)


class QueryWatch:
    """Runs the panel queries again and again, remembering which have shown
    what they must show (and each one's last result, for the failure message)."""

    def __init__(self, prometheus: stack.Prometheus, queries):
        self.prometheus = prometheus
        self.queries = queries
        self.satisfied = [False] * len(queries)
        self.last = [None] * len(queries)

    def condition(self, index: int) -> bool:
        query, result = self.queries[index], self.last[index]
        if not result or not e2e.has_finite_value(result):
            return False
        return e2e.has_positive_value(result) if needs_event(query["expr"]) else True

    def poll_once(self) -> None:
        for index, query in enumerate(self.queries):
            # Invalid PromQL raises here: the dashboard test's business, but
            # it must not pass as "no data" either.
            self.last[index] = self.prometheus.query(query["expr"])
            if not self.satisfied[index] and self.condition(index):
                self.satisfied[index] = True

    def wait(self, done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll_once()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; not yet shown:\n" + self.missing())
            time.sleep(POLL_INTERVAL_S)

    def satisfied_for(self, metrics) -> bool:
        return all(ok for ok, q in zip(self.satisfied, self.queries) if any(m in q["expr"] for m in metrics))

    def all_satisfied(self) -> bool:
        return all(self.satisfied)

    def missing(self) -> str:
        return "\n".join(
            f"  {e2e.describe_query(q)}\n    needs {'a value > 0' if needs_event(q['expr']) else 'a finite value'}; "
            f"last result: {self.last[i]}"
            for i, q in enumerate(self.queries) if not self.satisfied[i])


class DashboardDataTest(unittest.TestCase):
    def test_every_panel_query_returns_data(self):
        workdir = e2e.make_workdir(self, "poolscope-e2e-dashboard.")
        cluster = e2e.make_cluster(self, workdir, "pg")
        quick_recovery = ["--pool.reconnect-backoff=500ms", "--pool.health-check-interval=500ms"]
        exporters = [
            stack.ExporterSpec(cluster.database_url, pool_name="app", workload_workers=2, args=quick_recovery),
            # One worker that holds its connection 3 s against a 1 s leak
            # timeout: a leak is detected (and returned) every 6 s.
            stack.ExporterSpec(cluster.database_url, pool_name="leaky", workload_workers=1,
                               args=[*quick_recovery, "--workload.hold=3s", "--pool.leak-detection-timeout=1s"]),
        ]
        queries = e2e.panel_queries(RATE_INTERVAL)
        self.assertGreaterEqual(len(queries), 6, "the dashboard has at least its six core panels")
        self.assertTrue(any(needs_event(q["expr"]) for q in queries))

        with stack.Stack(e2e.OPTIONS.exporter, exporters, rules=e2e.source_path("rules", "codebase-mcp-pool.yml"),
                         alertmanager_config=e2e.source_path("rules", "alertmanager.yml"),
                         scrape_interval=SCRAPE_INTERVAL, workdir=os.path.join(workdir, "stack")) as running, \
                e2e.report_failure(running):
            running.wait_until_scraped()
            watch = QueryWatch(running.prometheus, queries)
            # Steady traffic first: rates and latency quantiles over the window.
            watch.wait(lambda: watch.satisfied_for(("acquisition_duration_seconds_bucket",
                                                    "codebase_mcp_pool_acquisitions_total")),
                       PHASE_TIMEOUT_S, "the load to show in the latency and throughput panels")

            # An outage: connection errors and reconnect attempts while the
            # database is down, broken connections closed and new ones opened
            # once it is back.
            cluster.stop("immediate")
            try:
                watch.wait(lambda: watch.satisfied_for(OUTAGE_METRICS), PHASE_TIMEOUT_S,
                           "the outage to show in the errors and reconnect panels")
            finally:
                cluster.start()
            watch.wait(watch.all_satisfied, PHASE_TIMEOUT_S, "every panel query to show data")

            # The variables' own queries (label_values) list what the stack runs.
            variable_results = {v["variable"]: running.prometheus.query(v["expr"]) for v in e2e.variable_queries()}
            self.assertEqual({s["metric"]["job"] for s in variable_results["job"]}, {stack.SCRAPE_JOB})
            self.assertEqual({s["metric"]["instance"] for s in variable_results["instance"]},
                             {e.target for e in running.exporters})
            self.assertEqual({s["metric"]["pool"] for s in variable_results["pool"]}, {"app", "leaky"})

            e2e.assert_secret_absent(self, cluster.password, e2e.prometheus_documents(running.prometheus))


if __name__ == "__main__":
    e2e.main()
