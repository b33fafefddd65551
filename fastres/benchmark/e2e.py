"""The end-to-end part of a bench run: whole networks (resnet18 ... resnet152, resnext50_32x4d,
224x224 unless ``--size``; the detection trunk in fastres.benchmark.trunk) per batch and dtype, for the systems of fastres.benchmark.systems, each one's logits
checked against the float32 model before it is timed; and the single checked forward (no CUDA
graphs) of ``fastres bench forward``. In int8 and float8_e4m3fn fastres is the quantized engine,
its logits checked against the reference of its integer math; the baselines are not run (their
float16 records stand beside it: fastres.benchmark.quantized)."""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch

from ..errors import first_line
from .environment import baseline_flags, l2_bytes
from .geometry import model_gflop
from .names import DTYPES, EIGHT_BIT, MAX_AUTOTUNE_SYSTEM, TRUNK_MODEL
from .numerics import e2e_tolerance, finite_or_none, rel_error
from .quantized import eight_bit_skip, logits_error
from .results import add_record, base_record, speedups, timed_record
from .run import Run, budget_note, free_memory
from .systems import build_model, e2e_system, first_checked_call, system_flags
from .timing import measure, rotation_count, sync

CUDA_ONLY_SYSTEMS = ("cudnn-eager-graph", "torch-compile", MAX_AUTOTUNE_SYSTEM)


def run_e2e(run: Run, models: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], systems: Sequence[str], size: int) -> None:
    """End-to-end latency of every system at every (model, dtype, batch)."""
    device, l2 = run.device, l2_bytes(run.device)
    for model_name in models:
        if run.budget.spent():
            return budget_note(run, "e2e", f"e2e {model_name}")
        if model_name == TRUNK_MODEL:  # its own sizes and batches, features instead of logits
            from .trunk import run_trunk

            for d in (d for d in dtypes if d in EIGHT_BIT):
                run.log(f"e2e  {model_name} {d}: not benchmarked in 8 bits (the trunk's check is against float32)")
            floats = [d for d in dtypes if d not in EIGHT_BIT]
            if floats:
                run_trunk(run, floats, systems, batches=(1,) if run.smoke else (1, 8))
            continue
        model32 = build_model(model_name, device, calib_size=min(size, 64))
        gflop = model_gflop(model_name, size)
        ref_model = copy.deepcopy(model32).double() if device.type == "cpu" else model32
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            eager = None if dtype_name in EIGHT_BIT else copy.deepcopy(model32).to(
                dtype=dtype, memory_format=torch.channels_last).eval()
            built: dict[str, object] = {}
            build_errors: dict[str, str] = {}
            for batch in batches:
                if run.budget.spent():
                    return budget_note(run, "e2e", f"e2e {model_name} {dtype_name} batch {batch}")
                _e2e_point(run, model_name, dtype_name, dtype, batch, size, systems, model32, ref_model, eager,
                           built, build_errors, l2, gflop)
                run.save()
            del eager, built
            free_memory(device)
        del model32, ref_model
        free_memory(device)


