"""fastres: ResNet inference with hand-written Triton kernels.

Public API (see README.md and docs/engine.md):
    fastres.from_torchvision(model, dtype=torch.float16) -> fastres.ResNet (a classifier or an
        IntermediateLayerGetter), or a copy of an FCN / DeepLabV3 / ResNet-FPN detector /
        BackboneWithFPN with its ResNet trunk on fastres
    fastres.from_timm(model), fastres.from_transformers(model): their ResNets, same outputs
    fastres.convert(src, out=None, *, arch=None, dtype=torch.float16) -> pathlib.Path
    fastres.load(path, device="cuda") -> fastres.ResNet
    fastres.Predictor(weights_or_model, ...)  (classify image files or uint8 tensors)
    fastres.preprocess(data, *, resize=256, crop=224, mode="exact", interpolation="bilinear", max_pixels=...)
        (an image file's bytes -> the uint8 [3, crop, crop] crop the engine takes; "exact" is
        torchvision's, "fast" faster; max_pixels defaults to PIL's decompression-bomb limit)
    fastres.quantize(model, calibration, *, dtype=torch.int8, method="entropy") -> fastres.ResNet
        (post-training quantization to int8 or float8_e4m3fn; .quantization_report())
    fastres.kernels  (the Triton kernels and their launchers)

Attributes load on first use (PEP 562), so that `fastres.cli` can decide on triton's CPU
interpreter (TRITON_INTERPRET, read when kernels are defined) before any kernel module loads.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

_LAZY = {
    "from_torchvision": "fastres.build",
    "from_timm": "fastres.sources.timm",
    "from_transformers": "fastres.sources.transformers",
    "ArchSpec": "fastres.plan",
    "ResNet": "fastres.engine",
    "ARCHS": "fastres.plan",
    "UnsupportedModelError": "fastres.plan",
    "convert": "fastres.weights",
    "load": "fastres.weights",
    "WeightsError": "fastres.errors",
    "UnsupportedDeviceError": "fastres.kernels.targets",
    "Predictor": "fastres.predict.predictor",
    "Prediction": "fastres.predict.output",
    "preprocess": "fastres.predict.preprocess",
    "ImageError": "fastres.predict.images",
    "quantize": "fastres.quant.quantize",
}

__all__ = ["ARCHS", "ArchSpec", "ImageError", "Prediction", "Predictor", "ResNet", "UnsupportedDeviceError", "UnsupportedModelError",
           "WeightsError", "convert", "from_timm", "from_torchvision", "from_transformers", "kernels", "load", "preprocess",
           "quantize", "__version__"]


_HERE = Path(__file__).resolve().parent
_CHECKOUT_KERNELS = _HERE.parent / "kernels"


class _CheckoutKernelsFinder(importlib.abc.MetaPathFinder):
    """In a source checkout, ``fastres.kernels`` is the ``kernels/`` folder beside ``fastres/``.

    An installed wheel ships the kernels inside the package; an editable install maps them
    there too, but possibly to another checkout's folder: this finder makes the package that
    was imported always use its own kernels.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "fastres.kernels":
            return importlib.util.spec_from_file_location(
                fullname, _CHECKOUT_KERNELS / "__init__.py", submodule_search_locations=[str(_CHECKOUT_KERNELS)]
            )
        if fullname.startswith("fastres.kernels."):
            return importlib.machinery.PathFinder.find_spec(fullname, [str(_CHECKOUT_KERNELS)], target)
        return None


if not (_HERE / "kernels").is_dir() and (_CHECKOUT_KERNELS / "__init__.py").is_file():
    if not any(isinstance(f, _CheckoutKernelsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutKernelsFinder())


def __getattr__(name: str):
    if name == "kernels":
        value = importlib.import_module("fastres.kernels")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'fastres' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
