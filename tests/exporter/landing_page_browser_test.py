#!/usr/bin/env python3
"""The landing page in a real browser (Debian's headless Chromium) against a
live exporter on a throwaway PostgreSQL of the test's own: the rendered DOM
after the page has refreshed itself, its colours and links, the state and the
cause it shows during a database outage, and a screenshot.

  landing_page_browser_test.py --exporter PATH --pgctl PATH [--chromium PATH]

Exits 77 (skipped) when Chromium is not installed.
"""

import argparse
import html.parser
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

import harness

EXPORTER = None
PGCTL = None
CHROMIUM = "/usr/bin/chromium"
# The page refreshes every 5 s; Chromium's virtual time runs this budget
# (waiting for each fetch to finish) before it dumps the DOM.
VIRTUAL_TIME_BUDGET_MS = 16000
BROWSER_TIMEOUT_S = 120
PROMETHEUS_URL = "http://prometheus.example:9090"
ALERTMANAGER_URL = "http://alertmanager.example:9093"


def pgctl(*args):
    subprocess.run([PGCTL, *args], check=True, stdout=subprocess.DEVNULL, timeout=300)


class Element:
    def __init__(self, tag, attributes):
        self.tag = tag
        self.attributes = dict(attributes)
        self.text = ""


class Dom(html.parser.HTMLParser):
    """The dumped DOM: every element with an id, the body's attributes, every
    link, and the text under each element with an id."""

    def __init__(self, markup):
        super().__init__()
        self.by_id = {}
        self.body = {}
        self.links = []
        self.open = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs)
        if tag == "body":
            self.body = element.attributes
        if tag == "a" and "href" in element.attributes:
            self.links.append(element.attributes["href"])
        if "id" in element.attributes:
            self.by_id[element.attributes["id"]] = element
        if tag not in ("meta", "link", "br", "img", "input"):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop().tag == tag:
                break

    def handle_data(self, data):
        for element in self.open:
            if "id" in element.attributes:
                element.text += " " + data

    def text(self, element_id):
        return " ".join(self.by_id[element_id].text.split())


def chromium(*args, profile):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=BROWSER_TIMEOUT_S)


