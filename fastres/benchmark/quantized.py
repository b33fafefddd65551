"""The 8-bit dtypes of a bench run: int8 and float8_e4m3fn (docs/quantize.md).

Per layer, the fastres system is the quantized engine's conv launch on the layer's geometry,
as `fastres.quantize` lays out a network whose every conv is 8-bit: 8-bit input (the stem reads
the float16 image and quantizes it as it loads it), per-output-channel 8-bit weights, an 8-bit
residual with its scale, an 8-bit output, each activation with a random range (so the scales
are random). It is checked before it is timed against the torch reference of the same integer
math (`fastres.quant.reference.conv_step`), in codes, on the batch's first and last image (the
float64 reference of a whole batch of 256 would cost more than the layer's timing).

End to end, it is the engine `fastres.quantize` makes of the model (random weights) calibrated
on a few random batches: the ranges mean nothing for accuracy, but the launches and kernels are
those of any quantized ResNet, and their time is what is measured. Its logits are checked
against the reference of its integer math (`fastres.quant.reference.run_schedule`) on the
batch's first and last image.

cuDNN has no int8 or e4m3 convolution that torch reaches on these GPUs: an 8-bit point's
baselines are not run (`BASELINE_NOTE`); the report sets the 8-bit fastres beside the float16
records of the same point, fastres' and cuDNN's. float8_e4m3fn needs e4m3 tensor cores (sm_89
or newer): elsewhere its points are skipped with the device's reason.
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import TYPE_CHECKING

import torch

from ..errors import first_line

if TYPE_CHECKING:
    from ..precision import Ranges
    from .geometry import ConvLayer

BASELINE_NOTE = ("cuDNN runs no int8 or float8_e4m3fn convolution through torch: its float16 record of the same "
                 "point stands beside this one")
# fastres.quantize's calibration in a bench: this many random batches of this many images, by
# the quickest method (the ranges of random images through random weights mean nothing anyway).
CALIBRATION_BATCHES, CALIBRATION_IMAGES = 2, 4


def unsupported(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `device` cannot run the 8-bit `dtype` (fastres.device.DeviceInfo.check_dtype's
    message: e4m3 below sm_89, on AMD), or None where it can."""
    from ..device import DeviceInfo

    try:
        DeviceInfo.of(device).check_dtype(dtype)
    except (TypeError, ValueError) as exc:
        return first_line(exc)
    return None


def eight_bit_skip(system: str, dtype: torch.dtype, device: torch.device) -> str | None:
    """Why `system` is not run at an 8-bit point (a baseline: cuDNN has no 8-bit conv; fastres:
    where the device cannot run `dtype`), or None."""
    return BASELINE_NOTE if system != "fastres" else unsupported(device, dtype)


def stem_reads_float(layer: ConvLayer) -> bool:
    """The stem (the flat-K conv over the image's few channels) reads the float16 image in an
    8-bit engine, quantizing it as it loads it."""
    return layer.cin < 16


@dataclasses.dataclass
class QuantOperands:
    """An 8-bit conv's scales as the engine's arena passes them: the activation ranges ("x" the
    input, "r" the residual, "y" the output), the weights' per-output-channel scales [Cout]
    float32, and what the kernel takes (scale = s_x * s_w[co], the inverse scales)."""

    ranges: Ranges
    weight_scale: torch.Tensor
    scale: torch.Tensor
    in_inv: float | None
    residual_scale: float | None
    out_inv: float

    def kwargs(self) -> dict:
        return dict(scale=self.scale, in_inv=self.in_inv, residual_scale=self.residual_scale, out_inv=self.out_inv)



@dataclasses.dataclass
class LayerInputs:
    """One input set of a conv: activation, weights, float32 bias (and cast to the dtype), residual,
    output; an 8-bit conv's scales (`quant`, None for a float one)."""

    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    b_cast: torch.Tensor
    r: torch.Tensor | None
    out: torch.Tensor
    quant: QuantOperands | None = None

    @property
    def quant_kwargs(self) -> dict:
        """The launchers' scale, in_inv, residual_scale and out_inv (none for a float conv)."""
        return self.quant.kwargs() if self.quant is not None else {}

