#!/usr/bin/python3
"""Validates rules/alertmanager.yml.

1. `amtool check-config` accepts it. Alertmanager 0.25 reads the *_file
   secrets only when it sends a notification: neither amtool nor the server
   opens them when loading the configuration, so the check runs on the
   shipped file as is (no stand-in secret files are needed or created).
2. No secret or placeholder is inlined: PagerDuty uses Events API v2 through
   routing_key_file, Slack uses api_url_file, every *_file is an absolute
   path, and no value looks like '<...>' or an example host.
3. Every notification template in the receivers renders (`amtool template
   render`) with alerts carrying the annotations of the shipped rules, so a
   typo in a template fails here and not at 3 a.m.

Usage: amtool_check_config.py <source root> <amtool>
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))

import checks  # noqa: E402  (tests/support: YAML, command line, report)

INLINE_SECRETS = {"api_url", "routing_key", "service_key", "url", "api_key",
                  "auth_password", "bot_token", "token", "webhook_url"}
PLACEHOLDER = re.compile(r"<[^>{}]+>|example\.(com|org|net)|changeme|xxx", re.IGNORECASE)

failures = []


def fail(message):
    failures.append(message)


def walk(node, path=""):
    """Yields (path, key, value) for every mapping entry."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def template_strings(node, path=""):
    """Yields (path, text) for every string containing a Go template."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from template_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from template_strings(item, f"{path}[{index}]")
    elif isinstance(node, str) and "{{" in node:
        yield path, node


def sample_data(rules):
    """Alertmanager template data: one firing and one resolved alert built
    from the first critical and first warning rule of the rules file."""
    alerts = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                alerts.append(rule)
    chosen = [next(r for r in alerts if r["labels"]["severity"] == s) for s in ("critical", "warning")]
    data_alerts = []
    for rule, status in zip(chosen, ("firing", "resolved")):
        labels = {"alertname": rule["alert"], "job": "app", "instance": "app-1:9839", "pool": "default"}
        labels.update(rule["labels"])
        # The annotations as Prometheus sends them: already expanded.
        annotations = {k: re.sub(r"\{\{[^}]*\}\}", "x", v) for k, v in rule["annotations"].items()}
        data_alerts.append({
            "status": status, "labels": labels, "annotations": annotations,
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "2026-01-01T00:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": f"{len(data_alerts):016x}",
        })
    first = data_alerts[0]
    return {
        "receiver": "pagerduty-critical", "status": "firing", "alerts": data_alerts,
        "groupLabels": {"alertname": first["labels"]["alertname"], "component": "connection_pool"},
        "commonLabels": {"component": "connection_pool", "job": "app", "instance": "app-1:9839", "pool": "default"},
        "commonAnnotations": {"runbook_url": first["annotations"]["runbook_url"]},
        "externalURL": "http://127.0.0.1:9093",
    }


def main(argv):
    root, amtool = checks.command_line(argv, __doc__, 2)
    config_path = root / checks.ALERTMANAGER_CONFIG

    check = subprocess.run([amtool, "check-config", str(config_path)],
                           capture_output=True, text=True)
    sys.stdout.write(check.stdout)
    if check.returncode != 0:
        fail(f"amtool check-config exited {check.returncode}: {check.stderr.strip()}")

    config = checks.load_yaml(config_path)
    for path, key, value in walk(config):
        if key in INLINE_SECRETS and value:
            fail(f"{path}.{key}: secret inlined; use {key}_file")
        if str(key).endswith("_file") and not str(value).startswith("/"):
            fail(f"{path}.{key}: {value!r} is not an absolute path")
        if isinstance(value, str) and "{{" not in value and PLACEHOLDER.search(value):
            fail(f"{path}.{key}: looks like a placeholder: {value!r}")

    receivers = {r["name"]: r for r in config.get("receivers", [])}
    pagerduty = receivers.get("pagerduty-critical", {}).get("pagerduty_configs", [])
    if not pagerduty or not all("routing_key_file" in c for c in pagerduty):
        fail("pagerduty-critical: expected pagerduty_configs with routing_key_file (Events API v2)")
    slack = receivers.get("slack-warnings", {}).get("slack_configs", [])
    if not slack or not all("api_url_file" in c and c.get("channel") == "#ops-warnings" for c in slack):
        fail("slack-warnings: expected slack_configs with api_url_file and channel '#ops-warnings'")
    if config.get("route", {}).get("receiver") not in receivers:
        fail("route: the default receiver is not defined")

    rules = checks.load_rules(root)
    with tempfile.TemporaryDirectory(prefix="poolscope-am-") as tmp:
        data_file = pathlib.Path(tmp) / "data.json"
        data_file.write_text(json.dumps(sample_data(rules)), encoding="utf-8")
        no_templates = pathlib.Path(tmp) / "none.tmpl"
        no_templates.write_text("", encoding="utf-8")
        rendered = 0
        for path, text in template_strings(config.get("receivers", []), "receivers"):
            result = subprocess.run(
                [amtool, "template", "render", f"--template.glob={no_templates}",
                 f"--template.data={data_file}", f"--template.text={text}"],
                capture_output=True, text=True)
            rendered += 1
            if result.returncode != 0:
                fail(f"{path}: template does not render: {result.stderr.strip()}")
            elif not result.stdout.strip():
                fail(f"{path}: template renders to nothing")
        if rendered == 0:
            fail("receivers: no notification templates found")

    return checks.report(failures, f"alertmanager config: valid, {rendered} templates rendered")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
