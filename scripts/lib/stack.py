#!/usr/bin/python3
"""A whole monitoring stack on loopback: exporters, Prometheus, Alertmanager and
a receiver standing in for PagerDuty and Slack.

What it starts, each on a free 127.0.0.1 port, with its files in one work
directory that is removed again on stop:

  exporters      N poolscope-exporter processes, each with its own pool and
                 DATABASE_URL (and optionally --workload.workers synthetic load)
  Prometheus     Debian's `prometheus`, scraping the exporters as job
                 "poolscope", loading the given rules file, alerting to the
                 Alertmanager below
  Alertmanager   Debian's `prometheus-alertmanager`, clustering off, with a
                 test copy of the given configuration
  receiver       an HTTP server in this process that records every POST (the
                 PagerDuty Events v2 and Slack webhook calls) in memory and in
                 a JSON-lines file

The shipped files are never modified. The Alertmanager gets a test copy of
its configuration in which the routing is unchanged and only the
destinations differ: PagerDuty's `url` and Slack's `api_url` point at the
receiver, and the `*_file` secrets point at freshly written files in the
work directory (so `routing_key_file` and `api_url_file` are exercised as
shipped). The rules can be loaded as shipped or as a test copy with shorter
`for:` durations and evaluation intervals.

As a library (tests/e2e/ uses it):

    with Stack(exporter_binary, [ExporterSpec(url, workload_workers=2)],
               rules=RULES, alertmanager_config=ALERTMANAGER_CONFIG,
               scrape_interval="1s") as stack:
        stack.wait_until_scraped()
        stack.prometheus.query("codebase_mcp_pool_connections_total")
        stack.receiver.notifications("pagerduty")

As a program (scripts/run uses it):

    stack.py up --exporter-binary build/exporter/poolscope-exporter \\
        --database-url URL [--database-url URL2 ...] [--exporters 1] \\
        [--workload-workers 0] [--rules rules/codebase-mcp-pool.yml] \\
        [--alertmanager-config rules/alertmanager.yml] [--speedup N]

prints the URLs to open and runs until SIGINT or SIGTERM, then stops every
process it started and removes its work directory. Every process it starts
runs in its own session (so a terminal's Ctrl-C reaches only this program,
which then stops them in order) and is killed by the kernel should this
program die without cleaning up.
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Sequence

import yaml

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import exporter_process  # noqa: E402
# The process, HTTP and server helpers; imported by name so that the tests'
# stack.free_port, stack.stop_processes, ... stay as they were.
from loopback import (READY_TIMEOUT_S, Response, Server, ServerError, Startable,  # noqa: E402,F401
                      free_port, http_get, log_errors, log_tail, poll, signal_group, stop_processes)

SHIPPED_RULES = os.path.join(SOURCE_DIR, "rules", "codebase-mcp-pool.yml")
SHIPPED_ALERTMANAGER_CONFIG = os.path.join(SOURCE_DIR, "rules", "alertmanager.yml")
SCRAPE_JOB = "poolscope"

# Something the stack needs is missing or a process failed to start.
StackError = ServerError


class _ReadableDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, templates) as literal blocks."""


def _represent_text(dumper, text):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ReadableDumper.add_representer(str, _represent_text)


def _dump_yaml(document, stream) -> None:
    yaml.dump(document, stream, Dumper=_ReadableDumper, sort_keys=False, width=1000)


# ---------------------------------------------------------------------------
# Durations, HTTP (ports and processes: loopback.py)


DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
DURATION_UNITS_S = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as "30s", "5m", "1h30m", "250ms"."""
    match = DURATION_RE.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(part) * unit for part, unit in zip(match.groups(), DURATION_UNITS_S) if part)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for `seconds` (whole milliseconds)."""
    milliseconds = max(0, round(seconds * 1000))
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    return f"{milliseconds // 1000}s"


def load_yaml(path: str):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def http_json(url: str, timeout: float = 10):
    return json.loads(http_get(url, timeout).body)


