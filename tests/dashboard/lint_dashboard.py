#!/usr/bin/python3
"""Lints a Grafana dashboard with dashboard-linter's rules plus poolscope's own.

Grafana's dashboard-linter is not packaged for Debian, so its rules are
implemented here (same rule names), stricter where the project asks for it:

  dashboard      uid present and stable, not editable, schemaVersion >= 36,
                 no `__inputs` / `${DS_...}` import placeholders (file
                 provisioning leaves those unresolved)
  templating     exactly one datasource variable, named `datasource`,
                 labelled "Data source", of Prometheus; `job`, `instance` and
                 `pool` query variables on $datasource, multi-select,
                 include-all, allValue ".+", refreshed on time range change;
                 their PromQL valid
  panels         every panel, also inside rows, on the $datasource variable,
                 with a title, a description, a valid unit and targets
  targets        valid PromQL (parsed here, and accepted by a real Prometheus),
                 every range is $__rate_interval, every selector has
                 job=~"$job", instance=~"$instance", pool=~"$pool" matchers,
                 `_total` series only inside rate/irate/increase, `_bucket`
                 series only inside histogram_quantile over `sum by (le, ...)`,
                 no undefined variables, metric and label names from
                 docs/metrics.md (its guide, server-view and OpenTelemetry
                 tables; on OpenTelemetry names the pool matcher is
                 db_client_connection_pool_name=~"$pool"), legends only use
                 labels the query keeps
  naming         --naming guide (default): every metric is one an exporter
                 with --metrics.naming=guide publishes. --naming otel (for
                 grafana/connection-pool-dashboard-otel.json): a variable or
                 panel needing a metric that --metrics.naming=otel does not
                 publish is an error, unless the panel's title says "needs
                 --metrics.naming=both" and it sits in a collapsed row whose
                 title names the flag
  core           the six core panels with their thresholds (10 ms p95 line,
                 10 waiting requests line, health 0/1/2 green/yellow/red);
                 with --naming otel, utilisation, latency and waiting
                 requests are recognised by their OpenTelemetry names

Validity goes through a real Prometheus: unless --prometheus-url names a
running one, the program starts `prometheus` on a free loopback port with an
empty configuration and throwaway storage, sends every query (variables
substituted as for "All") to /api/v1/query and stops it again.

    lint_dashboard.py --dashboard grafana/connection-pool-dashboard.json \
        [--metrics-doc docs/metrics.md] [--uid poolscope-pool] [--naming guide|otel] \
        [--prometheus /usr/bin/prometheus | --prometheus-url http://host:9090]

Exit status: 0 clean, 1 problems found (one line each), 2 usage or set-up error.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterable, List, Optional, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "lib"))

import dashboard_queries as dq  # noqa: E402
import loopback  # noqa: E402  (scripts/lib: processes and servers on 127.0.0.1)
import promql  # noqa: E402

EXPECTED_UID = "poolscope-pool"
MIN_SCHEMA_VERSION = 36
REQUIRED_QUERY_VARIABLES = ("job", "instance", "pool")
# The pool label of the OpenTelemetry names (--metrics.naming=otel); the
# dashboard's $pool variable matches it on those metrics.
OTEL_POOL_LABEL = "db_client_connection_pool_name"
NAMINGS = ("guide", "otel")
# A panel that queries metrics an `otel` exporter does not publish must say so
# in its title and sit in a collapsed row whose title says so too.
NEEDS_BOTH = "--metrics.naming=both"
# The metrics the core panels are recognised by, in each naming.
CORE_METRICS = {
    "guide": {
        "idle": "codebase_mcp_pool_connections_idle",
        "active": "codebase_mcp_pool_connections_active",
        "max": "codebase_mcp_pool_max_connections",
        "latency": "codebase_mcp_pool_acquisition_duration_seconds_bucket",
        "waiting": "codebase_mcp_pool_waiting_requests",
    },
    "otel": {
        "idle": "db_client_connection_count",
        "active": "db_client_connection_count",
        "max": "db_client_connection_max",
        "latency": "db_client_connection_wait_time_seconds_bucket",
        "waiting": "db_client_connection_pending_requests",
    },
}
RATE_INTERVAL_SPELLINGS = ("$__rate_interval", "${__rate_interval}")
DATASOURCE_UIDS = ("$datasource", "${datasource}")
COUNTER_FUNCTIONS = ("rate", "irate", "increase")
SCALAR_FUNCTIONS = ("time", "scalar", "pi", "minute", "hour", "day_of_month", "day_of_week",
                    "day_of_year", "days_in_month", "month", "year")
# Panel types that show data and so need a datasource, targets, a unit.
NON_DATA_PANEL_TYPES = ("row", "text", "news", "dashlist", "alertlist", "annolist", "welcome")

# Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts),
# the list dashboard-linter checks against.
VALID_UNITS = frozenset("""
none string
short percent percentunit humidity dB hex0x hex sci locale pixel
accMS2 accFS2 accG
degree radian grad arcmin arcsec
areaM2 areaF2 areaMI2
flops mflops gflops tflops pflops eflops zflops yflops
ppm conppb conngm3 conngNm3 conμgm3 conμgNm3 conmgm3 conmgNm3 congm3 congNm3 conmgdL conmmolL
currencyUSD currencyGBP currencyEUR currencyJPY currencyRUB currencyUAH currencyBRL currencyDKK
currencyISK currencyNOK currencySEK currencyCZK currencyCHF currencyPLN currencyBTC currencymBTC
currencyμBTC currencyZAR currencyINR currencyKRW currencyIDR currencyPHP currencyVND
bytes decbytes bits decbits kbytes deckbytes mbytes decmbytes gbytes decgbytes tbytes dectbytes
pbytes decpbytes
pps binBps Bps binbps bps KiBs Kibits KBs Kbits MiBs Mibits MBs Mbits GiBs Gibits GBs Gbits
TiBs Tibits TBs Tbits PiBs Pibits PBs Pbits
dateTimeAsIso dateTimeAsIsoNoDateIfToday dateTimeAsUS dateTimeAsUSNoDateIfToday dateTimeAsLocal
dateTimeAsLocalNoDateIfToday dateTimeAsSystem dateTimeFromNow
watt kwatt megwatt gwatt mwatt Wm2 voltamp kvoltamp voltampreact kvoltampreact watth watthperkg
kwatth kwattm amph kamph mamph joule ev amp kamp mamp volt kvolt mvolt dBm ohm kohm Mohm farad
µfarad nfarad pfarad ffarad henry mhenry µhenry lumens
flowgpm flowcms flowcfs flowcfm litreh flowlpm flowmlpm lux
forceNm forcekNm forceN forcekN
Hs KHs MHs GHs THs PHs EHs
massmg massg masslb masskg masst
lengthmm lengthin lengthft lengthm lengthkm lengthmi
pressurembar pressurebar pressurekbar pressurepa pressurehpa pressurekpa pressurehg pressurepsi
radbq radci radgy radrad radsv radmsv radusv radrem radexpckg radr radsvh radmsvh radusvh
rotrpm rothz rotrads rotdegs
celsius fahrenheit kelvin
hertz ns µs ms s m h d dtdurationms dtdurations dthms dtdhms timeticks clockms clocks
cps ops reqps rps wps iops cpm opm rpm wpm
velocityms velocitykmh velocitymph velocityknot
mlitre litre m3 Nm3 dm3 gallons
bool bool_yes_no bool_on_off
""".split())


@dataclasses.dataclass
class Problem:
    rule: str
    where: str
    message: str

    def __str__(self):
        return f"{self.rule}: {self.where}: {self.message}"


# --- the metrics contract ---------------------------------------------------

@dataclasses.dataclass
class MetricCatalog:
    """Series names, their labels and the --metrics.naming modes that publish
    them, from docs/metrics.md: its first tables (guide names, with the
    prefix), "Server view" (guide names, published in every mode) and
    "OpenTelemetry names" (the Prometheus column, no prefix)."""

    labels: Dict[str, Set[str]]  # full series name -> labels it may carry
    namings: Dict[str, Set[str]] = dataclasses.field(default_factory=dict)  # name -> {"guide", "otel"}

    SCRAPE_LABELS = frozenset({"job", "instance"})
    SERVER_VIEW_SECTION = "Server view"
    OTEL_SECTION = "OpenTelemetry names"

    @classmethod
    def from_markdown(cls, path: str) -> "MetricCatalog":
        with open(path, encoding="utf-8") as f:
            text = f.read()
        m = re.search(r"default `([A-Za-z_:][A-Za-z0-9_:]*)`", text)
        prefix = m.group(1) if m else "codebase_mcp_pool_"
        catalog = cls({}, {})
        guide_row = re.compile(r"^\|\s*`([A-Za-z_:][A-Za-z0-9_:]*)`\s*\|\s*(\w+)\s*\|\s*([^|]*)\|", re.MULTILINE)
        # | `db.client.connection.count` | `db_client_connection_count` | gauge | labels | guide equivalent |
        otel_row = re.compile(r"^\|\s*`[A-Za-z0-9_.]+`\s*\|\s*`([A-Za-z_:][A-Za-z0-9_:]*)`\s*\|\s*(\w+)\s*\|"
                              r"\s*([^|]*)\|", re.MULTILINE)
        heading = ""
        for part in re.split(r"^(## .*)$", text, flags=re.MULTILINE):
            if part.startswith("## "):
                heading = part[3:].strip()
            elif heading == cls.OTEL_SECTION:
                for name, kind, label_text in otel_row.findall(part):
                    catalog.add(name, kind, label_text, {"otel"})
            else:
                namings = {"guide", "otel"} if heading == cls.SERVER_VIEW_SECTION else {"guide"}
                for name, kind, label_text in guide_row.findall(part):
                    catalog.add(prefix + name, kind, label_text, namings)
        if not catalog.labels:
            raise ValueError(f"{path}: no metric table found")
        return catalog

    def add(self, full: str, kind: str, label_text: str, namings: Set[str]) -> None:
        # "db_client_connection_state (`idle`, `used`)": the label, not its values.
        own = {l.strip() for l in re.sub(r"\([^)]*\)", "", label_text).split(",")}
        allowed = {l for l in own if l} | self.SCRAPE_LABELS
        series = [(full + "_bucket", allowed | {"le"}), (full + "_sum", set(allowed)),
                  (full + "_count", set(allowed))] if kind == "histogram" else [(full, allowed)]
        for name, labels in series:
            self.labels[name] = labels
            self.namings[name] = set(namings)

    def allowed(self, name: Optional[str]) -> Optional[Set[str]]:
        return self.labels.get(name) if name else None

    def published(self, name: Optional[str], naming: str) -> bool:
        """Whether an exporter run with --metrics.naming=`naming` publishes `name`."""
        return naming in self.namings.get(name or "", set())

    def pool_label(self, name: Optional[str]) -> str:
        """The label naming the pool on `name`: OpenTelemetry's, or `pool`."""
        allowed = self.allowed(name) or set()
        return OTEL_POOL_LABEL if OTEL_POOL_LABEL in allowed and "pool" not in allowed else "pool"


