"""The options `fastres predict`, `fastres serve` and `fastres eval` share, defined once below the
commands (fastres.predict.cli, fastres.scale.cli and fastres.eval_cli import them; none imports
another for them)."""
from __future__ import annotations

import argparse

from ..errors import UserError

DTYPE_NAMES = ("float16", "bfloat16", "float32")


def add_preprocess_argument(p: argparse.ArgumentParser) -> None:
    """--preprocess, as `fastres predict` and `fastres serve` take it (fastres.preprocess's modes)."""
    p.add_argument("--preprocess", choices=("exact", "fast"), default="exact",
                   help="exact: torchvision's pixels bit for bit (default); fast: JPEGs decoded at a reduced DCT scale "
                        "and torch's uint8 resize, close to exact and several times faster on large photos")


def resolve_device(name: str | None):
    """--device as `fastres predict` and `fastres eval` take it: cuda, cuda:N or cpu (None: cuda if
    there is one), as a torch.device; a UserError for a name that is no device, for cuda without
    one, and for cpu outside triton's interpreter (the only way the kernels run on a CPU)."""
    import torch

    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cuda, cuda:N or cpu)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device here")
    from ..kernels import interpreting

    if device.type == "cpu" and not interpreting():
        raise UserError("--device cpu runs only through triton's interpreter: set TRITON_INTERPRET=1")
    return device
