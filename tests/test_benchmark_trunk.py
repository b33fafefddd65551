"""fastres.benchmark.trunk: the detection trunk's loop with stand-in systems (plain torch on the
CPU: fast), its features checked before timing, and its work per image."""
from __future__ import annotations

import collections

import pytest
import torch
from benchmark_helpers import smoke_run

from fastres.benchmark import systems, trunk
from fastres.benchmark.results import validate_results
from fastres.benchmark.trunk import TRUNK_MODEL, features_rel_error, run_trunk, trunk_gflop


class _Scaled(torch.nn.Module):
    """A stand-in for the engine: the float32 trunk, one feature map scaled (1.0 = correct)."""

    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        out = self.model(x.float())
        out["3"] = out["3"] * self.scale
        return out


@pytest.fixture(scope="module")
def trunk_cpu():
    return trunk.build_trunk(torch.device("cpu"), calib_size=16)


@pytest.mark.parametrize("scale, status", [(1.0, "ok"), (1.5, "wrong")])
def test_trunk_loop_checks_features_before_timing(tmp_path, monkeypatch, trunk_cpu, scale, status):
    monkeypatch.setattr(trunk, "build_trunk", lambda device: trunk_cpu)
    monkeypatch.setattr(systems, "build_fastres", lambda model, dtype, device: _Scaled(model, scale))
    run = smoke_run(tmp_path)
    run_trunk(run, ["float32"], ["fastres", "cudnn-eager", "cudnn-eager-graph"], size=(32, 48), batches=(1,))
    recs = {r["system"]: r for r in run.results["records"]}
    assert {r["model"] for r in recs.values()} == {TRUNK_MODEL} and recs["fastres"]["input"] == "32x48"
    assert recs["fastres"]["status"] == status and recs["cudnn-eager"]["status"] == "ok"
    assert recs["cudnn-eager-graph"]["status"] == "skipped"
    if status == "ok":
        assert recs["fastres"]["median_ms"] > 0 and recs["fastres"]["rel_err"] < 1e-5
    else:
        assert recs["fastres"]["median_ms"] is None and "not timed" in recs["fastres"]["reason"]
    assert validate_results(run.results) == []


def test_trunk_work_and_error():
    # ResNet-50 without its head: 4.09 GMACs at 224x224 less the fc's 2048 x 1000.
    assert trunk_gflop(224, 224) == pytest.approx(8.178368512 - 2 * 2048 * 1000 / 1e9)
    a = collections.OrderedDict(x=torch.ones(2, 3), y=torch.zeros(1))
    b = collections.OrderedDict(x=torch.ones(2, 3) * 1.1, y=torch.zeros(1))
    assert features_rel_error(b, a) == pytest.approx(0.1)
    assert trunk.TRUNK_SIZE == (800, 1216) and trunk.TRUNK_BATCHES == (1, 8)
