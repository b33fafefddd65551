"""``fastres bench mlperf --find-peak``: short LoadGen runs that find the rates a full run should
ask for, written as a LoadGen ``user.conf``.

- Offline: one run at the warm-up's expected rate; its measured samples/s, times
  `OFFLINE_MARGIN`, becomes ``resnet50.Offline.target_qps`` (Offline's expected QPS: LoadGen
  sizes its one query at 1.1 x min_duration x that rate, so a rate too low ends the run before
  min_duration, INVALID, and one too high only lengthens it).
- Server: the highest target QPS whose run is VALID, found in at most `max_probes` runs
  (`search_peak`): from half the Offline rate (the Server default), doubling while VALID (up
  to the Offline rate, which arrivals cannot outrun for long) or halving while INVALID until a
  VALID and an INVALID rate bracket it, then bisecting the bracket until it is narrower than
  `PEAK_TOLERANCE`. It becomes ``resnet50.Server.target_qps``.

Each probe is ``fastres bench mlperf`` in a process of its own (only a process's first config
load reads LoadGen's built-in rules), with this run's model, data and latency options. Its
LoadGen files and its record stay in the log folder, beside the user.conf; nothing joins
``bench/results``. Rates are rounded to 3 significant digits, so the file states what was run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .environment import card_slug
from .mlperf import MLPERF_MODEL
from .names import SMOKE_LABEL

# Probes' length where --duration-s is not given (MLPerf's runs: 600 s).
PEAK_DURATION_S = 10.0
MAX_PROBES = 8
# The bisection stops once the INVALID rate is within 5% of the VALID one.
PEAK_TOLERANCE = 0.05
# Offline's expected QPS over the probe's measured rate: room for a run faster than the probe.
OFFLINE_MARGIN = 1.1


@dataclass
class Probe:
    """One short run of the search: the target QPS asked for, and whether LoadGen found it VALID."""

    qps: float
    valid: bool


def round_rate(qps: float) -> float:
    """`qps` to 3 significant digits (what a probe runs at and the user.conf states)."""
    return float(f"{qps:.3g}")


def search_peak(probe: Callable[[float], bool], start: float, *, ceiling: float | None = None,
                max_probes: int = MAX_PROBES, tolerance: float = PEAK_TOLERANCE) -> tuple[float | None, list[Probe]]:
    """The highest rate `probe` finds VALID, in at most `max_probes` calls: bracketing from
    `start` (doubling while VALID, never past `ceiling`; halving while INVALID), then bisection
    until the INVALID rate is within `tolerance` of the VALID one. Returns (that rate, or None
    if no probe was VALID; the probes in order). Every rate is `round_rate`d."""
    if not start > 0 or max_probes < 1:
        raise ValueError(f"need start > 0 and max_probes >= 1, got {start} and {max_probes}")
    cap = round_rate(ceiling) if ceiling is not None else None
    lo = hi = None  # the highest VALID and the lowest INVALID rate so far
    probes: list[Probe] = []
    while len(probes) < max_probes:
        if lo is not None and hi is not None:
            if hi <= lo * (1 + tolerance):
                break
            q = round_rate((lo + hi) / 2)
            if not lo < q < hi:  # the bracket is as narrow as 3 digits can say
                break
        elif lo is not None:
            if cap is not None and lo >= cap:
                break
            q = round_rate(2 * lo) if cap is None else min(round_rate(2 * lo), cap)
        elif hi is not None:
            q = round_rate(hi / 2)
        else:
            q = round_rate(start) if cap is None else min(round_rate(start), cap)
        valid = bool(probe(q))
        probes.append(Probe(q, valid))
        if valid:
            lo = q
        else:
            hi = q
    return lo, probes


def conf_value(qps: float) -> str:
    """A rate as LoadGen's user.conf parser reads it (an integer where it is one)."""
    return str(int(qps)) if qps >= 1 and qps == int(qps) else f"{qps:.3g}"


def user_conf_text(header: list[str], offline_qps: float | None, server_qps: float | None,
                   notes: dict[str, str]) -> str:
    """A user.conf: comment lines (``# ``: LoadGen skips a line whose first word is ``#``),
    then ``resnet50.SCENARIO.target_qps = VALUE`` for each rate found, each after its note."""
    lines = [f"# {h}" for h in header]
    for scenario, qps in (("Offline", offline_qps), ("Server", server_qps)):
        if scenario in notes:
            lines.append(f"# {scenario}: {notes[scenario]}")
        if qps is not None:
            lines.append(f"{MLPERF_MODEL}.{scenario}.target_qps = {conf_value(qps)}")
    return "\n".join(lines) + "\n"


