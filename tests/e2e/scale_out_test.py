#!/usr/bin/python3
"""Many services, one Prometheus: scale-out.

Three exporters, each with its own pool name and its own PostgreSQL cluster,
scraped by one Prometheus with the shipped rules (shorter for: durations):

  - every dashboard query, with instance set to one target, returns series of
    that target only; with "All" (".+") it returns series of all three; the
    recording rules keep one series per instance and pool;
  - stopping the database behind one instance fires ConnectionPoolNoConnections
    for that instance alone, with the target's job, instance and pool labels,
    while the other two stay silent; PagerDuty's page names only that pool;
    the alert resolves once the database is back;
  - no password of the three databases appears in any scraped series.

  scale_out_test.py --exporter PATH --pgctl PATH [--source-dir DIR]
"""

import os
import unittest

import e2e_support as e2e
from e2e_support import harness, stack

POOLS = ("orders", "billing", "search")
SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "8s"
TEST_FOR_S = 2
TIMEOUT_S = 120
ALERT = "ConnectionPoolNoConnections"


class ScaleOutTest(unittest.TestCase):
    def test_queries_and_alerts_per_instance_and_across(self):
        workdir = e2e.make_workdir(self, "poolscope-e2e-scale.")
        clusters = [e2e.make_cluster(self, workdir, f"pg-{pool}") for pool in POOLS]
        exporters = [
            stack.ExporterSpec(cluster.database_url, pool_name=pool, workload_workers=1,
                               args=["--pool.reconnect-backoff=500ms", "--pool.health-check-interval=500ms"])
            for pool, cluster in zip(POOLS, clusters)]

        with stack.Stack(e2e.OPTIONS.exporter, exporters, rules=e2e.source_path("rules", "codebase-mcp-pool.yml"),
                         rules_for_seconds=stack.fixed_for(TEST_FOR_S),
                         alertmanager_config=e2e.source_path("rules", "alertmanager.yml"),
                         alertmanager_timing={"group_wait": "1s", "group_interval": "1s"},
                         scrape_interval=SCRAPE_INTERVAL, alert_resend_delay="1s",
                         workdir=os.path.join(workdir, "stack")) as running, \
                e2e.report_failure(running):
            prometheus = running.prometheus
            targets = [e.target for e in running.exporters]
            running.wait_until_scraped()

            # Across: "All" shows every instance in every panel.
            def every_query_covers(instance_regex, expected):
                for query in e2e.panel_queries(RATE_INTERVAL, instance=instance_regex):
                    result = prometheus.query(query["expr"])
                    if e2e.instances_of(result) != expected:
                        return None
                return True
            harness.poll(lambda: every_query_covers(".+", set(targets)), TIMEOUT_S, interval_s=0.5,
                         what="every panel query to show all three instances")

            # Per instance: the same queries show that instance only (and its pool).
            for pool, target in zip(POOLS, targets):
                harness.poll(lambda: every_query_covers(e2e.regex_escape(target), {target}), TIMEOUT_S,
                             interval_s=0.5, what=f"every panel query to show only {target}")
                for query in e2e.panel_queries(RATE_INTERVAL, instance=e2e.regex_escape(target)):
                    result = prometheus.query(query["expr"])
                    self.assertEqual({s["metric"].get("pool") for s in result}, {pool}, e2e.describe_query(query))

            # The recording rules keep one series per scraped pool.
            for record in (r["record"] for r in e2e.load_rules(e2e.source_path("rules", "codebase-mcp-pool.yml"))
                           if "record" in r):
                result = harness.poll(lambda: (lambda r: r if e2e.instances_of(r) == set(targets) else None)(
                    prometheus.query(record)), TIMEOUT_S, interval_s=0.5, what=f"{record} for every instance")
                self.assertEqual(sorted((s["metric"]["instance"], s["metric"]["pool"]) for s in result),
                                 sorted(zip(targets, POOLS)), record)

            # One database goes away: only its instance alerts.
            victim = 1
            victim_labels = {"job": stack.SCRAPE_JOB, "instance": targets[victim], "pool": POOLS[victim]}

            def labels_of(alerts, state=None):
                return [{k: a["labels"].get(k) for k in ("job", "instance", "pool")}
                        for a in alerts if a["labels"]["alertname"] == ALERT and (state is None or a["state"] == state)]

            clusters[victim].stop("immediate")
            try:
                firing = harness.poll(lambda: labels_of(prometheus.alerts(), "firing"), TIMEOUT_S, interval_s=0.5,
                                      what=f"{ALERT} to fire")
                self.assertEqual(firing, [victim_labels])
                alert = [a for a in prometheus.alerts() if a["labels"]["alertname"] == ALERT][0]
                self.assertEqual(alert["labels"]["severity"], "critical")
                self.assertEqual(alert["labels"]["component"], "connection_pool")
                self.assertIn(f"Pool {POOLS[victim]} on {targets[victim]}", alert["annotations"]["description"])

                page = running.receiver.wait_for(
                    lambda records: [r for r in records if r["kind"] == "pagerduty"
                                     and r["body"]["payload"]["summary"].startswith(ALERT + ":")],
                    TIMEOUT_S, f"{ALERT} on PagerDuty")[0]
                details = page["body"]["payload"]["custom_details"]
                self.assertEqual(details["num_firing"], "1")
                self.assertIn(f"Pool {POOLS[victim]} on {targets[victim]}", details["firing"])
                # Still only the victim, pending or firing, after the page went out.
                self.assertEqual(labels_of(prometheus.alerts()), [victim_labels])
                self.assertEqual(labels_of(running.alertmanager.alerts()), [victim_labels])
            finally:
                clusters[victim].start()
            harness.poll(lambda: not labels_of(prometheus.alerts()), TIMEOUT_S, interval_s=0.5,
                         what=f"{ALERT} to resolve once the database is back")

            for cluster in clusters:
                e2e.assert_secret_absent(self, cluster.password, {
                    "notification payloads": running.receiver.notifications(),
                    **e2e.prometheus_documents(prometheus),
                })


if __name__ == "__main__":
    e2e.main()