def _e2e_point(run, model_name, dtype_name, dtype, batch, size, systems, model32, ref_model, eager, built, build_errors, l2, gflop):
    device = run.device
    eight = dtype_name in EIGHT_BIT
    in_dtype = torch.float16 if eight else dtype  # a quantized engine takes the float16 images
    set_bytes = batch * 3 * size * size * in_dtype.itemsize
    n_sets, _ = rotation_count(set_bytes, l2, max_sets=16)
    gen = torch.Generator(device=device).manual_seed(1000 * batch + size)
    xs = [torch.randn(batch, 3, size, size, generator=gen, device=device).to(in_dtype)
          .contiguous(memory_format=torch.channels_last) for _ in range(n_sets)]
    ref = torch_rel = None
    try:
        with torch.inference_mode():
            if not eight:  # (8-bit: the engine's own integer math, once it is built)
                with baseline_flags(benchmark=False):
                    ref = ref_model(xs[0].to(next(ref_model.parameters()).dtype))
                with baseline_flags():
                    torch_rel = rel_error(eager(xs[0]), ref)
    except Exception as exc:  # e.g. out of memory at a big batch: record it, go on
        for system in systems:
            rec = base_record("e2e", model_name, batch, dtype_name, system, size)
            add_record(run.results, rec).update(status="error", reason=f"reference forward failed: {first_line(exc)}")
        run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} reference forward failed: {first_line(exc)}")
        del xs
        free_memory(device)
        return
    point: dict[str, dict] = {}
    for system in systems:
        rec = base_record("e2e", model_name, batch, dtype_name, system, size)
        rec.update(gflop_per_image=gflop, rotation_sets=n_sets)
        add_record(run.results, rec)
        point[system] = rec
        skip = eight_bit_skip(system, dtype, device) if eight else None
        if skip:
            rec.update(status="skipped", reason=skip)
            run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} skipped: {skip}")
            continue
        if device.type != "cuda" and system in CUDA_ONLY_SYSTEMS:
            rec.update(status="skipped", reason="needs CUDA" + (" (smoke runs on the CPU)" if run.smoke else ""))
            run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} skipped: {rec['reason']}")
            continue
        if system in build_errors:
            rec.update(status="error", reason=build_errors[system])
            continue
        try:
            fn, first_s = e2e_system(system, model32, eager, dtype, device, xs[0], built)
            error = (lambda out: logits_error(fn, xs[0], out)) if eight else (lambda out: rel_error(out, ref))
            first_s, rel = first_checked_call(system, fn, xs[0], device, first_s, error)
            tol = e2e_tolerance(dtype_name, torch_rel, system=system)
            rec.update(rel_err=finite_or_none(rel), tol=tol, first_call_s=round(first_s, 3))
            if eight:
                rec["quantize_s"] = built.get("quantize_s")
            if device.type == "cuda" and system == "fastres":
                rec["cuda_graph"] = True
            if not rel <= tol:
                rec.update(status="wrong", reason=f"logits rel error {rel:.3e} > {tol:.1e} vs the float32 reference: not timed")
                run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} WRONG rel {rel:.2e} > {tol:.1e}")
                continue
            with torch.inference_mode(), system_flags(system):
                stats = measure(lambda i: fn(xs[i]), n_sets, device=device, options=run.timing)
            timed_record(rec, stats, batch)
            rec["tflops"] = gflop * batch / (stats["median_ms"] * 1e-3) / 1e3
            run.log(
                f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} {stats['median_ms']:9.3f} ms "
                f"(p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f})  {rec['images_per_s']:10.1f} img/s  rel {rel:.1e}"
            )
        except Exception as exc:  # one broken system must not end the run
            reason = first_line(exc)
            rec.update(status="error", reason=reason)
            if system != "cudnn-eager-graph" and (isinstance(exc, (ImportError, AttributeError, TypeError))
                                                  or (eight and system not in built)):  # (calibrating again would fail again)
                build_errors[system] = reason
            run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} ERROR {reason}")
            if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
                free_memory(device)
    built.pop("cudnn-eager-graph", None)
    speedups(point)
    del xs
    free_memory(device)


def checked_forward(model_name: str, size: int, batch: int, dtype_name: str, device: torch.device,
                    log: Callable[[str], None] = print) -> bool:
    """One fastres forward without CUDA graphs, checked against torchvision (for running under
    compute-sanitizer)."""
    dtype = DTYPES[dtype_name]
    model32 = build_model(model_name, device, calib_size=min(size, 64))
    import fastres

    fast = fastres.from_torchvision(model32, dtype=dtype, cuda_graph=False)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7)).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = fast(x)
        sync(device)
        with baseline_flags(benchmark=False):
            ref_model = model32.double() if device.type == "cpu" else model32
            ref = ref_model(x.to(next(ref_model.parameters()).dtype))
            eager = copy.deepcopy(model32).to(dtype=dtype, memory_format=torch.channels_last)
            torch_rel = rel_error(eager(x), ref)
    rel = rel_error(out, ref)
    tol = e2e_tolerance(dtype_name, torch_rel, system="fastres")
    ok = rel <= tol
    log(f"forward {model_name} {size}x{size} batch {batch} {dtype_name}: rel {rel:.2e} (tol {tol:.1e}, torch's own {torch_rel:.2e}) "
        f"{'ok' if ok else 'WRONG'}")
    return ok
