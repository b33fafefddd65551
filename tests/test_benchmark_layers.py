"""fastres.benchmark.layers: one per-layer point, where fastres splits the K loop timed beside
the same tile unsplit."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from benchmark_helpers import smoke_run

from fastres.benchmark.environment import l2_bytes
from fastres.benchmark.geometry import conv_layers
from fastres.benchmark.layers import _layer_point
from fastres.benchmark.report import summary_text


def test_layer_point_times_split_k_beside_unsplit(tmp_path, device):
    """Where fastres' config splits the K loop, the same tile unsplit is checked and timed too."""
    from fastres.kernels import Config, use_config

    # A float32 tile of the conv space: it compiles on a GPU as well as it runs in the interpreter.
    tile = Config(64, 64, 32, 4, 3)
    run = smoke_run(tmp_path, device)
    layer = next(l for l in conv_layers("resnet18", 32) if l.k == 3 and l.residual)
    with use_config("conv", dataclasses.replace(tile, SPLIT_K=3)):
        _layer_point(run, "resnet18", layer, 1, "float32", torch.float32, ["fastres"], 32,
                     l2_bytes(run.device), None, None)
    (rec,) = run.results["records"]
    assert rec["status"] == "ok" and rec["split_k"] == 3 and rec["config"].endswith("_k3"), rec
    assert rec["unsplit_median_ms"] > 0
    assert rec["split_speedup"] == pytest.approx(rec["unsplit_median_ms"] / rec["median_ms"])
    assert "split-K layers" in summary_text(run.results) and rec["config"] in summary_text(run.results)
    # An unsplit config records its name and no comparison (forced: a GPU's heuristic splits
    # this small layer).
    run2 = smoke_run(tmp_path / "b", device)
    with use_config("conv", tile):
        _layer_point(run2, "resnet18", layer, 1, "float32", torch.float32, ["fastres"], 32,
                     l2_bytes(run2.device), None, None)
    (rec2,) = run2.results["records"]
    assert rec2["status"] == "ok" and rec2["config"] == tile.name, rec2
    assert rec2["split_k"] == 1 and "unsplit_median_ms" not in rec2
