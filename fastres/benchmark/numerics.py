"""Checking a system before it is timed: the relative error against a reference and the
tolerances of DESIGN.md section 4.

Every system is first checked against a reference (the float32 model or op with TF32 off on the
GPU, float64 on the CPU); a wrong system is recorded as ``wrong`` with its error and is not timed.
"""
from __future__ import annotations

import math

import torch

# Whole-network tolerances on the logits (DESIGN.md section 4): (base, cap). A system passes at
# rel <= min(cap, max(base, 2 x torch's own error at that dtype)); torch's eager itself at <= cap.
E2E_TOL = {"float32": (1e-4, 1e-4), "float16": (5e-3, 2e-2), "bfloat16": (2e-2, 5e-2)}
# Per-kernel tolerances (DESIGN.md section 4), used for every system of the per-layer bench.
LAYER_TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_2 / ||ref||_2 in float64; inf when out is non-finite where ref is finite."""
    # float64 on the tensors' device: moving a 200M-element layer output to the host costs seconds
    o = out.detach().to(torch.float64)
    r = ref.detach().to(o.device, torch.float64)
    if tuple(o.shape) != tuple(r.shape):
        raise ValueError(f"output shape {tuple(o.shape)} != reference shape {tuple(r.shape)}")
    if bool((~torch.isfinite(o) & torch.isfinite(r)).any()):
        return math.inf
    return ((o - r).norm() / r.norm().clamp_min(1e-300)).item()


def e2e_tolerance(dtype: str, torch_rel: float | None, *, system: str) -> float:
    """The logits tolerance of DESIGN.md section 4 for `system` at `dtype`."""
    base, cap = E2E_TOL[dtype]
    if system == "cudnn-eager" or torch_rel is None or not math.isfinite(torch_rel):
        return cap if system == "cudnn-eager" else base
    return min(cap, max(base, 2.0 * torch_rel))


def finite_or_none(v: object) -> float | None:
    """`v` where it is a finite number (JSON has no inf or NaN), else None."""
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