# --- PromQL helpers -----------------------------------------------------------

def selectors(node: promql.Node) -> List[promql.Selector]:
    return [n for n, _ in promql.walk(node) if isinstance(n, promql.Selector)]


def metric_names(node: promql.Node) -> Set[str]:
    return {s.name for s in selectors(node) if s.name}


def unwrap(node: promql.Node) -> promql.Node:
    while isinstance(node, promql.ParenExpr):
        node = node.expr
    return node


def is_scalar(node: promql.Node) -> bool:
    node = unwrap(node)
    if isinstance(node, promql.NumberLiteral):
        return True
    if isinstance(node, promql.UnaryExpr):
        return is_scalar(node.expr)
    if isinstance(node, promql.Call):
        return node.func in SCALAR_FUNCTIONS and not node.args
    if isinstance(node, promql.BinaryExpr):
        return is_scalar(node.lhs) and is_scalar(node.rhs)
    return False


def output_labels(node: promql.Node, catalog: Optional[MetricCatalog]) -> Optional[Set[str]]:
    """Labels the result series of `node` can carry; None when unknown."""
    node = unwrap(node)
    if isinstance(node, (promql.NumberLiteral, promql.StringLiteral)):
        return set()
    if isinstance(node, promql.Selector):
        allowed = catalog.allowed(node.name) if catalog else None
        return set(allowed) if allowed is not None else None
    if isinstance(node, (promql.UnaryExpr, promql.Subquery)):
        return output_labels(node.expr, catalog)
    if isinstance(node, promql.Aggregation):
        inner = output_labels(node.expr, catalog)
        if node.op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return inner
        if node.without:
            return None if inner is None else inner - set(node.grouping)
        result = set(node.grouping)
        if node.op == "count_values" and isinstance(unwrap(node.param), promql.StringLiteral):
            result.add(unwrap(node.param).value)
        return result
    if isinstance(node, promql.Call):
        if node.func == "histogram_quantile" and len(node.args) == 2:
            inner = output_labels(node.args[1], catalog)
            return None if inner is None else inner - {"le"}
        if node.func in ("label_replace", "label_join", "absent", "absent_over_time"):
            return None
        for arg in node.args:
            if not isinstance(unwrap(arg), (promql.NumberLiteral, promql.StringLiteral)):
                return output_labels(arg, catalog)
        return set()
    if isinstance(node, promql.BinaryExpr):
        lhs = output_labels(node.lhs, catalog)
        rhs = output_labels(node.rhs, catalog)
        if node.op == "or":
            return None if lhs is None or rhs is None else lhs | rhs
        if node.op in ("and", "unless"):
            return lhs
        if is_scalar(node.lhs):
            return rhs
        if is_scalar(node.rhs):
            return lhs
        if node.group == "group_left":
            return None if lhs is None else lhs | set(node.group_labels)
        if node.group == "group_right":
            return None if rhs is None else rhs | set(node.group_labels)
        if node.matching == "on":
            return set(node.matching_labels)
        if node.matching == "ignoring":
            return None if lhs is None else lhs - set(node.matching_labels)
        return lhs
    return None


