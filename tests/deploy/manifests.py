#!/usr/bin/python3
"""The deploy/ manifests parse and carry what operators rely on.

Kubernetes (deploy/kubernetes/*.yaml):
- deployment.yaml: a Deployment and a Service for poolscope-exporter; the
  container reads DATABASE_URL from a Secret (never a literal), exposes port
  9839 named "metrics", has an httpGet readiness probe on /health, a
  tcpSocket liveness probe and --web.unauthenticated-health (probes carry no
  credentials), runs as non-root without privilege escalation; the
  Service selects the pod template's labels and exposes the named port.
- servicemonitor.yaml: selects the Service's labels and scrapes its named port
  on /metrics.
- prometheusrule.yaml: kind PrometheusRule (content: prometheusrule_in_sync.py).

systemd (deploy/systemd/poolscope-exporter.service):
- the hardening directives (NoNewPrivileges, ProtectSystem=strict,
  ReadOnlyPaths, PrivateTmp, DynamicUser) and EnvironmentFile=/etc/poolscope/exporter.env;
- `systemd-analyze verify` reports nothing, when the tool is installed (it
  works without systemd as PID 1). ExecStart is pointed at /bin/true in a
  temporary copy because the exporter need not be installed where tests run.

Usage: manifests.py <source root>
"""

import configparser
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "support"))

import checks  # noqa: E402  (tests/support: YAML, command line, report)

EXPORTER_PORT = 9839
failures = []


def fail(message):
    failures.append(message)


def load_all(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as error:
        fail(f"{path.name}: does not parse: {error}")
        return []


def by_kind(documents, path):
    kinds = {}
    for document in documents:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in document:
                fail(f"{path.name}: a document has no {key}")
        kinds.setdefault(document.get("kind"), []).append(document)
    return kinds


def check_probe(container, name, kind, path=None):
    probe = container.get(name)
    if not probe or kind not in probe:
        fail(f"deployment.yaml: {name} is not a {kind} probe")
        return
    target = probe[kind]
    if path is not None and target.get("path") != path:
        fail(f"deployment.yaml: {name} asks {target.get('path')!r}, expected {path!r}")
    if target.get("port") not in ("metrics", EXPORTER_PORT):
        fail(f"deployment.yaml: {name} probes port {target.get('port')!r}, not the exporter's")


def check_kubernetes(root):
    directory = root / "deploy" / "kubernetes"
    deployment_path = directory / "deployment.yaml"
    kinds = by_kind(load_all(deployment_path), deployment_path)
    deployments, services = kinds.get("Deployment", []), kinds.get("Service", [])
    if len(deployments) != 1 or len(services) != 1:
        fail("deployment.yaml: expected exactly one Deployment and one Service")
        return
    deployment, service = deployments[0], services[0]
    if deployment.get("apiVersion") != "apps/v1" or service.get("apiVersion") != "v1":
        fail("deployment.yaml: expected apps/v1 Deployment and v1 Service")

    spec = deployment["spec"]
    template_labels = spec["template"]["metadata"]["labels"]
    if not spec["selector"]["matchLabels"].items() <= template_labels.items():
        fail("deployment.yaml: selector does not match the pod template's labels")
    pod = spec["template"]["spec"]
    containers = pod.get("containers", [])
    exporters = [c for c in containers if c.get("name") == "poolscope-exporter"]
    if len(exporters) != 1:
        fail("deployment.yaml: no container named poolscope-exporter")
        return
    container = exporters[0]
    env = {e["name"]: e for e in container.get("env", [])}
    database_url = env.get("DATABASE_URL", {})
    if "value" in database_url or "secretKeyRef" not in database_url.get("valueFrom", {}):
        fail("deployment.yaml: DATABASE_URL must come from a Secret (valueFrom.secretKeyRef)")
    ports = {p.get("name"): p for p in container.get("ports", [])}
    if ports.get("metrics", {}).get("containerPort") != EXPORTER_PORT:
        fail(f"deployment.yaml: container port 'metrics' must be {EXPORTER_PORT}")
    check_probe(container, "readinessProbe", "httpGet", "/health")
    # Probes cannot send credentials: with basic auth on, only an open /health
    # and a TCP check keep working (exporter_probes_with_auth runs them).
    check_probe(container, "livenessProbe", "tcpSocket")
    if "--web.unauthenticated-health" not in container.get("args", []):
        fail("deployment.yaml: the readiness probe needs --web.unauthenticated-health "
             "once basic auth is configured")
    security = container.get("securityContext", {})
    if security.get("allowPrivilegeEscalation") is not False:
        fail("deployment.yaml: allowPrivilegeEscalation must be false")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail("deployment.yaml: the pod must run as non-root")

    service_spec = service["spec"]
    if not service_spec.get("selector") or not service_spec["selector"].items() <= template_labels.items():
        fail("deployment.yaml: the Service does not select the Deployment's pods")
    service_ports = {p.get("name"): p for p in service_spec.get("ports", [])}
    if "metrics" not in service_ports:
        fail("deployment.yaml: the Service has no port named 'metrics'")

    monitor_path = directory / "servicemonitor.yaml"
    monitors = by_kind(load_all(monitor_path), monitor_path).get("ServiceMonitor", [])
    if len(monitors) != 1 or monitors[0].get("apiVersion") != "monitoring.coreos.com/v1":
        fail("servicemonitor.yaml: expected one monitoring.coreos.com/v1 ServiceMonitor")
    else:
        monitor = monitors[0]["spec"]
        selector = monitor.get("selector", {}).get("matchLabels", {})
        if not selector or not selector.items() <= service["metadata"].get("labels", {}).items():
            fail("servicemonitor.yaml: selector does not match the Service's labels")
        endpoints = monitor.get("endpoints", [])
        if not any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints):
            fail("servicemonitor.yaml: no endpoint scraping port 'metrics' on /metrics")

    rule_path = directory / "prometheusrule.yaml"
    if "PrometheusRule" not in by_kind(load_all(rule_path), rule_path):
        fail("prometheusrule.yaml: no PrometheusRule")


