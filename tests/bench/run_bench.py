#!/usr/bin/python3
"""Runs every poolscope benchmark side by side and prints one table.

Started by scripts/bench after a Release build. Creates a throwaway
PostgreSQL (scripts/lib/pgctl), runs each contender several rounds in
alternating order, takes medians (ratios are medians of per-round ratios, so
each one compares runs made next to each other), prints the table and the
performance targets, and removes every process and directory it made,
also on Ctrl-C.

  run_bench.py --build DIR [--rounds N] [--seconds S] [--only SECTIONS]
               [--anchors DIR] [--json FILE] [--barging-wait-bound DURATION]

SECTIONS is a comma list of: micro, select1, exporter (default: all).
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import loopback  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGCTL = os.path.join(ROOT, "scripts", "lib", "pgctl")
# The asyncpg + prometheus_client reference stack, kept next to the
# repository (never copied in);
# --anchors points elsewhere, e.g. from a clone in another directory.
DEFAULT_ANCHORS = os.path.normpath(os.path.join(ROOT, "..", "shared", "anchors"))
ANCHORS = ASYNCPG_BENCH = SEED_EXPORTER = None  # set in main()
PYTHON = "/usr/bin/python3"  # Debian's, which has asyncpg and prometheus_client

POOL_SIZE = 10
# Every run below opens at most ~60 connections at once; headroom for
# backends that are still exiting when the next contender starts.
MAX_CONNECTIONS = 300


class BenchError(Exception):
    """One measurement failed; the rest of the table is still worth printing."""


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Processes:
    """Every child this script starts, so that all of them can be stopped."""

    def __init__(self):
        self.children = []

    def start(self, cmd, **kwargs):
        # Own session: a Ctrl-C reaches this script, which stops the children
        # in order instead of them dying halfway through a measurement.
        child = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.children.append(child)
        return child

    def run(self, cmd, timeout, env=None, cwd=None):
        """Runs to completion; returns (exit code, stdout, stderr)."""
        child = self.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, cwd=cwd)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(child)
            out, err = child.communicate()
            return None, out, err + f"\n(timed out after {timeout} s)"
        finally:
            if child in self.children:
                self.children.remove(child)
        return child.returncode, out, err

    def stop(self, child, sig=signal.SIGTERM, grace=5.0):
        if child.poll() is None:
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self):
        for child in list(self.children):
            self.stop(child, grace=3.0)


def http_get(port, path, timeout=2.0):
    """(status, body) or (None, error) when nothing answers."""
    try:
        response = loopback.http_get(f"http://127.0.0.1:{port}{path}", timeout)
        return response.status, response.body
    except OSError as error:
        return None, str(error)


def health_state(port):
    """'healthy' when /health answers 200 with status healthy, else what it said."""
    status, body = http_get(port, "/health", timeout=1.0)
    if status is None:
        return "down"
    try:
        document = json.loads(body)
    except ValueError:
        return f"http {status}"
    if status == 200 and document.get("status") == "healthy":
        return "healthy"
    return f"http {status} {document.get('status')}"


def smaps_rollup_kib(pid):
    """Pss and private (not shared with other processes) resident KiB."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    values[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return None
    return {"pss": values.get("Pss"),
            "private": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
            "anonymous": values.get("Anonymous")}


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ----------------------------------------------------------------- contenders


