#!/usr/bin/python3
"""Checks rules/codebase-mcp-pool.yml against what the project promises.

- exactly the eight pool alerts plus ConnectionPoolServerOvercommit, with
  their severities and for-durations and component="connection_pool";
- summary, description and runbook_url on every alert; every runbook_url
  names docs/runbooks/<alert>.md of this repository, and that file exists;
- no aggregation that drops job, instance or pool, except in the alerts about
  a whole database server, which aggregate by (server) only;
- recording rules named codebase_mcp_pool:<metric>:<operations>;
- every metric used is in docs/metrics.md;
- every alert has promtool tests that expect it to fire and tests that expect
  silence, and every test file fixes the group evaluation order.

Usage: rules_contract.py <source root>
"""

import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))

import checks  # noqa: E402  (tests/support: YAML, command line, report)

# The alerting rules the runbooks document: name -> (severity, for).
GUIDE_ALERTS = {
    "ConnectionPoolNoConnections": ("critical", "30s"),
    "ConnectionPoolUnhealthy": ("critical", "5m"),
    "ConnectionPoolDegraded": ("warning", "10m"),
    "ConnectionPoolExhausted": ("critical", "2m"),
    "ConnectionPoolHighLatency": ("warning", "5m"),
    "ConnectionPoolLeak": ("warning", "10m"),
    "ConnectionPoolFullyUtilized": ("critical", "10m"),
    "ConnectionPoolLowCapacity": ("warning", "5m"),
    # Beyond the guide: the pools of every instance against one server's slots.
    "ConnectionPoolServerOvercommit": ("warning", "5m"),
}
# Alerts whose subject is a database server shared by many targets: they
# aggregate by exactly these labels.
SERVER_ALERTS = {"ConnectionPoolServerOvercommit"}
SERVER_LABELS = {"server"}
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook_url"}
RUNBOOK_BASE = "https://github.com/poolscope/poolscope/blob/main/"
TARGET_LABELS = {"job", "instance", "pool"}
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
                "topk", "bottomk", "quantile", "count_values")
METRIC_PREFIX = "codebase_mcp_pool_"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
RECORD_NAME = re.compile(r"^codebase_mcp_pool:[a-z0-9_]+:[a-z0-9_]+$")

failures = []


def fail(message):
    failures.append(message)


def documented_metrics(metrics_md):
    names = set()
    for line in metrics_md.splitlines():
        match = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|", line)
        if match:
            names.add(METRIC_PREFIX + match.group(1))
    return names


def metrics_in(expr):
    return set(re.findall(r"\b" + METRIC_PREFIX + r"[a-z0-9_]+", expr))


def check_aggregations(where, expr, target_labels=TARGET_LABELS, exact=False):
    # sum by (a, b) (x), sum (x) by (a, b), sum without (...) (x)
    for match in re.finditer(r"\b(" + "|".join(AGGREGATIONS) + r")\s*(by|without)?\s*\(", expr):
        func, modifier = match.group(1), match.group(2)
        if modifier is None:
            # Modifier after the argument: find the argument's closing paren.
            depth, i = 0, match.end() - 1
            while i < len(expr):
                depth += {"(": 1, ")": -1}.get(expr[i], 0)
                if depth == 0:
                    break
                i += 1
            tail = re.match(r"\s*(by|without)\s*\(([^)]*)\)", expr[i + 1:])
            if tail:
                modifier, grouping = tail.group(1), tail.group(2)
            else:
                fail(f"{where}: {func}(...) without by() drops job, instance and pool")
                continue
        else:
            grouping = expr[match.end():expr.index(")", match.end())]
        labels = {label.strip() for label in grouping.split(",") if label.strip()}
        if exact and (modifier != "by" or labels != target_labels):
            fail(f"{where}: {func} {modifier} ({grouping}), expected by ({', '.join(sorted(target_labels))})")
            continue
        if modifier == "by" and not target_labels <= labels:
            fail(f"{where}: {func} by ({grouping}) drops {sorted(target_labels - labels)}")
        if modifier == "without" and labels & target_labels:
            fail(f"{where}: {func} without ({grouping}) drops {sorted(labels & target_labels)}")


