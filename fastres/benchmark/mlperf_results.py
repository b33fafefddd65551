"""What a LoadGen test gives (``fastres bench mlperf``): its summary file read back, top-1 from
its accuracy log as MLPerf's accuracy script computes it, the results record, and the markdown
table beside MLPerf's published per-GPU figures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .results import base_record

# MLPerf Inference's published ResNet-50 results per GPU (closed division, TensorRT INT8):
# (round, system, scenario, samples/s per GPU). Shown beside ours, marked as MLPerf's.
PUBLISHED = (
    ("v5.0", "8x H200, TensorRT INT8", "Offline", 95_100),
    ("v5.0", "8x H200, TensorRT INT8", "Server", 79_000),
    ("v4.0", "H100, TensorRT INT8", "Offline", 88_000),
)
_PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
_CONSTRAINTS = {
    "Min duration satisfied": "min_duration",
    "Min queries satisfied": "min_queries",
    "Early stopping satisfied": "early_stopping",
    "Performance constraints satisfied": "performance_constraints",
}


def read_summary(path: Path) -> dict[str, str]:
    """``mlperf_log_summary.txt`` as key -> value (its ``key : value`` lines, stripped)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if " : " in line or ": " in line:
            key, _, value = line.partition(":")
            if key.strip() and key.strip() not in out:
                out[key.strip()] = value.strip()
    return out


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def summary_fields(summary: dict[str, str], scenario: str, samples_per_query: int) -> dict:
    """LoadGen's result fields: validity, samples/s, latency percentiles (ms), constraints met."""
    valid = summary.get("Result is") == "VALID"
    # SingleStream and MultiStream run one query at a time: samples/s is samples per query over the mean latency
    mean_ns = _number(summary.get("Mean latency (ns)"))
    per_query = _number(summary.get("samples_per_query")) or samples_per_query
    qps = _number(summary.get("QPS w/o loadgen overhead")) or (1e9 / mean_ns if mean_ns else None)
    rate = {
        "Offline": _number(summary.get("Samples per second")),
        "Server": _number(summary.get("Completed samples per second") or summary.get("Scheduled samples per second")),
        "SingleStream": qps,
        "MultiStream": None if qps is None else qps * per_query,
    }[scenario]
    latencies = {}
    for p in _PERCENTILES:
        v = _number(summary.get(f"{p} percentile latency (ns)"))
        if v is not None:
            latencies[f"p{p.rstrip('0').rstrip('.')}"] = v / 1e6
    target = next((k for k in summary if re.fullmatch(r"[\d.]+th percentile latency \(ns\)", k)), None)
    return {
        "result": summary.get("Result is"),
        "valid": valid,
        "samples_per_s": rate,
        "latency_ms": latencies,
        "mean_latency_ms": (_number(summary.get("Mean latency (ns)")) or 0) / 1e6 or None,
        "target_percentile_latency_ms": _number(summary.get(target)) / 1e6 if target else None,
        "target_percentile": target.split("th")[0] if target else None,
        "constraints": {name: summary[k] == "Yes" for k, name in _CONSTRAINTS.items() if k in summary},
        "target_qps": _number(summary.get("target_qps")),
        "target_latency_ms": (_number(summary.get("target_latency (ns)")) or 0) / 1e6 or None,
        "min_duration_ms": _number(summary.get("min_duration (ms)")),
        "min_query_count": _number(summary.get("min_query_count")),
    }


def accuracy_top1(accuracy_log: Path, labels: np.ndarray) -> dict:
    """Top-1 as MLPerf's ``accuracy-imagenet.py`` computes it from ``mlperf_log_accuracy.json``:
    each logged sample's data decoded as float32 (the script's default), its first value the
    class index; a sample logged more than once counted once; percent of the samples seen."""
    entries = json.loads(Path(accuracy_log).read_text())
    seen: set[int] = set()
    good = 0
    for e in entries:
        idx = int(e["qsl_idx"])
        if idx in seen:
            continue
        seen.add(idx)
        found = int(np.frombuffer(bytes.fromhex(e["data"]), np.float32)[0])
        good += found == int(labels[idx])
    total = len(seen)
    return {"top1": 100.0 * good / total if total else 0.0, "good": good, "total": total}


def accuracy_line(acc: dict) -> str:
    """The script's own line, then fastres' verdict against MLPerf's floor."""
    from .mlperf import TOP1_FLOOR

    verdict = "meets" if acc["top1"] >= TOP1_FLOOR else "below"
    return (f"accuracy={acc['top1']:.3f}%, good={acc['good']}, total={acc['total']}\n"
            f"top-1 {acc['top1']:.3f}% {verdict} MLPerf's floor of {TOP1_FLOOR}% (99% of the reference's 76.46%)")


def mlperf_record(*, model: str, dtype: str, system: str, size: int, batch: int, scenario: str, mode: str,
                  fields: dict | None, accuracy: dict | None, log_dir: Path) -> dict:
    """The results record of one LoadGen test (kind "mlperf"; median_ms: the 50th percentile latency)."""
    rec = base_record("mlperf", model, batch, dtype, system, size)
    rec.update(scenario=scenario, mode=mode, log_dir=str(log_dir))
    if fields is not None:
        rec.update(fields)
        rec["images_per_s"] = fields["samples_per_s"]
        rec["median_ms"] = fields["latency_ms"].get("p50")
    if accuracy is not None:
        rec["accuracy"] = accuracy
    if rec["median_ms"] is None:
        rec["status"] = "untimed"  # accuracy mode: LoadGen reports no latencies to compare
    return rec


def markdown_mlperf_table(results: dict) -> str:
    """LoadGen's results per (model, dtype, scenario, system), then MLPerf's published per-GPU
    figures (marked as MLPerf's, not measured here)."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "mlperf"]
    if not recs:
        return ""
    out = ["| model | dtype | size | scenario | mode | system | result | samples/s | p50 ms | p90 ms | p99 ms | constraints |",
           "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in sorted(recs, key=lambda r: (r["model"], r["dtype"], r.get("scenario", ""), r.get("mode", ""), r["system"])):
        lat = r.get("latency_ms") or {}
        ms = [f"{lat[k]:.3g}" if isinstance(lat.get(k), (int, float)) else "-" for k in ("p50", "p90", "p99")]
        rate = f"{r['images_per_s']:,.0f}" if isinstance(r.get("images_per_s"), (int, float)) else "-"
        if r.get("mode") == "accuracy" and r.get("accuracy"):
            result = f"top-1 {r['accuracy']['top1']:.3f}%"
        else:
            result = r.get("result") or r.get("status", "-")
        unmet = [k for k, ok in (r.get("constraints") or {}).items() if not ok]
        cons = "all met" if r.get("constraints") and not unmet else ("unmet: " + ", ".join(unmet) if unmet else "-")
        out.append(f"| {r['model']} | {r['dtype']} | {r.get('size', '-')} | {r.get('scenario')} | {r.get('mode')} "
                   f"| {r['system']} | {result} | {rate} | {' | '.join(ms)} | {cons} |")
    out += ["", "MLPerf's published ResNet-50 figures per GPU (MLPerf's, not measured here):", "",
            "| round | system | scenario | samples/s per GPU |", "|---|---|---|---:|"]
    out += [f"| {rnd} | {system} | {scenario} | {rate:,} |" for rnd, system, scenario, rate in PUBLISHED]
    return "\n".join(out) + "\n"
