"""The benchmark harness (fastres/benchmark.py): statistics, timer, card slug, conv enumeration,
result schema, markdown and plot, the CLI's errors, and `fastres bench --smoke` end to end."""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastres import benchmark as B

REPO = Path(__file__).resolve().parent.parent


# -- statistics -----------------------------------------------------------------------------

@pytest.mark.parametrize("q", [0, 10, 25, 50, 75, 90, 100])
def test_percentile_matches_numpy_linear(q):
    np = pytest.importorskip("numpy")
    values = [float(v) for v in torch.rand(37, generator=torch.Generator().manual_seed(q)) * 10]
    assert B.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_edges():
    assert B.percentile([3.0], 50) == 3.0
    assert B.percentile([1.0, 2.0], 50) == 1.5
    assert B.percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0  # unsorted input
    with pytest.raises(ValueError, match="empty"):
        B.percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        B.percentile([1.0], 101)


def test_summarize_synthetic_timings():
    samples = [float(i) for i in range(1, 101)]  # 1..100 ms
    s = B.summarize(samples)
    assert s["reps"] == 100
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["p10_ms"] == pytest.approx(10.9)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["q1_ms"] == pytest.approx(25.75) and s["q3_ms"] == pytest.approx(75.25)
    assert s["iqr_ms"] == pytest.approx(49.5)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["std_ms"] == pytest.approx(math.sqrt(sum((v - 50.5) ** 2 for v in samples) / 99))
    # an outlier moves the mean, not the median
    spiky = [1.0] * 19 + [1000.0]
    t = B.summarize(spiky)
    assert t["median_ms"] == 1.0 and t["mean_ms"] > 50
    one = B.summarize([2.5])
    assert one["median_ms"] == one["p10_ms"] == one["p90_ms"] == 2.5 and one["std_ms"] == 0.0
    with pytest.raises(ValueError):
        B.summarize([])


def test_measure_on_cpu_counts_calls_and_rotates():
    calls = []
    opts = B.TimingOptions(warmup_ms=0.0, rep_ms=0.0, min_warmup=2, min_reps=5, max_reps=5)
    stats = B.measure(calls.append, 3, device=torch.device("cpu"), options=opts)
    assert stats["reps"] == 5 and stats["warmup_calls"] == 2
    assert calls == [0, 1, 2, 0, 1, 2, 0]  # warm-up and timed calls cycle the input sets
    assert stats["median_ms"] >= 0 and stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


def test_measure_fills_rep_ms_within_bounds():
    import time

    opts = B.TimingOptions(warmup_ms=5.0, rep_ms=20.0, min_warmup=1, min_reps=3, max_reps=8)
    stats = B.measure(lambda i: time.sleep(0.002), 1, device=torch.device("cpu"), options=opts)
    assert 3 <= stats["reps"] <= 8
    assert stats["median_ms"] >= 1.5


def test_rotation_count():
    l2 = 50 * 2**20
    assert B.rotation_count(200 * 2**20, l2) == (2, False)  # big sets: two are enough
    n, flush = B.rotation_count(30 * 2**20, l2)
    assert n == 4 and not flush and n * 30 * 2**20 >= 2 * l2
    n, flush = B.rotation_count(1000, l2)  # tiny sets: capped, so L2 is flushed as well
    assert n == B.MAX_ROTATION_SETS and flush


# -- environment ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200-nvl"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("Tesla T4", "t4"),
    ("", "unknown"),
])
def test_card_slug(name, slug):
    assert B.card_slug(name) == slug


