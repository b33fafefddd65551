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
from fastres.benchmark.variants import FAMILIES
from fastres.kernels import Config
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


def test_layer_point_times_every_variant_side_by_side(tmp_path, device):
    """`bench layers --variants`: each variant family the tuner offers for the layer is
    checked and timed beside the default, and the report shows them in a variant column."""
    from fastres.benchmark.report import markdown_variant_table
    from fastres.kernels import Config, use_config

    run = smoke_run(tmp_path, device)
    run.variants = FAMILIES
    layer = next(l for l in conv_layers("resnet18", 32) if l.k == 3 and l.stride == 1 and not l.residual)
    with use_config("conv", Config(64, 64, 64, 4, 4, SPLIT_K=3)):
        _layer_point(run, "resnet18", layer, 1, "float16", torch.float16, ["fastres"], 32,
                     l2_bytes(run.device), 100.0, None)
    (rec,) = run.results["records"]
    rows = {v["variant"]: v for v in rec["variants"]}
    assert {"ptr", "fused_k", "tma", "tma_w", "tma_b", "tma_b_ws"} <= set(rows), rows
    assert all(v["status"] == "ok" and v["median_ms"] > 0 for v in rows.values()), rows
    assert rows["fused_k"]["config"] == "64x64x64_w4_s4_k3_fused_k"  # the default tile, fused
    assert rows["ptr"]["speedup"] == 1.0 and rows["tma"]["pct_peak"] > 0
    table = markdown_variant_table(run.results)
    assert "| variant |" in table and "tma_w" in table and rows["tma"]["config"] in table


def test_variants_only_joins_the_saved_baseline(tmp_path, device):
    """`bench layers --variants-only FAMILIES` (device_run.sh's own process per risky family,
    after the baselines are saved): times just those families against the saved fastres
    record, which it does not time again; a second family's rows join the first's."""
    from fastres.benchmark.layers import _variant_point
    from fastres.kernels import use_config

    run = smoke_run(tmp_path, device)
    layer = next(l for l in conv_layers("resnet18", 32) if l.k == 3 and l.stride == 1 and not l.residual)
    args = ("resnet18", layer, 1, "float16", torch.float16)
    with use_config("conv", Config(64, 64, 64, 4, 4, SPLIT_K=3)):
        _variant_point(run, *args, 32, l2_bytes(run.device), 100.0)  # no baseline yet: nothing timed
        assert not run.results["records"]
        _layer_point(run, *args, ["fastres"], 32, l2_bytes(run.device), 100.0, None)
        (rec,) = run.results["records"]
        baseline = rec["median_ms"]
        assert "variants" not in rec
        run.variants, run.variants_only = ("fused_k",), True
        _variant_point(run, *args, 32, l2_bytes(run.device), 100.0)
        run.variants = ("tma",)
        _variant_point(run, *args, 32, l2_bytes(run.device), 100.0)
    (rec,) = run.results["records"]
    assert rec["median_ms"] == baseline
    rows = {v["variant"]: v for v in rec["variants"]}
    assert set(rows) == {"ptr", "fused_k", "tma"}, rows
    assert all(v["status"] == "ok" and v["median_ms"] > 0 for v in rows.values()), rows
    assert rows["fused_k"]["speedup"] == pytest.approx(baseline / rows["fused_k"]["median_ms"])


