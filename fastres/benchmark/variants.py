"""The kernel variants of one conv side by side (``fastres bench layers --variants``).

For each layer the launcher's own config (pointer loads; its split as the heuristic makes it)
is timed beside one config of every other variant family the tuner could pick for that
layer on this device (``kernels.config.tuning_candidates``): ``fused_k`` (the same split tile,
summed in the kernel), ``tma``, ``tma_w``, ``tma_ws`` (Hopper's TMA kernels), ``tma_b``,
``tma_b_ws``, ``tma_b_p`` (the bordered 3x3s, on a zero-bordered copy of the input made before timing). Each family's
config is the candidate nearest the launcher's tile (the same tile if the family has it; the
same split or not), so the comparison is of the variant, not of a different tile. Every
variant's output is checked against the layer's reference before it is timed; the results
go into the fastres record as ``variants``: [{variant, config, median_ms, tflops, pct_peak,
speedup (launcher's time / this one), rel_err (8-bit: code_err), status}].
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch

from ..errors import first_line
from .layer_calls import fastres_layer_config, layer_callable, layer_error, poison
from .numerics import describe_error, error_field, finite_or_none
from .timing import measure

if TYPE_CHECKING:
    from ..kernels import Config
    from .geometry import ConvLayer

FAMILIES = ("fused_k", "tma", "tma_w", "tma_ws", "tma_b", "tma_b_ws", "tma_b_p")


def variant_configs(layer: ConvLayer, default: Config, dtype: torch.dtype, batch: int,
                    device: torch.device | None, *, residual: bool,
                    families: tuple[str, ...] = FAMILIES) -> dict[str, Config]:
    """family -> the config of that family nearest `default` among the tuner's candidates for
    `layer` at `batch` (families with no candidate for this layer are absent)."""
    from ..kernels.config import FUSED_MAX_BLOCK_M, bordered_rows, tuning_candidates
    from ..kernels.conv import reduction

    m = batch * layer.oh * layer.ow
    if layer.k == 1:
        kernel, k, taps = "conv1x1", layer.cin, 1
    else:
        flat, k, kernel = reduction(layer.cin, layer.k, layer.k)
        taps = 1 if flat else layer.k * layer.k
    bordered = None
    if kernel == "conv" and layer.stride == 1:  # the bordered convs' grid: rows of the bordered map
        bordered = bordered_rows(batch, layer.h + 2 * layer.pad, layer.w + 2 * layer.pad, layer.oh, layer.ow)
    cands = tuning_candidates(kernel, dtype, M=m, N=layer.cout, K=k, taps=taps, residual=residual, device=device,
                              stride=layer.stride, segments=(batch * layer.oh, layer.ow), bordered=bordered)
    split = default.SPLIT_K > 1

    def distance(c: Config) -> tuple:
        area = math.log2(c.BLOCK_M * c.BLOCK_N) - math.log2(default.BLOCK_M * default.BLOCK_N)
        return ((c.SPLIT_K > 1) != split, abs(area), c.BLOCK_M != default.BLOCK_M, abs(c.BLOCK_K - default.BLOCK_K),
                c.name)

    out: dict[str, Config] = {}
    for fam in families:
        mine = [c for c in cands if c.variant == fam]
        if fam == "fused_k" and not split:
            continue  # an unsplit fused_k tile is the pointer kernel itself
        if not mine:
            continue
        if fam == "fused_k" and default.variant == "ptr" and default.BLOCK_M <= FUSED_MAX_BLOCK_M:
            out[fam] = dataclasses.replace(default, variant="fused_k")  # exactly the default's split, fused
        else:
            out[fam] = min(mine, key=distance)
    return out


def compare_variants(run, rec: dict, layer: ConvLayer, sets, ref: torch.Tensor, n_sets: int, flush: bool, l2: int,
                     tag: str, peak: float | None, flops: float, batch: int, scratch=None) -> None:
    """Check and time every other variant family of `layer` beside fastres' own config (in
    `rec`, already timed); results into rec["variants"]."""
    default = fastres_layer_config(layer, sets[0])
    dtype = sets[0].w.dtype
    field = error_field(dtype)
    configs = variant_configs(layer, default, dtype, batch, run.device, residual=sets[0].r is not None,
                              families=tuple(run.variants) or FAMILIES)
    # rows of other families timed by an earlier process (--variants-only) are kept
    rows = [r for r in rec.get("variants") or () if r.get("variant") not in configs and r.get("variant") != default.variant]
    rows.insert(0, {"variant": default.variant, "config": default.name, "median_ms": rec.get("median_ms"),
                    "tflops": rec.get("tflops"), "pct_peak": rec.get("pct_peak"), "speedup": 1.0,
                    field: rec.get(field), "status": "ok"})
    rec["variants"] = rows
    for fam, cfg in configs.items():
        row = {"variant": fam, "config": cfg.name, "median_ms": None, "tflops": None, "pct_peak": None,
               "speedup": None, field: None, "status": "ok"}
        rows.append(row)
        try:
            fn = layer_callable("fastres", layer, sets, config=cfg, scratch=scratch)
            poison(sets[0].out)
            with torch.inference_mode():
                err = layer_error(fn(0), ref)
            row[field] = finite_or_none(err)
            if not err <= rec["tol"]:
                row["status"] = f"wrong: {describe_error(dtype, err)} > {rec['tol']:g}"
                run.log(f"{tag} {fam:8s} {cfg.name:28s} WRONG {describe_error(dtype, err)}")
                continue
            with torch.inference_mode():
                stats = measure(fn, n_sets, device=run.device, options=run.timing,
                                flush_bytes=2 * l2 if flush else 0, device_time=True)
        except Exception as exc:
            row["status"] = "error: " + first_line(exc)
            run.log(f"{tag} {fam:8s} {cfg.name:28s} ERROR {row['status']}")
            continue
        ms = stats["median_ms"]
        row.update(median_ms=ms, tflops=flops / (ms * 1e-3) / 1e12)
        if peak:
            row["pct_peak"] = 100.0 * row["tflops"] / peak
        if rec.get("median_ms"):
            row["speedup"] = rec["median_ms"] / ms
        run.log(f"{tag} {fam:8s} {cfg.name:28s} {ms * 1e3:8.1f} us  {row['tflops']:7.2f} TFLOP/s"
                + (f"  {row['speedup']:.2f}x the default" if row["speedup"] else ""))