def call_quantile(node: promql.Call) -> Optional[float]:
    if node.func != "histogram_quantile" or not node.args:
        return None
    arg = unwrap(node.args[0])
    try:
        return float(arg.text) if isinstance(arg, promql.NumberLiteral) else None
    except ValueError:
        return None


# --- Prometheus -------------------------------------------------------------

class PrometheusServer(loopback.Server):
    """A throwaway Prometheus on a free loopback port with an empty
    configuration, in a temporary directory removed on stop (context manager)."""

    name = "prometheus"
    temp_prefix = "poolscope-dashboard-prom."

    def __init__(self, binary: str = "prometheus"):
        super().__init__(binary)
        self.config_path = os.path.join(self.workdir, "prometheus.yml")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write("global:\n  scrape_interval: 15s\nscrape_configs: []\n")

    def command(self, port: int) -> List[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={os.path.join(self.workdir, 'data')}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]


def prometheus_query_error(url: str, expr: str) -> Optional[str]:
    """None when Prometheus accepts `expr`, else its error ("bad_data: ...")."""
    body = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/query", data=body,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as e:
        try:
            payload = json.load(e)
        except ValueError:
            return f"HTTP {e.code}"
    if payload.get("status") == "success":
        return None
    return f"{payload.get('errorType', 'error')}: {payload.get('error', payload)}"