# ---------------------------------------------------------------------------
# Test copies of the shipped configuration


def rules_test_copy(source: str, destination: str,
                    for_seconds: Optional[Callable[[str, float], float]] = None,
                    group_interval: Optional[str] = None) -> str:
    """Writes a copy of the rules file `source` to `destination`.

    for_seconds(alertname, seconds) gives each alert's new `for:` (seconds);
    group_interval replaces every group's evaluation `interval`. Expressions,
    labels and annotations are copied unchanged."""
    document = load_yaml(source)
    for group in document.get("groups", []):
        if group_interval is not None:
            group["interval"] = group_interval
        for rule in group.get("rules", []):
            if for_seconds is not None and "alert" in rule and "for" in rule:
                rule["for"] = format_duration(for_seconds(rule["alert"], parse_duration(rule["for"])))
    with open(destination, "w", encoding="utf-8") as f:
        f.write(f"# Test copy of {source}: only for: durations and group intervals differ.\n")
        _dump_yaml(document, f)
    return destination


def divided_for(divisor: float, floor_s: float = 1.0) -> Callable[[str, float], float]:
    """for_seconds that divides every for: by `divisor` (at least floor_s, unless it was 0)."""
    return lambda _alert, seconds: 0 if seconds == 0 else max(floor_s, seconds / divisor)


def fixed_for(seconds: float) -> Callable[[str, float], float]:
    """for_seconds that gives every alert the same for: (0 stays 0)."""
    return lambda _alert, original: 0 if original == 0 else seconds


# Integrations the test copy knows how to point at the receiver. Any other
# would notify the outside world, so a configuration using one is refused.
REDIRECTED_INTEGRATIONS = ("pagerduty_configs", "slack_configs", "webhook_configs")


