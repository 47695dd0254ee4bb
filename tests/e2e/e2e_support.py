"""What the end-to-end tests share: their command line, skip rules, a work
directory the postgres user can reach, the dashboard's queries and the checks
that a secret appears nowhere.

Every test gets --exporter (the poolscope-exporter binary), --pgctl
(scripts/lib/pgctl) and --source-dir (the repository) from CTest; they exit
77 (skipped) when Prometheus, Alertmanager or the PostgreSQL server is not
installed.
"""

import argparse
import atexit
import contextlib
import glob
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import unittest
from typing import Dict, Iterable, List

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE_DIR, "scripts", "lib"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "dashboard"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "exporter"))

import dashboard_queries  # noqa: E402
import harness  # noqa: E402,F401  (re-exported for the tests)
import stack  # noqa: E402

SKIPPED = 77


class Options:
    exporter: str = ""
    pgctl: str = ""
    source_dir: str = SOURCE_DIR


OPTIONS = Options()


def main() -> None:
    """Parses the common flags, skips when a server is missing, runs unittest."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True, help="poolscope-exporter binary")
    parser.add_argument("--pgctl", required=True, help="scripts/lib/pgctl")
    parser.add_argument("--source-dir", default=SOURCE_DIR, help="the repository (default: %(default)s)")
    args, rest = parser.parse_known_args()
    OPTIONS.exporter, OPTIONS.pgctl, OPTIONS.source_dir = args.exporter, args.pgctl, args.source_dir

    missing = [name for name in ("prometheus", "prometheus-alertmanager") if not shutil.which(name)]
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        missing.append("the PostgreSQL server")
    if missing:
        print(f"SKIP not installed: {', '.join(missing)} (scripts/setup installs them)")
        sys.exit(SKIPPED)

    # SIGTERM (kill, a CI runner giving up) unwinds like Ctrl-C: the stacks'
    # context managers stop their processes, the atexit fallbacks remove the
    # clusters and directories.
    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, terminate)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


def source_path(*parts: str) -> str:
    return os.path.join(OPTIONS.source_dir, *parts)


def _register_cleanup(test, function, *args) -> None:
    """Runs function(*args) at the test's (or class's) cleanup and, should
    SIGTERM or Ctrl-C end the run before that, at interpreter exit (unittest
    skips cleanups on KeyboardInterrupt). Cleanups here are idempotent."""
    register = test.addClassCleanup if isinstance(test, type) else test.addCleanup
    register(function, *args)
    atexit.register(function, *args)


def make_workdir(test, prefix: str) -> str:
    """A temporary directory the postgres user can traverse (the clusters
    live below it), removed when the test (or class) is cleaned up."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    os.chmod(workdir, 0o755)
    _register_cleanup(test, shutil.rmtree, workdir, True)
    return workdir


def make_cluster(test, workdir: str, name: str) -> stack.PgCluster:
    """A started throwaway cluster, destroyed at cleanup even if creation failed."""
    cluster = stack.PgCluster(OPTIONS.pgctl, os.path.join(workdir, name))
    _register_cleanup(test, cluster.destroy)
    return cluster.create()


# ---------------------------------------------------------------------------
# Rules and the dashboard


def load_rules(path: str) -> List[dict]:
    import yaml
    with open(path, encoding="utf-8") as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


def alert_severities(path: str) -> Dict[str, str]:
    """{alertname: severity} of a rules file."""
    return {rule["alert"]: rule.get("labels", {}).get("severity", "")
            for rule in load_rules(path) if "alert" in rule}


DASHBOARD = "connection-pool-dashboard.json"
OTEL_DASHBOARD = "connection-pool-dashboard-otel.json"  # for --metrics.naming=otel


def load_dashboard(name: str = DASHBOARD) -> dict:
    """A shipped dashboard from grafana/."""
    return dashboard_queries.load_dashboard(source_path("grafana", name))