# --- the linter ---------------------------------------------------------------

class DashboardLinter:
    def __init__(self, dashboard: dict, catalog: Optional[MetricCatalog] = None,
                 expected_uid: str = EXPECTED_UID, naming: str = "guide"):
        if naming not in NAMINGS:
            raise ValueError(f"naming {naming!r}: expected one of {NAMINGS}")
        self.dashboard = dashboard
        self.catalog = catalog
        self.expected_uid = expected_uid
        self.naming = naming
        self.core = CORE_METRICS[naming]
        self.problems: List[Problem] = []
        self.title = dashboard.get("title", "")
        # (where, expr with variables, substituted expr) for the Prometheus check
        self.queries: List[Tuple[str, str, str]] = []
        self.variable_names = {v.get("name") for v in dq.template_variables(dashboard) if v.get("name")}
        self.values = dq.default_values(dashboard)

    def add(self, rule: str, where: str, message: str) -> None:
        self.problems.append(Problem(rule, where, message))

    def run_static(self) -> List[Problem]:
        self.lint_dashboard()
        self.lint_templating()
        self.lint_panels()
        self.lint_naming()
        self.lint_core_panels()
        return self.problems

    def run_prometheus(self, url: str) -> List[Problem]:
        for where, original, expr in self.queries:
            error = prometheus_query_error(url, expr)
            if error:
                rule = "template-label-promql-rule" if where.startswith("variable") else "target-promql-rule"
                self.add(rule, where, f"Prometheus rejects {original!r}: {error}")
        return self.problems

    # dashboard ---------------------------------------------------------------

    def lint_dashboard(self) -> None:
        d = self.dashboard
        uid = d.get("uid")
        if not uid:
            self.add("dashboard-uid-rule", "dashboard", "has no uid; links and provisioning need a stable one")
        elif not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
            self.add("dashboard-uid-rule", "dashboard", f"uid {uid!r} is not a valid Grafana uid")
        elif self.expected_uid and uid != self.expected_uid:
            self.add("dashboard-uid-rule", "dashboard",
                     f"uid changed from {self.expected_uid!r} to {uid!r}; bookmarks and links would break")
        if not self.title:
            self.add("dashboard-title-rule", "dashboard", "has no title")
        version = d.get("schemaVersion")
        if not isinstance(version, int) or version < MIN_SCHEMA_VERSION:
            self.add("dashboard-schema-version-rule", "dashboard",
                     f"schemaVersion {version!r}, expected {MIN_SCHEMA_VERSION} or newer (Grafana 9+)")
        if d.get("editable", True):
            self.add("uneditable-dashboard-rule", "dashboard", "is editable, it should set 'editable: false'")
        if "__inputs" in d:
            self.add("dashboard-provisioning-rule", "dashboard",
                     "has __inputs; file provisioning does not resolve import placeholders")
        text = json.dumps(d)
        for placeholder in sorted(set(re.findall(r"\$\{?DS_[A-Za-z0-9_]+\}?", text))):
            self.add("dashboard-provisioning-rule", "dashboard",
                     f"uses the import placeholder {placeholder}; use the $datasource variable")

    # templating --------------------------------------------------------------

    def lint_templating(self) -> None:
        variables = dq.template_variables(self.dashboard)
        datasources = [v for v in variables if v.get("type") == "datasource"]
        if len(datasources) != 1:
            self.add("template-datasource-rule", "templating",
                     f"needs exactly one datasource variable, has {len(datasources)}")
        for v in datasources:
            if v.get("name") != "datasource":
                self.add("template-datasource-rule", f"variable {v.get('name')!r}",
                         "the datasource variable must be named 'datasource'")
            if v.get("label") != "Data source":
                self.add("template-datasource-rule", f"variable {v.get('name')!r}",
                         f"labelled {v.get('label')!r}, should be 'Data source'")
            if v.get("query") != "prometheus":
                self.add("template-datasource-rule", f"variable {v.get('name')!r}",
                         f"selects {v.get('query')!r} data sources, should be 'prometheus'")

        by_name = {v.get("name"): v for v in variables}
        for name in REQUIRED_QUERY_VARIABLES:
            rule = f"template-{name}-rule"
            where = f"variable {name!r}"
            v = by_name.get(name)
            if v is None:
                self.add(rule, "templating", f"is missing the {name} variable")
                continue
            if v.get("type") != "query":
                self.add(rule, where, f"should be a Prometheus query variable, is {v.get('type')!r}")
            uid = (v.get("datasource") or {}).get("uid") if isinstance(v.get("datasource"), dict) else v.get("datasource")
            if uid not in DATASOURCE_UIDS:
                self.add(rule, where, f"should use datasource '$datasource', uses {uid!r}")
            if v.get("label") != name.title():
                self.add(rule, where, f"labelled {v.get('label')!r}, should be {name.title()!r}")
            if not v.get("multi"):
                self.add(rule, where, "should be multi-select")
            if not v.get("includeAll"):
                self.add(rule, where, "should offer 'All'")
            if v.get("allValue") != ".+":
                self.add(rule, where, f"allValue should be '.+', is {v.get('allValue')!r}")

        for v in variables:
            if v.get("type") != "query":
                continue
            where = f"variable {v.get('name')!r}"
            if v.get("refresh") != 2:
                self.add("template-on-time-change-reload-rule", where,
                         f"refresh is {v.get('refresh')!r}, should be 2 (on time range change)")
            try:
                expr = dq.variable_promql(v)
            except ValueError as e:
                self.add("template-label-promql-rule", where, str(e))
                continue
            if expr is None:
                continue
            self.check_expr(where, expr, variable=True)

    # panels ------------------------------------------------------------------

    def lint_panels(self) -> None:
        ids: Dict[object, str] = {}
        for panel in dq.iter_panels(self.dashboard):
            ptype = panel.get("type", "")
            title = panel.get("title", "")
            where = f"panel {title!r}" if title else f"panel id {panel.get('id')!r}"
            pid = panel.get("id")
            if pid is None:
                self.add("panel-layout-rule", where, "has no id")
            elif pid in ids:
                self.add("panel-layout-rule", where, f"reuses id {pid} of {ids[pid]}")
            else:
                ids[pid] = where
            grid = panel.get("gridPos") or {}
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
                self.add("panel-layout-rule", where, "gridPos needs integer x, y, w and h")
            elif grid["x"] < 0 or grid["w"] <= 0 or grid["x"] + grid["w"] > 24:
                self.add("panel-layout-rule", where, f"gridPos {grid} does not fit the 24-column grid")
            if ptype in NON_DATA_PANEL_TYPES:
                if ptype == "row" and not title:
                    self.add("panel-title-description-rule", where, "row has no title")
                continue

            if not title.strip():
                self.add("panel-title-description-rule", where, "has no title")
            if not str(panel.get("description", "")).strip():
                self.add("panel-title-description-rule", where, "has no description")

            datasource = panel.get("datasource")
            if not isinstance(datasource, dict) or datasource.get("uid") not in DATASOURCE_UIDS \
                    or datasource.get("type") != "prometheus":
                self.add("panel-datasource-rule", where,
                         f"should use {{'type': 'prometheus', 'uid': '${{datasource}}'}}, uses {datasource!r}")

            self.lint_units(where, panel)

            targets = panel.get("targets") or []
            if not targets:
                self.add("panel-no-targets-rule", where, "has no targets")
            ref_ids: Set[str] = set()
            for index, target in enumerate(targets):
                ref = target.get("refId") or f"#{index}"
                twhere = f"{where} target {ref}"
                if not target.get("refId"):
                    self.add("target-refid-rule", twhere, "has no refId")
                elif ref in ref_ids:
                    self.add("target-refid-rule", twhere, "refId used twice in the panel")
                ref_ids.add(ref)
                tds = target.get("datasource")
                if tds is not None and (not isinstance(tds, dict) or tds.get("uid") not in DATASOURCE_UIDS):
                    self.add("target-datasource-rule", twhere, f"overrides the panel datasource with {tds!r}")
                expr = target.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    self.add("target-promql-rule", twhere, "has no PromQL expr")
                    continue
                tree = self.check_expr(twhere, expr)
                if tree is not None:
                    self.lint_legend(twhere, target, tree)

    def lint_units(self, where: str, panel: dict) -> None:
        field_config = panel.get("fieldConfig") or {}
        unit = (field_config.get("defaults") or {}).get("unit")
        if not unit:
            self.add("panel-units-rule", where, "has no unit")
        elif unit not in VALID_UNITS:
            self.add("panel-units-rule", where, f"unit {unit!r} is not a Grafana unit id")
        for override in field_config.get("overrides") or []:
            for prop in override.get("properties") or []:
                if prop.get("id") == "unit" and prop.get("value") not in VALID_UNITS:
                    self.add("panel-units-rule", where, f"override unit {prop.get('value')!r} is not a Grafana unit id")

    def lint_legend(self, where: str, target: dict, tree: promql.Node) -> None:
        legend = target.get("legendFormat") or ""
        used = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
        if not used:
            return
        available = output_labels(tree, self.catalog)
        if available is None:
            return
        missing = sorted(used - available)
        if missing:
            self.add("target-legend-rule", where,
                     f"legend {legend!r} uses {missing} but the query only keeps {sorted(available)}")

    # one expression ----------------------------------------------------------

    def check_expr(self, where: str, expr: str, variable: bool = False) -> Optional[promql.Node]:
        """Applies the target rules to `expr`; returns its tree when it parses."""
        promql_rule = "template-label-promql-rule" if variable else "target-promql-rule"
        undefined = sorted({n for n in dq.variables_used(expr) if n not in self.values})
        if undefined:
            self.add("target-variables-rule", where, f"uses undefined variables {undefined}")
            return None
        self.queries.append((where, expr, dq.substitute(expr, self.values)))
        try:
            tree = promql.parse(expr)
        except promql.PromQLSyntaxError as e:
            self.add(promql_rule, where, f"invalid PromQL {expr!r}: {e}")
            return None

        for node, parents in promql.walk(tree):
            parent = parents[-1] if parents else None
            if isinstance(node, promql.Subquery) and node.range not in RATE_INTERVAL_SPELLINGS:
                self.add("target-rate-interval-rule", where,
                         f"subquery range [{node.range}] should be $__rate_interval")
            if isinstance(node, promql.Aggregation):
                self.lint_grouping(where, node)
            if isinstance(node, promql.Call) and node.func == "histogram_quantile":
                self.lint_histogram_quantile(where, node)
            if not isinstance(node, promql.Selector):
                continue
            name = node.name or "<no name>"
            if node.range is not None and node.range not in RATE_INTERVAL_SPELLINGS:
                self.add("target-rate-interval-rule", where, f"{name}[{node.range}] should use $__rate_interval")
            if not variable:
                for variable_name in REQUIRED_QUERY_VARIABLES:
                    label = variable_name
                    if variable_name == "pool" and self.catalog is not None:
                        label = self.catalog.pool_label(node.name)
                    m = node.matcher(label)
                    if m is None or m.op != "=~" or m.value not in (f"${variable_name}", f"${{{variable_name}}}"):
                        self.add(f"target-{variable_name}-rule", where,
                                 f"{name} needs the matcher {label}=~\"${variable_name}\"")
            if name.endswith("_total") or name.endswith("_bucket"):
                in_counter_function = (node.range is not None and isinstance(parent, promql.Call)
                                       and parent.func in COUNTER_FUNCTIONS)
                if not in_counter_function:
                    self.add("target-counter-agg-rule", where,
                             f"counter series {name} is used outside rate/irate/increase")
            if name.endswith("_bucket") and not any(
                    isinstance(p, promql.Call) and p.func == "histogram_quantile" for p in parents):
                self.add("target-histogram-rule", where, f"{name} is not inside histogram_quantile")
            self.lint_metric(where, node)
        return tree

    def lint_metric(self, where: str, node: promql.Selector) -> None:
        if self.catalog is None:
            return
        if not node.name:
            self.add("target-metric-rule", where, "selector without a metric name")
            return
        allowed = self.catalog.allowed(node.name)
        if allowed is None:
            self.add("target-metric-rule", where, f"{node.name} is not a metric in docs/metrics.md")
            return
        for m in node.matchers:
            if m.label != "__name__" and m.label not in allowed:
                self.add("target-metric-rule", where, f"{node.name} has no label {m.label!r}")

    def lint_grouping(self, where: str, node: promql.Aggregation) -> None:
        if self.catalog is None or node.without:
            return
        available: Set[str] = set()
        for s in selectors(node.expr):
            allowed = self.catalog.allowed(s.name)
            if allowed is None:
                return  # reported by lint_metric
            available |= allowed
        missing = sorted(set(node.grouping) - available)
        if missing:
            self.add("target-metric-rule", where, f"{node.op} by {missing}: no series below carries these labels")

    def lint_histogram_quantile(self, where: str, node: promql.Call) -> None:
        q = call_quantile(node)
        if len(node.args) != 2 or q is None or not 0 <= q <= 1:
            self.add("target-histogram-rule", where, "histogram_quantile needs a quantile in [0, 1] and a vector")
            return
        inner = unwrap(node.args[1])
        if not (isinstance(inner, promql.Aggregation) and inner.op == "sum" and not inner.without
                and "le" in inner.grouping):
            self.add("target-histogram-rule", where,
                     "histogram_quantile should aggregate buckets with sum by (le, ...)")

    # naming mode -----------------------------------------------------------------

    def expr_metrics(self, expr: str) -> Set[str]:
        try:
            return metric_names(promql.parse(expr))
        except promql.PromQLSyntaxError:
            return set()  # reported by the promql rules

    def lint_naming(self) -> None:
        """With --naming otel: no query may silently need a metric an exporter
        run with --metrics.naming=otel does not publish. Such a panel must say
        "needs --metrics.naming=both" in its title and sit in a collapsed row
        whose title names the flag (a collapsed row sends no query until it is
        opened). With guide: every metric is one a guide exporter publishes."""
        if self.catalog is None:
            return
        rule = "naming-rule"
        for v in dq.template_variables(self.dashboard):
            if v.get("type") != "query":
                continue
            try:
                expr = dq.variable_promql(v)
            except ValueError:
                continue  # reported by template-label-promql-rule
            missing = sorted(n for n in self.expr_metrics(expr or "")
                             if self.catalog.allowed(n) is not None and not self.catalog.published(n, self.naming))
            if missing:
                self.add(rule, f"variable {v.get('name')!r}",
                         f"queries {missing}, which --metrics.naming={self.naming} does not publish")

        def check(panel: dict, row: Optional[dict]) -> None:
            title = panel.get("title", "")
            names = set().union(*[self.expr_metrics(t.get("expr", "")) for t in panel.get("targets") or []
                                  if isinstance(t.get("expr"), str)] or [set()])
            missing = sorted(n for n in names
                             if self.catalog.allowed(n) is not None and not self.catalog.published(n, self.naming))
            if not missing:
                return
            where = f"panel {title!r}"
            if self.naming == "guide":
                self.add(rule, where, f"queries {missing}, which --metrics.naming=guide does not publish")
                return
            if f"needs {NEEDS_BOTH}" not in title:
                self.add(rule, where, f"queries {missing}, which --metrics.naming=otel does not publish; "
                                      f"its title should say 'needs {NEEDS_BOTH}'")
            if row is None or not row.get("collapsed") or NEEDS_BOTH not in row.get("title", ""):
                self.add(rule, where, f"queries {missing}, which --metrics.naming=otel does not publish; "
                                      f"it belongs in a collapsed row titled with {NEEDS_BOTH}")

        row = None
        for panel in self.dashboard.get("panels", []):
            if panel.get("type") == "row":
                row = panel
                for nested in panel.get("panels") or []:
                    check(nested, panel)
            elif panel.get("type") not in NON_DATA_PANEL_TYPES:
                # A panel after an expanded row belongs to it; after a collapsed
                # row's header it is still shown, so it counts as outside.
                check(panel, row if row is not None and not row.get("collapsed") else None)

    # the six core panels -------------------------------------------------------

    def parsed_targets(self, panel: dict) -> List[Tuple[dict, promql.Node]]:
        result = []
        for target in panel.get("targets") or []:
            try:
                result.append((target, promql.parse(target.get("expr", ""))))
            except promql.PromQLSyntaxError:
                pass  # reported by target-promql-rule
        return result

    @staticmethod
    def threshold_steps(panel: dict) -> List[Tuple[object, str]]:
        thresholds = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds") or {}
        return [(s.get("value"), s.get("color")) for s in thresholds.get("steps") or []]

    @staticmethod
    def threshold_style(panel: dict) -> str:
        custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom") or {}
        return (custom.get("thresholdsStyle") or {}).get("mode", "off")

    def find_panels(self, *metrics: str) -> List[Tuple[dict, List[Tuple[dict, promql.Node]]]]:
        """Panels using every one of `metrics` (full names, or guide names
        without the prefix)."""
        wanted = {m if m.startswith(("codebase_mcp_pool_", "db_client_")) else "codebase_mcp_pool_" + m
                  for m in metrics}
        found = []
        for panel in dq.iter_panels(self.dashboard):
            if panel.get("type") in NON_DATA_PANEL_TYPES:
                continue
            parsed = self.parsed_targets(panel)
            used = set().union(*(metric_names(tree) for _, tree in parsed)) if parsed else set()
            if wanted <= used:
                found.append((panel, parsed))
        return found

    def lint_core_panels(self) -> None:
        rule = "core-panels-rule"

        # 1. utilisation: idle, active, a total, and max as a dashed line
        candidates = self.find_panels(self.core["idle"], self.core["active"], self.core["max"])
        candidates = [c for c in candidates if c[0].get("type") == "timeseries"]
        if not candidates:
            self.add(rule, "dashboard", "no time series of idle/active connections with max_connections (guide panel 1)")
        for panel, parsed in candidates:
            max_refs = [t.get("refId") for t, tree in parsed
                        if metric_names(tree) == {self.core["max"]}]
            dashed = set()
            for override in (panel.get("fieldConfig") or {}).get("overrides") or []:
                matcher = override.get("matcher") or {}
                for prop in override.get("properties") or []:
                    if prop.get("id") == "custom.lineStyle" and (prop.get("value") or {}).get("fill") == "dash" \
                            and matcher.get("id") == "byFrameRefID":
                        dashed.add(matcher.get("options"))
            if not max_refs or not set(max_refs) <= dashed:
                self.add(rule, f"panel {panel.get('title')!r}", "max_connections should be drawn as a dashed line")

        # 2. acquisition latency p50/p95/p99 with the 10 ms line
        candidates = self.find_panels(self.core["latency"])
        if not candidates:
            self.add(rule, "dashboard", "no acquisition latency panel (guide panel 2)")
        for panel, parsed in candidates:
            where = f"panel {panel.get('title')!r}"
            quantiles = {call_quantile(n) for _, tree in parsed for n, _ in promql.walk(tree)
                         if isinstance(n, promql.Call)} - {None}
            if not {0.5, 0.95, 0.99} <= quantiles:
                self.add(rule, where, f"should show p50, p95 and p99, shows {sorted(quantiles)}")
            if 0.01 not in [v for v, _ in self.threshold_steps(panel)] or self.threshold_style(panel) == "off":
                self.add(rule, where, "needs a visible threshold line at 0.01 s (10 ms p95 target)")

        # 3. health: stat, 0 green / 1 yellow / 2 red, named values
        candidates = [c for c in self.find_panels("health_status") if c[0].get("type") == "stat"]
        if not candidates:
            self.add(rule, "dashboard", "no stat panel of health_status (guide panel 3)")
        for panel, _ in candidates:
            where = f"panel {panel.get('title')!r}"
            steps = {(v if v is not None else 0): c for v, c in self.threshold_steps(panel)}
            if steps != {0: "green", 1: "yellow", 2: "red"}:
                self.add(rule, where, f"thresholds should be 0 green, 1 yellow, 2 red, are {steps}")
            names = {}
            for mapping in (panel.get("fieldConfig") or {}).get("defaults", {}).get("mappings") or []:
                if mapping.get("type") == "value":
                    names.update({k: (v or {}).get("text") for k, v in (mapping.get("options") or {}).items()})
            if names != {"0": "healthy", "1": "degraded", "2": "unhealthy"}:
                self.add(rule, where, f"values should map to healthy/degraded/unhealthy, map {names}")
            if (panel.get("options") or {}).get("colorMode") != "background":
                self.add(rule, where, "should colour the background")

        # 4. waiting requests with the line at 10
        candidates = [c for c in self.find_panels(self.core["waiting"]) if c[0].get("type") == "timeseries"]
        if not candidates:
            self.add(rule, "dashboard", "no time series of waiting_requests (guide panel 4)")
        for panel, _ in candidates:
            if 10 not in [v for v, _ in self.threshold_steps(panel)] or self.threshold_style(panel) == "off":
                self.add(rule, f"panel {panel.get('title')!r}", "needs a visible threshold line at 10")

        # 5. throughput and 6. errors by type
        if not self.find_panels("acquisitions_total", "releases_total"):
            self.add(rule, "dashboard", "no acquisition/release throughput panel (guide panel 5)")
        errors = self.find_panels("errors_total")
        if not errors:
            self.add(rule, "dashboard", "no error rate panel (guide panel 6)")
        for panel, parsed in errors:
            if not any("error_type" in (output_labels(tree, self.catalog) or set()) for _, tree in parsed):
                self.add(rule, f"panel {panel.get('title')!r}", "errors should be broken down by error_type")

        # lifecycle states as a state timeline
        if not [c for c in self.find_panels("state") if c[0].get("type") == "state-timeline"]:
            self.add(rule, "dashboard", "no state-timeline panel of the lifecycle state series")


