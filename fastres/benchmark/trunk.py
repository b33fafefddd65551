"""The detection trunk in a bench run: the ResNet-50 of torchvision's FPN detectors
(`model.backbone.body`, an IntermediateLayerGetter returning layer1..layer4) at the size the
detection transform makes of a typical image (800x1216), batch 1 and 8, for the systems of
fastres.benchmark.systems; every system's four feature maps checked against the float32 trunk
before it is timed."""
from __future__ import annotations

import copy
import math

import torch

from ..errors import first_line
from .environment import baseline_flags, l2_bytes
from .names import DTYPES, TRUNK_MODEL
from .numerics import e2e_tolerance, finite_or_none
from .results import add_record, base_record, speedups, timed_record
from .run import Run, budget_note, free_memory
from .systems import build_model, e2e_system, first_checked_call, system_flags
from .timing import measure, rotation_count

TRUNK_SIZE = (800, 1216)
TRUNK_BATCHES = (1, 8)
SMOKE_TRUNK_SIZE = (64, 96)
RETURNS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
CUDA_ONLY_SYSTEMS = ("cudnn-eager-graph", "torch-compile", "torch-compile-max-autotune")


def build_trunk(device: torch.device, *, calib_size: int = 64) -> torch.nn.Module:
    """The detectors' trunk: a calibrated random resnet50 under torchvision's IntermediateLayerGetter."""
    from torchvision.models._utils import IntermediateLayerGetter

    return IntermediateLayerGetter(build_model("resnet50", device, calib_size=calib_size), RETURNS).eval()


def trunk_gflop(h: int, w: int) -> float:
    """Floating-point work of the trunk for one h x w image (2 x the multiply-adds of its convs)."""
    from ..device import DeviceInfo
    from ..schedule import build_schedule

    schedule = build_schedule("resnet50", (1, 3, h, w), torch.float16, DeviceInfo("plan", sms=1), returns=RETURNS)
    return sum(2 * m * n * k * taps for m, n, k, taps in (s.gemm for s in schedule.steps if s.gemm)) / 1e9


def features_rel_error(out: dict, ref: dict) -> float:
    """||out - ref||_2 / ||ref||_2 over the four feature maps together (float64)."""
    num = den = 0.0
    for name, r in ref.items():
        o = out[name].detach().to(torch.float64)
        r = r.detach().to(o.device, torch.float64)
        if tuple(o.shape) != tuple(r.shape):
            raise ValueError(f"feature {name}: shape {tuple(o.shape)} != reference {tuple(r.shape)}")
        if bool((~torch.isfinite(o) & torch.isfinite(r)).any()):
            return math.inf
        num += float((o - r).norm() ** 2)
        den += float(r.norm() ** 2)
    return math.sqrt(num / max(den, 1e-300))


def run_trunk(run: Run, dtypes, systems, *, size: tuple[int, int] | None = None, batches=TRUNK_BATCHES) -> None:
    """Latency of every system on the detection trunk, per dtype and batch."""
    device, l2 = run.device, l2_bytes(run.device)
    h, w = size or (SMOKE_TRUNK_SIZE if run.smoke else TRUNK_SIZE)
    trunk32 = build_trunk(device)
    ref_trunk = copy.deepcopy(trunk32).double() if device.type == "cpu" else trunk32
    gflop = trunk_gflop(h, w)
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        eager = copy.deepcopy(trunk32).to(dtype=dtype, memory_format=torch.channels_last).eval()
        built: dict[str, object] = {}
        for batch in batches:
            if run.budget.spent():
                return budget_note(run, "e2e", f"{TRUNK_MODEL} {dtype_name} batch {batch}")
            _point(run, dtype_name, dtype, batch, (h, w), systems, trunk32, ref_trunk, eager, built, l2, gflop)
            run.save()
        del eager, built
        free_memory(device)


def _point(run, dtype_name, dtype, batch, hw, systems, trunk32, ref_trunk, eager, built, l2, gflop):
    device = run.device
    h, w = hw
    n_sets, _ = rotation_count(batch * 3 * h * w * dtype.itemsize, l2, max_sets=8)
    gen = torch.Generator(device=device).manual_seed(7 * batch + h)
    xs = [torch.rand(batch, 3, h, w, generator=gen, device=device).to(dtype) for _ in range(n_sets)]
    point: dict[str, dict] = {}
    with torch.inference_mode(), baseline_flags(benchmark=False):
        ref = ref_trunk(xs[0].to(next(ref_trunk.parameters()).dtype))
    for system in systems:
        rec = base_record("e2e", TRUNK_MODEL, batch, dtype_name, system, h)
        rec.update(input=f"{h}x{w}", gflop_per_image=gflop, rotation_sets=n_sets)
        add_record(run.results, rec)
        point[system] = rec
        label = f"e2e  {TRUNK_MODEL} {h}x{w} {dtype_name:8s} b{batch:<3d} {system:26s}"
        if device.type != "cuda" and system in CUDA_ONLY_SYSTEMS:
            rec.update(status="skipped", reason="needs CUDA")
            continue
        try:
            fn, first_s = e2e_system(system, trunk32, eager, dtype, device, xs[0], built)
            first_s, rel = first_checked_call(system, fn, xs[0], device, first_s,
                                              lambda out: features_rel_error(out, ref))
            tol = e2e_tolerance(dtype_name, None, system=system)
            rec.update(rel_err=finite_or_none(rel), tol=tol, first_call_s=round(first_s, 3))
            if not rel <= tol:
                rec.update(status="wrong", reason=f"features rel error {rel:.3e} > {tol:.1e}: not timed")
                run.log(f"{label} WRONG rel {rel:.2e} > {tol:.1e}")
                continue
            with torch.inference_mode(), system_flags(system):
                stats = measure(lambda i: fn(xs[i]), n_sets, device=device, options=run.timing)
            timed_record(rec, stats, batch)
            rec["tflops"] = gflop * batch / (stats["median_ms"] * 1e-3) / 1e3
            run.log(f"{label} {stats['median_ms']:9.3f} ms  {rec['images_per_s']:8.1f} img/s  rel {rel:.1e}")
        except Exception as exc:  # one broken system must not end the run
            rec.update(status="error", reason=first_line(exc))
            run.log(f"{label} ERROR {first_line(exc)}")
            if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
                free_memory(device)
    speedups(point)
    del xs
    free_memory(device)