def quantized_layer_inputs(layer: ConvLayer, batch: int, dtype: torch.dtype, device: torch.device, n: int,
                           gen: torch.Generator) -> list[LayerInputs]:
    """`n` input sets of `layer` in the 8-bit `dtype`, channels_last: input codes (the stem's
    input float16), He-scaled weights quantized per output channel as fastres.quantize does,
    float32 bias, residual codes (if the layer has one), an output buffer of codes, and each
    set's own random activation ranges (so its own scales)."""
    from ..precision import Ranges
    from ..quant.quantize import _quantized_weight
    from ..quant.reference import quantize_codes

    cl = torch.channels_last

    def randn(*shape):  # drawn on the device: host RNG for a batch-256 activation takes seconds
        return torch.randn(*shape, generator=gen, device=device)

    def codes(v: torch.Tensor, inv: float) -> torch.Tensor:  # exact: the values lie on dtype's grid
        return quantize_codes(v, inv, dtype).to(dtype).contiguous(memory_format=cl)

    fan_in = layer.cin * layer.k * layer.k
    wq = _quantized_weight("w", randn(layer.cout, layer.cin, layer.k, layer.k) * math.sqrt(2.0 / fan_in), dtype)
    sets = []
    for i in range(n):
        # One quantized draw of the weights, rolled along the output channels per set: buffers of
        # their own for the rotation, without quantizing n draws (seconds on a CPU).
        w = wq["w.weight"].roll(i, 0).contiguous(memory_format=cl)
        w_scale = wq["w.weight_scale"].roll(i, 0)
        lo_hi = torch.rand(3, generator=gen, device=device).tolist()
        # Ranges around 4 standard deviations of the unit-variance activations drawn here.
        ranges = Ranges(dtype, {"x": 3.0 + 2.0 * lo_hi[0], "r": 2.0 + 2.0 * lo_hi[1], "y": 3.0 + 3.0 * lo_hi[2]})
        xf = randn(batch, layer.cin, layer.h, layer.w)
        x = xf.to(torch.float16).contiguous(memory_format=cl) if stem_reads_float(layer) else codes(xf, ranges.inv("x"))
        b = randn(layer.cout) * 0.2
        r = codes(randn(batch, layer.cout, layer.oh, layer.ow), ranges.inv("r")) if layer.residual else None
        out = torch.empty(batch, layer.cout, layer.oh, layer.ow, device=device, dtype=dtype, memory_format=cl)
        quant = QuantOperands(ranges, w_scale, ranges.dequant("x", w_scale), ranges.inv("x") if x.dtype != dtype else None,
                              ranges.scale("r") if layer.residual else None, ranges.inv("y"))
        sets.append(LayerInputs(x, w, b, b, r, out, quant))
    return sets


@dataclasses.dataclass
class CodeReference:
    """The codes an 8-bit conv must write for the batch's images `images` (dtype as the output)."""

    images: list[int]
    codes: torch.Tensor


def code_reference(layer: ConvLayer, s: LayerInputs) -> CodeReference:
    """The torch reference of `layer`'s 8-bit launch on input set `s` (conv_step: the codes
    summed exactly in float64, the kernels' float32 epilogue op for op), for the batch's first
    and last image."""
    from ..plan import ConvSpec
    from ..precision import Precision
    from ..quant.reference import conv_step

    q = s.w.dtype
    images = sorted({0, s.x.shape[0] - 1})
    spec = ConvSpec("conv", "bn", layer.k, layer.stride, layer.pad, layer.cin, layer.cout, layer.relu,
                    "identity" if layer.residual else None)
    pr = Precision(q, s.x.dtype, q, None if s.r is None else q, "x", "y", None if s.r is None else "r")
    params = {"conv.weight": s.w, "conv.bias": s.b, "conv.weight_scale": s.quant.weight_scale}
    r = None if s.r is None else s.r[images].float()
    # conv_step reads only the step's spec
    held = conv_step(types.SimpleNamespace(spec=spec), pr, s.x[images].float(), r, params, s.quant.ranges,
                     torch.float16)
    return CodeReference(images, held.to(q))


def build_quantized(model: torch.nn.Module, dtype: torch.dtype, device: torch.device, hw: tuple[int, int]):
    """fastres.quantize of `model` (float32, random weights) into `dtype`, calibrated on random
    images [CALIBRATION_IMAGES, 3, *hw] (CALIBRATION_BATCHES batches, method "max"), on
    `device`, CUDA-graphed on a GPU."""
    import fastres

    gen = torch.Generator(device=device).manual_seed(5)
    calibration = [torch.randn(CALIBRATION_IMAGES, 3, *hw, generator=gen, device=device)
                   for _ in range(CALIBRATION_BATCHES)]
    return fastres.quantize(model, calibration, dtype=dtype, method="max", device=device,
                            cuda_graph=device.type == "cuda", progress=False)


def logits_error(engine, x: torch.Tensor, out: torch.Tensor) -> float:
    """The relative error of a quantized `engine`'s logits `out` (of input x) against the torch
    reference of its integer math, on the batch's first and last image."""
    from ..quant.reference import run_schedule
    from .numerics import rel_error

    images = sorted({0, x.shape[0] - 1})
    xi = x[images]
    ref = run_schedule(engine.schedule(xi), engine.params(), xi, ranges=engine.ranges)
    return rel_error(out[images], ref)