def lint(dashboard: dict, catalog: Optional[MetricCatalog], prometheus_url: Optional[str],
         expected_uid: str = EXPECTED_UID, naming: str = "guide") -> List[Problem]:
    """Every problem in `dashboard`; Prometheus checks only when a URL is given."""
    linter = DashboardLinter(dashboard, catalog, expected_uid, naming)
    linter.run_static()
    if prometheus_url:
        linter.run_prometheus(prometheus_url)
    return linter.problems


def main(argv: Optional[Iterable[str]] = None) -> int:
    root = os.path.dirname(os.path.dirname(HERE))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", default=os.path.join(root, "grafana", "connection-pool-dashboard.json"))
    parser.add_argument("--metrics-doc", default=os.path.join(root, "docs", "metrics.md"),
                        help="the metrics reference whose names and labels queries must use")
    parser.add_argument("--uid", default=EXPECTED_UID, help="the uid the dashboard must keep")
    parser.add_argument("--naming", choices=NAMINGS, default="guide",
                        help="the --metrics.naming the dashboard is for: its core panels use those names, "
                             "and with otel a panel needing other metrics must be marked (default %(default)s)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--prometheus", default="prometheus", help="Prometheus binary to start")
    group.add_argument("--prometheus-url", help="use this running Prometheus instead of starting one")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        dashboard = dq.load_dashboard(args.dashboard)
        catalog = MetricCatalog.from_markdown(args.metrics_doc)
    except (OSError, ValueError) as e:
        print(f"dashboard_lint: {e}", file=sys.stderr)
        return 2

    try:
        if args.prometheus_url:
            problems = lint(dashboard, catalog, args.prometheus_url, args.uid, args.naming)
        else:
            with PrometheusServer(args.prometheus) as server:
                problems = lint(dashboard, catalog, server.url, args.uid, args.naming)
    except RuntimeError as e:
        print(f"dashboard_lint: {e}", file=sys.stderr)
        return 2

    name = args.dashboard
    for problem in problems:
        print(f"{name}: {problem}")
    queries = len(dq.panel_queries(dashboard)) + len(dq.variable_queries(dashboard))
    if problems:
        print(f"dashboard_lint: {len(problems)} problem(s) in {name}")
        return 1
    panels = sum(1 for p in dq.iter_panels(dashboard) if p.get("type") not in NON_DATA_PANEL_TYPES)
    print(f"dashboard_lint: {name}: {panels} panels, {queries} queries, all rules pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
