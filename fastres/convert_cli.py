"""`fastres convert`: the command line of `fastres.weights.convert`."""
from __future__ import annotations

import argparse

from .weights import DTYPES, QUANT_DTYPES, WeightsError, convert, read_metadata


def configure(p: argparse.ArgumentParser) -> None:
    from .plan import ARCHS

    p.add_argument("src", help="a torchvision or timm checkpoint (.pth / .pt / .bin state_dict, or .safetensors), or a "
                               "timm or transformers model folder (config.json + weights)")
    p.add_argument("--out", help="output file (default weights/<name>-<dtype>.safetensors)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="expected architecture (default: inferred from the keys)")
    p.add_argument("--dtype", default="float16",
                   help="float16 (default), bfloat16, float32, or int8 / float8_e4m3fn (quantized: needs --calibrate)")
    p.add_argument("--calibrate", metavar="DIR",
                   help="a quantized file's calibration images: a folder (searched recursively; its first "
                        "--calibration-count images in sorted order, preprocessed as `fastres predict` does)")
    p.add_argument("--calibration-count", type=int, default=500, metavar="N",
                   help="how many calibration images (default 500, as NVIDIA's MLPerf ResNet-50 calibration)")
    p.add_argument("--method", default=None, choices=("max", "percentile", "entropy", "mse"),
                   help="how each activation's range is chosen (default: entropy, TensorRT's KL divergence, for int8; mse for "
                        "float8_e4m3fn)")
    p.add_argument("--dilate", metavar="none|L2,L3,L4",
                   help="the dilation of a bare trunk state_dict (a ResNet's without fc.*, whose weights cannot show it), "
                        "as torchvision's replace_stride_with_dilation for layer2..layer4: 'none' (timm's features_only, "
                        "an IntermediateLayerGetter over a plain ResNet) or e.g. '0,1,1' (an FCN's or DeepLabV3's "
                        "backbone); required for such a file, elsewhere it must agree with the source's own")


def parse_dilate(text: str) -> tuple[bool, bool, bool]:
    """--dilate's value: 'none', or three of 0/1/false/true for layer2..layer4 (commas, brackets
    and spaces as torchvision's list prints them: '[False, True, True]')."""
    from .errors import UserError

    words = [w for w in text.strip().strip("[]()").replace(",", " ").lower().split()]
    if words == ["none"]:
        return (False, False, False)
    values = {"0": False, "1": True, "false": False, "true": True}
    if len(words) != 3 or any(w not in values for w in words):
        raise UserError(f"--dilate takes 'none' or three of 0/1 (true/false) for layer2..layer4, e.g. '0,1,1'; "
                        f"got {text!r}")
    return tuple(values[w] for w in words)


def main(args) -> int:
    from .errors import UserError

    if args.dtype not in DTYPES and args.dtype not in QUANT_DTYPES:
        raise UserError(f"unknown dtype {args.dtype!r}: choose one of {', '.join((*DTYPES, *QUANT_DTYPES))}")
    if args.dtype in QUANT_DTYPES and args.calibrate is None:
        raise UserError(f"--dtype {args.dtype} needs calibration images: --calibrate DIR")
    if args.calibrate is not None and args.dtype not in QUANT_DTYPES:
        raise UserError("--calibrate is for a quantized file: --dtype int8 or float8_e4m3fn")
    if args.calibration_count < 1:
        raise UserError(f"--calibration-count must be >= 1, got {args.calibration_count}")
    try:
        dilate = None if args.dilate is None else parse_dilate(args.dilate)
        path = convert(args.src, args.out, arch=args.arch, dtype=args.dtype, dilate=dilate, calibrate=args.calibrate,
                       calibration_count=args.calibration_count, method=args.method, verbose=args.calibrate is not None)
    except (WeightsError, OSError) as exc:
        raise UserError(str(exc)) from None
    meta = read_metadata(path)
    size = path.stat().st_size / 1e6
    origin = f" (torchvision {meta['torchvision_weights']})" if "torchvision_weights" in meta else (
        f" ({meta['source']}, preprocessing " + ("from its config" if "preprocess" in meta else "torchvision's defaults: "
                                                 "its config says none") + ")" if "source" in meta else "")
    what = f"{meta['num_classes']} classes" if "num_classes" in meta else \
        f"trunk returning {meta['returns']}, dilate {meta['dilate']}"
    if "quantized" in meta:
        from .quant.fileformat import read_quant

        report = read_quant(meta, path)[2]
        if report is not None:
            print(report)
    held = meta["dtype"] if "quantized" not in meta else f"{meta['quantized']} (float layers {meta['dtype']})"
    print(f"{path}: {meta['arch']}, {what}, {held}, {size:.1f} MB{origin}")
    return 0
