"""fastres.benchmark.preprocess: `fastres bench preprocess` on tiny generated photos (no GPU,
no interpreter): a record per (photo size, system), exact and fast with their decode and
resize split, fast's deviation from exact, nvjpeg skipped without CUDA, and the table."""
from __future__ import annotations

import json

import pytest
import torch

from fastres.cli import run_subcommand
from fastres.benchmark.preprocess import markdown_preprocess_table, run_preprocess
from fastres.benchmark.results import validate_results
from fastres.predict.preprocess import FAST_MAX_BOUND, FAST_MEAN_BOUND

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


def test_records_and_table():
    results = {"records": []}
    logged = []
    threads = torch.get_num_threads()
    run_preprocess(results, logged.append, lambda: None, resize=64, crop=56, systems=("exact", "fast", "torchvision", "pil", "nvjpeg"),
                   sizes=((160, 120),), photos=2, reps=1, logits=False)
    recs = {r["system"]: r for r in results["records"]}
    assert set(recs) == {"exact", "fast", "torchvision", "pil", "nvjpeg"}
    for name in ("exact", "fast", "torchvision", "pil"):
        r = recs[name]
        assert r["status"] == "ok" and r["model"] == "160x120" and r["median_ms"] > 0, r
        assert r["images_per_s"] == pytest.approx(1e3 / r["median_ms"])
    assert recs["exact"]["decode_ms"] > 0 and recs["fast"]["resize_crop_ms"] > 0
    dev = recs["fast"]["deviation"]
    assert 0 <= dev["mean_abs_diff"] <= dev["max_abs_diff"] and 0 <= dev["differing_fraction"] <= 1
    assert dev["mean_abs_diff"] <= FAST_MEAN_BOUND and dev["max_abs_diff"] <= FAST_MAX_BOUND, dev
    if not torch.cuda.is_available():
        assert recs["nvjpeg"]["status"] == "skipped"
    assert len(logged) == 6 and torch.get_num_threads() == threads  # its one-thread timing undone
    table = markdown_preprocess_table(results)
    assert table.count("\n| 160x120 |") == 5 and "/core" in table
    assert not validate_results(dict(results, device="x", date="d", commit=None, torch="t", triton="t", cuda=None))


def test_cli_smoke_writes_results(tmp_path, capsys):
    assert run_subcommand("bench", ["preprocess", "--smoke", "--out", str(tmp_path), "--no-plot", "--systems", "exact,fast"]) == 0
    out = capsys.readouterr().out
    assert "fastres bench preprocess:" in out and "| 400x300 | fast |" in out
    (path,) = tmp_path.glob("smoke-*.json")
    results = json.loads(path.read_text())
    assert {r["system"] for r in results["records"]} == {"exact", "fast"} and results["preprocess_host"]
    assert "Preprocessing per core" in path.with_suffix(".md").read_text()
    assert run_subcommand("bench", ["preprocess", "--systems", "exact,warp"]) == 2
    assert "unknown name 'warp'" in capsys.readouterr().err