def alertmanager_test_copy(source: str, destination: str, receiver_url: str, secrets_dir: str,
                           routing_key: str, route_timing: Optional[Dict[str, str]] = None) -> str:
    """Writes a copy of the Alertmanager configuration `source` to `destination`
    that delivers everything to the local receiver at receiver_url.

    Routes, matchers, inhibition, templates and receivers stay as they are.
    Changed: every PagerDuty `url` (→ receiver_url/pagerduty/<receiver>/v2/enqueue),
    every Slack or webhook destination (→ receiver_url/slack/<receiver>/… and
    /webhook/<receiver>), each `*_file` secret (a new file in secrets_dir: the
    PagerDuty key is `routing_key`, the Slack file holds the receiver's URL), and,
    when route_timing is given, those keys (group_wait, group_interval,
    repeat_interval) on every route that sets them or on the root route."""
    config = load_yaml(source)
    os.makedirs(secrets_dir, mode=0o700, exist_ok=True)

    def secret_file(name: str, content: str) -> str:
        path = os.path.join(secrets_dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
        return path

    global_section = config.get("global") or {}
    if "pagerduty_url" in global_section:
        global_section["pagerduty_url"] = f"{receiver_url}/pagerduty/global/v2/enqueue"
    if "slack_api_url" in global_section:
        global_section["slack_api_url"] = f"{receiver_url}/slack/global"
    if "slack_api_url_file" in global_section:
        global_section["slack_api_url_file"] = secret_file("global-slack-api-url", f"{receiver_url}/slack/global")

    for receiver in config.get("receivers", []) or []:
        name = receiver["name"]
        path_name = urllib.parse.quote(name, safe="")
        for key, integrations in receiver.items():
            if key == "name":
                continue
            if key not in REDIRECTED_INTEGRATIONS:
                raise StackError(f"receiver {name!r} uses {key}, which the test copy cannot point at "
                                 f"the local receiver; supported: {', '.join(REDIRECTED_INTEGRATIONS)}")
            for index, integration in enumerate(integrations or []):
                base = f"{name}-{index}"
                if key == "pagerduty_configs":
                    integration["url"] = f"{receiver_url}/pagerduty/{path_name}/v2/enqueue"
                    for secret in ("routing_key_file", "service_key_file"):
                        if secret in integration:
                            integration[secret] = secret_file(f"{base}-{secret}", routing_key)
                elif key == "slack_configs":
                    url = f"{receiver_url}/slack/{path_name}"
                    if "api_url_file" in integration:
                        integration["api_url_file"] = secret_file(f"{base}-api-url", url)
                    else:
                        integration["api_url"] = url
                else:
                    url = f"{receiver_url}/webhook/{path_name}"
                    if "url_file" in integration:
                        integration["url_file"] = secret_file(f"{base}-url", url)
                    else:
                        integration["url"] = url

    if route_timing:
        def retime(route: dict, is_root: bool) -> None:
            for key, value in route_timing.items():
                if is_root or key in route:
                    route[key] = value
            for child in route.get("routes", []) or []:
                retime(child, False)
        retime(config["route"], True)

    with open(destination, "w", encoding="utf-8") as f:
        f.write(f"# Test copy of {source}: routing unchanged, deliveries go to {receiver_url}.\n")
        _dump_yaml(config, f)
    return destination


# ---------------------------------------------------------------------------
# The receiver standing in for PagerDuty and Slack


class NotificationReceiver:
    """Records every POST it gets; thread-safe.

    Paths: /pagerduty/<receiver>/v2/enqueue answers like PagerDuty's Events
    API v2 (202), /slack/<receiver> like a Slack incoming webhook ("ok"),
    /webhook/<receiver> with 200. GET / lists what was recorded as JSON. Each
    record is {received_at, kind, receiver, path, body} (body parsed as JSON
    when it is JSON) and is also appended to log_path as one JSON line."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self._records: List[dict] = []
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                kind, name = receiver._classify(self.path)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", errors="replace")
                receiver._record({"received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                  "kind": kind, "receiver": name, "path": self.path, "body": body})
                if kind == "pagerduty":
                    dedup_key = body.get("dedup_key") if isinstance(body, dict) else None
                    self._answer(202, "application/json", json.dumps(
                        {"status": "success", "message": "Event processed", "dedup_key": dedup_key}))
                elif kind == "slack":
                    self._answer(200, "text/plain", "ok")
                else:
                    self._answer(200, "text/plain", "")

            def do_GET(self):  # noqa: N802
                if self.path in ("/", "/notifications"):
                    self._answer(200, "application/json", json.dumps(receiver.notifications(), indent=2))
                else:
                    self._answer(404, "text/plain", "not found\n")

            def _answer(self, status, content_type, text):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="notification-receiver",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _classify(path: str):
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        kind = parts[0] if parts and parts[0] in ("pagerduty", "slack", "webhook") else "other"
        name = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        return kind, name

    def _record(self, record: dict) -> None:
        with self._lock:
            self._records.append(record)
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def notifications(self, kind: Optional[str] = None) -> List[dict]:
        """Copies of the records so far, optionally only of one kind."""
        with self._lock:
            return [json.loads(json.dumps(r)) for r in self._records if kind is None or r["kind"] == kind]

    def wait_for(self, predicate: Callable[[List[dict]], object], timeout_s: float, what: str):
        """Polls predicate(all records) until truthy; returns its value."""
        return poll(lambda: predicate(self.notifications()), timeout_s, interval_s=0.2, what=what)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with self._lock:
            self._log.close()


# ---------------------------------------------------------------------------
# Processes


@dataclasses.dataclass
class ExporterSpec:
    """One exporter of the stack: its database, pool name, load and extra flags."""
    database_url: str
    pool_name: Optional[str] = None       # --pool.name; the exporter's default when None
    workload_workers: int = 0             # --workload.workers
    args: Sequence[str] = ()              # further exporter flags
    env: Optional[Dict[str, str]] = None  # further environment variables


class StackExporter(exporter_process.Exporter):
    """An exporter of the stack, made from its ExporterSpec, in its own session
    and killed with this process. Interface: wait_listening(), url(path),
    output(), stop(), close()."""

    def __init__(self, binary: str, spec: ExporterSpec, workdir: str):
        self.spec = spec
        args = []
        if spec.pool_name:
            args.append(f"--pool.name={spec.pool_name}")
        if spec.workload_workers:
            args.append(f"--workload.workers={spec.workload_workers}")
        args.extend(spec.args)
        super().__init__(binary, spec.database_url, args, spec.env, workdir, own_session=True)

    @property
    def target(self) -> str:
        """host:port as Prometheus scrapes it (the `instance` label)."""
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.process.poll() is None:
            signal_group(self.process, signal.SIGKILL)
            self.process.wait()
        self.returncode = self.process.returncode
        self.log.close()


class Prometheus(Server):
    """Debian's prometheus with a generated configuration."""

    name = "prometheus"

    def __init__(self, workdir: str, targets: Sequence[str], rule_files: Sequence[str] = (),
                 alertmanager: Optional[str] = None, scrape_interval: str = "5s",
                 evaluation_interval: Optional[str] = None, binary: str = "prometheus",
                 alert_resend_delay: Optional[str] = None, port: Optional[int] = None):
        super().__init__(binary, workdir, port)
        self.config_path = os.path.join(workdir, "prometheus.yml")
        self.alert_resend_delay = alert_resend_delay
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval or scrape_interval,
            },
            "rule_files": [os.path.abspath(path) for path in rule_files],
            "scrape_configs": [{
                "job_name": SCRAPE_JOB,
                "static_configs": [{"targets": list(targets)}],
            }],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        with open(self.config_path, "w", encoding="utf-8") as f:
            _dump_yaml(config, f)

    def command(self, port: int) -> List[str]:
        command = [self.binary, f"--config.file={self.config_path}",
                   f"--storage.tsdb.path={os.path.join(self.workdir, 'data')}",
                   f"--web.listen-address=127.0.0.1:{port}",
                   f"--web.external-url=http://127.0.0.1:{port}/"]
        if self.alert_resend_delay:
            command.append(f"--rules.alert.resend-delay={self.alert_resend_delay}")
        return command

    def api(self, path: str, **params):
        """data of /api/v1/<path>; raises on an error answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        response = http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=30)
        document = json.loads(response.body)
        if document.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {document.get('errorType')}: {document.get('error')}")
        return document["data"]

    def query(self, expr: str, at: Optional[float] = None) -> List[dict]:
        """The instant vector (or scalar as a one-element list) of `expr`."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self) -> List[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def rules(self) -> List[dict]:
        return self.api("rules")["groups"]

    def alerts(self) -> List[dict]:
        return self.api("alerts")["alerts"]

    def series(self, match: str = '{__name__=~".+"}') -> List[dict]:
        return self.api("series", **{"match[]": match})