def check_systemd(root):
    unit_path = root / "deploy" / "systemd" / "poolscope-exporter.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    try:
        parser.read_string(unit_path.read_text(encoding="utf-8"))
    except configparser.Error as error:
        fail(f"{unit_path.name}: does not parse: {error}")
        return
    for section in ("Unit", "Service", "Install"):
        if section not in parser:
            fail(f"{unit_path.name}: no [{section}] section")
    if "Service" not in parser:
        return
    service = parser["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "DynamicUser": "yes",
        "EnvironmentFile": "/etc/poolscope/exporter.env",
    }
    for key, value in expected.items():
        if service.get(key) != value:
            fail(f"{unit_path.name}: {key}={service.get(key)!r}, expected {value!r}")
    if not service.get("ReadOnlyPaths"):
        fail(f"{unit_path.name}: ReadOnlyPaths missing")
    exec_start = service.get("ExecStart", "")
    if "poolscope-exporter" not in exec_start:
        fail(f"{unit_path.name}: ExecStart does not run poolscope-exporter")
    for line in unit_path.read_text(encoding="utf-8").splitlines():
        if "DATABASE_URL" in line and not line.lstrip().startswith("#"):
            fail(f"{unit_path.name}: DATABASE_URL set in the unit; it belongs in the EnvironmentFile")

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze not installed: unit parsed, not verified")
        return
    with tempfile.TemporaryDirectory(prefix="poolscope-unit-") as tmp:
        copy = pathlib.Path(tmp) / unit_path.name
        text = unit_path.read_text(encoding="utf-8")
        copy.write_text(text.replace("ExecStart=" + exec_start.split()[0], "ExecStart=/bin/true", 1),
                        encoding="utf-8")
        result = subprocess.run([analyze, "verify", "--man=no", str(copy)],
                                capture_output=True, text=True)
        # Unknown keys and bad values are only warnings (exit 0): any output fails.
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or output:
            fail(f"systemd-analyze verify: exit {result.returncode}: {output}")


def main(argv):
    [root] = checks.command_line(argv, __doc__, 1)
    check_kubernetes(root)
    check_systemd(root)
    return checks.report(failures, "deploy manifests: Kubernetes and systemd checks passed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
