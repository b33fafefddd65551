"""Mixed precision in a schedule: which launches compute in 8 bits, and which activations are
stored in 8 bits between them.

A quantized engine (`fastres.quantize`) computes a set of its convs in int8 or float8_e4m3fn
(`Quantized`); every other launch computes in the engine's float dtype. An activation is stored
in 8 bits when the launch that writes it is an 8-bit conv and every launch that reads it as its
input takes 8 bits (an 8-bit conv, the max pool, the head); otherwise it is stored in the float
dtype, and an 8-bit conv reading it quantizes it as it loads it (as the stem quantizes the
caller's image). A fused residual is read in either form. The max pool keeps its input's form
and scale (max commutes with a per-tensor quantization). A trunk's returned activations are
always float. Each 8-bit activation has one per-tensor scale, named by the layer that writes it
(`Precision.src_scale` ...): "input" for the caller's image, the stem's conv for the max pool's
output. The classifier ("fc") may compute in 8 bits too: the head then pools into float32
features as always and quantizes them as its GEMM loads them, with the range named "pool".
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)
# The largest magnitude of each 8-bit dtype, which a range's absolute max maps to.
QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
INPUT = "input"  # the scale name of the caller's image
POOLED = "pool"  # the scale name of the head's pooled features, which an 8-bit classifier quantizes
CLASSIFIER = "fc"  # the head's layer name: its classifier computes in 8 bits when it is in Quantized.layers
_EIGHT_BIT_CAPABLE = ("stem_conv", "conv_bn_relu", "conv1x1", "avgpool_fc")


@dataclasses.dataclass(frozen=True)
class Quantized:
    """What runs in 8 bits: `dtype` (int8 or float8_e4m3fn) and the convs (state_dict names,
    e.g. "layer1.0.conv2", "conv1") that compute in it, and "fc" where the classifier does (its
    input: the pooled features, quantized with the range POOLED). float_residuals: keep every
    activation read as a fused residual (each block's input) in the float dtype, whatever its
    readers (the alternative measured against 8-bit residuals: docs/quantize.md)."""

    dtype: torch.dtype
    layers: frozenset
    float_residuals: bool = False

    def __post_init__(self):
        if self.dtype not in QUANT_DTYPES:
            raise TypeError(f"a quantized dtype is torch.int8 or torch.float8_e4m3fn, got {self.dtype}")
        object.__setattr__(self, "layers", frozenset(self.layers))


@dataclasses.dataclass(frozen=True)
class Precision:
    """The dtypes of one launch. compute: its weights' and dot operands' dtype. src / dst /
    residual: how its input, output and fused residual are stored (src None: the caller's
    input; dst None: the logits, in the caller's dtype). *_scale: the names of their
    activation ranges (None where that tensor is not 8-bit and not quantized at load). The
    head with an 8-bit compute (its classifier) quantizes its pooled features with the range
    POOLED."""

    compute: torch.dtype
    src: torch.dtype | None
    dst: torch.dtype | None
    residual: torch.dtype | None = None
    src_scale: str | None = None
    dst_scale: str | None = None
    residual_scale: str | None = None

    @property
    def eight_bit(self) -> bool:
        return self.compute in QUANT_DTYPES


def short(dtype: torch.dtype | None) -> str:
    """A dtype's name for tables: int8, e4m3, f16, bf16, f32 (or "-")."""
    if dtype is None:
        return "-"
    return {torch.int8: "int8", torch.float8_e4m3fn: "e4m3", torch.float16: "f16", torch.bfloat16: "bf16",
            torch.float32: "f32", torch.uint8: "u8"}.get(dtype, str(dtype).removeprefix("torch."))


def plan_precision(launches: Sequence[tuple[str, str]], wiring: Sequence[tuple], returned: set[int], n_values: int,
                   float_dtype: torch.dtype, quantized: Quantized | None):
    """(value dtypes, value scale names, one Precision per launch) of a schedule's launches
    ((kernel, layer) each, in order), wired as `wiring` ((src, dst, residual) value indices);
    `returned`: the indices of a trunk's returned values. Without `quantized` everything is
    `float_dtype` and the precisions are None."""
    names = value_names(launches, wiring, n_values)
    if quantized is None:
        return [float_dtype] * n_values, names, [None] * len(launches)
    q = quantized.dtype
    writer = {dst: i for i, (_, dst, _) in enumerate(wiring) if dst is not None}
    residuals = {res for _, _, res in wiring if res is not None} if quantized.float_residuals else set()
    readers: list[list[int]] = [[] for _ in range(n_values)]
    for i, (src, _, _) in enumerate(wiring):
        if src is not None:
            readers[src].append(i)

    def eight_bit(i: int) -> bool:
        kernel, layer = launches[i]
        return kernel in _EIGHT_BIT_CAPABLE and layer in quantized.layers

    def takes_8bit(i: int) -> bool:
        kernel = launches[i][0]
        if kernel == "max_pool2d":  # it passes its input's form on: its output's readers decide
            out = wiring[i][1]
            return out not in returned and all(takes_8bit(j) for j in readers[out])
        return kernel == "avgpool_fc" or eight_bit(i)

    dtypes: list[torch.dtype] = [float_dtype] * n_values
    for v in range(n_values):  # values in order of their writers: a max pool's input comes first
        i = writer[v]
        if launches[i][0] == "max_pool2d":
            dtypes[v] = dtypes[wiring[i][0]]
        elif eight_bit(i) and v not in returned and v not in residuals and all(takes_8bit(j) for j in readers[v]):
            dtypes[v] = q
    precisions = []
    for i, (src, dst, res) in enumerate(wiring):
        kernel, layer = launches[i]
        compute = q if eight_bit(i) else float_dtype
        s = None if src is None else dtypes[src]
        d = None if dst is None else dtypes[dst]
        r = None if res is None else dtypes[res]
        if kernel == "max_pool2d":
            compute = s
        # The head's input has a scale only when 8-bit: its classifier quantizes the pooled
        # features (POOLED), not its input.
        eight = s in QUANT_DTYPES or (compute in QUANT_DTYPES and kernel != "avgpool_fc")
        src_scale = (INPUT if src is None else names[src]) if eight else None
        precisions.append(Precision(compute, s, d, r, src_scale, names[dst] if d in QUANT_DTYPES else None,
                                    names[res] if r in QUANT_DTYPES else None))
    return dtypes, names, precisions


def value_names(launches: Sequence[tuple[str, str]], wiring: Sequence[tuple], n_values: int) -> list[str]:
    """The scale name of each activation: the layer that writes it; for the max pool's output,
    its input's (the max pool keeps its input's scale)."""
    names: list[str] = [""] * n_values
    for (kernel, layer), (src, dst, _) in zip(launches, wiring):
        if dst is not None:
            names[dst] = names[src] if kernel == "max_pool2d" else layer
    return names


class Ranges:
    """The activation ranges of a quantized engine, by scale name, and the scales they give:
    an 8-bit value q stands for q * scale(name), and quantizing multiplies by inv(name)
    (float32 both, as the kernels take them). Computed in float64, rounded once."""

    def __init__(self, dtype: torch.dtype, amax: "dict[str, float]"):
        if dtype not in QUANT_DTYPES:
            raise TypeError(f"a quantized dtype is torch.int8 or torch.float8_e4m3fn, got {dtype}")
        bad = {k: v for k, v in amax.items() if not (isinstance(v, (int, float)) and 0 < float(v) < float("inf"))}
        if bad:
            raise ValueError(f"activation ranges must be positive and finite, got {bad}")
        self.dtype = dtype
        self.amax = {k: float(v) for k, v in amax.items()}

    def _amax(self, name: str) -> float:
        try:
            return self.amax[name]
        except KeyError:
            raise KeyError(f"no activation range for {name!r} (calibrated: {', '.join(sorted(self.amax))})") from None

    def scale(self, name: str) -> float:
        return _f32(self._amax(name) / QMAX[self.dtype])

    def inv(self, name: str) -> float:
        return _f32(QMAX[self.dtype] / self._amax(name))

    def dequant(self, name: str, weight_scale: torch.Tensor) -> torch.Tensor:
        """A conv's accumulator multipliers [Cout] float32: its input's scale times each output
        channel's weight scale."""
        return ((self._amax(name) / QMAX[self.dtype]) * weight_scale.double()).float()


def _f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float64).float())
