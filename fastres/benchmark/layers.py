"""The per-layer part of a bench run: every distinct convolution of ResNet-50 and ResNet-18
(geometry, fused ReLU, fused residual), the fastres kernel against cuDNN doing the same fused
work in eager (``cudnn-eager``: ``F.conv2d`` + bias + add + ReLU, channels_last) and
``F.conv2d`` alone (``cudnn-conv``), in TFLOP/s and % of the matrix peak measured in the same
run; where fastres splits a conv's K loop, the same tile unsplit beside it; with ``--variants``
every other kernel variant the tuner could pick (fastres.benchmark.variants). The classifier head
of each model is measured after its convs (fastres.benchmark.head). In int8 and float8_e4m3fn
fastres' 8-bit conv launch alone is timed, beside the float16 records of the same point
(fastres.benchmark.quantized; no head)."""
from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import torch

from ..errors import first_line
from .environment import baseline_flags, l2_bytes
from .geometry import conv_layers, pick_representative
from .head import head_point
from .layer_calls import (LayerScratch, fastres_layer_config, layer_bytes, layer_callable, layer_error, layer_inputs,
                          layer_reference, poison)
from .names import DTYPES, EIGHT_BIT
from .numerics import LAYER_TOL, describe_error, error_field, finite_or_none
from .quantized import eight_bit_skip
from .results import add_record, base_record, record_key, speedups, timed_record
from .run import Run, budget_note, free_memory
from .systems import system_flags
from .timing import TimingOptions, measure, rotation_count
from .variants import compare_variants


def _matmul(name: str, n: int, device: torch.device):
    """fn(i) multiplying two random n x n matrices in dtype `name` as torch's fastest call does:
    torch.matmul (float), cuBLASLt's int8 GEMM into int32 (torch._int_mm), its e4m3 GEMM into
    float16 (torch._scaled_mm, the second operand column-major)."""
    dt = DTYPES[name]
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    if dt == torch.int8:
        return lambda i: torch._int_mm(a, b)
    if dt == torch.float8_e4m3fn:
        one = torch.ones((), device=device)
        return lambda i: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.float16)
    return lambda i: torch.matmul(a, b)


def measure_peaks(device: torch.device, dtypes: Sequence[str], *, smoke: bool, timing: TimingOptions) -> dict:
    """The matrix rate (an n^3 matmul of random data per dtype; 8-bit: tera-operations/s, None
    with a note in "unmeasured" where torch has no such GEMM here) and the copy bandwidth (a large device-to-device
    copy, bytes read + written) of this device, measured once per run."""
    n = 256 if smoke else 8192
    copy_bytes = 2**23 if smoke else 2**30
    peaks: dict = {"matmul_tflops": {}, "note": f"{n}^3 matmul, {copy_bytes >> 20} MiB copy" + (", smoke" if smoke else "")}
    with baseline_flags():
        for name in dtypes:
            try:
                stats = measure(_matmul(name, n, device), 1, device=device, options=timing)
            except RuntimeError as exc:  # e.g. no e4m3 GEMM below sm_89
                peaks["matmul_tflops"][name] = None
                peaks.setdefault("unmeasured", {})[name] = first_line(exc)
                continue
            peaks["matmul_tflops"][name] = 2 * n**3 / (stats["median_ms"] * 1e-3) / 1e12
        src = torch.randn(copy_bytes // 4, device=device)
        dst = torch.empty_like(src)
        stats = measure(lambda i: dst.copy_(src), 1, device=device, options=timing)
        peaks["copy_tb_s"] = 2 * copy_bytes / (stats["median_ms"] * 1e-3) / 1e12
        del src, dst
    free_memory(device)
    return peaks


def run_layers(run: Run, models: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], systems: Sequence[str],
               size: int, max_layers: int | None, eight_bit_layers: int | None = None) -> None:
    """Every distinct conv of each model: the fastres kernel vs cuDNN fused eager vs conv alone
    (8-bit dtypes: fastres alone, on at most `eight_bit_layers` of them if given)."""
    device, l2 = run.device, l2_bytes(run.device)
    peaks = run.results.get("peaks") or {}
    missing = [d for d in dtypes if d not in (peaks.get("matmul_tflops") or {})]
    if missing:  # (an 8-bit step after the float16 baselines adds its dtypes' peaks to theirs)
        run.log("measuring the matrix peak and copy bandwidth ...")
        new = measure_peaks(device, missing, smoke=run.smoke, timing=run.timing)
        new["matmul_tflops"] = {**(peaks.get("matmul_tflops") or {}), **new["matmul_tflops"]}
        peaks = {**peaks, **new}
        run.results["peaks"] = peaks
        parts = ", ".join(f"{d} {v:.3g}" if v else f"{d} -" for d, v in new["matmul_tflops"].items())
        run.log(f"peaks: matmul {parts} T(FL)OP/s; copy {peaks['copy_tb_s']:.3g} TB/s")
        run.save()
    for model_name in models:
        layers = conv_layers(model_name, size)
        if max_layers:
            layers = pick_representative(layers, max_layers)
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            peak = (peaks.get("matmul_tflops") or {}).get(dtype_name)
            eight = dtype_name in EIGHT_BIT
            chosen = layers
            if eight and eight_bit_layers is not None:  # those with a residual first: the whole epilogue
                chosen = sorted(layers, key=lambda l: not l.residual)[:eight_bit_layers]
            for batch in batches:
                for layer in chosen:
                    if run.budget.spent():
                        return budget_note(run, "variants" if run.variants_only else "layers",
                                           f"layers {model_name} {dtype_name} batch {batch}")
                    if run.variants_only:
                        _variant_point(run, model_name, layer, batch, dtype_name, dtype, size, l2, peak)
                    else:
                        _layer_point(run, model_name, layer, batch, dtype_name, dtype, systems, size, l2, peak,
                                     peaks.get("copy_tb_s"))
                    run.save()
                if run.variants_only or eight:  # (no 8-bit head: its classifier is float16)
                    continue
                if run.budget.spent():
                    return budget_note(run, "layers", f"head {model_name} {dtype_name} batch {batch}")
                head_point(run, model_name, batch, dtype_name, dtype, size, l2)
                run.save()


