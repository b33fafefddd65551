"""A quantized engine in a converted file (format version 3, weights/README.md): which layers
(convs, the classifier "fc") run in 8 bits, the activation ranges, and the calibration's provenance and report, as
safetensors metadata strings beside the 8-bit weights and their scales."""
from __future__ import annotations

import json
import math
from typing import Mapping

import torch

from ..errors import WeightsError
from ..precision import QUANT_DTYPES, Quantized
from .report import LayerReport, QuantizationReport

QUANT_FORMAT_VERSION = 3
QUANT_DTYPE_NAMES = {"int8": torch.int8, "float8_e4m3fn": torch.float8_e4m3fn}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def quant_metadata(engine, provenance: Mapping[str, object]) -> dict[str, str]:
    """The metadata keys a quantized `engine` (fastres.ResNet made by fastres.quantize) adds."""
    q = engine.quantized
    meta = {
        "format_version": str(QUANT_FORMAT_VERSION),
        "quantized": dtype_name(q.dtype),
        "quantized_layers": json.dumps(sorted(q.layers)),
        "ranges": json.dumps(engine.ranges.amax, sort_keys=True),
        "calibration": json.dumps(dict(provenance), sort_keys=True),
    }
    if engine.report is not None:
        meta["quantization_report"] = json.dumps(engine.report.to_dict())
    return meta


def read_quant(meta: Mapping[str, str], path=None) -> tuple[Quantized, dict[str, float], QuantizationReport | None] | None:
    """(what runs in 8 bits, activation ranges, report or None) of a version-3 file's metadata;
    None for a float file. Raises WeightsError naming the bad key."""
    if meta.get("format_version") != str(QUANT_FORMAT_VERSION):
        return None
    name = meta.get("quantized")
    if name not in QUANT_DTYPE_NAMES:
        raise WeightsError(f"{path}: quantized={name!r}; expected one of {', '.join(QUANT_DTYPE_NAMES)}")
    try:
        layers = json.loads(meta.get("quantized_layers", ""))
        ranges = json.loads(meta.get("ranges", ""))
        if not isinstance(layers, list) or not all(isinstance(v, str) for v in layers):
            raise ValueError("quantized_layers is not a list of layer names")
        if not isinstance(ranges, dict) or not all(isinstance(v, (int, float)) and 0 < v < math.inf
                                                   for v in ranges.values()):
            raise ValueError("ranges is not a mapping of names to positive finite numbers")
    except ValueError as exc:
        raise WeightsError(f"{path}: invalid quantization metadata ({exc})") from None
    report = None
    if "quantization_report" in meta:
        try:
            report = report_from_dict(json.loads(meta["quantization_report"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise WeightsError(f"{path}: invalid quantization_report ({exc})") from None
    return Quantized(QUANT_DTYPE_NAMES[name], frozenset(layers)), {k: float(v) for k, v in ranges.items()}, report


def report_from_dict(d: Mapping) -> QuantizationReport:
    dtype = QUANT_DTYPE_NAMES[d["dtype"]]
    assert dtype in QUANT_DTYPES
    layers = tuple(LayerReport(**{**r, "weight_scale": tuple(r["weight_scale"])}) for r in d["layers"])
    return QuantizationReport(d["arch"], dtype, d["method"], int(d["batches"]), int(d["images"]),
                              d["max_layer_error"], layers)