class Bench:
    def __init__(self, args, procs, work):
        self.args = args
        self.procs = procs
        self.work = work
        self.build = os.path.abspath(args.build)
        self.env = None  # set once PostgreSQL runs
        self.database_url = None
        self.pgdir = os.path.join(work, "pg")
        self.results = {}
        self.notes = []

    def binary(self, *parts):
        path = os.path.join(self.build, *parts)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"bench: {path} is missing; build with scripts/bench")
        return path

    # ----------------------------------------------------------- PostgreSQL

    def start_postgres(self):
        code, out, err = self.procs.run([PGCTL, "create", self.pgdir, str(MAX_CONNECTIONS)], 120)
        if code != 0:
            raise SystemExit(f"bench: pgctl create failed:\n{err}")
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.database_url = values["DATABASE_URL"]
        self.env = dict(os.environ, DATABASE_URL=self.database_url)
        log(f"PostgreSQL on 127.0.0.1:{values['PGPORT']} (max_connections={MAX_CONNECTIONS})")

    def stop_postgres(self):
        if os.path.isdir(self.pgdir):
            subprocess.run([PGCTL, "destroy", self.pgdir], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)

    # ---------------------------------------------------------------- micro

    def run_micro(self):
        log("acquire + release without I/O (Google Benchmark, random interleaving)")
        code, out, err = self.procs.run(
            [self.binary("tests", "bench", "bench_acquire"),
             "--benchmark_format=json",
             f"--benchmark_repetitions={max(3, self.args.rounds + 2)}",
             "--benchmark_min_time=0.2",
             "--benchmark_enable_random_interleaving=true",
             "--benchmark_report_aggregates_only=true"], 300)
        if code != 0:
            raise SystemExit(f"bench: bench_acquire failed:\n{err}")
        rows = {}
        for entry in json.loads(out)["benchmarks"]:
            if entry.get("aggregate_name") != "median":
                continue
            name = entry["run_name"]
            threads = int(entry.get("threads", 1))
            base = name.split("/process_time")[0]
            # Google Benchmark divides wall time by the iterations of all
            # threads; one thread's cycle takes `threads` times that.
            # cpu_time is the process's CPU time per cycle: what a cycle
            # costs while it runs, whatever else the machine is doing.
            rows[(base, threads)] = {
                "ns_per_cycle": entry["real_time"] * threads,
                "cpu_ns_per_cycle": entry["cpu_time"],
                "cycles_per_second": entry.get("items_per_second"),
            }
        self.results["micro"] = rows

    # -------------------------------------------------------------- SELECT 1

    def select1_contenders(self):
        seconds = self.args.seconds
        query = self.args.query
        script = os.path.join(self.work, "select1.sql")
        with open(script, "w") as f:
            f.write("SELECT 1;\n")
        driver = self.binary("tests", "bench", "bench_select1")

        def poolscope(workers, metrics, leak, policy="barging"):
            return ("driver", [driver, "--pool=poolscope", f"--workers={workers}",
                               f"--max-size={POOL_SIZE}", f"--seconds={seconds}", "--warmup=1",
                               f"--query={query}", f"--metrics={'on' if metrics else 'off'}",
                               f"--leak-detection={'on' if leak else 'off'}",
                               f"--queue-policy={policy}"]
                    + ([f"--barging-wait-bound={self.args.barging_wait_bound}"]
                       if self.args.barging_wait_bound and policy == "barging" else []))

        def naive(workers):
            return ("driver", [driver, "--pool=naive", f"--workers={workers}",
                               f"--max-size={POOL_SIZE}", f"--seconds={seconds}", "--warmup=1",
                               f"--query={query}"])

        def direct(kind, workers):
            return ("driver", [driver, f"--pool={kind}", f"--workers={workers}",
                               f"--seconds={seconds}", "--warmup=1", f"--query={query}"])

        contenders = {
            "pgbench": ("pgbench", ["pgbench", "-n", "-c", str(POOL_SIZE), "-j", "2", "-T",
                                    str(max(1, round(seconds))), "-M", query, "-f", script,
                                    self.database_url]),
            "direct_libpq_10": direct("direct-libpq", POOL_SIZE),
            "direct_10": direct("direct", POOL_SIZE),
            "poolscope_10": poolscope(10, True, True),
            "poolscope_10_bare": poolscope(10, False, False),
            "naive_10": naive(10),
            "poolscope_100": poolscope(100, True, True),
            "poolscope_100_fifo": poolscope(100, True, True, "fifo"),
            "naive_100": naive(100),
        }
        if os.path.exists(ASYNCPG_BENCH):
            contenders["asyncpg_10"] = ("asyncpg", [PYTHON, ASYNCPG_BENCH, self.database_url, "10"])
            contenders["asyncpg_100"] = ("asyncpg", [PYTHON, ASYNCPG_BENCH, self.database_url, "100"])
        else:
            self.notes.append(f"asyncpg rows skipped: {ASYNCPG_BENCH} not found")
        return contenders

    def run_select1_once(self, kind, cmd):
        cwd = ANCHORS if kind == "asyncpg" else None
        code, out, err = self.procs.run(cmd, 120, env=self.env, cwd=cwd)
        if kind == "driver":
            line = next((l for l in out.splitlines() if l.startswith("{")), None)
            if code != 0 or line is None:
                raise BenchError(f"{' '.join(cmd[1:4])} failed: {err.strip()[-300:]}")
            return json.loads(line)
        if kind == "pgbench":
            match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
            if code != 0 or not match:
                raise BenchError(f"pgbench failed: {err.strip()[-300:]}")
            return {"qps": float(match.group(1))}
        match = re.search(r"qps=(\d+) acq_p50_us=([0-9.]+) acq_p95_us=([0-9.]+) acq_p99_us=([0-9.]+)", out)
        if code != 0 or not match:
            raise BenchError(f"{os.path.basename(cmd[1])} {cmd[-1]} failed: {err.strip()[-300:]}")
        return {"qps": float(match.group(1)), "acquire_p50_us": float(match.group(2)),
                "acquire_p95_us": float(match.group(3)), "acquire_p99_us": float(match.group(4))}

    def run_select1(self):
        contenders = self.select1_contenders()
        names = list(contenders)
        runs = {name: [] for name in names}
        for round_index in range(self.args.rounds):
            # Rotate the order so that no contender always runs first or
            # right after the same neighbour.
            shift = round_index % len(names)
            order = names[shift:] + names[:shift]
            log(f"SELECT 1 round {round_index + 1}/{self.args.rounds}: {', '.join(order)}")
            for name in order:
                kind, cmd = contenders[name]
                try:
                    runs[name].append(self.run_select1_once(kind, cmd))
                except BenchError as error:
                    self.notes.append(f"{name}, round {round_index + 1}: {error}")
        self.results["select1"] = runs

    # -------------------------------------------------------------- exporter

    def start_exporter(self, port, extra=(), log_name="exporter"):
        log_path = os.path.join(self.work, f"{log_name}-{port}.log")
        log_file = open(log_path, "w")
        child = self.procs.start(
            [self.binary("exporter", "poolscope-exporter"), f"--web.listen-address=127.0.0.1:{port}",
             f"--pool.max-size={POOL_SIZE}", *extra],
            env=self.env, stdout=subprocess.DEVNULL, stderr=log_file)
        log_file.close()
        return child, log_path

    def start_seed_exporter(self, port):
        log_path = os.path.join(self.work, f"seed-exporter-{port}.log")
        with open(log_path, "w") as log_file:
            child = self.procs.start([PYTHON, SEED_EXPORTER, self.database_url, str(port)],
                                     cwd=ANCHORS, env=self.env, stdout=log_file, stderr=log_file)
        if not loopback.wait_until(lambda: http_get(port, "/metrics")[0] == 200, 20, 0.05):
            raise BenchError(f"the seed Python exporter did not start; see {self.keep_log(log_path)}")
        return child

    def wrk(self, port, path):
        seconds = max(1, round(self.args.seconds))
        code, out, err = self.procs.run(
            ["wrk", "-t2", "-c10", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"],
            seconds + 30)
        match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        if code != 0 or not match:
            raise BenchError(f"wrk {path} failed: {(out + err).strip()[-300:]}")

        def to_ms(text):
            value, unit = re.match(r"([0-9.]+)(us|ms|s)", text).groups()
            return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

        result = {"rps": float(match.group(1))}
        for pct in ("50", "99"):
            m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
            result[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
        m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
        result["max_ms"] = to_ms(m.group(1)) if m else None
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        result["non_2xx"] = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: (.*)", out)
        result["socket_errors"] = m.group(1).strip() if m else None
        return result

    def measure_start_times(self):
        """Process start to the first /health that says healthy, several times."""
        times = []
        for _ in range(max(3, self.args.rounds + 2)):
            port = loopback.free_port()
            started = time.monotonic()
            child, log_path = self.start_exporter(port, log_name="start")
            ok = loopback.wait_until(lambda: health_state(port) == "healthy", 15, 0.001)
            elapsed = time.monotonic() - started
            self.procs.stop(child)
            if not ok:
                raise BenchError(f"the exporter never reported healthy; see {self.keep_log(log_path)}")
            times.append(elapsed * 1000)
        return times

    def measure_restart(self, rounds):
        """Database stopped and started again: time from the server accepting
        connections to /health reporting healthy, next to the pool's backoff
        schedule (read from its log) that bounds it."""
        port = loopback.free_port()
        # No synthetic load: a request that waits while the machine is busy
        # would make the pool DEGRADED (wait above 100 ms) for the health
        # window and hide the reconnection being measured. A short background
        # check interval notices the outage instead.
        child, log_path = self.start_exporter(
            port, ["--pool.health-check-interval=500ms"], log_name="restart")
        samples = []
        try:
            if not loopback.wait_until(lambda: health_state(port) == "healthy", 15, 0.001):
                raise BenchError(f"the exporter never reported healthy; see {self.keep_log(log_path)}")
            for _ in range(rounds):
                time.sleep(1.0)
                subprocess.run([PGCTL, "stop", self.pgdir, "immediate"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if not loopback.wait_until(lambda: health_state(port) != "healthy", 15, 0.001):
                    raise BenchError("the exporter did not notice the database going away")
                time.sleep(1.0)  # a short outage: the pool has started backing off
                subprocess.run([PGCTL, "start", self.pgdir], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                back_wall, back = time.time(), time.monotonic()
                recovered = loopback.wait_until(lambda: health_state(port) == "healthy", 20, 0.005)
                healthy = time.monotonic() - back if recovered else None
                tick = self.next_backoff_tick(log_path, back_wall)
                samples.append({"healthy_s": healthy, "next_tick_s": tick,
                                "last_state": health_state(port)})
        finally:
            self.procs.stop(child)
        return samples

    @staticmethod
    def next_backoff_tick(log_path, after_wall):
        """Seconds from `after_wall` to the first reconnection attempt scheduled
        at or after it, from the "Reconnection attempt N (delay: Xs)" lines."""
        ticks = []
        with open(log_path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                m = re.match(r"Reconnection attempt \S+ \(delay: ([0-9.]+)s\)", entry.get("message", ""))
                if not m:
                    continue
                stamp = datetime.datetime.strptime(entry["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
                logged = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                ticks.append(logged + float(m.group(1)))
        upcoming = [t - after_wall for t in ticks if t >= after_wall - 0.05]
        return max(0.0, min(upcoming)) if upcoming else None

    def run_libpq_floor(self):
        code, out, err = self.procs.run([self.binary("tests", "bench", "libpq_floor"), "5"], 60,
                                        env=self.env)
        if code != 0:
            raise BenchError(f"libpq_floor failed: {err.strip()[-300:]}")
        return json.loads(out)

    def keep_log(self, path):
        """Copies a log out of the temporary directory, which is removed at the end."""
        keep = os.path.join(self.build, "bench-logs")
        os.makedirs(keep, exist_ok=True)
        target = os.path.join(keep, os.path.basename(path))
        shutil.copyfile(path, target)
        return target

    def run_exporter(self):
        results = {}
        self.results["exporter"] = results

        def phase(title, key, measure):
            log(f"exporter: {title}")
            try:
                results[key] = measure()
            except BenchError as error:
                self.notes.append(f"exporter, {title}: {error}")

        phase("what a bare libpq client costs (connect time, RSS)", "libpq_floor", self.run_libpq_floor)
        phase("process start to first healthy /health", "start_ms", self.measure_start_times)
        phase("wrk -t2 -c10 on /health and /metrics", "wrk", lambda: self.measure_wrk(results))
        phase("peak RSS with the pool saturated (20 workers on 10 connections) and wrk", "busy",
              self.measure_busy_rss)
        phase("database restart to HEALTHY", "restart", lambda: self.measure_restart(2))

    def measure_wrk(self, results):
        seed = os.path.exists(SEED_EXPORTER)
        if not seed:
            self.notes.append(f"Python exporter rows skipped: {SEED_EXPORTER} not found")
        ours_port = loopback.free_port()
        ours, ours_log = self.start_exporter(ours_port, log_name="wrk")
        if not loopback.wait_until(lambda: http_get(ours_port, "/health")[0] == 200, 15, 0.001):
            raise BenchError(f"the exporter did not serve; see {self.keep_log(ours_log)}")
        seed_port = loopback.free_port() if seed else None
        seed_child = self.start_seed_exporter(seed_port) if seed else None
        runs = {f"{who}{path}": [] for who in ("ours", "seed") for path in ("/health", "/metrics")}
        try:
            for round_index in range(self.args.rounds):
                log(f"exporter: wrk round {round_index + 1}/{self.args.rounds}")
                order = [("ours", ours_port), ("seed", seed_port)] if seed else [("ours", ours_port)]
                if round_index % 2:
                    order.reverse()
                for path in ("/health", "/metrics"):
                    for who, port in order:
                        runs[f"{who}{path}"].append(self.wrk(port, path))
            results["idle_rss_kib"] = vm_hwm_kib(ours.pid)
            if seed_child:
                results["seed_rss_kib"] = vm_hwm_kib(seed_child.pid)
        finally:
            self.procs.stop(ours)
            if seed_child:
                self.procs.stop(seed_child)
        return runs

    def measure_busy_rss(self):
        port = loopback.free_port()
        busy, busy_log = self.start_exporter(
            port, ["--workload.workers=20", "--workload.hold=2ms"], log_name="rss")
        try:
            if not loopback.wait_until(lambda: http_get(port, "/health")[0] == 200, 15, 0.001):
                raise BenchError(f"the exporter did not serve; see {self.keep_log(busy_log)}")
            time.sleep(1.0)
            self.wrk(port, "/metrics")
            self.wrk(port, "/health")
            return {"rss_kib": vm_hwm_kib(busy.pid), "smaps_kib": smaps_rollup_kib(busy.pid)}
        finally:
            self.procs.stop(busy)


# ----------------------------------------------------------------- the table


def fmt_num(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.{digits}f}"


def verdict(ok):
    if ok is None:
        return ""
    return "met" if ok else "MISSED"


def per_round_ratio(numerator, denominator, key):
    pairs = [(a.get(key), b.get(key)) for a, b in zip(numerator, denominator)]
    return median([a / b for a, b in pairs if a and b])


def print_table(bench, elapsed):
    results, args = bench.results, bench.args
    out = []
    w = out.append

    def table_header(header):
        w(header)
        w("  " + "-" * (len(header) - 2))

    load = os.getloadavg()
    w("")
    w(f"poolscope benchmarks — {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end, "
      f"{args.rounds} rounds alternated, medians; ratios are medians of per-round ratios")
    w("")

    if "select1" in results:
        runs = results["select1"]
        w(f"SELECT 1 through a pool of {POOL_SIZE} ({args.seconds:g} s per run, query protocol: {args.query})")
        header = (f"  {'contender':<50} {'queries/s':>10}  {'acquire µs p50 / p95 / p99 / max':>34}"
                  f"  {'ratio':>14}  {'target':>8}  ")
        table_header(header)

        def acquire(rows):
            keys = ("acquire_p50_us", "acquire_p95_us", "acquire_p99_us", "acquire_max_us")
            values = [median([r.get(k) for r in rows]) for k in keys]
            return " / ".join(fmt_num(v, 1) if v is not None else "–" for v in values)

        def row(label, name, ratio_text="", target="", ok=None):
            if name not in runs:
                w(f"  {label:<50} {'skipped':>10}")
                return
            rows = runs[name]
            qps = median([r["qps"] for r in rows])
            acq = acquire(rows) if rows[0].get("acquire_p50_us") is not None else "–"
            w(f"  {label:<50} {fmt_num(qps):>10}  {acq:>34}  {ratio_text:>14}  {target:>8}  {verdict(ok)}")

        def vs(name, ref):
            if name not in runs or ref not in runs:
                return None
            return per_round_ratio(runs[name], runs[ref], "qps")

        def ratio_cell(value, ref_label):
            return f"{value:.2f}× {ref_label}" if value is not None else "–"

        r10 = vs("poolscope_10", "pgbench")
        r100 = vs("poolscope_100", "pgbench")
        row(f"pgbench -c {POOL_SIZE} -j 2 (libpq limit)", "pgbench", "1.00× pgbench")
        row("no pool: 10 threads, own libpq connection each", "direct_libpq_10",
            ratio_cell(vs("direct_libpq_10", "pgbench"), "pgbench"))
        row("no pool: 10 threads, own libpqxx connection each", "direct_10",
            ratio_cell(vs("direct_10", "pgbench"), "pgbench"))
        r100_fifo = vs("poolscope_100_fifo", "pgbench")
        row("poolscope, 10 workers (metrics + leak det. on)", "poolscope_10",
            ratio_cell(r10, "pgbench"), "≥ 0.90", r10 is not None and r10 >= 0.90)
        row("poolscope barging, 100 workers (metrics + leak on)", "poolscope_100",
            ratio_cell(r100, "pgbench"), "≥ 0.85", r100 is not None and r100 >= 0.85)
        row("poolscope fifo, 100 workers (metrics + leak on)", "poolscope_100_fifo",
            ratio_cell(r100_fifo, "pgbench"))
        n10 = vs("naive_10", "pgbench")
        n100 = vs("naive_100", "pgbench")
        row("naive mutex+condvar libpqxx pool, 10 workers", "naive_10", ratio_cell(n10, "pgbench"))
        row("naive mutex+condvar libpqxx pool, 100 workers", "naive_100", ratio_cell(n100, "pgbench"))
        a10 = vs("asyncpg_10", "pgbench")
        a100 = vs("asyncpg_100", "pgbench")
        row("asyncpg pool (Python stack), 10 workers", "asyncpg_10", ratio_cell(a10, "pgbench"))
        row("asyncpg pool (Python stack), 100 workers", "asyncpg_100", ratio_cell(a100, "pgbench"))
        w("")
        o10 = vs("poolscope_10", "naive_10")
        o100 = vs("poolscope_100", "naive_100")
        onoff = vs("poolscope_10", "poolscope_10_bare")
        w(f"  {'poolscope / naive pool, 10 workers':<60} {fmt_num(o10, 2):>6}×   target ≥ 1.00  {verdict(o10 is not None and o10 >= 1.0)}")
        if "poolscope_10_bare" in runs:
            bare_qps = median([r["qps"] for r in runs["poolscope_10_bare"]])
            w(f"  {'metrics + leak detection on / off, 10 workers':<60} {fmt_num(onoff, 2):>6}×   target ≥ 0.97  "
              f"{verdict(onoff is not None and onoff >= 0.97)}   (off: {fmt_num(bare_qps)} q/s)")
        w("")

        # 100 workers on 10 connections, the three queueing behaviours side
        # by side: what barging buys over strict FIFO, and what it costs in
        # fairness and in the slow tail of acquisitions.
        table_header(f"  {'100 workers, side by side':<34} {'queries/s':>10} {'/ naive':>8} {'/ fifo':>7}"
                     f"  {'slowest/busiest':>15}  {'acquire p99 µs':>14}  {'p99 / fifo':>10}  {'errors':>6}")
        for name, label in (("poolscope_100", "poolscope barging"), ("poolscope_100_fifo", "poolscope fifo"),
                            ("naive_100", "naive mutex+condvar")):
            if name not in runs or not runs[name]:
                w(f"  {label:<34} {'skipped':>10}")
                continue
            rows = runs[name]
            spread = median([r["worker_queries_min"] / r["worker_queries_max"]
                             for r in rows if r.get("worker_queries_max")])
            p99 = median([r.get("acquire_p99_us") for r in rows])
            to_naive = vs(name, "naive_100")
            to_fifo = vs(name, "poolscope_100_fifo")
            p99_ratio = per_round_ratio(rows, runs.get("poolscope_100_fifo", []), "acquire_p99_us")
            w(f"  {label:<34} {fmt_num(median([r['qps'] for r in rows])):>10} {fmt_num(to_naive, 2) + '×':>8} "
              f"{fmt_num(to_fifo, 2) + '×':>7}  {fmt_num(spread, 2):>15}  {fmt_num(p99, 0):>14}  "
              f"{fmt_num(p99_ratio, 2):>10}  {sum(r.get('errors', 0) for r in rows):>6}")
        if "poolscope_100" in runs and runs["poolscope_100"]:
            rows = runs["poolscope_100"]
            spread = median([r["worker_queries_min"] / r["worker_queries_max"]
                             for r in rows if r.get("worker_queries_max")])
            p99_ratio = per_round_ratio(rows, runs.get("poolscope_100_fifo", []), "acquire_p99_us")
            w(f"  {'barging / naive pool, 100 workers':<60} {fmt_num(o100, 2):>6}×   target ≥ 1.10  "
              f"{verdict(o100 is not None and o100 >= 1.10)}")
            w(f"  {'barging: slowest / busiest worker':<60} {fmt_num(spread, 2):>6}    target ≥ 0.80  "
              f"{verdict(spread is not None and spread >= 0.80)}")
            w(f"  {'barging acquire p99 / fifo acquire p99':<60} {fmt_num(p99_ratio, 2):>6}×   target ≤ 1.00  "
              f"{verdict(p99_ratio is not None and p99_ratio <= 1.0)}")
        w("")

    if "micro" in results:
        micro = results["micro"]
        w("Acquire + release without I/O (fake connection, real clock, pool of 10), median ns per cycle:")
        w("CPU time per cycle (wall time per cycle in parentheses; on a shared machine wall time also")
        w("counts time the thread waited for a CPU). Targets apply to one thread's CPU time.")
        header = (f"  {'variant':<34} {'1 thread':>16} {'2 threads':>16}  {'2-thread cycles/s':>17}"
                  f"  {'target':>7}")
        table_header(header)
        targets = {"poolscope/metrics_off/leak_off": 100.0, "poolscope/metrics_off/leak_on": 100.0,
                   "poolscope/metrics_on/leak_off": 150.0, "poolscope/metrics_on/leak_on": 150.0}
        for base in ("floor/steady_clock_now", "floor/pool_clock_now", "floor/locked_deque_pop_push", "naive_mutex_condvar",
                     "poolscope/metrics_off/leak_off", "poolscope/metrics_off/leak_on",
                     "poolscope/metrics_on/leak_off", "poolscope/metrics_on/leak_on"):
            one = micro.get((base, 1), {})
            two = micro.get((base, 2), {})
            target = targets.get(base)
            cpu = one.get("cpu_ns_per_cycle")
            ok = cpu is not None and target is not None and cpu <= target
            cps = two.get("cycles_per_second")

            def cell(values):
                if values.get("cpu_ns_per_cycle") is None:
                    return "–"
                return f"{values['cpu_ns_per_cycle']:.0f} ({values['ns_per_cycle']:.0f})"

            w(f"  {base:<34} {cell(one):>16} {cell(two):>16}  "
              f"{fmt_num(cps / 1e6, 2) + ' M' if cps else '–':>17}  "
              f"{('≤ ' + fmt_num(target)) if target else '':>7}  {verdict(ok) if target else ''}")
        w("  (2 threads: one thread's time per cycle while both run; cycles/s counts both threads)")
        w("")

    if results.get("exporter", {}).get("wrk"):
        ex = results["exporter"]
        wrk = ex["wrk"]
        w(f"Exporter (wrk -t2 -c10, {max(1, round(args.seconds))} s per run, 127.0.0.1)")
        header = (f"  {'endpoint':<10} {'poolscope req/s':>16} {'p50 / p99 / max ms':>22}   {'Python seed req/s':>18} "
                  f"{'p50 / p99 / max ms':>22}  {'ratio':>8}  {'target':>7}")
        table_header(header)
        for path, target in (("/health", 40.0), ("/metrics", 12.0)):
            ours, seed = wrk[f"ours{path}"], wrk[f"seed{path}"]

            def lat(rows):
                if not rows:
                    return "–"
                return " / ".join(fmt_num(median([r.get(k) for r in rows]), 2)
                                  for k in ("p50_ms", "p99_ms", "max_ms"))

            ratio = per_round_ratio(ours, seed, "rps") if seed else None
            seed_rps = median([r["rps"] for r in seed]) if seed else None
            w(f"  {path:<10} {fmt_num(median([r['rps'] for r in ours])):>16} {lat(ours):>22}   "
              f"{fmt_num(seed_rps):>18} {lat(seed):>22}  {fmt_num(ratio, 1) + '×' if ratio else '–':>8}  "
              f"{'≥ ' + fmt_num(target) + '×':>7}  {verdict(ratio is not None and ratio >= target) if seed else ''}")
        errors = [r for rows in wrk.values() for r in rows if r.get("non_2xx") or r.get("socket_errors")]
        if errors:
            w(f"  note: {len(errors)} wrk runs saw non-2xx responses or socket errors")
        w("  (the seed exporter has no /health: prometheus_client answers every path with the metrics page)")
        w("")
    if "exporter" in results:
        ex = results["exporter"]
        busy = ex.get("busy") or {}
        rss = busy.get("rss_kib")
        start = median(ex.get("start_ms") or [])
        floor = ex.get("libpq_floor") or {}
        smaps = busy.get("smaps_kib") or {}
        detail = ""
        if smaps.get("pss") is not None:
            detail = (f"(PSS {smaps['pss'] / 1024:.1f} MB, private {smaps['private'] / 1024:.1f} MB, "
                      f"anonymous {smaps['anonymous'] / 1024:.1f} MB)")
        w(f"  {'exporter peak RSS, pool of 10 saturated + wrk':<58} {fmt_num(rss / 1024 if rss else None, 1):>8} MB"
          f"   target ≤ 12 MB   {verdict(rss is not None and rss <= 12 * 1024)}   {detail}")
        if floor.get("rss_kib_peak"):
            w(f"  {'  floor: a bare C++ process after one libpq connection':<58} {floor['rss_kib_peak'] / 1024:>8.1f} MB"
              f"   (libcrypto alone {floor.get('rss_kib_biggest', {}).get('libcrypto.so.3', 0) / 1024:.1f} MB)")
        if ex.get("idle_rss_kib"):
            seed_rss = ex.get("seed_rss_kib")
            w(f"  {'  (after the wrk rounds alone: poolscope / Python seed)':<58} {fmt_num(ex['idle_rss_kib'] / 1024, 1):>8} MB"
              f"   {fmt_num(seed_rss / 1024, 1) if seed_rss else '–'} MB")
        starts = ex.get("start_ms") or []
        w(f"  {'process start to first healthy /health (median of ' + str(len(starts)) + ')':<58} {fmt_num(start, 0):>8} ms"
          f"   target ≤ 150 ms  {verdict(start is not None and start <= 150)}   (all: {', '.join(fmt_num(t) for t in starts)})")
        if floor.get("connect_ms_median"):
            w(f"  {'  floor: one libpq connection (median of 5, min_size is 2)':<58} {floor['connect_ms_median']:>8.0f} ms"
              f"   (fastest {floor['connect_ms_min']:.0f} ms)")
        for i, sample in enumerate(ex.get("restart") or [], 1):
            tick = sample["next_tick_s"]
            limit = tick + 0.5 if tick is not None else None
            took = sample["healthy_s"]
            label = f"database back to HEALTHY, restart {i}"
            if took is None:
                w(f"  {label:<58} {'> 20':>8} s    still '{sample.get('last_state')}' after 20 s   MISSED")
                continue
            w(f"  {label:<58} {fmt_num(took, 2):>8} s    next backoff tick at {fmt_num(tick, 2)} s, "
              f"target ≤ {fmt_num(limit, 2)} s   {verdict(limit is not None and took <= limit)}")
        w("")
    for note in bench.notes:
        w(f"note: {note}")
    w(f"total benchmark time: {elapsed:.0f} s")
    print("\n".join(out), flush=True)


# ----------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True, help="the Release build directory")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    parser.add_argument("--query", choices=("simple", "prepared"), default="simple",
                        help="query protocol for pgbench and both C++ pools (default simple)")
    parser.add_argument("--only", default="micro,select1,exporter", help="sections to run")
    parser.add_argument("--barging-wait-bound",
                        help="POOL_BARGING_WAIT_BOUND for the barging rows (default: the pool's)")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--anchors", default=DEFAULT_ANCHORS,
                        help="directory of the Python reference stack (default ../shared/anchors)")
    args = parser.parse_args()
    global ANCHORS, ASYNCPG_BENCH, SEED_EXPORTER
    ANCHORS = os.path.abspath(args.anchors)
    ASYNCPG_BENCH = os.path.join(ANCHORS, "asyncpg_pool_bench.py")
    SEED_EXPORTER = os.path.join(ANCHORS, "seed_python_exporter.py")
    sections = set(args.only.split(","))
    unknown = sections - {"micro", "select1", "exporter"}
    if unknown or args.rounds < 1 or args.seconds <= 0:
        parser.error(f"bad --only/--rounds/--seconds ({', '.join(sorted(unknown))})")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    began = time.monotonic()
    procs = Processes()
    work = tempfile.mkdtemp(prefix="poolscope-bench.")
    os.chmod(work, 0o711)  # the server runs as postgres and must reach its directory
    bench = Bench(args, procs, work)
    try:
        if "micro" in sections:
            bench.run_micro()
        if sections & {"select1", "exporter"}:
            bench.start_postgres()
        if "select1" in sections:
            bench.run_select1()
        if "exporter" in sections:
            bench.run_exporter()
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        procs.stop_all()
        bench.stop_postgres()
        shutil.rmtree(work, ignore_errors=True)
        return 130
    finally:
        procs.stop_all()
        bench.stop_postgres()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        serialisable = dict(bench.results)
        if "micro" in serialisable:
            serialisable["micro"] = {f"{k[0]}/threads:{k[1]}": v for k, v in serialisable["micro"].items()}
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": serialisable, "notes": bench.notes}, f, indent=1)
    print_table(bench, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
