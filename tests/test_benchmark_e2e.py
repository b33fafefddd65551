"""fastres.benchmark.e2e: the end-to-end loop with stand-in systems (plain torch on the CPU:
fast), checking before timing, and a spent budget noted in the results."""
from __future__ import annotations

import json

import pytest
import torch
from benchmark_helpers import smoke_run

from fastres.benchmark import e2e, systems
from fastres.benchmark.e2e import run_e2e
from fastres.benchmark.environment import environment
from fastres.benchmark.report import markdown_e2e_table, render_markdown
from fastres.benchmark.results import open_results, validate_results
from fastres.benchmark.systems import build_model


class _Scaled(torch.nn.Module):
    """A stand-in for the engine: the float32 model, its logits scaled (1.0 = correct)."""

    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x.float()) * self.scale


@pytest.fixture(scope="module")
def resnet18_cpu():
    return build_model("resnet18", torch.device("cpu"), calib_size=32)


@pytest.mark.parametrize("scale, status", [(1.0, "ok"), (1.1, "wrong")])
def test_e2e_loop_checks_before_timing(tmp_path, monkeypatch, resnet18_cpu, scale, status):
    monkeypatch.setattr(e2e, "build_model", lambda name, device, **kw: resnet18_cpu)
    monkeypatch.setattr(systems, "build_fastres", lambda model, dtype, device: _Scaled(model, scale))
    run = smoke_run(tmp_path)
    run_e2e(run, ["resnet18"], [2], ["float32"], ["fastres", "cudnn-eager", "cudnn-eager-graph"], 32)
    recs = {r["system"]: r for r in run.results["records"]}
    assert recs["fastres"]["status"] == status
    assert recs["cudnn-eager"]["status"] == "ok" and recs["cudnn-eager"]["rel_err"] < 1e-4
    assert recs["cudnn-eager-graph"]["status"] == "skipped"
    if status == "ok":
        assert recs["fastres"]["median_ms"] > 0 and recs["fastres"]["rel_err"] < 1e-6
        assert recs["cudnn-eager"]["fastres_speedup"] == pytest.approx(recs["cudnn-eager"]["median_ms"] / recs["fastres"]["median_ms"])
    else:  # a wrong system is reported with its error and never timed
        assert recs["fastres"]["median_ms"] is None and recs["fastres"]["rel_err"] == pytest.approx(0.1, rel=1e-3)
        assert "not timed" in recs["fastres"]["reason"]
        assert "fastres_speedup" not in recs["cudnn-eager"]
        assert "WRONG (rel 1.0e-01)" in markdown_e2e_table(run.results)
    assert validate_results(run.results) == []
    assert json.loads(run.out_path.read_text())["records"] == run.results["records"]  # saved as it goes


def test_budget_stops_and_is_noted(tmp_path):
    run = smoke_run(tmp_path, budget=0.0)
    import time

    time.sleep(0.01)
    run_e2e(run, ["resnet18"], [1], ["float32"], ["cudnn-eager"], 32)
    assert run.results["records"] == []
    assert "time budget of 0 s spent during e2e resnet18" in run.results["incomplete"]["e2e"]
    run.save()
    again = open_results(run.out_path, environment(torch.device("cpu"), smoke=True))
    assert "e2e" in again["incomplete"]
    assert "**Incomplete:**" in render_markdown(again)


@pytest.mark.parametrize("scale, status", [(1.0, "ok"), (1.1, "wrong")])
def test_eight_bit_e2e_is_the_quantized_engine(tmp_path, monkeypatch, resnet18_cpu, scale, status):
    """In 8 bits fastres is the engine fastres.quantize makes (a stand-in here, checked by a
    stand-in of the reference of its integer math), built once for the dtype on float16 images
    of the run's size, its quantize time recorded; the baselines are skipped (their float16
    records stand beside it), and e4m3 on a device without e4m3 tensor cores is skipped with
    the device's reason."""
    from fastres.benchmark import quantized
    from fastres.benchmark.numerics import rel_error

    built = []

    def build(model, dtype, device, hw):
        built.append((dtype, hw))
        return _Scaled(model, scale)

    monkeypatch.setattr(e2e, "build_model", lambda name, device, **kw: resnet18_cpu)
    monkeypatch.setattr(systems, "build_quantized", build)
    monkeypatch.setattr(e2e, "logits_error", lambda engine, x, out: rel_error(out, resnet18_cpu(x.float())))
    monkeypatch.setattr(quantized, "unsupported", lambda device, dtype: "no e4m3 here" if dtype != torch.int8 else None)
    run = smoke_run(tmp_path)
    run_e2e(run, ["resnet18"], [2], ["int8", "float8_e4m3fn"], ["fastres", "cudnn-eager"], 32)
    recs = {(r["dtype"], r["system"]): r for r in run.results["records"]}
    assert built == [(torch.int8, (32, 32))]
    f = recs[("int8", "fastres")]
    assert f["status"] == status and f["quantize_s"] is not None and f["tol"] == 1e-2
    assert ((f["median_ms"] or 0) > 0) == (status == "ok")
    assert recs[("int8", "cudnn-eager")]["status"] == "skipped"
    assert "float16 record" in recs[("int8", "cudnn-eager")]["reason"]
    assert recs[("float8_e4m3fn", "fastres")]["reason"] == "no e4m3 here"
    assert validate_results(run.results) == []