@pytest.mark.parametrize("tile", [
    Config(16, 32, 16, 4, 1, SPLIT_K=3),                     # split, summed by a reduce launch
    Config(16, 32, 16, 4, 1, SPLIT_K=3, variant="fused_k"),  # split, summed in the kernel
    Config(16, 32, 16, 4, 1, SPLIT_K=3, variant="tma"),      # a split TMA conv (fused)
], ids=lambda c: c.name)
def test_timed_call_launches_what_the_engines_step_launches(tile, tmp_path):
    """The timed fastres call of a layer point launches the same kernels with the same grids as
    the engine's step for that conv, and hands them only buffers made before the timing: no
    counters zeroed (a fill launch on a GPU) or workspace allocated inside the timed region."""
    import torchvision

    import fastres
    from fastres.benchmark.layer_calls import LayerScratch, layer_callable, layer_inputs
    from fastres.kernels.launch import recording
    from fastres.schedule import CONV

    layer = next(l for l in conv_layers("resnet18", 32) if l.k == 3 and l.stride == 1 and l.residual)
    sets = layer_inputs(layer, 1, torch.float32, torch.device("cpu"), 1, torch.Generator().manual_seed(0))
    scratch = LayerScratch(torch.device("cpu"))
    fn = layer_callable("fastres", layer, sets, config=tile, scratch=scratch)
    with recording() as timed:
        fn(0)
    known = {t.untyped_storage().data_ptr() for t in (sets[0].x, sets[0].w, sets[0].b, sets[0].r, sets[0].out,
                                                       scratch.counters, scratch.workspace) if t is not None}
    fresh = [(l.kernel, tuple(t.shape)) for l in timed for t in l.tensors if t.untyped_storage().data_ptr() not in known]
    assert not fresh, f"the timed call allocated buffers for its kernels: {fresh}"

    torch.manual_seed(0)
    engine = fastres.from_torchvision(torchvision.models.resnet18(num_classes=10).eval(), dtype=torch.float32)
    x = torch.randn(1, 3, 32, 32)
    arena = engine._arena(x)
    i, step = next((i, s) for i, s in enumerate(arena.schedule.steps)
                   if s.kernel == CONV and s.in_shape == (1, layer.cin, layer.h, layer.w) and s.residual is not None)
    arena.reschedule(arena.schedule.with_configs({i: tile}))
    with recording() as stepped:
        arena.launch(arena.schedule.steps[i], x, workspace=arena.workspace)
    assert [l.key for l in timed] == [l.key for l in stepped]
    assert len(timed) == (2 if tile.variant == "ptr" else 1)


@pytest.mark.parametrize("dtype_name, stem", [("int8", False), ("float8_e4m3fn", True)])
def test_eight_bit_layer_point_is_checked_in_codes(tmp_path, device, monkeypatch, dtype_name, stem):
    """In 8 bits the fastres system is the quantized conv launch (a residual conv in int8; the
    stem in e4m3, quantizing the float16 image as it loads it), checked in codes against the
    torch reference of its integer math before it is timed; cuDNN's rows are skipped, saying
    its float16 records stand beside them; a reference two codes off makes the point wrong."""
    from fastres.benchmark import layers
    from fastres.benchmark.names import DTYPES, LAYER_SYSTEMS
    from fastres.benchmark.quantized import unsupported

    dtype = DTYPES[dtype_name]
    if unsupported(device, dtype):
        pytest.skip(unsupported(device, dtype))
    layer = next(l for l in conv_layers("resnet18", 32) if (l.cin == 3) == stem and (stem or l.residual))
    args = ("resnet18", layer, 1, dtype_name, dtype, list(LAYER_SYSTEMS), 32, l2_bytes(device), None, None)
    run = smoke_run(tmp_path, device)
    _layer_point(run, *args)
    recs = {r["system"]: r for r in run.results["records"]}
    f = recs["fastres"]
    assert f["status"] == "ok" and f["median_ms"] > 0 and f["code_err"] <= 1, f
    if dtype == torch.int8 and device.type == "cpu":
        assert f["code_err"] == 0  # the interpreter's int8 is the integer math, bit for bit
    assert f["bytes"] < f["bytes_float16"]
    assert all(recs[s]["status"] == "skipped" and "float16 record" in recs[s]["reason"] for s in LAYER_SYSTEMS[1:])
    if stem:
        return
    real = layers.layer_reference

    def off_by_two(*a, **kw):
        ref = real(*a, **kw)
        ref.codes = (ref.codes.int() + 2).clamp(-128, 127).to(torch.int8)
        return ref

    monkeypatch.setattr(layers, "layer_reference", off_by_two)
    run = smoke_run(tmp_path / "wrong", device)
    _layer_point(run, *args[:5], ["fastres"], *args[6:])
    (rec,) = run.results["records"]
    assert rec["status"] == "wrong" and rec["median_ms"] is None and rec["code_err"] == 2, rec
