"""A schedule run by torch, step by step: the float forward calibration observes, and the
reference of a quantized engine's integer math.

`run_schedule` walks a `Schedule`'s launches over its activations (not its slots) with torch
ops on the CPU (or any device). Each activation is held as the values its slot would hold:
for an 8-bit activation its codes (integers for int8, e4m3 grid values for float8_e4m3fn) as
float32, for a float one its values rounded to the slot's dtype. An 8-bit conv sums its codes
exactly (float64 holds every int8 sum a ResNet makes) and runs the kernels' float32 epilogue op
for op (fastres.precision; DESIGN.md section 4): the quantized kernels equal it bit for bit in
the interpreter wherever their sums are exact (int8). Torch runs every op here, so calibration
needs no GPU and no interpreter.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..precision import INPUT, POOLED, QMAX, QUANT_DTYPES, Precision, Ranges, value_names
from ..schedule import HEAD, MAXPOOL, Schedule, Step

Record = Callable[[str, torch.Tensor], None]


def quantize_codes(v: torch.Tensor, inv: float, dtype: torch.dtype) -> torch.Tensor:
    """The 8-bit codes of float32 `v` (as float32): one float32 multiply by `inv`, then round
    half to even and clamp (int8), or the saturating cast to e4m3 (float8_e4m3fn)."""
    v = v.float() * inv
    if dtype == torch.int8:
        return torch.round(v).clamp_(-128, 127)
    return v.clamp(-QMAX[dtype], QMAX[dtype]).to(torch.float8_e4m3fn).float()


def conv_step(step: Step, pr: Precision | None, a: torch.Tensor, r: torch.Tensor | None,
              params: Mapping[str, torch.Tensor], ranges: Ranges | None, float_dtype: torch.dtype,
              exact: bool = True) -> torch.Tensor:
    """One conv launch (stem, 3x3, 1x1, strided, grouped, dilated, with its fused residual) on
    held values `a` (input) and `r` (residual); returns the held values of its output. exact:
    an 8-bit conv sums in float64 (exact), else in float32 (what a report's estimate needs)."""
    spec = step.spec
    w = params[f"{spec.name}.weight"]
    b = params[f"{spec.name}.bias"].float()
    kw = dict(stride=spec.stride, padding=spec.pad, dilation=spec.dilation, groups=spec.groups)
    if spec.avg_pool:
        a = F.avg_pool2d(a, 2, 2, ceil_mode=True, count_include_pad=False).to(float_dtype).float()
    if pr is not None and pr.eight_bit:
        if pr.src not in QUANT_DTYPES:
            a = quantize_codes(a, ranges.inv(pr.src_scale), pr.compute)
        acc_dtype = torch.float64 if exact else torch.float32
        acc = F.conv2d(a.to(acc_dtype), w.to(acc_dtype), **kw)
        acc = acc.to(torch.int32).float() if pr.compute == torch.int8 and exact else acc.float()
        scale = ranges.dequant(pr.src_scale, params[f"{spec.name}.weight_scale"].cpu()).to(acc.device)
        y = acc * scale[None, :, None, None] + b[None, :, None, None]
    else:
        wdtype = w.dtype if pr is None else pr.compute
        y = F.conv2d(a.to(wdtype).float(), w.float(), **kw) + b[None, :, None, None]
    if r is not None:
        if pr is not None and pr.residual in QUANT_DTYPES:
            r = r * ranges.scale(pr.residual_scale)
        y = y + r
    if spec.relu:
        y = torch.where(y < 0, 0.0, y)
    if pr is not None and pr.dst in QUANT_DTYPES:
        return quantize_codes(y, ranges.inv(pr.dst_scale), pr.dst)
    out = float_dtype if pr is None else pr.dst
    return y.to(out).float()


def pooled_features(pr: Precision | None, a: torch.Tensor, ranges: Ranges | None) -> torch.Tensor:
    """The head's global average pool of held values `a` into float32 features [N, C]."""
    if pr is not None and pr.src in QUANT_DTYPES:
        # As kernels.head: the codes' float32 sum times one float32 factor, scale / (H*W).
        factor = torch.tensor(ranges.scale(pr.src_scale) / (a.shape[2] * a.shape[3]), dtype=torch.float64).float()
        return a.float().sum(dim=(2, 3)) * factor
    return a.float().mean(dim=(2, 3))


def classifier_step(pr: Precision | None, feats: torch.Tensor, params: Mapping[str, torch.Tensor],
                    ranges: Ranges | None) -> torch.Tensor:
    """The logits (float32) of float32 features [N, C]: the classifier in its weights' float
    dtype, or in 8 bits (pr.compute) as kernels.head runs it: the features quantized with the
    range POOLED, the codes summed exactly (float64; then int32 for int8), float32(acc) *
    (s_features * s_w[class]) + b in float32."""
    w, b = params["fc.weight"], params["fc.bias"].float()
    if pr is None or not pr.eight_bit:
        return feats.to(w.dtype).float() @ w.float().t() + b
    q = quantize_codes(feats, ranges.inv(POOLED), pr.compute)
    acc = q.double() @ w.double().t()
    acc = acc.to(torch.int32).float() if pr.compute == torch.int8 else acc.float()
    return acc * ranges.dequant(POOLED, params["fc.weight_scale"].cpu()).to(acc.device) + b


def head_step(pr: Precision | None, a: torch.Tensor, params: Mapping[str, torch.Tensor],
              ranges: Ranges | None, record: Record | None = None) -> torch.Tensor:
    """Global average pool into float32 features (passed to `record` as "pool"), then the
    classifier (`classifier_step`)."""
    feats = pooled_features(pr, a, ranges)
    if record is not None:
        record(POOLED, feats)
    return classifier_step(pr, feats, params, ranges)


def run_schedule(schedule: Schedule, params: Mapping[str, torch.Tensor], x: torch.Tensor, *,
                 ranges: Ranges | None = None, record: Record | None = None,
                 on_conv: Callable[[Step, torch.Tensor, torch.Tensor | None, torch.Tensor], None] | None = None):
    """The logits (float32) of x [N, 3, H, W] float, or a trunk's {name: features} (float32),
    as `schedule` computes them with `params` (the engine's: folded, 8-bit where quantized).
    record(name, values) is called with the caller's input ("input"), every activation in
    float (8-bit ones dequantized), under its scale name (fastres.precision.value_names), and
    the head's pooled features ("pool");
    on_conv(step, input, residual, output) with each conv's held values."""
    if schedule.wiring == () or schedule.values == ():
        raise ValueError("run_schedule needs a schedule from build_schedule (its activations' wiring)")
    launches = [(s.kernel, s.layer) for s in schedule.steps]
    names = value_names(launches, schedule.wiring, len(schedule.values))
    float_dtype = schedule.dtype
    held: dict[int, torch.Tensor] = {}
    x = x.float()
    if record is not None:
        record(INPUT, x)
    logits = None
    for step, (src, dst, res) in zip(schedule.steps, schedule.wiring):
        pr = step.precision
        a = x if src is None else held[src]
        if step.kernel == MAXPOOL:
            y = F.max_pool2d(a, 3, 2, 1)
        elif step.kernel == HEAD:
            logits = head_step(pr, a, params, ranges, record)
            continue
        else:
            r = None if res is None else held[res]
            y = conv_step(step, pr, a, r, params, ranges, float_dtype)
            if on_conv is not None:
                on_conv(step, a, r, y)
        held[dst] = y
        if record is not None:
            record(names[dst], y * ranges.scale(names[dst]) if schedule.values[dst][3] in QUANT_DTYPES else y)
    if schedule.num_classes is not None:
        return logits
    # A trunk's returned activations are float in every schedule (fastres.precision).
    return {o.name: held[schedule.wiring[o.step][1]] for o in schedule.outputs}
