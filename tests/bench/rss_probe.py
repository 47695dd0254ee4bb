#!/usr/bin/env python3
"""Where the exporter's resident memory goes, measured the way run_bench.py's
measure_busy_rss does it (pool of 10, 20 workload workers holding 2 ms, one
wrk -t2 -c10 run against /metrics then /health, VmHWM from /proc).

  rss_probe.py --database-url URL [--rounds N] [--seconds S] [--detail] BINARY [BINARY...]

Several binaries are measured alternately, round by round (A B, B A, ...),
so that they see the same machine load. Prints VmHWM, smaps_rollup and, with
--detail, resident KiB per kind of mapping (libraries, [heap], malloc arenas,
thread stacks, other anonymous) plus wrk req/s of each run.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import loopback  # noqa: E402


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def rollup(pid):
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1])
    return values


def classify(pid):
    """Resident KiB by kind of mapping. Anonymous mappings are told apart by
    size: glibc arenas reserve 64 MiB (HEAP_MAX), thread stacks are 8 MiB
    (ulimit -s) by default or whatever the creator asked for."""
    kinds = {}
    libs = {}
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                size_kib = (end - start) // 1024
                perms, name = m.group(3), m.group(4).strip()
                if name.startswith("/"):
                    kind = "lib " + os.path.basename(name)
                elif name in ("[heap]", "[stack]", "[vvar]", "[vdso]"):
                    kind = name
                else:
                    kind = f"anon rw {size_kib} KiB" if "w" in perms else f"anon {perms}"
                current = [kind, size_kib, 0, 0]
                kinds.setdefault(kind, []).append(current)
                continue
            if current and line.startswith("Rss:"):
                current[2] = int(line.split()[1])
            if current and line.startswith("Anonymous:"):
                current[3] = int(line.split()[1])
    summary = {}
    for kind, entries in kinds.items():
        rss = sum(e[2] for e in entries)
        if kind.startswith("lib "):
            libs[kind[4:]] = libs.get(kind[4:], 0) + rss
            summary["libraries (file-backed)"] = summary.get("libraries (file-backed)", 0) + rss
            anon = sum(e[3] for e in entries)
            if anon:
                summary["libraries: anon (relro/.data/.bss)"] = (
                    summary.get("libraries: anon (relro/.data/.bss)", 0) + anon)
            continue
        summary[f"{kind} x{len(entries)}"] = rss
    return summary, libs


def wrk(port, path, seconds):
    out = subprocess.run(["wrk", "-t2", "-c10", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    return float(m.group(1)) if m else None


def measure(binary, url, seconds, detail, extra):
    port = loopback.free_port()
    env = dict(os.environ, DATABASE_URL=url)
    child = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--pool.max-size=10",
                              "--workload.workers=20", "--workload.hold=2ms", *extra],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 15
        while not loopback.endpoint_answers(f"http://127.0.0.1:{port}/health", timeout=1):
            if time.time() > deadline or child.poll() is not None:
                raise RuntimeError(f"{binary} did not serve")
            time.sleep(0.02)
        time.sleep(1.0)
        metrics_rps = wrk(port, "/metrics", seconds)
        health_rps = wrk(port, "/health", seconds)
        result = {"hwm": status_kib(child.pid, "VmHWM"), "rss": status_kib(child.pid, "VmRSS"),
                  "threads": status_kib(child.pid, "Threads"), "rollup": rollup(child.pid),
                  "metrics_rps": metrics_rps, "health_rps": health_rps}
        if detail:
            result["kinds"], result["libs"] = classify(child.pid)
        return result
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--detail", action="store_true")
    parser.add_argument("--extra", action="append", default=[], help="extra exporter flag")
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()
    runs = {b: [] for b in args.binaries}
    for r in range(args.rounds):
        order = list(args.binaries) if r % 2 == 0 else list(reversed(args.binaries))
        for binary in order:
            res = measure(binary, args.database_url, args.seconds, args.detail, args.extra)
            runs[binary].append(res)
            ru = res["rollup"]
            print(f"round {r + 1} {binary}: VmHWM {res['hwm']} KiB, VmRSS {res['rss']}, "
                  f"threads {res['threads']}, Pss {ru.get('Pss')}, Anonymous {ru.get('Anonymous')}, "
                  f"private {ru.get('Private_Clean', 0) + ru.get('Private_Dirty', 0)}, "
                  f"/metrics {res['metrics_rps']:.0f} req/s, /health {res['health_rps']:.0f} req/s",
                  flush=True)
            if args.detail:
                for kind, kib in sorted(res["kinds"].items(), key=lambda kv: -kv[1]):
                    if kib:
                        print(f"    {kib:6d} KiB  {kind}")
                print("    libraries, resident KiB: " + ", ".join(
                    f"{name} {kib}" for name, kib in sorted(res["libs"].items(), key=lambda kv: -kv[1])
                    if kib >= 64))
    print()
    for binary, results in runs.items():
        med = lambda key: statistics.median(r[key] for r in results)
        print(f"median {binary}: VmHWM {med('hwm'):.0f} KiB, Anonymous "
              f"{statistics.median(r['rollup'].get('Anonymous', 0) for r in results):.0f} KiB, "
              f"/metrics {med('metrics_rps'):.0f} req/s, /health {med('health_rps'):.0f} req/s")


if __name__ == "__main__":
    sys.exit(main())
