#!/usr/bin/env python3
"""The shipped nginx recipe (deploy/nginx/poolscope-exporter.conf) terminates
TLS in front of a real exporter: a self-signed certificate from openssl, nginx
and the exporter on free loopback ports, and curl --cacert scraping through it.

  tls_proxy_test.py --exporter PATH --recipe deploy/nginx/poolscope-exporter.conf
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import harness

EXPORTER = None
RECIPE = None


def substitute(text, replacements):
    """Replaces each token once at least; a token the recipe no longer has fails the test."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"the nginx recipe no longer contains {old!r}")
        text = text.replace(old, new)
    return text


class TlsProxyTest(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="poolscope-tls-proxy.")
        self.processes = []

    def tearDown(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def make_certificate(self):
        crt = os.path.join(self.workdir, "server.crt")
        key = os.path.join(self.workdir, "server.key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60)
        return crt, key

    def start_nginx(self, exporter_port, crt, key):
        tls_port = harness.free_port()
        with open(RECIPE) as recipe:
            site = substitute(recipe.read(), {
                "server 127.0.0.1:9839;": f"server 127.0.0.1:{exporter_port};",
                "listen 9840 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
                "/etc/poolscope-exporter/tls/server.crt": crt,
                "/etc/poolscope-exporter/tls/server.key": key,
            })
        site_path = os.path.join(self.workdir, "poolscope-exporter.conf")
        with open(site_path, "w") as out:
            out.write(site)
        temp = os.path.join(self.workdir, "temp")
        os.makedirs(temp)
        os.chmod(self.workdir, 0o755)
        os.chmod(temp, 0o777)
        main_conf = os.path.join(self.workdir, "nginx.conf")
        with open(main_conf, "w") as out:
            out.write(f"""
worker_processes 1;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {self.workdir}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site_path};
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        check = subprocess.run([nginx, "-t", "-q", "-c", main_conf, "-p", self.workdir,
                                "-e", os.path.join(self.workdir, "error.log")],
                               capture_output=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stderr.decode())
        process = subprocess.Popen(
            [nginx, "-c", main_conf, "-p", self.workdir, "-e", os.path.join(self.workdir, "error.log"),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)

        def accepting():
            if process.poll() is not None:
                raise AssertionError(f"nginx exited: {process.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", tls_port), timeout=1):
                    return True
            except OSError:
                return False
        harness.poll(accepting, harness.START_TIMEOUT_S, what="nginx to listen")
        return tls_port

    def curl(self, url, *extra):
        return subprocess.run(["curl", "-sS", "--max-time", "30", *extra, url],
                              capture_output=True, timeout=60)

    def test_scrapes_through_the_tls_proxy(self):
        crt, key = self.make_certificate()
        exporter = harness.Exporter(EXPORTER, harness.test_database_url(), workdir=self.workdir)
        with exporter:
            tls_port = self.start_nginx(exporter.port, crt, key)
            base = f"https://localhost:{tls_port}"

            metrics = self.curl(f"{base}/metrics", "--cacert", crt, "--compressed")
            self.assertEqual(metrics.returncode, 0, metrics.stderr.decode())
            self.assertIn(b"# TYPE codebase_mcp_pool_connections_idle gauge", metrics.stdout)
            self.assertEqual(harness.promtool_check_metrics(metrics.stdout.decode()), (0, ""))

            health = self.curl(f"{base}/health", "--cacert", crt, "--http2", "-w", "\n%{http_version}")
            self.assertEqual(health.returncode, 0, health.stderr.decode())
            body, _, version = health.stdout.rpartition(b"\n")
            self.assertEqual(version, b"2")
            self.assertEqual(set(json.loads(body)), {"status", "timestamp", "database", "leaks", "uptime_seconds"})

            # The certificate is really checked: without the CA curl refuses.
            untrusted = self.curl(f"{base}/metrics")
            self.assertNotEqual(untrusted.returncode, 0)

            mcp = self.curl(f"{base}/mcp", "--cacert", crt, "-H", "Content-Type: application/json",
                            "-H", "Accept: application/json, text/event-stream",
                            "--data", '{"jsonrpc":"2.0","id":1,"method":"ping"}')
            self.assertEqual(mcp.returncode, 0, mcp.stderr.decode())
            self.assertEqual(json.loads(mcp.stdout)["id"], 1)

            self.assertEqual(exporter.stop(), 0)


def main():
    global EXPORTER, RECIPE
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True)
    parser.add_argument("--recipe", required=True)
    args, rest = parser.parse_known_args()
    EXPORTER, RECIPE = args.exporter, args.recipe
    harness.test_database_url()
    missing = [tool for tool in ("openssl", "curl", "promtool")
               if shutil.which(tool) is None]
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        missing.append("nginx")
    if missing:
        print(f"SKIP missing {', '.join(missing)} (scripts/setup installs them)")
        sys.exit(harness.SKIPPED)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
