"""One conv layer of the per-layer benchmark as something to run: its input sets, the scratch the
engine's step owns beside them, the config fastres' launcher picks, fn(i) for each compared
system, the reference and how far an output is from it. Both the per-layer measurement
(fastres.benchmark.layers) and the kernel variants beside it (fastres.benchmark.variants) time
what this builds; in an 8-bit dtype the sets and the reference are fastres.benchmark.quantized's."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from ..precision import QUANT_DTYPES
from .environment import baseline_flags
from .geometry import ConvLayer
from .numerics import code_distance, rel_error
from .quantized import (BASELINE_NOTE, CodeReference, LayerInputs, code_reference, quantized_layer_inputs,
                        stem_reads_float)

if TYPE_CHECKING:
    from ..kernels import Config


def layer_inputs(layer: ConvLayer, batch: int, dtype: torch.dtype, device: torch.device, n: int, gen: torch.Generator) -> list[LayerInputs]:
    """`n` independent input sets for `layer` at `batch`: x, weights (He-scaled), float32 bias,
    residual (if the layer has one) and an output buffer, all channels_last in `dtype` (8-bit:
    fastres.benchmark.quantized.quantized_layer_inputs)."""
    if dtype in QUANT_DTYPES:
        return quantized_layer_inputs(layer, batch, dtype, device, n, gen)
    cl = torch.channels_last

    def randn(*shape):  # drawn on the device: host RNG for a batch-256 activation takes seconds
        return torch.randn(*shape, generator=gen, device=device)

    sets = []
    for _ in range(n):
        x = randn(batch, layer.cin, layer.h, layer.w).to(dtype).contiguous(memory_format=cl)
        fan_in = layer.cin * layer.k * layer.k
        w = (randn(layer.cout, layer.cin, layer.k, layer.k) * math.sqrt(2.0 / fan_in)).to(dtype).contiguous(memory_format=cl)
        b = randn(layer.cout) * 0.2
        r = None
        if layer.residual:
            r = randn(batch, layer.cout, layer.oh, layer.ow).to(dtype).contiguous(memory_format=cl)
        out = torch.empty(batch, layer.cout, layer.oh, layer.ow, device=device, dtype=dtype, memory_format=cl)
        sets.append(LayerInputs(x, w, b, b.to(dtype), r, out))
    return sets


class LayerScratch:
    """What the engine's step owns beside its activations, made once per layer point and
    outside every timed region: the fused split's arrival counters (zero, left zero by every
    fused launch) and the float32 split-K workspace, grown to the largest config timed. A
    launcher given neither would allocate them inside the timing (the counters with a fill
    launch: about what fused split-K exists to save)."""

    def __init__(self, device: torch.device):
        from ..kernels.splitk import COUNTER_WORDS

        self.device = device
        self.counters = torch.zeros(COUNTER_WORDS, device=device, dtype=torch.int32)
        self.workspace: torch.Tensor | None = None

    def workspace_for(self, layer: ConvLayer, s: LayerInputs, config: Config) -> torch.Tensor | None:
        """The workspace a launch of `layer` with `config` needs (None: unsplit), as the
        schedule sizes it."""
        from ..kernels.splitk import conv_split

        # (a ConvLayer is ungrouped: conv_layers refuses grouped convs)
        numel = conv_split(config, M=s.x.shape[0] * layer.oh * layer.ow, C=layer.cin, CO=layer.cout,
                           KH=layer.k, KW=layer.k).workspace
        if not numel:
            return None
        if self.workspace is None or self.workspace.numel() < numel:
            self.workspace = torch.empty(numel, device=self.device, dtype=torch.float32)
        return self.workspace


def fastres_layer_config(layer: ConvLayer, s: LayerInputs) -> Config:
    """The config fastres' launcher picks for `layer` on input set `s` (what the engine runs)."""
    from ..kernels.conv import check_conv_args, conv_config
    from ..kernels.gemm1x1 import conv1x1_config

    g = check_conv_args(s.x, s.w, s.b, layer.stride, layer.pad, s.r, s.out, "ieee", **s.quant_kwargs)
    if layer.k == 1:
        return conv1x1_config(g, s.w.dtype, s.x.device)
    return conv_config(g, s.w.dtype, s.x.device, residual=s.r is not None)


