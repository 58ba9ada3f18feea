"""Bounded load test of the viewer: N concurrent clients fetching random feature pages for T seconds.

    .venv/bin/python bench/viewer_load.py [--runs runs] [--run demo-layer6] [--clients 20] [--seconds 10]

The server runs as its own process (`transcoders serve`, on a free loopback port), as users run it; the clients
are threads in this process. Prints requests/s, p50/p99 latency and the error count; a baseline of the cheapest
request (`/api/runs` is not cheap: it walks the folder; `/static/style.css` is) is measured first, in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hammer(base: str, paths, clients: int, seconds: float) -> dict:
    lat, errors, stop = [], [0], time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop:
            path = paths(rng)
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(base + path, timeout=30) as r:
                    r.read()
                    ok = r.status == 200
            except Exception:
                ok = False
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                errors[0] += not ok

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--run", default="demo-layer6", help="a run (relative to --runs) with a feature store")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    cmd = [sys.executable, "-c", "from transcoders.cli import entry; entry()", "serve", args.runs, "--port", "0"]
    proc = subprocess.Popen(cmd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            raise SystemExit(f"the server did not start: {line}{proc.stdout.read()}")
        base = f"http://127.0.0.1:{m.group(1)}"
        width = json.load(urllib.request.urlopen(f"{base}/api/run?run={args.run}"))["width"]
        print(f"viewer load test: {args.clients} clients x {args.seconds:.0f} s, runs folder {args.runs}, run {args.run}")
        base_res = hammer(base, lambda rng: "/static/style.css", args.clients, args.seconds / 2)
        feat = hammer(base, lambda rng: f"/api/feature?run={args.run}&id={rng.randrange(width)}", args.clients, args.seconds)
        print(f"{'request':38} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'requests':>9}")
        for name, r in (("static asset (baseline)", base_res), ("feature page JSON (random feature)", feat)):
            print(f"{name:38} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:7d} {r['requests']:9d}")
        print(f"feature pages cost {base_res['rps'] / feat['rps']:.1f}x a static asset")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
