"""fastres: ResNet inference with hand-written Triton kernels.

Public API (see README.md):
    fastres.from_torchvision(model, dtype=torch.float16) -> fastres.ResNet
    fastres.convert(src, out=None, *, arch=None, dtype=torch.float16) -> pathlib.Path
    fastres.load(path, device="cuda") -> fastres.ResNet
    fastres.kernels  (the Triton kernels and their launchers)

Attributes load on first use (PEP 562), so that `fastres.cli` can decide on triton's CPU
interpreter (TRITON_INTERPRET, read when kernels are defined) before any kernel module loads.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

_LAZY = {
    "from_torchvision": "fastres.build",
    "ResNet": "fastres.engine",
    "ARCHS": "fastres.plan",
    "UnsupportedModelError": "fastres.plan",
    "convert": "fastres.weights",
    "load": "fastres.weights",
    "WeightsError": "fastres.weights",
}

__all__ = ["ARCHS", "ResNet", "UnsupportedModelError", "WeightsError", "convert", "from_torchvision", "kernels", "load", "__version__"]


def _load_checkout_kernels():
    """Import the top-level ``kernels/`` folder of a source checkout as ``fastres.kernels``.

    An installed wheel ships the kernels inside the package and an editable install maps
    them there; a plain checkout (pytest from the repository root) has them one folder up.
    """
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        raise ModuleNotFoundError("fastres.kernels is missing: reinstall fastres", name="fastres.kernels")
    spec = importlib.util.spec_from_file_location(
        "fastres.kernels", init, submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastres.kernels"] = module
    spec.loader.exec_module(module)
    return module


def _kernels():
    try:
        return importlib.import_module("fastres.kernels")
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on how fastres was installed
        if exc.name != "fastres.kernels":
            raise
        return _load_checkout_kernels()


def __getattr__(name: str):
    if name == "kernels":
        value = _kernels()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'fastres' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
