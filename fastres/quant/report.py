"""The per-layer report of a calibration: what each quantized tensor's scale is, how much of it
was clipped, and how far each layer's 8-bit output is from its float output."""
from __future__ import annotations

import dataclasses
import json

import torch

from ..precision import short


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One conv, or the classifier ("fc"). input / output: the scale names of its input and
    output activations; scale_in, scale_out: their scales (what one 8-bit step stands for);
    clipped_in / clipped_out: the fraction of the calibration's values beyond the range;
    weight_scale: the smallest and largest per-output-channel weight scale; error: the relative
    L2 error of the layer's dequantized 8-bit output against its float output, both from the
    same float input, over the calibration batches; precision: the dtype it runs in; why: why it
    stays float (empty when it runs in 8 bits). The classifier's input is the pooled features
    ("pool"), its output the logits (no scale: scale_out and clipped_out None), its error that
    of its logits, and agreement the fraction of the calibration's images whose top-1 class its
    8-bit logits keep (None for a conv)."""

    layer: str
    input: str
    output: str
    scale_in: float
    scale_out: float | None
    clipped_in: float
    clipped_out: float | None
    weight_scale: tuple[float, float]
    error: float
    precision: str
    why: str = ""
    agreement: float | None = None


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What `fastres.quantize` measured and chose. dtype: the 8-bit dtype; method: the
    calibration method; batches / images: how much calibration data it saw; max_layer_error:
    the threshold above which a layer was kept float (None: none kept by error); layers: one
    LayerReport per conv, in execution order, then the classifier's (a trunk has none)."""

    arch: str
    dtype: torch.dtype
    method: str
    batches: int
    images: int
    max_layer_error: float | None
    layers: tuple[LayerReport, ...]

    @property
    def kept(self) -> tuple[str, ...]:
        """The layers (convs, the classifier) that run in float, in execution order."""
        return tuple(r.layer for r in self.layers if r.why)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dtype"] = str(self.dtype).removeprefix("torch.")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def __str__(self) -> str:
        lines = [f"{self.arch} quantized to {short(self.dtype)} ({self.method} calibration on {self.images} images in "
                 f"{self.batches} batches); error: the layer's relative L2 error against float",
                 f"{'layer':<22} {'runs':<5} {'scale in':>10} {'clip in':>8} {'scale out':>10} {'clip out':>8} "
                 f"{'weight scales':>21} {'error':>8}  note"]
        for r in self.layers:
            note = r.why or ("" if r.agreement is None else f"top-1 agreement {r.agreement:.2%}")
            lines.append(f"{r.layer:<22} {r.precision:<5} {r.scale_in:>10.3g} {r.clipped_in:>8.2%} "
                         f"{_num(r.scale_out, '.3g'):>10} {_num(r.clipped_out, '.2%'):>8} "
                         f"{r.weight_scale[0]:>10.3g}..{r.weight_scale[1]:<9.3g} {r.error:>8.2%}  {note}".rstrip())
        kept = self.kept
        lines.append(f"{len(self.layers) - len(kept)} of {len(self.layers)} layers in {short(self.dtype)}"
                     + (f"; float: {', '.join(kept)}" if kept else ""))
        return "\n".join(lines)


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)
