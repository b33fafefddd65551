"""`fastres convert`: the command line of `fastres.weights.convert`."""
from __future__ import annotations

import argparse

from .weights import DTYPES, WeightsError, convert, read_metadata


def configure(p: argparse.ArgumentParser) -> None:
    from .plan import ARCHS

    p.add_argument("src", help="a torchvision or timm checkpoint (.pth / .pt / .bin state_dict, or .safetensors), or a "
                               "timm or transformers model folder (config.json + weights)")
    p.add_argument("--out", help="output file (default weights/<name>-<dtype>.safetensors)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="expected architecture (default: inferred from the keys)")
    p.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32")


def main(args) -> int:
    from .errors import UserError

    if args.dtype not in DTYPES:
        raise UserError(f"unknown dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    try:
        path = convert(args.src, args.out, arch=args.arch, dtype=args.dtype)
    except (WeightsError, OSError) as exc:
        raise UserError(str(exc)) from None
    meta = read_metadata(path)
    size = path.stat().st_size / 1e6
    origin = f" (torchvision {meta['torchvision_weights']})" if "torchvision_weights" in meta else (
        f" ({meta['source']}, preprocessing " + ("from its config" if "preprocess" in meta else "torchvision's defaults: "
                                                 "its config says none") + ")" if "source" in meta else "")
    what = f"{meta['num_classes']} classes" if "num_classes" in meta else f"trunk returning {meta['returns']}"
    print(f"{path}: {meta['arch']}, {what}, {meta['dtype']}, {size:.1f} MB{origin}")
    return 0