def _variant_point(run, model_name, layer, batch, dtype_name, dtype, size, l2, peak) -> None:
    """`--variants-only`: check and time `run.variants` for one layer point against the fastres
    record of the point that an earlier process saved (its default config's time); the rows
    join that record's variant table."""
    key = record_key({"kind": "layer", "model": model_name, "layer": layer.name, "size": size, "batch": batch,
                      "dtype": dtype_name, "system": "fastres"})
    rec = next((r for r in run.results["records"] if record_key(r) == key), None)
    tag = f"layer {model_name:9s} {dtype_name:8s} b{batch:<4d} {layer.name:34s} fastres     "
    if rec is None or rec.get("status") != "ok" or not rec.get("median_ms"):
        run.log(f"{tag} variants not timed: no timed fastres record of this point in {run.out_path.name} "
                f"(run the baselines first)")
        return
    device = run.device
    n_sets, flush = rotation_count(layer_bytes(layer, batch, dtype), l2)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(layer.name.encode()) + batch)
    try:
        sets = layer_inputs(layer, batch, dtype, device, n_sets, gen)
        ref = layer_reference(layer, sets[0], fused=True, device=device)
        compare_variants(run, rec, layer, sets, ref, n_sets, flush, l2, tag, peak, layer.flops(batch), batch,
                         LayerScratch(device))
    except Exception as exc:
        run.log(f"{tag} variants ERROR {first_line(exc)}")
    del sets
    if device.type == "cuda" and batch >= 32:
        free_memory(device)