def check_rules(root, rules):
    known_metrics = documented_metrics((root / "docs" / "metrics.md").read_text(encoding="utf-8"))
    if not known_metrics:
        fail("docs/metrics.md: no metric table found")
    recorded = set()
    alerts = {}
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            expr = str(rule.get("expr", ""))
            name = rule.get("alert") or rule.get("record")
            where = f"rule {name}"
            if rule.get("alert") in SERVER_ALERTS:
                check_aggregations(where, expr, SERVER_LABELS, exact=True)
            else:
                check_aggregations(where, expr)
            for metric in metrics_in(expr):
                base = metric
                if metric not in known_metrics:
                    for suffix in HISTOGRAM_SUFFIXES:
                        if metric.endswith(suffix):
                            base = metric[: -len(suffix)]
                if base not in known_metrics:
                    fail(f"{where}: {metric} is not in docs/metrics.md")
            if "record" in rule:
                recorded.add(rule["record"])
                if not RECORD_NAME.match(rule["record"]):
                    fail(f"{where}: recording rule name does not follow codebase_mcp_pool:<metric>:<operations>")
            else:
                if name in alerts:
                    fail(f"{where}: defined twice")
                alerts[name] = rule
    for name, rule in alerts.items():
        for used in re.findall(r"\bcodebase_mcp_pool:[a-z0-9_:]+", str(rule.get("expr", ""))):
            if used not in recorded:
                fail(f"alert {name}: uses {used}, which no recording rule defines")

    if set(alerts) != set(GUIDE_ALERTS):
        missing = sorted(set(GUIDE_ALERTS) - set(alerts))
        extra = sorted(set(alerts) - set(GUIDE_ALERTS))
        fail(f"alerts differ from the documented set: missing {missing}, unexpected {extra}")
    for name, (severity, duration) in GUIDE_ALERTS.items():
        rule = alerts.get(name)
        if rule is None:
            continue
        labels = rule.get("labels", {})
        if labels.get("severity") != severity:
            fail(f"alert {name}: severity {labels.get('severity')!r}, expected {severity!r}")
        if labels.get("component") != "connection_pool":
            fail(f"alert {name}: component {labels.get('component')!r}, expected 'connection_pool'")
        if str(rule.get("for")) != duration:
            fail(f"alert {name}: for {rule.get('for')!r}, expected {duration!r}")
        annotations = rule.get("annotations", {})
        for key in sorted(REQUIRED_ANNOTATIONS - set(annotations)):
            fail(f"alert {name}: no {key} annotation")
        for key in REQUIRED_ANNOTATIONS & set(annotations):
            if not str(annotations[key]).strip():
                fail(f"alert {name}: empty {key} annotation")
        url = str(annotations.get("runbook_url", ""))
        expected = f"{RUNBOOK_BASE}docs/runbooks/{name}.md"
        if url != expected:
            fail(f"alert {name}: runbook_url {url!r}, expected {expected!r}")
        runbook = root / "docs" / "runbooks" / f"{name}.md"
        if not runbook.is_file():
            fail(f"alert {name}: {runbook.relative_to(root)} does not exist")
        elif not runbook.read_text(encoding="utf-8").startswith(f"# {name}"):
            fail(f"alert {name}: {runbook.relative_to(root)} does not start with '# {name}'")
    return alerts


def check_tests(root, rules, alerts):
    group_names = [group["name"] for group in rules.get("groups", [])]
    fires, silent = set(), set()
    files = sorted((root / "rules" / "tests").glob("*.test.yml"))
    if not files:
        fail("rules/tests: no *.test.yml files")
    for path in files:
        where = path.relative_to(root)
        suite = checks.load_yaml(path)
        order = suite.get("group_eval_order")
        if order != group_names:
            fail(f"{where}: group_eval_order {order!r}, expected {group_names!r} "
                 "(promtool otherwise evaluates groups in random order)")
        for test in suite.get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                name = case.get("alertname")
                if name not in alerts:
                    fail(f"{where}: test {test.get('name')!r} checks unknown alert {name!r}")
                (fires if case.get("exp_alerts") else silent).add(name)
    for name in sorted(alerts):
        if name not in fires:
            fail(f"alert {name}: no promtool test expects it to fire")
        if name not in silent:
            fail(f"alert {name}: no promtool test expects it to stay silent")


def main(argv):
    [root] = checks.command_line(argv, __doc__, 1)
    rules = checks.load_rules(root)
    alerts = check_rules(root, rules)
    check_tests(root, rules, alerts)
    return checks.report(failures, f"rules contract: {len(alerts)} alerts checked")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
