#!/usr/bin/python3
"""Routing cases for rules/alertmanager.yml through `amtool config routes test`.

Runs every case of rules/tests/alertmanager-routes.txt ("<receivers> |
<labels>") with --verify.receivers, then checks that every alert of
rules/codebase-mcp-pool.yml, with its own labels, reaches a receiver other
than the default one (an alert nobody is notified about is a bug).

Usage: amtool_routes.py <source root> <amtool>
"""

import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))

import checks  # noqa: E402  (tests/support: YAML, command line, report)


def route(amtool, config, labels, expected=None):
    command = [amtool, "config", "routes", "test", f"--config.file={config}"]
    if expected is not None:
        command.append(f"--verify.receivers={expected}")
    result = subprocess.run(command + labels, capture_output=True, text=True)
    return result.returncode, result.stdout.strip()


def main(argv):
    root, amtool = checks.command_line(argv, __doc__, 2)
    config = root / checks.ALERTMANAGER_CONFIG
    cases_file = root / "rules" / "tests" / "alertmanager-routes.txt"
    failures = []

    cases = 0
    for number, line in enumerate(cases_file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        expected, sep, labels = line.partition("|")
        if not sep or not expected.strip() or not labels.split():
            failures.append(f"{cases_file.name}:{number}: expected '<receivers> | <labels>'")
            continue
        cases += 1
        code, got = route(amtool, config, labels.split(), expected.strip())
        if code != 0:
            failures.append(f"{cases_file.name}:{number}: {labels.strip()} -> {got!r}, "
                            f"expected {expected.strip()!r}")
    if cases == 0:
        failures.append(f"{cases_file.name}: no cases")

    default = checks.load_yaml(config)["route"]["receiver"]
    rules = checks.load_rules(root)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            labels = {"alertname": rule["alert"], "job": "app", "instance": "app-1:9839",
                      "pool": "default", **rule.get("labels", {})}
            code, got = route(amtool, config, [f"{k}={v}" for k, v in labels.items()])
            if code != 0 or not got or got == default:
                failures.append(f"alert {rule['alert']} routes to {got!r} (exit {code}); "
                                "expected a receiver that notifies someone")

    return checks.report(failures, f"alertmanager routes: {cases} cases passed, every shipped alert notifies")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