def panel_queries(rate_interval: str, dashboard: str = DASHBOARD, **variables: str) -> List[dict]:
    """Every panel query of a shipped dashboard, variables substituted
    ("All" unless given, e.g. instance="127\\\\.0\\\\.0\\\\.1:1234")."""
    return dashboard_queries.panel_queries(load_dashboard(dashboard), {"__rate_interval": rate_interval, **variables})


def variable_queries(dashboard: str = DASHBOARD, **variables: str) -> List[dict]:
    return dashboard_queries.variable_queries(load_dashboard(dashboard), variables)


def regex_escape(text: str) -> str:
    """`text` as a PromQL regex that matches only itself (dots escaped)."""
    return "".join("\\\\" + c if c in ".+*?()[]{}|^$\\" else c for c in text)


def sample_values(result: List[dict]) -> List[float]:
    return [float(series["value"][1]) for series in result]


def has_finite_value(result: List[dict]) -> bool:
    return any(math.isfinite(v) for v in sample_values(result))


def has_positive_value(result: List[dict]) -> bool:
    return any(math.isfinite(v) and v > 0 for v in sample_values(result))


def describe_query(query: dict) -> str:
    return f"panel {query['panel']!r} ({query['refId']}): {query['expr']}"


# ---------------------------------------------------------------------------
# Secrets


def assert_secret_absent(test: unittest.TestCase, secret: str, documents: Dict[str, object]) -> None:
    """Fails naming each document (any JSON-able value or text) that contains `secret`."""
    test.assertTrue(secret, "the secret to look for is empty")
    leaking = [name for name, document in documents.items()
               if secret in (document if isinstance(document, str) else json.dumps(document))]
    test.assertEqual(leaking, [], "the database password appears in these")


def prometheus_documents(prometheus: stack.Prometheus) -> Dict[str, object]:
    """What Prometheus knows about the targets: every series' labels, the
    targets, alerts and rules (with their annotations)."""
    return {
        "Prometheus series labels": prometheus.series(),
        "Prometheus targets": prometheus.api("targets"),
        "Prometheus alerts": prometheus.alerts(),
        "Prometheus rules": prometheus.rules(),
    }


def instances_of(result: Iterable[dict]) -> set:
    return {series["metric"].get("instance") for series in result}


# ---------------------------------------------------------------------------
# Failure reports


def summarise_notification(record: dict) -> str:
    body = record["body"]
    if record["kind"] == "pagerduty" and isinstance(body, dict):
        return f"pagerduty {body.get('event_action')}: {body.get('payload', {}).get('summary')}"
    if record["kind"] == "slack" and isinstance(body, dict):
        return f"slack {body.get('channel')}: {body.get('attachments', [{}])[0].get('title')}"
    return f"{record['kind']} {record['path']}"


def diagnostics(running: stack.Stack) -> str:
    """What the stack did, for a failing test's output."""
    lines = ["--- stack state at the failure"]
    try:
        for alert in running.prometheus.alerts():
            labels = alert["labels"]
            lines.append(f"prometheus alert {labels.get('alertname')} {alert['state']} "
                         f"instance={labels.get('instance')} pool={labels.get('pool')}")
    except Exception as error:  # the report must not hide the original failure
        lines.append(f"(no Prometheus alerts: {error})")
    for record in running.receiver.notifications():
        lines.append(f"received at {record['received_at']}: {summarise_notification(record)}")
    lines.extend(running.failed_processes())
    for index, exporter in enumerate(running.exporters):
        lines.append(f"--- exporter {index + 1} ({exporter.target}) log ends:")
        lines.append(stack.log_tail(exporter.log_path, 8))
    return "\n".join(lines)


@contextlib.contextmanager
def report_failure(running: stack.Stack):
    """Prints diagnostics(running) when the block raises."""
    try:
        yield
    except BaseException:
        print(diagnostics(running), file=sys.stderr, flush=True)
        raise