def probe_args(args: argparse.Namespace, duration_s: float) -> list[str]:
    """The options every probe shares: this run's model, data, sizes and latency bounds."""
    out = ["--engine", args.engine, "--image-size", str(args.image_size), "--duration-s", f"{duration_s:g}",
           "--query-count", str(args.query_count or 1)]
    for name in ("data", "weights", "arch", "dtype", "batch", "user_conf", "target_latency_ms", "latency_percentile",
                 "date"):
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def run_probe(common: list[str], scenario: str, qps: float | None, log_dir: Path, out_dir: Path) -> dict:
    """One probe, `fastres bench mlperf` in a process of its own; its record (the --json line).
    A RuntimeError with the end of its output if it gave none."""
    cmd = [sys.executable, "-m", "fastres", "bench", "mlperf", "--scenario", scenario, *common,
           "--log-dir", str(log_dir), "--out", str(out_dir), "--json"]
    if qps is not None:
        cmd += ["--target-qps", conf_value(qps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"the {scenario} probe gave no result (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _rate(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"  # the interpreter's rates are a few per second


def _p99(rec: dict) -> str:
    p99 = (rec.get("latency_ms") or {}).get("p99")
    return f"p99 {p99:.3g} ms" if isinstance(p99, (int, float)) else "p99 -"


def _default_log_dir(args: argparse.Namespace, smoke: bool, date: str) -> Path:
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="fastres-smoke-")) if smoke
                                                else Path("bench") / "results")
    card = card_slug(torch.cuda.get_device_name()) if args.engine == "fastres" and torch.cuda.is_available() else "cpu"
    return out_dir / f"mlperf-{card}-{date}-{args.engine}-find-peak"


def main(args: argparse.Namespace) -> int:
    """Offline's probe, then Server's search; writes LOG_DIR/user.conf. Exit 1 if no Server
    rate was VALID or a probe failed."""
    smoke = args.engine == "fastres" and not torch.cuda.is_available()
    date = args.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    log_dir = Path(args.log_dir) if args.log_dir else _default_log_dir(args, smoke, date)
    log_dir.mkdir(parents=True, exist_ok=True)
    duration = args.duration_s or PEAK_DURATION_S
    max_probes = args.max_probes or MAX_PROBES
    common = probe_args(args, duration)
    banner = f"{SMOKE_LABEL}\n" if smoke else ""
    print(f"{banner}fastres bench mlperf --find-peak: Offline once, then Server in at most {max_probes} probe(s), {duration:g} s "
          f"each, a process each (short runs, not valid for a submission); LoadGen's files in {log_dir}", flush=True)
    count = 0

    def run(scenario: str, qps: float | None) -> dict:
        nonlocal count
        count += 1
        t = time.perf_counter()
        name = f"{count:02d}-{scenario}" + (f"-{conf_value(qps)}" if qps is not None else "")
        rec = run_probe(common, scenario, qps, log_dir / name, log_dir)
        rec["seconds"] = time.perf_counter() - t
        return rec

    try:
        off = run("Offline", None)
        measured = off.get("samples_per_s")
        print(f"Offline: {off.get('result')}, {_rate(measured)} samples/s ({off['seconds']:.0f} s)", flush=True)
        if not isinstance(measured, (int, float)) or measured <= 0:
            print("fastres bench mlperf --find-peak: error: the Offline probe measured no rate", file=sys.stderr)
            return 1
        offline_qps = round_rate(OFFLINE_MARGIN * measured)

        def server(qps: float) -> bool:
            rec = run("Server", qps)
            # count includes the Offline run
            print(f"probe {count - 1}/{max_probes}: Server at {_rate(qps)} queries/s: {rec.get('result')}, {_p99(rec)}, "
                  f"{_rate(rec.get('samples_per_s'))} samples/s ({rec['seconds']:.0f} s)", flush=True)
            return bool(rec.get("valid"))

        peak, probes = search_peak(server, measured / 2, ceiling=measured, max_probes=max_probes)
    except RuntimeError as exc:
        print(f"fastres bench mlperf --find-peak: error: {exc}", file=sys.stderr)
        return 1

    invalid = [p.qps for p in probes if not p.valid and (peak is None or p.qps > peak)]
    if peak is None:
        note = f"no VALID rate (lowest tried {_rate(min(p.qps for p in probes))} queries/s)"
    elif invalid:
        note = f"VALID at {_rate(peak)} queries/s, INVALID at {_rate(min(invalid))}"
    elif peak >= round_rate(measured):
        note = f"VALID at {_rate(peak)} queries/s, the Offline rate (no higher rate tried)"
    else:
        note = f"VALID at {_rate(peak)} queries/s, no INVALID rate met before the probes ran out"
    header = [f"fastres bench mlperf --find-peak, {date}: engine {args.engine}, {duration:g} s probes (short runs, "
              "not MLPerf's 600 s)", "probe options: " + " ".join(common)]
    notes = {"Offline": f"{_rate(measured)} samples/s measured ({off.get('result')}), x{OFFLINE_MARGIN:g}",
             "Server": f"{note} ({len(probes)} probe{'s' if len(probes) != 1 else ''})"}
    conf = log_dir / "user.conf"
    conf.write_text(user_conf_text(header, offline_qps, peak, notes))
    print(f"\nOffline expected QPS {_rate(offline_qps)}; Server target QPS "
          f"{_rate(peak) if peak is not None else '- (' + note + ')'}")
    print(f"wrote {conf}: fastres bench mlperf --user-conf {conf} --scenario Offline|Server ...")
    if smoke:
        print(SMOKE_LABEL)
    return 0 if peak is not None else 1
