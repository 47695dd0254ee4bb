#!/usr/bin/python3
"""The PromQL queries of a Grafana dashboard, with template variables filled in.

Grafana expands `$job`, `${pool}`, `$__rate_interval` before it sends a query to
Prometheus; anything else that wants to run a dashboard's queries (the linter's
validity check, the end-to-end test that requires every panel to return data)
has to do the same. This module does it the way the dashboard's "All" choice
does: a multi-value variable with `allValue` becomes that value (".+").

As a program it prints a JSON list, one object per panel query:

    dashboard_queries.py --dashboard grafana/connection-pool-dashboard.json \
        [--rate-interval 1m] [--var job=poolscope] [--variables]

    [{"panel": "Pool utilisation", "panelId": 2, "refId": "A", "expr": "..."}, ...]

`--var NAME=VALUE` replaces the variable by VALUE verbatim (it lands inside a
regex matcher, so escape regex characters yourself). `--variables` lists the
PromQL inside the template variables' `label_values(...)` queries instead,
as {"variable", "expr"} objects.
"""

import argparse
import json
import re
import sys
from typing import Dict, Iterator, List, Optional

# Grafana's global variables, with values that stand for a typical view.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $var, ${var}, ${var:format} and the deprecated [[var]].
VARIABLE_RE = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_.]+)(?::[A-Za-z]+)?\}"
    r"|\$(?P<plain>[A-Za-z0-9_]+)"
    r"|\[\[(?P<bracketed>[A-Za-z0-9_.]+)(?::[A-Za-z]+)?\]\]"
)

LABEL_VALUES_RE = re.compile(r"^\s*label_values\s*\((?P<args>.*)\)\s*$", re.DOTALL)
QUERY_RESULT_RE = re.compile(r"^\s*query_result\s*\((?P<expr>.*)\)\s*$", re.DOTALL)


class UndefinedVariableError(KeyError):
    """A query refers to a variable the dashboard does not define."""


def load_dashboard(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    # An export wrapped for the HTTP API ({"dashboard": {...}}) works too.
    if "panels" not in dashboard and isinstance(dashboard.get("dashboard"), dict):
        dashboard = dashboard["dashboard"]
    return dashboard


def iter_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, rows included, and the panels folded into collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        for nested in panel.get("panels", []) or []:
            yield nested


def template_variables(dashboard: dict) -> List[dict]:
    return list(dashboard.get("templating", {}).get("list", []))


def variable_query_text(variable: dict) -> str:
    """The query string of a query variable, whichever way Grafana stored it."""
    query = variable.get("query", "")
    if isinstance(query, dict):
        query = query.get("query", "")
    return query or variable.get("definition", "") or ""


def default_values(dashboard: dict) -> Dict[str, str]:
    """Each template variable's value when "All" is selected."""
    values = dict(BUILTIN_VARIABLES)
    for variable in template_variables(dashboard):
        name = variable.get("name")
        if not name:
            continue
        if variable.get("type") == "datasource":
            values[name] = "prometheus"
        elif variable.get("allValue"):
            values[name] = variable["allValue"]
        else:
            values[name] = ".*" if variable.get("includeAll") else ".+"
    return values


def substitute(expr: str, values: Dict[str, str]) -> str:
    """`expr` with every variable replaced; UndefinedVariableError on unknown ones."""

    def replace(match: re.Match) -> str:
        name = match.group("braced") or match.group("plain") or match.group("bracketed")
        if name not in values:
            raise UndefinedVariableError(name)
        return values[name]

    return VARIABLE_RE.sub(replace, expr)


def variables_used(expr: str) -> List[str]:
    return [m.group("braced") or m.group("plain") or m.group("bracketed") for m in VARIABLE_RE.finditer(expr)]


def variable_promql(variable: dict) -> Optional[str]:
    """The PromQL inside a query variable (label_values(expr, label) or
    query_result(expr)); None when the query has none (label_values(label))."""
    text = variable_query_text(variable)
    m = LABEL_VALUES_RE.match(text)
    if m:
        args = m.group("args")
        if "," not in args:
            return None
        expr, _, label = args.rpartition(",")
        if not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*", label):
            raise ValueError(f"label_values() needs a label name as its last argument: {text!r}")
        return expr.strip()
    m = QUERY_RESULT_RE.match(text)
    if m:
        return m.group("expr").strip()
    return None


def panel_targets(dashboard: dict) -> Iterator[tuple]:
    """(panel, target) for every Prometheus target of every panel."""
    for panel in iter_panels(dashboard):
        if panel.get("type") == "row":
            continue
        for target in panel.get("targets", []) or []:
            if "expr" in target:
                yield panel, target


def panel_queries(dashboard: dict, values: Optional[Dict[str, str]] = None) -> List[dict]:
    """[{panel, panelId, refId, expr}] with variables substituted.

    `values` overrides default_values(); unknown variables raise
    UndefinedVariableError."""
    merged = default_values(dashboard)
    merged.update(values or {})
    return [
        {
            "panel": panel.get("title", ""),
            "panelId": panel.get("id"),
            "refId": target.get("refId", ""),
            "expr": substitute(target["expr"], merged),
        }
        for panel, target in panel_targets(dashboard)
    ]


def variable_queries(dashboard: dict, values: Optional[Dict[str, str]] = None) -> List[dict]:
    """[{variable, expr}] for the PromQL inside the template variables."""
    merged = default_values(dashboard)
    merged.update(values or {})
    result = []
    for variable in template_variables(dashboard):
        if variable.get("type") != "query":
            continue
        expr = variable_promql(variable)
        if expr is not None:
            result.append({"variable": variable.get("name", ""), "expr": substitute(expr, merged)})
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", required=True, help="dashboard JSON file")
    parser.add_argument("--rate-interval", default=BUILTIN_VARIABLES["__rate_interval"],
                        help="value of $__rate_interval (default %(default)s; keep it >= 4 scrape intervals)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="value for a template variable (default: its allValue)")
    parser.add_argument("--variables", action="store_true",
                        help="list the template variables' queries instead of the panels'")
    args = parser.parse_args(argv)

    values = {"__rate_interval": args.rate_interval}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--var takes NAME=VALUE, got {item!r}")
        values[name] = value

    dashboard = load_dashboard(args.dashboard)
    try:
        queries = variable_queries(dashboard, values) if args.variables else panel_queries(dashboard, values)
    except UndefinedVariableError as e:
        print(f"dashboard_queries: a query uses the undefined variable ${e.args[0]}", file=sys.stderr)
        return 1
    json.dump(queries, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