def layer_callable(system: str, layer: ConvLayer, sets: list[LayerInputs], config: Config | None = None,
                   scratch: LayerScratch | None = None) -> Callable[[int], torch.Tensor]:
    """fn(i) running `system` on input set i: 'fastres' (the kernel, written into the set's
    output buffer, with `scratch`'s counters and workspace as the engine's step has them, so
    that fn launches exactly what the step launches; `config` overrides the launcher's
    choice; an 8-bit set's scales go with it), 'cudnn-eager' (F.conv2d + bias, then in-place add
    and ReLU) or 'cudnn-conv' (neither in 8 bits: fastres.benchmark.quantized)."""
    from .. import kernels as K

    if system == "fastres":
        cfg = config or fastres_layer_config(layer, sets[0])
        scratch = scratch or LayerScratch(sets[0].x.device)
        ws, cnt = scratch.workspace_for(layer, sets[0], cfg), scratch.counters
        qs = [s.quant_kwargs for s in sets]
        if layer.k == 1:
            return lambda i: K.conv1x1(sets[i].x, sets[i].w, sets[i].b, stride=layer.stride, relu=layer.relu,
                                       residual=sets[i].r, out=sets[i].out, config=cfg, workspace=ws, counters=cnt,
                                       **qs[i])
        # A bordered config reads a zero-bordered copy of each set's input, made here, not timed
        # (in the engine the producer writes straight into the bordered slot's interior).
        xs = [K.zero_bordered(s.x, layer.pad) if cfg.bordered else s.x for s in sets]
        return lambda i: K.conv_bn_relu(xs[i], sets[i].w, sets[i].b, stride=layer.stride, padding=layer.pad,
                                        relu=layer.relu, residual=sets[i].r, out=sets[i].out, config=cfg,
                                        workspace=ws, counters=cnt, **qs[i])
    if sets[0].quant is not None:
        raise ValueError(f"{system}: {BASELINE_NOTE}")
    if system == "cudnn-eager":
        def fused(i):
            s = sets[i]
            y = F.conv2d(s.x, s.w, s.b_cast, stride=layer.stride, padding=layer.pad)
            if s.r is not None:
                y.add_(s.r)
            if layer.relu:
                y.relu_()
            return y
        return fused
    if system == "cudnn-conv":
        return lambda i: F.conv2d(sets[i].x, sets[i].w, None, stride=layer.stride, padding=layer.pad)
    raise ValueError(f"unknown layer system {system!r}")


def layer_bytes(layer: ConvLayer, batch: int, dtype: torch.dtype) -> int:
    """The fewest bytes `layer` moves at `batch` in `dtype` (ConvLayer.bytes; an 8-bit stem
    reads the float16 image)."""
    in_itemsize = 2 if dtype in QUANT_DTYPES and stem_reads_float(layer) else None
    return layer.bytes(batch, dtype.itemsize, in_itemsize)


def poison(out: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer so that elements a system leaves unwritten fail its check: NaN;
    int8, which has none, -128 (a code only a clamped negative result takes)."""
    return out.fill_(-128 if out.dtype == torch.int8 else float("nan"))


def layer_error(out: torch.Tensor, ref: torch.Tensor | CodeReference) -> float:
    """How far a system's output is from the reference: relative L2 error (float), or the most
    codes any value is off on the reference's images (8-bit, numerics.code_distance)."""
    if isinstance(ref, CodeReference):
        return code_distance(out[ref.images], ref.codes)
    return rel_error(out, ref)


def layer_reference(layer: ConvLayer, s: LayerInputs, *, fused: bool,
                    device: torch.device) -> torch.Tensor | CodeReference:
    """The layer in float32 with TF32 off (float64 on the CPU or for float32 inputs); `fused`
    adds bias, residual and ReLU. An 8-bit set: the codes of its integer math
    (fastres.benchmark.quantized.code_reference; fused only)."""
    if s.quant is not None:
        if not fused:
            raise ValueError(f"{layer.name}: an 8-bit conv has no unfused reference (cuDNN runs no 8-bit conv)")
        return code_reference(layer, s)
    rdt = torch.float64 if (device.type == "cpu" or s.x.dtype == torch.float32) else torch.float32
    with baseline_flags(benchmark=False):
        y = F.conv2d(s.x.to(rdt), s.w.to(rdt), s.b.to(rdt) if fused else None, stride=layer.stride, padding=layer.pad)
        if fused:
            if s.r is not None:
                y = y + s.r.to(rdt)
            if layer.relu:
                y = torch.relu(y)
    return y
