"""The options `fastres predict` and `fastres serve` share, defined once below both commands
(fastres.predict.cli and fastres.scale.cli import them; neither imports the other for them)."""
from __future__ import annotations

import argparse

DTYPE_NAMES = ("float16", "bfloat16", "float32")


def add_preprocess_argument(p: argparse.ArgumentParser) -> None:
    """--preprocess, as `fastres predict` and `fastres serve` take it (fastres.preprocess's modes)."""
    p.add_argument("--preprocess", choices=("exact", "fast"), default="exact",
                   help="exact: torchvision's pixels bit for bit (default); fast: JPEGs decoded at a reduced DCT scale "
                        "and torch's uint8 resize, close to exact and several times faster on large photos")
