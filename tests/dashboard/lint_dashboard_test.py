#!/usr/bin/python3
"""Proves the dashboard linter catches what it claims to catch.

Each case breaks one thing in a copy of the shipped dashboard and expects the
matching rule to report it; the shipped dashboard itself must come out clean.
One throwaway Prometheus serves every case that needs the validity check.
"""

import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import dashboard_queries as dq  # noqa: E402
import lint_dashboard as ld  # noqa: E402

DASHBOARD = os.path.join(ROOT, "grafana", "connection-pool-dashboard.json")
OTEL_DASHBOARD = os.path.join(ROOT, "grafana", "connection-pool-dashboard-otel.json")
OTEL_UID = "poolscope-pool-otel"
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")


def data_panels(dashboard):
    return [p for p in dq.iter_panels(dashboard) if p.get("type") not in ld.NON_DATA_PANEL_TYPES]


def panel_using(dashboard, metric, panel_type=None):
    for panel in data_panels(dashboard):
        if panel_type and panel.get("type") != panel_type:
            continue
        if any(metric in t.get("expr", "") for t in panel.get("targets", [])):
            return panel
    raise AssertionError(f"no panel queries {metric}")


def target_using(dashboard, metric):
    for t in panel_using(dashboard, metric)["targets"]:
        if metric in t["expr"]:
            return t
    raise AssertionError(metric)


def variable(dashboard, name):
    return next(v for v in dq.template_variables(dashboard) if v.get("name") == name)