def _layer_point(run, model_name, layer, batch, dtype_name, dtype, systems, size, l2, peak, copy_tb_s):
    device = run.device
    flops, nbytes = layer.flops(batch), layer_bytes(layer, batch, dtype)
    n_sets, flush = rotation_count(nbytes, l2)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(layer.name.encode()) + batch)
    try:
        sets = layer_inputs(layer, batch, dtype, device, n_sets, gen)
    except torch.cuda.OutOfMemoryError as exc:
        for system in systems:
            rec = base_record("layer", model_name, batch, dtype_name, system, size)
            rec.update(layer=layer.name, tflops=None, status="error", reason=first_line(exc))
            add_record(run.results, rec)
        free_memory(device)
        return
    refs = {}
    scratch = LayerScratch(device)
    floor_ms = None
    if peak and copy_tb_s:
        floor_ms = max(flops / (peak * 1e12), nbytes / (copy_tb_s * 1e12)) * 1e3
    point = {}
    for system in systems:
        rec = base_record("layer", model_name, batch, dtype_name, system, size)
        rec.update(layer=layer.name, tflops=None, uses=list(layer.uses), gflop=flops / 1e9, bytes=nbytes,
                   floor_ms=floor_ms, rotation_sets=n_sets, l2_flush=flush)
        add_record(run.results, rec)
        point[system] = rec
        tag = f"layer {model_name:9s} {dtype_name:8s} b{batch:<4d} {layer.name:34s} {system:12s}"
        if dtype_name in EIGHT_BIT:
            skip = eight_bit_skip(system, dtype, device)
            if skip:
                rec.update(status="skipped", reason=skip)
                run.log(f"{tag} skipped: {skip}")
                continue
            rec["bytes_float16"] = layer.bytes(batch, 2)  # what 8 bits save: the report's column
        try:
            fused = system != "cudnn-conv"
            if fused not in refs:
                refs[fused] = layer_reference(layer, sets[0], fused=fused, device=device)
            fn = layer_callable(system, layer, sets, scratch=scratch)
            poison(sets[0].out)  # unwritten elements must fail the check
            with torch.inference_mode(), system_flags(system):
                err = layer_error(fn(0), refs[fused])
            tol = LAYER_TOL[dtype_name]
            rec.update({error_field(dtype): finite_or_none(err), "tol": tol})
            if not err <= tol:
                rec.update(status="wrong", reason=f"{describe_error(dtype, err)} > {tol:g}: not timed")
                run.log(f"{tag} WRONG {describe_error(dtype, err)} > {tol:g}")
                continue
            with torch.inference_mode(), system_flags(system):
                stats = measure(fn, n_sets, device=device, options=run.timing, flush_bytes=2 * l2 if flush else 0,
                                device_time=True)
            timed_record(rec, stats, batch)
            rec["tflops"] = flops / (stats["median_ms"] * 1e-3) / 1e12
            if peak:
                rec["pct_peak"] = 100.0 * rec["tflops"] / peak
            if floor_ms:
                rec["pct_floor"] = 100.0 * floor_ms / stats["median_ms"]
            run.log(f"{tag} {stats['median_ms'] * 1e3:10.1f} us  {rec['tflops']:7.2f} T(FL)OP/s  "
                    f"{describe_error(dtype, err)}")
            if system == "fastres":
                _split_comparison(run, rec, layer, sets, refs[True], n_sets, flush, l2, tag, scratch)
                if run.variants:
                    compare_variants(run, rec, layer, sets, refs[True], n_sets, flush, l2, tag, peak, flops, batch,
                                     scratch)
        except Exception as exc:
            rec.update(status="error", reason=first_line(exc))
            run.log(f"{tag} ERROR {rec['reason']}")
            if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
                free_memory(device)
    speedups(point)
    del sets, refs, scratch
    if device.type == "cuda" and batch >= 32:
        free_memory(device)


def _split_comparison(run, rec, layer, sets, ref, n_sets, flush, l2, tag, scratch: LayerScratch) -> None:
    """Record fastres' config; where it splits the K loop, also check and time the same tile
    unsplit, side by side, so every run measures what split-K gains layer by layer."""
    cfg = fastres_layer_config(layer, sets[0])
    rec.update(config=cfg.name, split_k=cfg.SPLIT_K, variant=cfg.variant)
    if cfg.SPLIT_K <= 1:
        return
    fn = layer_callable("fastres", layer, sets, config=dataclasses.replace(cfg, SPLIT_K=1), scratch=scratch)
    poison(sets[0].out)
    with torch.inference_mode():
        err = layer_error(fn(0), ref)
    if not err <= rec["tol"]:
        what = describe_error(sets[0].w.dtype, err)
        rec["unsplit_status"] = f"wrong: {what} > {rec['tol']:g}"
        run.log(f"{tag} unsplit WRONG {what}")
        return
    with torch.inference_mode():
        stats = measure(fn, n_sets, device=run.device, options=run.timing, flush_bytes=2 * l2 if flush else 0,
                        device_time=True)
    rec.update(unsplit_median_ms=stats["median_ms"], split_speedup=stats["median_ms"] / rec["median_ms"])
    run.log(f"{tag} unsplit {stats['median_ms'] * 1e3:7.1f} us: split {cfg.SPLIT_K} ways is "
            f"{rec['split_speedup']:.2f}x")
