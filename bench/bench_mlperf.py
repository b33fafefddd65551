"""The harness's own cost under MLPerf's LoadGen: `fastres bench mlperf --engine null` (no
model) in Offline and in Server at a few target rates, one process each, pinned to one core
where `taskset` exists. Prints LoadGen's result and samples/s per run (docs/mlperf.md keeps the
figures; the issue's floors: Offline >= 270k samples/s, Server VALID at 90k queries/s).

    python bench/bench_mlperf.py --duration-s 5 --server-qps 90000,100000
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile


def run(scenario: str, duration_s: float, qps: float | None, out: str) -> dict:
    cmd = [sys.executable, "-m", "fastres", "bench", "mlperf", "--engine", "null", "--scenario", scenario,
           "--duration-s", str(duration_s), "--out", out, "--json"]
    if qps:
        cmd += ["--target-qps", str(qps)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--server-qps", default="90000,100000")
    args = p.parse_args()
    out = tempfile.mkdtemp(prefix="fastres-mlperf-null-")
    points = [("Offline", None)] + [("Server", float(q)) for q in args.server_qps.split(",")]
    for scenario, qps in points:
        r = run(scenario, args.duration_s, qps, out)
        lat = r.get("latency_ms") or {}
        print(f"{scenario:8s} {'' if qps is None else f'{qps:,.0f}/s':>10s}  {r['result']:8s} "
              f"{r['samples_per_s']:>12,.0f} samples/s  p50 {lat.get('p50', 0):.3g} ms  p99 {lat.get('p99', 0):.3g} ms",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
