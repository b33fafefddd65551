"""fastres: ResNet inference with hand-written Triton kernels.

Public API (see README.md):
    fastres.from_torchvision(model, dtype=torch.float16) -> fastres.ResNet
    fastres.convert(src, out=None, *, arch=None, dtype=torch.float16) -> pathlib.Path
    fastres.load(path, device="cuda") -> fastres.ResNet
    fastres.kernels  (the Triton kernels and their launchers)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


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


try:
    from . import kernels
except ModuleNotFoundError as exc:  # pragma: no cover - depends on how fastres was installed
    if exc.name != "fastres.kernels":
        raise
    kernels = _load_checkout_kernels()
