"""The classifier head alone, as the engine runs it: fastres' fused avgpool + fc against torch
eager, each checked before it is timed."""
from __future__ import annotations

import dataclasses
import zlib

import torch
import torch.nn.functional as F

from ..errors import first_line
from .environment import baseline_flags
from .geometry import head_geometry
from .numerics import LAYER_TOL, finite_or_none, rel_error
from .results import add_record, base_record, speedups, timed_record
from .run import Run
from .systems import system_flags
from .timing import measure, rotation_count

HEAD_SYSTEMS = ("fastres", "cudnn-eager")


def head_point(run: Run, model_name: str, batch: int, dtype_name: str, dtype: torch.dtype, size: int, l2: int) -> None:
    """The classifier head alone, as the engine runs it (logits in the activation dtype):
    fastres' avgpool_fc vs torch eager's adaptive_avg_pool2d + flatten + linear; where
    fastres' classifier GEMM is split, the same tile unsplit too."""
    from .. import kernels as K
    from ..kernels.head import fc_config, head_workspace_numel

    device = run.device
    c, h, w, classes = head_geometry(model_name, size)
    name = f"avgpool+fc {c}->{classes} @{h}x{w}"
    nbytes = (batch * c * h * w + classes * c + batch * classes) * dtype.itemsize
    n_sets, flush = rotation_count(nbytes, l2)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()) + batch)
    sets = []
    for _ in range(n_sets):
        x = torch.randn(batch, c, h, w, generator=gen, device=device).relu().to(dtype)
        wt = (torch.randn(classes, c, generator=gen, device=device) * c ** -0.5).to(dtype)
        b = torch.randn(classes, generator=gen, device=device) * 0.1
        sets.append((x.contiguous(memory_format=torch.channels_last), wt, b, b.to(dtype),
                     torch.empty(batch, classes, device=device, dtype=dtype)))
    x0, w0, b0 = sets[0][:3]
    rdt = torch.float64 if (device.type == "cpu" or dtype == torch.float32) else torch.float32
    with baseline_flags(benchmark=False):
        ref = F.linear(x0.to(rdt).mean((2, 3)), w0.to(rdt), b0.to(rdt))
    cfg = fc_config(batch, c, classes, dtype, device)
    # The pooled features, the split's partials and its counters, allocated here as the engine's
    # arena has them, not inside the timed calls.
    ws = torch.empty(max(head_workspace_numel(batch, c, classes, cfg),
                         head_workspace_numel(batch, c, classes, dataclasses.replace(cfg, SPLIT_K=1))),
                     device=device, dtype=torch.float32)
    cnt = torch.zeros(K.COUNTER_WORDS, device=device, dtype=torch.int32)
    fns = {
        "fastres": lambda i, cfg=cfg: K.avgpool_fc(sets[i][0], sets[i][1], sets[i][2], out=sets[i][4], config=cfg,
                                                   workspace=ws, counters=cnt),
        "cudnn-eager": lambda i: F.linear(torch.flatten(F.adaptive_avg_pool2d(sets[i][0], 1), 1), sets[i][1], sets[i][3]),
    }
    tol = LAYER_TOL[dtype_name]
    point = {}
    for system in HEAD_SYSTEMS:
        rec = base_record("head", model_name, batch, dtype_name, system, size)
        rec.update(layer=name, bytes=nbytes, rotation_sets=n_sets, l2_flush=flush, tol=tol)
        if system == "fastres":
            rec.update(config=cfg.name, split_k=cfg.SPLIT_K)
        add_record(run.results, rec)
        point[system] = rec
        tag = f"head  {model_name:9s} {dtype_name:8s} b{batch:<4d} {name:34s} {system:12s}"
        variants = [("", fns[system])]
        if system == "fastres" and cfg.SPLIT_K > 1:
            unsplit = dataclasses.replace(cfg, SPLIT_K=1)
            variants.append(("unsplit_", lambda i: K.avgpool_fc(sets[i][0], sets[i][1], sets[i][2], out=sets[i][4],
                                                                 config=unsplit, workspace=ws, counters=cnt)))
        try:
            for prefix, fn in variants:
                sets[0][4].fill_(float("nan"))
                with torch.inference_mode(), system_flags(system):
                    rel = rel_error(fn(0), ref)
                rec[prefix + "rel_err"] = finite_or_none(rel)
                if not rel <= tol:
                    rec.update({prefix + "status": "wrong", prefix + "reason": f"rel error {rel:.3e} > {tol:.1e}: not timed"})
                    run.log(f"{tag} {prefix}WRONG rel {rel:.2e} > {tol:.1e}")
                    break
                with torch.inference_mode(), system_flags(system):
                    stats = measure(fn, n_sets, device=device, options=run.timing,
                                    flush_bytes=2 * l2 if flush else 0, device_time=True)
                if prefix:
                    rec.update(unsplit_median_ms=stats["median_ms"], split_speedup=stats["median_ms"] / rec["median_ms"])
                    run.log(f"{tag} unsplit {stats['median_ms'] * 1e3:7.1f} us: split {cfg.SPLIT_K} ways is "
                            f"{rec['split_speedup']:.2f}x")
                else:
                    timed_record(rec, stats, batch)
                    run.log(f"{tag} {stats['median_ms'] * 1e3:10.1f} us  rel {rel:.1e}")
        except Exception as exc:
            rec.update(status="error", reason=first_line(exc))
            run.log(f"{tag} ERROR {rec['reason']}")
    speedups(point)
