#!/usr/bin/python3
"""Alerts travel the whole way: exporter → Prometheus (the shipped rules, with
shorter for: durations) → Alertmanager (the shipped routing) → PagerDuty and
Slack, both stood in for by a local receiver.

  - A pool that holds a connection past its leak-detection timeout raises the
    warning ConnectionPoolLeak, which reaches Slack (#ops-warnings) through
    api_url_file.
  - Stopping PostgreSQL empties the pool: ConnectionPoolNoConnections reaches
    PagerDuty as an Events v2 "trigger" with the key from routing_key_file,
    severity critical and the rule's summary; starting it again sends the
    matching "resolve". No critical alert ever reaches Slack, no warning
    PagerDuty.
  - The database password is in none of the payloads nor in anything
    Prometheus scraped.
  - The shipped rules file, unmodified, loads into Prometheus and every rule
    evaluates without error against a live exporter.

  alert_delivery_test.py --exporter PATH --pgctl PATH [--source-dir DIR]
"""

import os
import re
import unittest

import e2e_support as e2e
from e2e_support import harness, stack

# Long enough for every alert of the test copy to pass its for: a few
# evaluations after the condition holds, short enough to keep the test quick.
TEST_FOR_S = 2
# How long a delivery may take: scrape + evaluation + for: + group_wait, on a
# busy machine.
DELIVERY_TIMEOUT_S = 120
# The leaky pool's synthetic worker holds each connection this long, far past
# its leak-detection timeout, so connections_leaked stays above 0 for longer
# than the Leak alert's for:.
LEAK_HOLD = "10s"
LEAK_TIMEOUT = "1s"


def alertname_of_slack(notification: dict) -> str:
    """The alert name in a Slack message title "[FIRING:1] ConnectionPoolLeak"."""
    title = notification["body"]["attachments"][0]["title"]
    return title.rsplit("] ", 1)[-1]


class AlertDeliveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = e2e.make_workdir(cls, "poolscope-e2e-alerts.")
        cls.cluster = e2e.make_cluster(cls, cls.workdir, "pg")
        cls.rules_file = e2e.source_path("rules", "codebase-mcp-pool.yml")
        cls.severities = e2e.alert_severities(cls.rules_file)
        cls.critical = {name for name, severity in cls.severities.items() if severity == "critical"}
        cls.warning = {name for name, severity in cls.severities.items() if severity == "warning"}

    def tearDown(self):
        # Whatever happened, the next test finds the database up.
        if not os.path.exists(os.path.join(self.cluster.directory, "data", "postmaster.pid")):
            self.cluster.start()

    def test_outage_pages_pagerduty_and_a_leak_warns_on_slack(self):
        quick_recovery = ["--pool.reconnect-backoff=500ms", "--pool.health-check-interval=500ms"]
        exporters = [
            stack.ExporterSpec(self.cluster.database_url, pool_name="app", workload_workers=2,
                               args=quick_recovery),
            stack.ExporterSpec(self.cluster.database_url, pool_name="leaky", workload_workers=1,
                               args=[*quick_recovery, f"--workload.hold={LEAK_HOLD}",
                                     f"--pool.leak-detection-timeout={LEAK_TIMEOUT}"]),
        ]
        with stack.Stack(e2e.OPTIONS.exporter, exporters, rules=self.rules_file,
                         rules_for_seconds=stack.fixed_for(TEST_FOR_S),
                         alertmanager_config=e2e.source_path("rules", "alertmanager.yml"),
                         alertmanager_timing={"group_wait": "1s", "group_interval": "1s"},
                         scrape_interval="1s", alert_resend_delay="1s",
                         workdir=os.path.join(self.workdir, "stack")) as running, \
                e2e.report_failure(running):
            app, leaky = running.exporters
            running.wait_until_scraped()
            receiver = running.receiver

            # 1. A warning goes to Slack, through the api_url_file secret.
            slack = receiver.wait_for(
                lambda records: [r for r in records if r["kind"] == "slack"
                                 and alertname_of_slack(r) == "ConnectionPoolLeak"],
                DELIVERY_TIMEOUT_S, "ConnectionPoolLeak on Slack")[0]
            self.assertEqual(slack["receiver"], "slack-warnings")
            self.assertEqual(slack["body"]["channel"], "#ops-warnings")
            attachment = slack["body"]["attachments"][0]
            self.assertRegex(attachment["title"], r"^\[FIRING:\d+\] ConnectionPoolLeak$")
            self.assertIn(f"*{leaky.target} / leaky*", attachment["text"])
            self.assertTrue(attachment["title_link"].endswith("/docs/runbooks/ConnectionPoolLeak.md"))
            self.assert_runbook_exists(attachment["title_link"])

            # 2. The database goes away: the pool empties and PagerDuty is paged.
            self.cluster.stop("immediate")
            # Both pools use this database; wait for the page that lists "app"
            # (the other pool's alert may have been paged a moment earlier).
            trigger = receiver.wait_for(
                lambda records: [r for r in records if r["kind"] == "pagerduty"
                                 and r["body"]["event_action"] == "trigger"
                                 and r["body"]["payload"]["summary"].startswith("ConnectionPoolNoConnections:")
                                 and f"Pool app on {app.target} " in
                                 r["body"]["payload"]["custom_details"]["firing"]],
                DELIVERY_TIMEOUT_S, "ConnectionPoolNoConnections of pool app on PagerDuty")[0]
            self.assertEqual(trigger["receiver"], "pagerduty-critical")
            event = trigger["body"]
            self.assertEqual(event["routing_key"], running.routing_key,
                             "the key must come from routing_key_file")
            self.assertEqual(event["payload"]["severity"], "critical",
                             "Alertmanager sends PagerDuty severity 'error' unless the pagerduty_config "
                             "sets severity (e.g. '{{ .CommonLabels.severity }}')")
            self.assertEqual(event["payload"]["summary"],
                             "ConnectionPoolNoConnections: Connection pool has no available connections")
            self.assertTrue(event["dedup_key"])
            details = event["payload"]["custom_details"]
            self.assertIn(f"Pool app on {app.target} has had zero open connections", details["firing"])
            self.assertTrue(details["runbook_url"].endswith("/docs/runbooks/ConnectionPoolNoConnections.md"))
            self.assert_runbook_exists(details["runbook_url"])

            # Prometheus's view of the same alert keeps the target's labels.
            firing = [a for a in running.prometheus.alerts()
                      if a["labels"]["alertname"] == "ConnectionPoolNoConnections" and a["state"] == "firing"]
            self.assertIn({"job": "poolscope", "instance": app.target, "pool": "app"},
                          [{k: a["labels"][k] for k in ("job", "instance", "pool")} for a in firing])

            # 3. The database is back: the same incident is resolved.
            self.cluster.start()
            receiver.wait_for(
                lambda records: [r for r in records if r["kind"] == "pagerduty"
                                 and r["body"]["event_action"] == "resolve"
                                 and r["body"]["dedup_key"] == event["dedup_key"]],
                DELIVERY_TIMEOUT_S, "the resolve of ConnectionPoolNoConnections on PagerDuty")

            # 4. Each severity went only where the routing sends it.
            notifications = receiver.notifications()
            self.assertEqual({r["kind"] for r in notifications} - {"pagerduty", "slack"}, set(),
                             "only PagerDuty and Slack are configured")
            on_slack = {alertname_of_slack(r) for r in notifications if r["kind"] == "slack"}
            self.assertEqual(on_slack & self.critical, set(), "critical alerts reached Slack")
            self.assertLessEqual(on_slack, self.warning)
            for record in notifications:
                if record["kind"] == "pagerduty":
                    alertname = record["body"]["payload"]["summary"].split(":", 1)[0]
                    self.assertIn(alertname, self.critical, "a non-critical alert reached PagerDuty")
                    self.assertEqual(record["body"]["payload"]["severity"], "critical")
                    self.assertEqual(record["body"]["routing_key"], running.routing_key)

            # 5. The password is nowhere along the way.
            e2e.assert_secret_absent(self, self.cluster.password, {
                "notification payloads": notifications,
                "Alertmanager alerts": running.alertmanager.alerts(),
                **e2e.prometheus_documents(running.prometheus),
            })

    def test_shipped_rules_load_and_evaluate_unmodified(self):
        with open(self.rules_file, "rb") as f:
            shipped_before = f.read()
        workdir = os.path.join(self.workdir, "shipped-rules")
        exporter = stack.StackExporter(e2e.OPTIONS.exporter, stack.ExporterSpec(self.cluster.database_url),
                                       os.path.join(workdir, "exporter"))
        prometheus = None
        try:
            exporter.wait_listening()
            prometheus = stack.Prometheus(os.path.join(workdir, "prometheus"), [exporter.target],
                                          [self.rules_file], scrape_interval="1s").start()
            groups = prometheus.rules()
            for group in groups:
                self.assertEqual(group["file"], self.rules_file, "Prometheus must load the shipped file itself")
            alerts = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
            self.assertEqual(set(alerts), set(self.severities), "every alert of the file is loaded")
            self.assertEqual(len(alerts), 9)  # the guide's eight and ConnectionPoolServerOvercommit
            for name, rule in alerts.items():
                self.assertEqual(rule["labels"]["severity"], self.severities[name])
                self.assertEqual(rule["labels"]["component"], "connection_pool")
                self.assertEqual(set(rule["annotations"]), {"summary", "description", "runbook_url"})
            recording = [r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"]
            self.assertTrue(recording, "the recording rules are loaded too")

            # The groups run every 30 s as shipped; wait for one round of each,
            # with the exporter's series present, and require no error.
            def evaluated_with_data():
                current = prometheus.rules()
                done = all(not g["lastEvaluation"].startswith("0001-") for g in current)
                return current if done and prometheus.query("codebase_mcp_pool:headroom:ratio") else None
            evaluated = harness.poll(evaluated_with_data, 120, interval_s=0.5,
                                     what="one evaluation of every shipped rule group")
            for group in evaluated:
                for rule in group["rules"]:
                    self.assertEqual((rule["name"], rule["health"], rule.get("lastError", "")),
                                     (rule["name"], "ok", ""))
        finally:
            if prometheus:
                prometheus.stop()
            stack.stop_processes([exporter.process])
            exporter.close()
        with open(self.rules_file, "rb") as f:
            self.assertEqual(f.read(), shipped_before, "the shipped rules file must not change")

    def assert_runbook_exists(self, url: str):
        match = re.search(r"/blob/[^/]+/(docs/runbooks/[A-Za-z]+\.md)$", url)
        self.assertIsNotNone(match, f"runbook URL {url} does not point into this repository's docs/runbooks")
        self.assertTrue(os.path.isfile(e2e.source_path(match.group(1))), f"{match.group(1)} is missing")


if __name__ == "__main__":
    e2e.main()
