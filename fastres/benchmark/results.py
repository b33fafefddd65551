"""The results of a bench run: the schema (top-level and record keys), building records, merging
a record into a results dict, validating it, and the results file (its path, load, merge with
a file of the same day, atomic save).

Results go to ``<out>/<card>-<YYYY-MM-DD>.json`` (merged with a file of the same name, so
``layers`` and ``e2e`` runs of one day share a file); a smoke run's file is prefixed ``smoke-``
and labelled, so it never writes over real results.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .names import SMOKE_LABEL

TOP_LEVEL_KEYS = ("device", "date", "commit", "torch", "triton", "cuda", "records")
RECORD_KEYS = ("model", "batch", "dtype", "system", "median_ms", "images_per_s")
LAYER_RECORD_KEYS = RECORD_KEYS + ("layer", "tflops")


def record_key(r: dict) -> tuple:
    """What makes a record unique in a results file: a later record with the same key replaces it."""
    return (r.get("kind"), r.get("model"), r.get("layer"), r.get("size"), r.get("batch"), r.get("dtype"), r.get("system"),
            r.get("scenario"), r.get("mode"))


def new_results(env: dict) -> dict:
    """An empty results dict with the top-level fields `env` (labelled when a smoke run)."""
    results = dict(env)
    results["records"] = []
    if env.get("smoke"):
        results["label"] = SMOKE_LABEL
    return results


def add_record(results: dict, record: dict) -> dict:
    """Add `record`, replacing one with the same key (kind, model, layer, size, batch, dtype, system, and an
    MLPerf record's scenario and mode)."""
    key = record_key(record)
    results["records"] = [r for r in results["records"] if record_key(r) != key]
    results["records"].append(record)
    return record


def base_record(kind: str, model: str, batch: int, dtype: str, system: str, size: int) -> dict:
    """A record of one system at one point, not timed yet."""
    return {"kind": kind, "model": model, "batch": batch, "dtype": dtype, "system": system, "size": size,
            "median_ms": None, "images_per_s": None, "status": "ok"}


def timed_record(rec: dict, stats: dict, batch: int) -> dict:
    """`rec` with the timing statistics of `measure` and the images/s they give at `batch`."""
    rec.update({k: v for k, v in stats.items()})
    rec["images_per_s"] = batch / (stats["median_ms"] * 1e-3) if stats["median_ms"] > 0 else None
    return rec


def speedups(point: dict[str, dict]) -> None:
    """Each timed baseline of one point (system -> record) gets fastres' speedup over it."""
    f = point.get("fastres")
    if not f or f.get("status") != "ok" or not f.get("median_ms"):
        return
    for name, rec in point.items():
        if name != "fastres" and rec.get("status") == "ok" and rec.get("median_ms"):
            rec["fastres_speedup"] = rec["median_ms"] / f["median_ms"]


def validate_results(results: dict) -> list[str]:
    """The schema's complaints about `results` (empty when it is well formed)."""
    problems = [f"missing top-level key {k!r}" for k in TOP_LEVEL_KEYS if k not in results]
    for i, r in enumerate(results.get("records", [])):
        need = LAYER_RECORD_KEYS if r.get("kind") == "layer" else RECORD_KEYS
        problems += [f"record {i} ({r.get('system')}): missing key {k!r}" for k in need if k not in r]
        if r.get("status", "ok") == "ok" and not isinstance(r.get("median_ms"), (int, float)):
            problems.append(f"record {i}: status ok without a median_ms")
    return problems


def results_path(out_dir: Path, env: dict) -> Path:
    """`<out_dir>/[smoke-]<card>-<date>.json`."""
    prefix = "smoke-" if env.get("smoke") else ""
    return Path(out_dir) / f"{prefix}{env['card']}-{env['date']}.json"


def load_results(path: Path) -> dict:
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no results file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(results, dict) or "records" not in results:
        raise ValueError(f"{path} is not a fastres results file (no 'records')")
    return results


def open_results(path: Path, env: dict) -> dict:
    """A results dict for this run: the existing file's records if it was made on the same
    device with the same smoke flag (its peaks kept), else a fresh one."""
    results = new_results(env)
    if path.is_file():
        try:
            old = load_results(path)
        except (ValueError, OSError):
            return results
        if old.get("device") == env["device"] and bool(old.get("smoke")) == bool(env.get("smoke")):
            results["records"] = list(old["records"])
            if old.get("peaks"):
                results["peaks"] = old["peaks"]
            if isinstance(old.get("incomplete"), dict):
                results["incomplete"] = dict(old["incomplete"])
    return results


def save_results(path: Path, results: dict) -> None:
    """Write atomically (a killed run leaves the previous complete file). The temporary file
    beside it is removed if the write fails; only a process killed outright leaves one, which
    is why bench/device_run.sh points --out at a work folder and copies out the final files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1, allow_nan=False, default=str)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:  # an error or Ctrl-C: nothing half-written stays beside the results
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