def test_baseline_flags_restore():
    b = torch.backends
    before = (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    with pytest.raises(RuntimeError):
        with B.baseline_flags():
            assert b.cudnn.benchmark is True and b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False
            raise RuntimeError("restored even on error")
    assert (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == before


def test_rel_error_and_tolerances():
    ref = torch.tensor([3.0, 4.0])
    assert B.rel_error(ref, ref) == 0.0
    assert B.rel_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert B.rel_error(torch.tensor([float("nan"), 4.0]), ref) == math.inf
    assert B.e2e_tolerance("float16", 1e-3, system="fastres") == 5e-3
    assert B.e2e_tolerance("float16", 4e-3, system="fastres") == pytest.approx(8e-3)
    assert B.e2e_tolerance("float16", 0.5, system="fastres") == 2e-2  # never above the cap
    assert B.e2e_tolerance("float16", 1e-3, system="cudnn-eager") == 2e-2
    assert B.e2e_tolerance("bfloat16", 1e-2, system="torch-compile") == pytest.approx(2e-2)


# -- the convolutions of a ResNet -----------------------------------------------------------

def _torchvision_convs(name: str) -> list[tuple[str, torch.nn.Conv2d]]:
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def test_resnet50_distinct_convs():
    layers = B.conv_layers("resnet50", 224)
    # stem + layer1 (1x1 in, 3x3, 1x1 out +res, downsample, 1x1 in from 256) + 6 per later stage
    assert len(layers) == 24
    convs = _torchvision_convs("resnet50")
    assert sum(len(l.uses) for l in layers) == len(convs) == 53
    assert sorted(u for l in layers for u in l.uses) == sorted(n for n, _ in convs)
    stem = layers[0]
    assert (stem.k, stem.stride, stem.pad, stem.cin, stem.cout, stem.h, stem.w) == (7, 2, 3, 3, 64, 224, 224)
    assert stem.relu and not stem.residual and stem.uses == ("conv1",) and (stem.oh, stem.ow) == (112, 112)
    assert stem.name == "7x7/2 3->64 @224x224 relu"
    by_use = {u: l for l in layers for u in l.uses}
    ds = by_use["layer2.0.downsample.0"]
    assert (ds.k, ds.stride, ds.cin, ds.cout, ds.h, ds.relu, ds.residual) == (1, 2, 256, 512, 56, False, False)
    c2 = by_use["layer2.0.conv2"]  # torchvision v1.5: the stride sits on the 3x3
    assert (c2.k, c2.stride, c2.pad, c2.cin, c2.cout, c2.h, c2.oh) == (3, 2, 1, 128, 128, 56, 28)
    c3 = by_use["layer4.2.conv3"]
    assert (c3.k, c3.cin, c3.cout, c3.h, c3.relu, c3.residual) == (1, 512, 2048, 7, True, True)
    assert by_use["layer3.5.conv2"] is by_use["layer3.1.conv2"]
    assert len(by_use["layer3.1.conv1"].uses) == 5  # 1024->256 1x1 in blocks 1..5 of stage 3
    # every conv's geometry agrees with its torchvision module
    for name, conv in convs:
        l = by_use[name]
        assert (l.k, l.stride, l.pad, l.cin, l.cout) == (conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.in_channels, conv.out_channels)


def test_conv_work_matches_published_macs():
    # torchvision's _ops metadata (multiply-adds at 224x224), fc included: 4.089 / 1.814 GMACs
    assert B.model_gflop("resnet50") / 2 == pytest.approx(4.089, rel=2e-3)
    assert B.model_gflop("resnet18") / 2 == pytest.approx(1.814, rel=2e-3)


def test_resnet18_distinct_convs_and_plan_agree():
    layers = B.conv_layers("resnet18", 224)
    assert len(layers) == 15
    assert sum(len(l.uses) for l in layers) == len(_torchvision_convs("resnet18")) == 20
    plan = pytest.importorskip("fastres.plan")
    for arch in ("resnet18", "resnet50"):
        ours = {(l.k, l.stride, l.pad, l.cin, l.cout, l.relu, l.residual) for l in B.conv_layers(arch)}
        theirs = {(c.k, c.stride, c.pad, c.cin, c.cout, c.relu, c.residual is not None) for c in plan.arch_convs(arch)}
        assert ours == theirs, f"{arch}: the bench's conv walk and the engine's plan disagree"


def test_pick_representative_covers_kinds():
    layers = B.conv_layers("resnet18", 32)
    picked = B.pick_representative(layers, 4)
    assert len(picked) == 4
    assert {(l.k, l.stride, l.residual) for l in picked} >= {(7, 2, False), (3, 1, False), (3, 1, True), (3, 2, False)}
    assert B.pick_representative(layers, 100) == layers


# -- results, markdown, plot ----------------------------------------------------------------

def _env(**kw):
    env = {"device": "NVIDIA H100 80GB HBM3", "card": "h100-sxm", "date": "2026-01-02", "commit": "abc123", "dirty": False,
           "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0", "cudnn": 91000, "smoke": False}
    env.update(kw)
    return env


def _e2e(system, batch, ms, dtype="float16", model="resnet50", **kw):
    r = {"kind": "e2e", "model": model, "batch": batch, "dtype": dtype, "system": system, "size": 224,
         "median_ms": ms, "images_per_s": batch / (ms * 1e-3) if ms else None, "status": "ok", "p10_ms": ms, "p90_ms": ms}
    r.update(kw)
    return r


def _synthetic_results(smoke=False):
    res = B.new_results(_env(smoke=smoke))
    res["peaks"] = {"matmul_tflops": {"float16": 790.0}, "copy_tb_s": 3.0, "note": "8192^3 matmul"}
    for batch, f_ms, e_ms in ((1, 1.0, 2.0), (32, 4.0, 5.0)):
        B.add_record(res, _e2e("fastres", batch, f_ms))
        B.add_record(res, _e2e("cudnn-eager", batch, e_ms, fastres_speedup=e_ms / f_ms))
    B.add_record(res, _e2e("cudnn-eager-graph", 1, None, status="wrong", rel_err=3.1e-2, images_per_s=None))
    B.add_record(res, _e2e("torch-compile", 1, None, status="skipped", reason="needs CUDA", images_per_s=None))
    for system, ms in (("fastres", 0.010), ("cudnn-eager", 0.012), ("cudnn-conv", 0.008)):
        B.add_record(res, {"kind": "layer", "model": "resnet50", "layer": "3x3/1 64->64 @56x56 relu", "batch": 1,
                           "dtype": "float16", "system": system, "size": 224, "median_ms": ms, "images_per_s": 1 / (ms * 1e-3),
                           "tflops": 0.231 / ms / 1e3 * 1e3, "pct_peak": 3.0, "uses": ["layer1.0.conv2", "layer1.1.conv2"],
                           "status": "ok"})
    return res


def test_result_schema():
    res = _synthetic_results()
    assert B.validate_results(res) == []
    for key in B.TOP_LEVEL_KEYS:
        assert key in res
    broken = json.loads(json.dumps(res))
    del broken["commit"]
    del broken["records"][0]["images_per_s"]
    broken["records"][-1].pop("tflops")
    problems = B.validate_results(broken)
    assert any("commit" in p for p in problems)
    assert any("images_per_s" in p for p in problems)
    assert any("tflops" in p for p in problems)


def test_add_record_replaces_same_key_and_files_merge(tmp_path):
    res = B.new_results(_env())
    B.add_record(res, _e2e("fastres", 1, 1.0))
    B.add_record(res, _e2e("fastres", 1, 0.9))
    B.add_record(res, _e2e("fastres", 8, 2.0))
    assert [r["median_ms"] for r in res["records"]] == [0.9, 2.0]
    path = B.results_path(tmp_path, _env())
    assert path.name == "h100-sxm-2026-01-02.json"
    assert B.results_path(tmp_path, _env(smoke=True)).name == "smoke-h100-sxm-2026-01-02.json"
    res["peaks"] = {"matmul_tflops": {"float16": 700.0}}
    B.save_results(path, res)
    again = B.open_results(path, _env())  # a later run of the same day keeps earlier records
    assert len(again["records"]) == 2 and again["peaks"]["matmul_tflops"]["float16"] == 700.0
    other = B.open_results(path, _env(device="NVIDIA H200"))
    assert other["records"] == []
    assert B.load_results(path)["records"] == res["records"]


def test_markdown_tables():
    res = _synthetic_results()
    md = B.render_markdown(res)
    table = B.markdown_e2e_table(res)
    assert table in md
    lines = table.strip().splitlines()
    assert lines[0] == "| model | dtype | size | batch | fastres | cudnn-eager | cudnn-eager-graph | torch-compile |"
    assert len(lines) == 4  # header, rule, two batches
    row1 = next(l for l in lines if l.startswith("| resnet50 | float16 | 224 | 1 |"))
    assert "1,000 img/s, 1.000 ms" in row1
    assert "(fastres 2.00x)" in row1
    assert "WRONG (rel 3.1e-02)" in row1 and "skipped" in row1
    assert "abc123" in md and "790 TFLOP/s" in md
    layers = B.markdown_layer_table(res)
    assert "#### resnet50, float16, batch 1" in layers
    assert "| 3x3/1 64->64 @56x56 relu | 2 | 0.010 |" in layers
    assert "1.20x" in layers  # cudnn-eager / fastres
    assert "**all convs, x uses**" in layers
    assert B.SMOKE_LABEL not in md
    smoke_md = B.render_markdown(_synthetic_results(smoke=True))
    assert smoke_md.count(B.SMOKE_LABEL) >= 3  # title and each table
    assert B.markdown_e2e_table(B.new_results(_env())) == "_no end-to-end records_\n"


def test_plot_writer(tmp_path):
    pytest.importorskip("matplotlib")
    res = _synthetic_results()
    png = B.write_plot(res, tmp_path / "r.png")
    assert png == tmp_path / "r.png" and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert B.write_plot(B.new_results(_env()), tmp_path / "none.png") is None


def test_report_command_writes_md_and_png(tmp_path, capsys):
    res = _synthetic_results()
    path = tmp_path / "h100-sxm-2026-01-02.json"
    B.save_results(path, res)
    parser = argparse.ArgumentParser()
    B.configure(parser)
    assert B.main(parser.parse_args(["report", str(path)])) == 0
    assert "| resnet50 | float16 | 224 | 1 |" in path.with_suffix(".md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_user_errors(tmp_path):
    from fastres.cli import UserError

    parser = argparse.ArgumentParser()
    B.configure(parser)
    with pytest.raises(UserError, match="needs the results JSON"):
        B.main(parser.parse_args(["report"]))
    with pytest.raises(UserError, match="no results file"):
        B.main(parser.parse_args(["report", str(tmp_path / "missing.json")]))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--smoke"):
            B.main(parser.parse_args(["e2e", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="unknown dtype"):
        B.main(parser.parse_args(["--smoke", "--dtypes", "fp8", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="bf16"):
        B.main(parser.parse_args(["--smoke", "--dtypes", "bf16", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="unknown name"):
        B.main(parser.parse_args(["--smoke", "--systems", "tensorrt", "--out", str(tmp_path)]))


# -- the whole harness through the interpreter ----------------------------------------------

def test_bench_smoke_end_to_end(tmp_path):
    """`fastres bench --smoke --out DIR`: layers, e2e and the report through the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the CLI must set it itself
    env["CUDA_VISIBLE_DEVICES"] = ""
    results_dir = REPO / "bench" / "results"
    before = sorted(p.name for p in results_dir.iterdir()) if results_dir.is_dir() else []
    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, "-m", "fastres", "bench", "--smoke", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert B.SMOKE_LABEL in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    jsons = [f for f in files if f.endswith(".json")]
    assert len(jsons) == 1 and jsons[0].startswith("smoke-cpu-"), files
    path = out / jsons[0]
    res = json.loads(path.read_text())
    assert res["smoke"] is True and res["label"] == B.SMOKE_LABEL
    assert B.validate_results(res) == []
    recs = res["records"]
    e2e = {r["system"]: r for r in recs if r["kind"] == "e2e"}
    assert e2e["fastres"]["status"] == "ok", e2e["fastres"]
    assert e2e["fastres"]["rel_err"] <= e2e["fastres"]["tol"]
    assert e2e["fastres"]["median_ms"] > 0 and e2e["fastres"]["images_per_s"] > 0
    assert e2e["cudnn-eager"]["status"] == "ok"
    for name in ("cudnn-eager-graph", "torch-compile"):
        assert e2e[name]["status"] == "skipped" and "CUDA" in e2e[name]["reason"]
    layer = [r for r in recs if r["kind"] == "layer"]
    assert {r["system"] for r in layer} == set(B.LAYER_SYSTEMS)
    assert {r["dtype"] for r in layer} == {"float32", "float16"}
    assert all(r["status"] == "ok" and r["tflops"] > 0 for r in layer), [r for r in layer if r["status"] != "ok"]
    assert any(r["layer"].startswith("7x7/2 3->64") for r in layer)
    md = path.with_suffix(".md").read_text()
    assert B.SMOKE_LABEL in md and "| resnet18 | float16 | 32 | 2 |" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in proc.stdout
    else:
        assert path.with_suffix(".png").is_file()
    after = sorted(p.name for p in results_dir.iterdir()) if results_dir.is_dir() else []
    assert after == before, "the smoke run must not write into bench/results"


# -- the e2e loop with stand-in systems (plain torch on the CPU: fast) -----------------------

class _Scaled(torch.nn.Module):
    """A stand-in for the engine: the float32 model, its logits scaled (1.0 = correct)."""

    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x.float()) * self.scale


def _cpu_run(tmp_path, budget=None):
    env = B.environment(torch.device("cpu"), smoke=True)
    path = B.results_path(tmp_path, env)
    return B.Run(torch.device("cpu"), True, path, B.open_results(path, env), B.SMOKE_TIMING, B.Budget(budget), log=lambda s: None)


@pytest.fixture(scope="module")
def resnet18_cpu():
    return B.build_model("resnet18", torch.device("cpu"), calib_size=32)


@pytest.mark.parametrize("scale, status", [(1.0, "ok"), (1.1, "wrong")])
def test_e2e_loop_checks_before_timing(tmp_path, monkeypatch, resnet18_cpu, scale, status):
    monkeypatch.setattr(B, "build_model", lambda name, device, **kw: resnet18_cpu)
    monkeypatch.setattr(B, "build_fastres", lambda model, dtype, device: _Scaled(model, scale))
    run = _cpu_run(tmp_path)
    B.run_e2e(run, ["resnet18"], [2], ["float32"], ["fastres", "cudnn-eager", "cudnn-eager-graph"], 32)
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
        assert "WRONG (rel 1.0e-01)" in B.markdown_e2e_table(run.results)
    assert B.validate_results(run.results) == []
    assert json.loads(run.out_path.read_text())["records"] == run.results["records"]  # saved as it goes


def test_budget_stops_and_is_noted(tmp_path):
    run = _cpu_run(tmp_path, budget=0.0)
    import time

    time.sleep(0.01)
    B.run_e2e(run, ["resnet18"], [1], ["float32"], ["cudnn-eager"], 32)
    assert run.results["records"] == []
    assert "time budget of 0 s spent during e2e resnet18" in run.results["incomplete"]["e2e"]
    run.save()
    again = B.open_results(run.out_path, B.environment(torch.device("cpu"), smoke=True))
    assert "e2e" in again["incomplete"]
    assert "**Incomplete:**" in B.render_markdown(again)


def test_smoke_reexecs_with_the_interpreter(tmp_path, monkeypatch):
    """Where triton was imported without TRITON_INTERPRET (a GPU machine), --smoke runs in a
    child process that sets it first, with the same options."""
    import fastres.kernels

    seen = {}

    def fake_run(cmd, env):
        seen.update(cmd=cmd, env=env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(fastres.kernels, "interpreting", lambda: False)
    monkeypatch.setattr(B.subprocess, "run", fake_run)
    parser = argparse.ArgumentParser()
    B.configure(parser)
    assert B.main(parser.parse_args(["layers", "--smoke", "--max-layers", "2", "--out", str(tmp_path)])) == 0
    assert seen["env"]["TRITON_INTERPRET"] == "1"
    assert seen["cmd"][0] == sys.executable and "_child_main" in seen["cmd"][-1]
    args = json.loads(seen["env"]["FASTRES_BENCH_ARGS"])
    assert args["action"] == "layers" and args["smoke"] is True and args["max_layers"] == 2 and args["out"] == str(tmp_path)


def test_layer_point_times_split_k_beside_unsplit(tmp_path):
    """Where fastres' config splits the K loop, the same tile unsplit is checked and timed too."""
    from fastres.kernels import Config, use_config

    run = _cpu_run(tmp_path)
    layer = next(l for l in B.conv_layers("resnet18", 32) if l.k == 3 and l.residual)
    with use_config("conv", Config(64, 64, 64, 4, 1, SPLIT_K=3)):
        B._layer_point(run, "resnet18", layer, 1, "float32", torch.float32, ["fastres"], 32,
                       B.l2_bytes(run.device), None, None)
    (rec,) = run.results["records"]
    assert rec["status"] == "ok" and rec["split_k"] == 3 and rec["config"].endswith("_k3"), rec
    assert rec["unsplit_median_ms"] > 0
    assert rec["split_speedup"] == pytest.approx(rec["unsplit_median_ms"] / rec["median_ms"])
    assert "split-K layers" in B.summary_text(run.results) and rec["config"] in B.summary_text(run.results)
    # An unsplit config records its name and no comparison.
    run2 = _cpu_run(tmp_path / "b")
    B._layer_point(run2, "resnet18", layer, 1, "float32", torch.float32, ["fastres"], 32,
                   B.l2_bytes(run2.device), None, None)
    (rec2,) = run2.results["records"]
    assert rec2["split_k"] == 1 and "unsplit_median_ms" not in rec2


def test_head_point_checks_and_times_the_head(tmp_path):
    """The classifier head alone: fastres (split and, beside it, unsplit) and torch eager, each
    checked before it is timed, in the results' markdown and summary."""
    from fastres.kernels import Config, use_config

    assert B.head_geometry("resnet50") == (2048, 7, 7, 1000)
    assert B.head_geometry("resnet18", 32) == (512, 1, 1, 1000)
    run = _cpu_run(tmp_path)
    with use_config("conv1x1", Config(64, 256, 128, 4, 1, SPLIT_K=2)):
        B._head_point(run, "resnet18", 2, "float32", torch.float32, 32, B.l2_bytes(run.device))
    recs = {r["system"]: r for r in run.results["records"]}
    assert set(recs) == set(B.HEAD_SYSTEMS)
    f, e = recs["fastres"], recs["cudnn-eager"]
    assert f["status"] == e["status"] == "ok" and f["kind"] == "head" and f["layer"] == "avgpool+fc 512->1000 @1x1"
    assert f["rel_err"] <= f["tol"] and f["unsplit_rel_err"] <= f["tol"]
    assert f["split_k"] == 2 and f["unsplit_median_ms"] > 0 and e["fastres_speedup"] > 0
    assert B.validate_results(run.results) == []
    md = B.render_markdown(run.results)
    assert "## Classifier head" in md and "| resnet18 | float32 | 2 | avgpool+fc 512->1000 @1x1 |" in md
    text = B.summary_text(run.results)
    assert "head resnet18 float32 b2: fastres" in text and "split-K layers" in text
