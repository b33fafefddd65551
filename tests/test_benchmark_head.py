"""fastres.benchmark.head: the classifier head alone, checked and timed, in the markdown and
summary."""
from __future__ import annotations

import torch
from benchmark_helpers import smoke_run

from fastres.benchmark.environment import l2_bytes
from fastres.benchmark.geometry import head_geometry
from fastres.benchmark.head import HEAD_SYSTEMS, head_point
from fastres.benchmark.report import render_markdown, summary_text
from fastres.benchmark.results import validate_results


def test_head_point_checks_and_times_the_head(tmp_path, device):
    """The classifier head alone: fastres (split and, beside it, unsplit) and torch eager, each
    checked before it is timed, in the results' markdown and summary."""
    from fastres.kernels import Config, use_config

    assert head_geometry("resnet50") == (2048, 7, 7, 1000)
    assert head_geometry("resnet18", 32) == (512, 1, 1, 1000)
    run = smoke_run(tmp_path, device)
    # A float32 tile of the conv1x1 space (the classifier's GEMM): it compiles on a GPU too.
    with use_config("conv1x1", Config(64, 64, 32, 4, 3, SPLIT_K=2)):
        head_point(run, "resnet18", 2, "float32", torch.float32, 32, l2_bytes(run.device))
    recs = {r["system"]: r for r in run.results["records"]}
    assert set(recs) == set(HEAD_SYSTEMS)
    f, e = recs["fastres"], recs["cudnn-eager"]
    assert f["status"] == e["status"] == "ok" and f["kind"] == "head" and f["layer"] == "avgpool+fc 512->1000 @1x1"
    assert f["rel_err"] <= f["tol"] and f["unsplit_rel_err"] <= f["tol"]
    assert f["split_k"] == 2 and f["unsplit_median_ms"] > 0 and e["fastres_speedup"] > 0
    assert validate_results(run.results) == []
    md = render_markdown(run.results)
    assert "## Classifier head" in md and "| resnet18 | float32 | 2 | avgpool+fc 512->1000 @1x1 |" in md
    text = summary_text(run.results)
    assert "head resnet18 float32 b2: fastres" in text and "split-K layers" in text
