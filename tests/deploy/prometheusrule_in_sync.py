#!/usr/bin/python3
"""deploy/kubernetes/prometheusrule.yaml is exactly what deploy/generate makes
from the current rules/codebase-mcp-pool.yml, and its rules are valid.

1. `deploy/generate --output -` matches the committed file byte for byte.
2. The PrometheusRule's spec.groups equal the rules file's groups.
3. `promtool check rules` accepts spec (what prometheus-operator loads).
4. `--runbook-base` rewrites every runbook_url and nothing else.

Usage: prometheusrule_in_sync.py <source root> <promtool>
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))

import checks  # noqa: E402  (tests/support: YAML, command line, report)


def main(argv):
    root, promtool = checks.command_line(argv, __doc__, 2)
    generate = root / "deploy" / "generate"
    committed_path = root / "deploy" / "kubernetes" / "prometheusrule.yaml"
    rules_path = root / checks.RULES
    failures = []

    generated = subprocess.run([sys.executable, str(generate), "--rules", str(rules_path),
                                "--output", "-"], capture_output=True, text=True)
    if generated.returncode != 0:
        print(generated.stderr, file=sys.stderr)
        return 1
    committed = committed_path.read_text(encoding="utf-8")
    if generated.stdout != committed:
        failures.append(f"{committed_path.relative_to(root)} differs from deploy/generate's output; "
                        "run deploy/generate and commit the result")

    document = yaml.safe_load(committed)
    rules = checks.load_yaml(rules_path)
    if document.get("apiVersion") != "monitoring.coreos.com/v1" or document.get("kind") != "PrometheusRule":
        failures.append("prometheusrule.yaml: expected apiVersion monitoring.coreos.com/v1, kind PrometheusRule")
    if not document.get("metadata", {}).get("name"):
        failures.append("prometheusrule.yaml: metadata.name missing")
    spec = document.get("spec", {})
    if spec.get("groups") != rules["groups"]:
        failures.append("prometheusrule.yaml: spec.groups differ from rules/codebase-mcp-pool.yml")

    with tempfile.TemporaryDirectory(prefix="poolscope-deploy-") as tmp:
        spec_file = pathlib.Path(tmp) / "spec.yml"
        spec_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
        check = subprocess.run([promtool, "check", "rules", str(spec_file)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            failures.append(f"promtool rejects the PrometheusRule's spec: {check.stdout}{check.stderr}")

    base = "https://runbooks.internal/poolscope/"
    rebased = subprocess.run([sys.executable, str(generate), "--rules", str(rules_path),
                              "--output", "-", "--runbook-base", base],
                             capture_output=True, text=True)
    rebased_groups = yaml.safe_load(rebased.stdout)["spec"]["groups"] if rebased.returncode == 0 else None
    if rebased_groups is None:
        failures.append(f"--runbook-base failed: {rebased.stderr}")
    else:
        for original, changed in zip(rules["groups"], rebased_groups):
            for before, after in zip(original["rules"], changed["rules"]):
                url = after.get("annotations", {}).get("runbook_url")
                if "alert" in before and url != base + f"{before['alert']}.md":
                    failures.append(f"--runbook-base: {before['alert']} runbook_url is {url!r}")
                before_rest = {k: v for k, v in before.items() if k != "annotations"}
                after_rest = {k: v for k, v in after.items() if k != "annotations"}
                if before_rest != after_rest:
                    failures.append(f"--runbook-base changed more than runbook_url in {before}")

    return checks.report(failures, "prometheusrule.yaml: in sync with rules/codebase-mcp-pool.yml and valid")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