class LintDashboardTest(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.dashboard = dq.load_dashboard(DASHBOARD)
        cls.catalog = ld.MetricCatalog.from_markdown(METRICS_DOC)
        cls.server = ld.PrometheusServer().__enter__()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()

    def broken(self):
        return copy.deepcopy(self.dashboard)

    def problems(self, dashboard, with_prometheus=True):
        return ld.lint(dashboard, self.catalog, self.server.url if with_prometheus else None)

    def assertReports(self, dashboard, rule, fragment="", with_prometheus=False):
        problems = self.problems(dashboard, with_prometheus)
        matching = [p for p in problems if p.rule == rule and fragment in str(p)]
        self.assertTrue(matching, f"expected {rule} mentioning {fragment!r}, got:\n"
                        + "\n".join(map(str, problems)))

    # the shipped dashboard ------------------------------------------------------

    def test_shipped_dashboard_passes_every_rule(self):
        self.assertEqual([str(p) for p in self.problems(self.dashboard)], [])

    def test_every_panel_and_variable_query_reaches_prometheus(self):
        linter = ld.DashboardLinter(self.dashboard, self.catalog)
        linter.run_static()
        checked = len(linter.queries)
        expected = len(dq.panel_queries(self.dashboard)) + len(dq.variable_queries(self.dashboard))
        self.assertEqual(checked, expected)
        self.assertGreaterEqual(len(data_panels(self.dashboard)), 6)

    # the OpenTelemetry variant and the naming rule ------------------------------

    def otel_problems(self, dashboard, with_prometheus=False):
        return ld.lint(dashboard, self.catalog, self.server.url if with_prometheus else None, OTEL_UID, "otel")

    def assertOtelReports(self, dashboard, rule, fragment=""):
        problems = self.otel_problems(dashboard)
        matching = [p for p in problems if p.rule == rule and fragment in str(p)]
        self.assertTrue(matching, f"expected {rule} mentioning {fragment!r}, got:\n"
                        + "\n".join(map(str, problems)))

    def test_otel_variant_passes_every_rule_for_otel(self):
        variant = dq.load_dashboard(OTEL_DASHBOARD)
        self.assertEqual([str(p) for p in self.otel_problems(variant, with_prometheus=True)], [])

    def test_catalog_reads_the_opentelemetry_table(self):
        self.assertEqual(self.catalog.allowed("db_client_connection_count"),
                         {"job", "instance", "db_client_connection_pool_name", "db_client_connection_state"})
        self.assertIn("le", self.catalog.allowed("db_client_connection_wait_time_seconds_bucket"))
        self.assertTrue(self.catalog.published("db_client_connection_max", "otel"))
        self.assertFalse(self.catalog.published("db_client_connection_max", "guide"))
        self.assertFalse(self.catalog.published("codebase_mcp_pool_build_info", "otel"))
        self.assertTrue(self.catalog.published("codebase_mcp_pool_server_sessions", "otel"))
        self.assertEqual(self.catalog.pool_label("db_client_connection_max"), "db_client_connection_pool_name")

    def test_shipped_dashboard_fails_as_an_otel_dashboard(self):
        problems = self.otel_problems(self.dashboard)
        self.assertTrue(any(p.rule == "naming-rule" and "build_info" in str(p) for p in problems))
        self.assertTrue(any(p.rule == "naming-rule" and "'Health'" in str(p) for p in problems))

    def test_otel_names_in_a_guide_dashboard_are_reported(self):
        d = self.broken()
        t = target_using(d, "waiting_requests")
        t["expr"] = t["expr"].replace("codebase_mcp_pool_waiting_requests", "db_client_connection_pending_requests")
        self.assertReports(d, "naming-rule", "db_client_connection_pending_requests")

    def test_unmarked_guide_only_panel_in_the_variant_is_reported(self):
        variant = dq.load_dashboard(OTEL_DASHBOARD)
        health = panel_using(variant, "health_status")
        health["title"] = "Health"
        self.assertOtelReports(variant, "naming-rule", "its title should say")

    def test_guide_only_panel_outside_the_collapsed_row_is_reported(self):
        variant = dq.load_dashboard(OTEL_DASHBOARD)
        row = variant["panels"][-1]
        self.assertTrue(row["collapsed"])
        row["collapsed"] = False
        self.assertOtelReports(variant, "naming-rule", "collapsed row")

    def test_otel_metric_with_the_guide_pool_label_is_reported(self):
        variant = dq.load_dashboard(OTEL_DASHBOARD)
        t = target_using(variant, "db_client_connection_pending_requests")
        t["expr"] = t["expr"].replace("db_client_connection_pool_name=~", "pool=~")
        self.assertOtelReports(variant, "target-pool-rule", "db_client_connection_pool_name")

    def test_variant_without_the_dashed_otel_maximum_is_reported(self):
        variant = dq.load_dashboard(OTEL_DASHBOARD)
        panel = panel_using(variant, "db_client_connection_max", "timeseries")
        panel["fieldConfig"]["overrides"] = []
        self.assertOtelReports(variant, "core-panels-rule", "dashed")

    # validity through Prometheus ----------------------------------------------

    def test_syntax_error_is_reported(self):
        d = self.broken()
        target_using(d, "waiting_requests")["expr"] += ")"
        self.assertReports(d, "target-promql-rule", "waiting_requests")

    def test_unknown_function_is_reported_without_prometheus(self):
        # Prometheus's own grammar knows the function names, so no server is needed.
        d = self.broken()
        t = target_using(d, "clamp_min(")
        t["expr"] = t["expr"].replace("clamp_min(", "clamp_minimum(")
        self.assertReports(d, "target-promql-rule", "clamp_minimum")

    def test_type_error_is_rejected_by_prometheus(self):
        d = self.broken()
        t = target_using(d, "peak_wait_seconds")
        t["expr"] = f"abs({t['expr']}, 1)"
        self.assertReports(d, "target-promql-rule", "bad_data", with_prometheus=True)

    def test_broken_variable_query_is_reported(self):
        d = self.broken()
        v = variable(d, "instance")
        v["query"]["query"] = v["definition"] = 'label_values(codebase_mcp_pool_build_info{job=~"$job"], instance)'
        self.assertReports(d, "template-label-promql-rule", "instance")

    # panels --------------------------------------------------------------------

    def test_missing_description_is_reported(self):
        d = self.broken()
        del panel_using(d, "waiting_requests")["description"]
        self.assertReports(d, "panel-title-description-rule", "no description")

    def test_panels_folded_into_a_collapsed_row_are_checked(self):
        d = self.broken()
        row = next(p for p in d["panels"] if p["type"] == "row" and p["title"] == "Connection lifecycle")
        start = d["panels"].index(row)
        folded = d["panels"][start + 1:]
        del d["panels"][start + 1:]
        row["collapsed"] = True
        row["panels"] = folded
        folded[0]["title"] = ""
        folded[0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
        self.assertReports(d, "panel-title-description-rule", "no title")
        self.assertReports(d, "panel-datasource-rule", "P1809F7CD0C75ACF3")

    def test_fixed_datasource_is_reported(self):
        d = self.broken()
        panel_using(d, "health_status")["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        self.assertReports(d, "panel-datasource-rule", "DS_PROMETHEUS")
        self.assertReports(d, "dashboard-provisioning-rule", "DS_PROMETHEUS")

    def test_import_inputs_are_reported(self):
        d = self.broken()
        d["__inputs"] = [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]
        self.assertReports(d, "dashboard-provisioning-rule", "__inputs")

    def test_invalid_and_missing_units_are_reported(self):
        d = self.broken()
        panel_using(d, "waiting_requests")["fieldConfig"]["defaults"]["unit"] = "requests"
        del panel_using(d, "peak_wait_seconds")["fieldConfig"]["defaults"]["unit"]
        self.assertReports(d, "panel-units-rule", "'requests'")
        self.assertReports(d, "panel-units-rule", "has no unit")

    def test_invalid_override_unit_is_reported(self):
        d = self.broken()
        panel = panel_using(d, "leaks_detected_total")
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    prop["value"] = "leaks/s"
        self.assertReports(d, "panel-units-rule", "leaks/s")

    def test_panel_without_targets_is_reported(self):
        d = self.broken()
        panel_using(d, "waiting_requests")["targets"] = []
        self.assertReports(d, "panel-no-targets-rule")

    # targets -------------------------------------------------------------------

    def test_fixed_range_is_reported(self):
        d = self.broken()
        t = target_using(d, "errors_total")
        t["expr"] = t["expr"].replace("$__rate_interval", "5m")
        self.assertReports(d, "target-rate-interval-rule", "[5m]")

    def test_missing_job_instance_and_pool_matchers_are_reported(self):
        d = self.broken()
        t = target_using(d, "waiting_requests")
        t["expr"] = "codebase_mcp_pool_waiting_requests"
        for label in ("job", "instance", "pool"):
            self.assertReports(d, f"target-{label}-rule", "waiting_requests")

    def test_exact_match_instead_of_variable_is_reported(self):
        d = self.broken()
        t = target_using(d, "waiting_requests")
        t["expr"] = t["expr"].replace('job=~"$job"', 'job="poolscope"')
        self.assertReports(d, "target-job-rule")

    def test_bare_counter_is_reported(self):
        d = self.broken()
        t = target_using(d, "acquisitions_total")
        t["expr"] = 'codebase_mcp_pool_acquisitions_total{job=~"$job", instance=~"$instance", pool=~"$pool"}'
        self.assertReports(d, "target-counter-agg-rule", "acquisitions_total")

    def test_counter_under_the_wrong_function_is_reported(self):
        d = self.broken()
        t = target_using(d, "releases_total")
        t["expr"] = t["expr"].replace("(rate(", "(max_over_time(")
        self.assertReports(d, "target-counter-agg-rule", "releases_total")

    def test_gauge_named_total_counts_as_counter(self):
        # connections_total is a gauge, but the rule goes by name, as Grafana's does.
        d = self.broken()
        t = target_using(d, "connections_idle")
        t["expr"] = 'codebase_mcp_pool_connections_total{job=~"$job", instance=~"$instance", pool=~"$pool"}'
        self.assertReports(d, "target-counter-agg-rule", "connections_total")

    def test_histogram_quantile_without_le_is_reported(self):
        d = self.broken()
        t = target_using(d, "acquisition_duration_seconds_bucket")
        t["expr"] = t["expr"].replace("sum by (job, instance, pool, le)", "sum by (job, instance, pool)")
        self.assertReports(d, "target-histogram-rule", "sum by (le")

    def test_bucket_outside_histogram_quantile_is_reported(self):
        d = self.broken()
        t = target_using(d, "hold_duration_seconds_bucket")
        t["expr"] = ('sum by (le) (rate(codebase_mcp_pool_connection_hold_duration_seconds_bucket'
                     '{job=~"$job", instance=~"$instance", pool=~"$pool"}[$__rate_interval]))')
        t["legendFormat"] = "{{le}}"
        self.assertReports(d, "target-histogram-rule", "not inside histogram_quantile")

    def test_undefined_variable_is_reported(self):
        d = self.broken()
        t = target_using(d, "waiting_requests")
        t["expr"] = t["expr"].replace('pool=~"$pool"', 'pool=~"$pool", env=~"$env"')
        self.assertReports(d, "target-variables-rule", "env")

    def test_unknown_metric_and_label_are_reported(self):
        d = self.broken()
        t = target_using(d, "waiting_requests")
        t["expr"] = t["expr"].replace("waiting_requests{", "waiting_request{")
        self.assertReports(d, "target-metric-rule", "waiting_request is not a metric")
        d = self.broken()
        t = target_using(d, "errors_total")
        t["expr"] = t["expr"].replace("error_type)", "reason)")
        self.assertReports(d, "target-metric-rule", "reason")

    def test_legend_with_dropped_label_is_reported(self):
        d = self.broken()
        t = target_using(d, "errors_total")
        t["expr"] = t["expr"].replace(", error_type)", ")")
        self.assertReports(d, "target-legend-rule", "error_type")

    # templating and dashboard ----------------------------------------------------

    def test_datasource_variable_rules(self):
        d = self.broken()
        variable(d, "datasource")["label"] = "Datasource"
        self.assertReports(d, "template-datasource-rule", "'Data source'")
        d = self.broken()
        d["templating"]["list"].append(dict(variable(d, "datasource"), name="datasource2"))
        self.assertReports(d, "template-datasource-rule", "exactly one")
        d = self.broken()
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["type"] != "datasource"]
        self.assertReports(d, "template-datasource-rule", "has 0")

    def test_job_and_instance_variable_rules(self):
        d = self.broken()
        variable(d, "job")["allValue"] = ".*"
        variable(d, "instance")["multi"] = False
        variable(d, "pool")["datasource"] = {"type": "prometheus", "uid": "prometheus"}
        self.assertReports(d, "template-job-rule", "allValue")
        self.assertReports(d, "template-instance-rule", "multi-select")
        self.assertReports(d, "template-pool-rule", "'$datasource'")
        d = self.broken()
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "instance"]
        self.assertReports(d, "template-instance-rule", "missing")
        self.assertReports(d, "target-variables-rule", "instance")

    def test_variable_refresh_rule(self):
        d = self.broken()
        variable(d, "pool")["refresh"] = 1
        self.assertReports(d, "template-on-time-change-reload-rule", "pool")

    def test_uid_rules(self):
        d = self.broken()
        del d["uid"]
        self.assertReports(d, "dashboard-uid-rule", "no uid")
        d = self.broken()
        d["uid"] = "renamed"
        self.assertReports(d, "dashboard-uid-rule", "changed")

    def test_editable_dashboard_is_reported(self):
        d = self.broken()
        d["editable"] = True
        self.assertReports(d, "uneditable-dashboard-rule")

    def test_duplicate_panel_id_is_reported(self):
        d = self.broken()
        panels = data_panels(d)
        panels[1]["id"] = panels[0]["id"]
        self.assertReports(d, "panel-layout-rule", "reuses id")

    # the six core panels ---------------------------------------------------------

    def test_guide_thresholds_are_required(self):
        d = self.broken()
        latency = panel_using(d, "acquisition_duration_seconds_bucket")
        latency["fieldConfig"]["defaults"]["thresholds"]["steps"] = [{"color": "green", "value": None}]
        self.assertReports(d, "core-panels-rule", "0.01")
        d = self.broken()
        panel_using(d, "waiting_requests")["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] = "off"
        self.assertReports(d, "core-panels-rule", "at 10")
        d = self.broken()
        health = panel_using(d, "health_status", "stat")
        health["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["color"] = "orange"
        health["fieldConfig"]["defaults"]["mappings"] = []
        self.assertReports(d, "core-panels-rule", "1 yellow")
        self.assertReports(d, "core-panels-rule", "healthy/degraded/unhealthy")

    def test_max_connections_must_be_dashed(self):
        d = self.broken()
        panel_using(d, "max_connections", "timeseries")["fieldConfig"]["overrides"] = []
        self.assertReports(d, "core-panels-rule", "dashed")

    # the programs ----------------------------------------------------------------

    def test_lint_program_fails_on_a_broken_dashboard(self):
        d = self.broken()
        del panel_using(d, "waiting_requests")["description"]
        target_using(d, "errors_total")["expr"] += " +"
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(d, f)
        try:
            run = subprocess.run(
                [sys.executable, os.path.join(HERE, "lint_dashboard.py"), "--dashboard", f.name,
                 "--metrics-doc", METRICS_DOC, "--prometheus-url", self.server.url],
                capture_output=True, text=True, check=False)
        finally:
            os.unlink(f.name)
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("panel-title-description-rule", run.stdout)
        self.assertIn("target-promql-rule", run.stdout)

    def test_queries_program_prints_substituted_panel_queries(self):
        run = subprocess.run(
            [sys.executable, os.path.join(HERE, "dashboard_queries.py"), "--dashboard", DASHBOARD,
             "--rate-interval", "2m", "--var", "job=poolscope"],
            capture_output=True, text=True, check=True)
        queries = json.loads(run.stdout)
        self.assertEqual(len(queries), sum(len(p["targets"]) for p in data_panels(self.dashboard)))
        for q in queries:
            self.assertEqual({"panel", "panelId", "refId", "expr"}, set(q))
            self.assertNotIn("$", q["expr"])
        self.assertTrue(any("[2m]" in q["expr"] for q in queries))
        self.assertTrue(all('job=~"poolscope"' in q["expr"] for q in queries))
        self.assertTrue(all('instance=~".+"' in q["expr"] for q in queries))

        run = subprocess.run(
            [sys.executable, os.path.join(HERE, "dashboard_queries.py"), "--dashboard", DASHBOARD, "--variables"],
            capture_output=True, text=True, check=True)
        self.assertEqual([q["variable"] for q in json.loads(run.stdout)], ["job", "instance", "pool"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