def png_pixels(path):
    """(width, height, decompressed scanlines) of a PNG file; raises on a broken one."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG")
    offset, width, height, idat = 8, 0, 0, b""
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunk = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    return width, height, zlib.decompress(idat)


class LandingPageBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="poolscope-landing-page.")
        os.chmod(cls.workdir, 0o755)  # the server runs as postgres and must reach its data
        cls.cluster = os.path.join(cls.workdir, "pg")
        pgctl("create", cls.cluster)
        env = dict(line.split("=", 1) for line in open(os.path.join(cls.cluster, "env")).read().split())
        cls.password = env["POOLSCOPE_DB_PASSWORD"]
        cls.exporter = harness.Exporter(
            EXPORTER, env["DATABASE_URL"],
            args=["--workload.workers=1", "--workload.hold=5ms",
                  f"--landing-page.prometheus-url={PROMETHEUS_URL}/",
                  f"--landing-page.alertmanager-url={ALERTMANAGER_URL}"],
            env={"POOL_MAX_SIZE": "10", "POOL_MIN_SIZE": "2", "POOL_HEALTH_CHECK_INTERVAL": "100ms",
                 "POOL_RECONNECT_BACKOFF": "200ms"})
        cls.exporter.wait_listening()

    @classmethod
    def tearDownClass(cls):
        cls.exporter.__exit__(None, None, None)
        subprocess.run([PGCTL, "destroy", cls.cluster], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.profile = tempfile.mkdtemp(prefix="poolscope-chromium.")

    def tearDown(self):
        shutil.rmtree(self.profile, ignore_errors=True)

    def rendered(self):
        """The DOM after the page has run for VIRTUAL_TIME_BUDGET_MS."""
        result = chromium(f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", "--dump-dom",
                          self.exporter.url("/"), profile=self.profile)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace")[-3000:])
        markup = result.stdout.decode()
        self.assertNotIn(self.password, markup)
        return Dom(markup)

    def health(self):
        return harness.request(self.exporter.url("/health"))

    def test_1_healthy_pool_in_green_with_its_numbers_and_links_refreshing(self):
        harness.poll(lambda: self.health().status == 200 and
                     b'"status":"healthy"' in self.health().body.replace(b" ", b""),
                     harness.START_TIMEOUT_S, what="a healthy pool")
        dom = self.rendered()
        # The page fetched itself again and swapped in the new content.
        self.assertGreaterEqual(int(dom.body["data-refreshes"]), 2, dom.body)
        self.assertRegex(dom.text("connection"), r"^Updated .*, every 5 s\.$")
        self.assertEqual(dom.body["class"], "health-healthy")
        self.assertIn("state-healthy", dom.by_id["state"].attributes["class"])
        self.assertEqual(dom.text("state"), "healthy")
        self.assertRegex(dom.text("total"), r"^\d+ \(2 / 10\) open \(min / max\)$")
        acquisitions = int(dom.text("acquisitions").split()[0])
        self.assertGreater(acquisitions, 0)  # the synthetic load, counted
        self.assertEqual(dom.text("last-error"), "none")
        self.assertEqual(dom.text("leaked"), "None held longer than the leak timeout.")
        for href in (f"{PROMETHEUS_URL}/classic/alerts", f"{PROMETHEUS_URL}/classic/targets",
                     f"{ALERTMANAGER_URL}/", "/metrics", "/health",
                     "https://github.com/poolscope/poolscope/blob/main/docs/runbooks/ConnectionPoolLeak.md"):
            self.assertIn(href, dom.links)
        self.assertEqual(sum(1 for link in dom.links if "/docs/runbooks/" in link), 8)

    def test_2_screenshot_is_a_real_rendering(self):
        path = os.path.join(self.profile, "landing.png")
        result = chromium("--window-size=1200,900", "--hide-scrollbars", f"--screenshot={path}",
                          self.exporter.url("/"), profile=self.profile)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace")[-3000:])
        width, height, pixels = png_pixels(path)
        self.assertEqual((width, height), (1200, 900))
        # Text, tiles and the coloured badge: far more than a blank page's
        # handful of distinct byte values.
        self.assertGreater(len(set(pixels)), 100)
        self.assertGreater(os.path.getsize(path), 20000)

    def test_3_outage_shows_recovering_in_red_with_the_connection_error(self):
        pgctl("stop", self.cluster, "immediate")
        try:
            harness.poll(lambda: self.health().status == 503, harness.START_TIMEOUT_S,
                         what="/health to answer 503")
            dom = self.rendered()
            self.assertGreaterEqual(int(dom.body["data-refreshes"]), 2, dom.body)
            self.assertEqual(dom.body["class"], "health-unhealthy")
            self.assertIn("state-recovering", dom.by_id["state"].attributes["class"])
            self.assertEqual(dom.text("database"), "database: reconnecting")
            # The cause, not a symptom.
            self.assertIn("Connection refused", dom.text("last-error"))
            self.assertGreater(int(dom.text("reconnects").split()[0]), 0)
        finally:
            pgctl("start", self.cluster)
        harness.poll(lambda: self.health().status == 200, harness.START_TIMEOUT_S,
                     what="the pool to recover")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", required=True)
    parser.add_argument("--pgctl", required=True)
    parser.add_argument("--chromium", default=CHROMIUM)
    args, rest = parser.parse_known_args()
    EXPORTER, PGCTL, CHROMIUM = args.exporter, args.pgctl, args.chromium
    if not os.access(CHROMIUM, os.X_OK):
        print(f"SKIP {CHROMIUM} is not installed (scripts/setup installs chromium)")
        sys.exit(harness.SKIPPED)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
