"""Checking a system before it is timed: the relative error against a reference and the
tolerances of DESIGN.md section 4.

Every system is first checked against a reference (the float32 model or op with TF32 off on the
GPU, float64 on the CPU); a wrong system is recorded as ``wrong`` with its error and is not timed.
An 8-bit system is checked against the torch reference of its own integer math
(fastres.quant.reference): a conv's output in codes (``code_distance``), logits relatively.
"""
from __future__ import annotations

import math

import torch

from ..precision import QUANT_DTYPES

# Whole-network tolerances on the logits (DESIGN.md section 4): (base, cap). A system passes at
# rel <= min(cap, max(base, 2 x torch's own error at that dtype)); torch's eager itself at <= cap.
# 8-bit: the quantized engine's logits against the torch reference of its integer math (not the
# float model: that difference is quantization, which random weights say nothing about); equal
# for int8 in the interpreter; on a GPU a contracted multiply-add in an epilogue can move a
# code by one (docs/quantize.md), and e4m3's float32 sums differ in order. A guess until a GPU
# run measures it.
E2E_TOL = {"float32": (1e-4, 1e-4), "float16": (5e-3, 2e-2), "bfloat16": (2e-2, 5e-2), "int8": (1e-2, 1e-2),
           "float8_e4m3fn": (1e-2, 1e-2)}
# Per-kernel tolerances (DESIGN.md section 4), used for every system of the per-layer bench;
# 8-bit: the most codes any output value may be from the reference's (`code_distance`), for
# the same reasons as above.
LAYER_TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2, "int8": 1, "float8_e4m3fn": 1}


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


def code_distance(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The most codes (steps of the 8-bit grid) any value of `out` is from `ref`, both int8 or
    both float8_e4m3fn of one shape; inf where one is NaN and the other not. e4m3 codes are
    counted along the grid: its bits are sign and magnitude, so the magnitude bits order the
    values of one sign."""
    if out.dtype != ref.dtype or tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"output {out.dtype} {tuple(out.shape)} != reference {ref.dtype} {tuple(ref.shape)}")
    ref = ref.to(out.device)
    if out.dtype == torch.int8:
        return float((out.int() - ref.int()).abs().max()) if out.numel() else 0.0
    if out.dtype != torch.float8_e4m3fn:
        raise TypeError(f"code_distance compares int8 or float8_e4m3fn, got {out.dtype}")
    o, r = out.view(torch.uint8).int(), ref.view(torch.uint8).int()
    nan_o, nan_r = (o & 0x7F) == 0x7F, (r & 0x7F) == 0x7F
    if bool((nan_o != nan_r).any()):
        return math.inf
    def ordinal(bits):
        return torch.where(bits >= 0x80, -(bits & 0x7F), bits)
    d = torch.where(nan_o, 0, (ordinal(o) - ordinal(r)).abs())
    return float(d.max()) if d.numel() else 0.0


def error_field(dtype: torch.dtype) -> str:
    """The record field of a per-layer check's error: "code_err" (8-bit: `code_distance`), else
    "rel_err" (`rel_error`)."""
    return "code_err" if dtype in QUANT_DTYPES else "rel_err"


def describe_error(dtype: torch.dtype, err: float) -> str:
    """A check's error for the log: "rel 1.2e-04" or "1 code(s)"."""
    return f"{err:g} code(s)" if error_field(dtype) == "code_err" else f"rel {err:.2e}"


def e2e_tolerance(dtype: str, torch_rel: float | None, *, system: str) -> float:
    """The logits tolerance of DESIGN.md section 4 for `system` at `dtype`."""
    base, cap = E2E_TOL[dtype]
    if system == "cudnn-eager" or torch_rel is None or not math.isfinite(torch_rel):
        return cap if system == "cudnn-eager" else base
    return min(cap, max(base, 2.0 * torch_rel))


def finite_or_none(v: object) -> float | None:
    """`v` where it is a finite number (JSON has no inf or NaN), else None."""
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