class Alertmanager(Server):
    """Debian's prometheus-alertmanager, clustering off, own storage."""

    name = "alertmanager"

    def __init__(self, workdir: str, config_path: str, binary: str = "prometheus-alertmanager"):
        super().__init__(binary, workdir)
        self.config_path = config_path

    def command(self, port: int) -> List[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.path={os.path.join(self.workdir, 'data')}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.external-url=http://127.0.0.1:{port}/",
                "--cluster.listen-address="]

    def alerts(self) -> List[dict]:
        return http_json(f"{self.url}/api/v2/alerts")


# ---------------------------------------------------------------------------
# The stack


class Stack(Startable):
    """Exporters + Prometheus + Alertmanager + receiver; a context manager.

    exporter_binary      path of poolscope-exporter
    exporters            one ExporterSpec per exporter
    rules                rules file for Prometheus (None: none)
    rules_for_seconds    when given, Prometheus loads a test copy of `rules`
                         with for: = rules_for_seconds(alertname, seconds) (see
                         divided_for, fixed_for) and every group evaluated at
                         evaluation_interval
    alertmanager_config  Alertmanager configuration; a test copy delivering to
                         the receiver is what runs
    alertmanager_timing  e.g. {"group_wait": "1s", "group_interval": "2s"} for
                         the test copy
    scrape_interval      also the evaluation interval unless that is given
    workdir              where every file goes (default: a new temporary
                         directory, removed on stop unless keep_workdir)
    """

    def __init__(self, exporter_binary: str, exporters: Sequence[ExporterSpec],
                 rules: Optional[str] = SHIPPED_RULES,
                 rules_for_seconds: Optional[Callable[[str, float], float]] = None,
                 alertmanager_config: str = SHIPPED_ALERTMANAGER_CONFIG,
                 alertmanager_timing: Optional[Dict[str, str]] = None,
                 scrape_interval: str = "5s", evaluation_interval: Optional[str] = None,
                 alert_resend_delay: Optional[str] = None,
                 workdir: Optional[str] = None, keep_workdir: bool = False,
                 prometheus_binary: str = "prometheus",
                 alertmanager_binary: str = "prometheus-alertmanager"):
        if not exporters:
            raise ValueError("a stack needs at least one exporter")
        if not os.access(exporter_binary, os.X_OK):
            raise StackError(f"{exporter_binary} is not an executable; build the target poolscope-exporter")
        for binary in (prometheus_binary, alertmanager_binary):
            if not shutil.which(binary):
                raise StackError(f"{binary} not found; install it with scripts/setup")
        self.exporter_binary = exporter_binary
        self.exporter_specs = list(exporters)
        self.rules_source = rules
        self.rules_for_seconds = rules_for_seconds
        self.alertmanager_source = alertmanager_config
        self.alertmanager_timing = alertmanager_timing
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.alert_resend_delay = alert_resend_delay
        self.prometheus_binary = prometheus_binary
        self.alertmanager_binary = alertmanager_binary
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="poolscope-stack.")
        os.makedirs(self.workdir, exist_ok=True)
        self.keep_workdir = keep_workdir
        self.routing_key = "e2e" + secrets.token_hex(16)[:29]  # 32 characters, like PagerDuty's
        self.rules_path: Optional[str] = None
        self.alertmanager_config_path: Optional[str] = None
        self.receiver: Optional[NotificationReceiver] = None
        self.alertmanager: Optional[Alertmanager] = None
        self.exporters: List[StackExporter] = []
        self.prometheus: Optional[Prometheus] = None
        self._stopped = False

    # -- lifecycle (entering `with` starts the stack, leaving it stops it)

    def start(self) -> "Stack":
        self.receiver = NotificationReceiver(os.path.join(self.workdir, "notifications.jsonl"))

        self.alertmanager_config_path = alertmanager_test_copy(
            self.alertmanager_source, os.path.join(self.workdir, "alertmanager.yml"), self.receiver.url,
            os.path.join(self.workdir, "secrets"), self.routing_key, self.alertmanager_timing)
        self.alertmanager = Alertmanager(os.path.join(self.workdir, "alertmanager"),
                                         self.alertmanager_config_path, self.alertmanager_binary).start()

        # Prometheus starts once it knows the exporters' ports; its port is
        # chosen now so that the exporters' landing pages can link it.
        prometheus_port = free_port()
        for index, spec in enumerate(self.exporter_specs):
            spec = dataclasses.replace(spec, args=[
                f"--landing-page.alertmanager-url={self.alertmanager.url}",
                f"--landing-page.prometheus-url=http://127.0.0.1:{prometheus_port}", *spec.args])
            self.exporters.append(StackExporter(self.exporter_binary, spec,
                                                os.path.join(self.workdir, f"exporter-{index + 1}")))
        for exporter in self.exporters:
            exporter.wait_listening()

        rule_files = []
        if self.rules_source:
            self.rules_path = self.rules_source
            if self.rules_for_seconds is not None:
                self.rules_path = rules_test_copy(self.rules_source, os.path.join(self.workdir, "rules.yml"),
                                                  self.rules_for_seconds, self.evaluation_interval)
            rule_files.append(self.rules_path)
        self.prometheus = Prometheus(os.path.join(self.workdir, "prometheus"),
                                     [e.target for e in self.exporters], rule_files,
                                     f"127.0.0.1:{self.alertmanager.port}", self.scrape_interval,
                                     self.evaluation_interval, self.prometheus_binary,
                                     self.alert_resend_delay, prometheus_port).start()
        return self

    def stop(self) -> None:
        """Stops everything that runs (all at once, SIGKILL after a grace
        period) and removes the work directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        processes = [s.process for s in (self.prometheus, self.alertmanager) if s and s.process]
        processes += [e.process for e in self.exporters]
        try:
            stop_processes(processes)
        finally:
            for exporter in self.exporters:
                exporter.close()
            if self.receiver:
                self.receiver.close()
            if self._own_workdir and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def failed_processes(self) -> List[str]:
        """A line for each process of the stack that is no longer running."""
        failed = []
        for index, exporter in enumerate(self.exporters):
            if exporter.process.poll() is not None:
                failed.append(f"exporter {index + 1} exited with {exporter.process.returncode}; "
                              f"its log ({exporter.log_path}) ends:\n{log_tail(exporter.log_path)}")
        for server in (self.alertmanager, self.prometheus):
            if server and not server.running():
                failed.append(f"{server.name} exited; from its log ({server.log_path}):\n"
                              f"{log_errors(server.log_path)}")
        return failed

    # -- waiting

    def wait_until_scraped(self, timeout_s: float = READY_TIMEOUT_S) -> List[dict]:
        """Waits until Prometheus has scraped every exporter successfully."""
        expected = {e.target for e in self.exporters}

        def all_up():
            targets = self.prometheus.targets()
            up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
            return targets if expected <= up else None
        return poll(all_up, timeout_s, interval_s=0.2, what="Prometheus to scrape every exporter")

    def wait_for_rules_evaluated(self, timeout_s: float = READY_TIMEOUT_S) -> List[dict]:
        """Waits until every rule group has been evaluated at least once."""
        def evaluated():
            groups = self.prometheus.rules()
            done = groups and all(not g["lastEvaluation"].startswith("0001-") for g in groups)
            return groups if done else None
        return poll(evaluated, timeout_s, interval_s=0.2, what="every rule group to be evaluated")

    # -- description

    def describe(self) -> dict:
        """Every URL and file of the running stack."""
        return {
            "exporters": [{
                "pool": e.spec.pool_name or "default",
                "workload_workers": e.spec.workload_workers,
                "instance": e.target,
                "landing_page": e.url("/"),
                "metrics": e.url("/metrics"),
                "health": e.url("/health"),
                "mcp": e.url("/mcp"),
                "log": e.log_path,
            } for e in self.exporters],
            "prometheus": {
                "ui": self.prometheus.url + "/",
                "targets": self.prometheus.url + "/classic/targets",
                "alerts": self.prometheus.url + "/classic/alerts",
                "rules_file": self.rules_path,
                "log": self.prometheus.log_path,
            },
            "alertmanager": {
                "ui": self.alertmanager.url + "/",
                "config": self.alertmanager_config_path,
                "log": self.alertmanager.log_path,
            },
            "receiver": {
                "url": self.receiver.url + "/",
                "log": self.receiver.log_path,
            },
            "workdir": self.workdir,
            "workdir_removed_on_stop": self._own_workdir and not self.keep_workdir,
        }


class PgCluster:
    """A throwaway PostgreSQL cluster made with scripts/lib/pgctl.

    directory's parent must be traversable by the postgres user (chmod 755 a
    mkdtemp directory above it)."""

    def __init__(self, pgctl: str, directory: str, max_connections: Optional[int] = None):
        self.pgctl = pgctl
        self.directory = directory
        self.max_connections = max_connections
        self.env: Dict[str, str] = {}

    def _run(self, *args: str) -> None:
        subprocess.run([self.pgctl, *args], check=True, stdout=subprocess.DEVNULL, timeout=300)

    def create(self) -> "PgCluster":
        args = ["create", self.directory] + ([str(self.max_connections)] if self.max_connections else [])
        self._run(*args)
        with open(os.path.join(self.directory, "env"), encoding="utf-8") as f:
            self.env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return self

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    @property
    def password(self) -> str:
        return self.env["POOLSCOPE_DB_PASSWORD"]

    def stop(self, mode: str = "immediate") -> None:
        self._run("stop", self.directory, mode)

    def start(self) -> None:
        self._run("start", self.directory)

    def destroy(self) -> None:
        subprocess.run([self.pgctl, "destroy", self.directory], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)

    def __enter__(self) -> "PgCluster":
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc) -> None:
        self.destroy()


# ---------------------------------------------------------------------------
# Command line


def _print_description(description: dict, stream) -> None:
    out = []
    out.append("")
    out.append("  poolscope monitoring stack is running. Open:")
    for index, e in enumerate(description["exporters"]):
        workers = e["workload_workers"]
        load = f", {workers} synthetic-load worker{'s' if workers != 1 else ''}" if workers else ""
        out.append(f"    exporter {index + 1} (pool {e['pool']}{load})")
        out.append(f"      {e['landing_page']:<40} landing page")
        out.append(f"      {e['metrics']:<40} metrics")
        out.append(f"      {e['health']:<40} health")
        out.append(f"      {e['mcp']:<40} MCP (POST JSON-RPC)")
        out.append(f"      log: {e['log']}")
    p, a, r = description["prometheus"], description["alertmanager"], description["receiver"]
    out.append(f"    Prometheus     {p['ui']:<30} (targets: {p['targets']}, alerts: {p['alerts']})")
    out.append(f"                   rules: {p['rules_file']}")
    out.append(f"    Alertmanager   {a['ui']:<30} (test copy of the routing: {a['config']})")
    out.append(f"    PagerDuty/Slack stand-in  {r['url']}  (notifications received, as JSON)")
    out.append(f"                   log: {r['log']}")
    if description["workdir_removed_on_stop"]:
        out.append(f"  Ctrl-C stops everything and removes {description['workdir']}.")
    else:
        out.append(f"  Ctrl-C stops everything; the files stay in {description['workdir']}.")
    out.append("")
    print("\n".join(out), file=stream, flush=True)


class _Interrupted(Exception):
    pass


def _command_up(args) -> int:
    urls = args.database_url or ([os.environ["DATABASE_URL"]] if os.environ.get("DATABASE_URL") else [])
    if not urls:
        print("stack: give --database-url (or set DATABASE_URL)", file=sys.stderr)
        return 2
    count = args.exporters or len(urls)
    specs = [ExporterSpec(database_url=urls[i % len(urls)],
                          pool_name=(f"{args.pool_name}-{i + 1}" if count > 1 else args.pool_name)
                          if args.pool_name else None,
                          workload_workers=args.workload_workers,
                          args=list(args.exporter_arg))
             for i in range(count)]
    for_seconds = divided_for(args.speedup) if args.speedup > 1 else None
    timing = None
    if args.speedup > 1:
        source = load_yaml(args.alertmanager_config).get("route", {})
        timing = {key: format_duration(max(1.0, parse_duration(source[key]) / args.speedup))
                  for key in ("group_wait", "group_interval") if key in source}

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print(f"\nstack: {signal.Signals(signum).name} received, stopping", file=sys.stderr, flush=True)
        raise _Interrupted()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    stack = None
    status = 0
    try:
        stack = Stack(args.exporter_binary, specs, rules=args.rules, rules_for_seconds=for_seconds,
                      alertmanager_config=args.alertmanager_config, alertmanager_timing=timing,
                      scrape_interval=args.scrape_interval,
                      alert_resend_delay="5s" if args.speedup > 1 else None,
                      workdir=args.workdir, keep_workdir=args.keep_workdir)
        print(f"stack: starting {count} exporter(s), Prometheus and Alertmanager in {stack.workdir}",
              file=sys.stderr, flush=True)
        stack.start()
        if args.json:
            print(json.dumps(stack.describe()), flush=True)
        else:
            _print_description(stack.describe(), sys.stdout)
        while True:
            time.sleep(1)
            failed = stack.failed_processes()
            if failed:
                print("stack: stopping because a process ended:\n" + "\n".join(failed), file=sys.stderr)
                status = 1
                break
    except _Interrupted:
        status = 0
    except (StackError, AssertionError, ValueError, OSError) as error:
        print(f"stack: {error}", file=sys.stderr)
        status = 1
    finally:
        stopping = True
        if stack is not None:
            print("stack: stopping Prometheus, Alertmanager and the exporters", file=sys.stderr, flush=True)
            stack.stop()
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run poolscope exporters with a real Prometheus, Alertmanager and a local "
                    "PagerDuty/Slack stand-in, all on 127.0.0.1.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack, print its URLs, run until Ctrl-C or SIGTERM",
                             description="Start the stack, print its URLs and run until SIGINT/SIGTERM; "
                                         "then stop every process and remove the work directory.")
    up.add_argument("--exporter-binary", required=True, metavar="PATH", help="poolscope-exporter to run")
    up.add_argument("--database-url", action="append", metavar="URL",
                    help="database of an exporter; repeat for several (default: $DATABASE_URL); "
                         "with fewer URLs than --exporters they are used in turn")
    up.add_argument("--exporters", type=int, default=0, metavar="N",
                    help="number of exporters (default: one per --database-url)")
    up.add_argument("--workload-workers", type=int, default=0, metavar="N",
                    help="synthetic-load threads per exporter (default: 0, no load)")
    up.add_argument("--pool-name", metavar="NAME",
                    help="pool label (numbered -1, -2, ... with several exporters; default: the exporter's)")
    up.add_argument("--exporter-arg", action="append", default=[], metavar="FLAG",
                    help="extra exporter flag, e.g. --exporter-arg=--log.format=text (repeatable)")
    up.add_argument("--rules", default=SHIPPED_RULES, metavar="FILE",
                    help="Prometheus rules file (default: %(default)s)")
    up.add_argument("--alertmanager-config", default=SHIPPED_ALERTMANAGER_CONFIG, metavar="FILE",
                    help="Alertmanager configuration; a test copy delivering to the local stand-in "
                         "runs (default: %(default)s)")
    up.add_argument("--scrape-interval", default="5s", metavar="DURATION",
                    help="Prometheus scrape interval (default: %(default)s)")
    up.add_argument("--speedup", type=float, default=1, metavar="N",
                    help="alerts sooner, for demos: divide the alerts' for: durations and Alertmanager's "
                         "group_wait/group_interval by N and evaluate rules every scrape interval, in "
                         "test copies (default: 1, the files as they are)")
    up.add_argument("--workdir", metavar="DIR", help="put the stack's files here (default: a new temporary "
                    "directory, removed on exit)")
    up.add_argument("--keep-workdir", action="store_true", help="do not remove the work directory on exit")
    up.add_argument("--json", action="store_true", help="print the URLs as one JSON object instead")
    args = parser.parse_args(argv)

    for path, flag in ((args.rules, "--rules"), (args.alertmanager_config, "--alertmanager-config")):
        if not os.path.isfile(path):
            up.error(f"{flag} {path}: no such file")
    if not os.access(args.exporter_binary, os.X_OK) or os.path.isdir(args.exporter_binary):
        up.error(f"--exporter-binary {args.exporter_binary}: not an executable "
                     "(build it: cmake --build build --target poolscope-exporter)")
    if args.exporters < 0 or args.workload_workers < 0 or args.speedup < 1:
        up.error("--exporters and --workload-workers must not be negative, --speedup at least 1")
    try:
        parse_duration(args.scrape_interval)
    except ValueError as error:
        up.error(f"--scrape-interval: {error}")
    return _command_up(args)


if __name__ == "__main__":
    sys.exit(main())
