"""`fastres eval --weights FILE --data DIR`: top-1 and top-5 of a classifier on a labelled image
folder (MLPerf's ``val_map.txt`` or torchvision's ImageFolder), for one or several dtypes side by
side, each compared with float32 (computed as the reference whenever another dtype is asked):
how often its top-1 is float32's, and the relative L2 error of its logits. A table on stdout
(``--json``: the JSON document instead; ``--out FILE``: the JSON written there as well); the
progress and the closing time split on stderr. The images are preprocessed as ``fastres
predict`` preprocesses them. Exit status: 0, or 1 when an image could not be classified (the
accuracy is that of the others, the JSON lists the failures), or 2 for a usage mistake, which
stops before any image is read."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError
from .evaluate import DTYPES
from .predict.options import add_preprocess_argument, resolve_device

# Failures shown under the table (--json lists them all).
SHOWN_FAILURES = 10


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="FILE", required=True,
                   help="a file written by `fastres convert`, or a torchvision checkpoint (.pth)")
    p.add_argument("--data", metavar="DIR", required=True,
                   help="labelled images: MLPerf's layout (the images and a val_map.txt of 'FILE LABEL' lines) or "
                        "torchvision's ImageFolder (one folder per class, classes numbered in sorted name order)")
    p.add_argument("--dtype", nargs="+", action="extend", metavar="DTYPE", default=None,
                   help=f"one or several, space- or comma-separated, of {', '.join(DTYPES)}; float32 is computed "
                        "too, as the reference, whenever another is asked (default: a converted file's own dtype, float32 for a checkpoint)")
    p.add_argument("--calibrate", metavar="DIR", default=None,
                   help="for --dtype int8 / float8_e4m3fn of a float file: quantize it here (fastres.quantize), "
                        "calibrated on DIR's first --calibration-count images, preprocessed as --data's (keep them "
                        "apart from --data)")
    p.add_argument("--calibration-count", type=int, default=500, metavar="N", help="calibration images (default 500)")
    p.add_argument("--method", default=None, choices=("max", "percentile", "entropy", "mse"),
                   help="calibration method with --calibrate (default: entropy for int8, mse for float8_e4m3fn)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images, in sorted order")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=None, metavar="N",
                   help="images per batch (default 64 on a GPU, 4 on the CPU)")
    p.add_argument("--resize", type=int, default=None,
                   help="shorter side before the crop (default: the torchvision weights' own, else 256)")
    p.add_argument("--crop", type=int, default=None, help="center crop (default: the weights' own, else 224)")
    add_preprocess_argument(p)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)")
    p.add_argument("--workers", type=int, default=None, help="CPU decode threads (default: the CPU count, at most 32)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document instead of a table")
    p.add_argument("--out", metavar="FILE", default=None, help="write the JSON document to FILE too")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every $FASTRES_PROGRESS_INTERVAL "
                        "seconds, default 5)")


def dtype_list(values: list[str] | None) -> list[str]:
    """--dtype's names, space- and comma-separated alike, each checked; [] when not given."""
    names = [n.strip() for v in values or () for n in v.split(",") if n.strip()]
    if values is not None and not names:
        raise UserError("--dtype is empty")
    for name in names:
        if name not in DTYPES:
            raise UserError(f"--dtype {name}: unknown (choose from {', '.join(DTYPES)})")
    return names


def _check_args(args: argparse.Namespace) -> None:
    for name in ("limit", "batch_size", "resize", "crop", "workers", "calibration_count"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def main(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from .evaluate import REFERENCE, build, check_labels, dtypes_to_run, evaluate, list_dataset, stored_dtype
    from .predict.predictor import CPU_BATCH, GPU_BATCH, weights_transform

    _check_args(args)
    asked = dtype_list(args.dtype)
    device = resolve_device(args.device)
    dataset = list_dataset(args.data, args.limit)
    stored = stored_dtype(args.weights)
    dtypes = dtypes_to_run(asked or [stored or REFERENCE])
    if args.calibrate is not None and not any(d in ("int8", "float8_e4m3fn") for d in dtypes):
        raise UserError("--calibrate quantizes a float file for --dtype int8 or float8_e4m3fn; no 8-bit dtype is asked")
    models, meta = {}, None
    for name in dtypes:
        models[name], file_meta = build(args.weights, name, device, calibrate=args.calibrate,
                                        calibration_count=args.calibration_count, method=args.method,
                                        resize=args.resize, crop=args.crop, mode=args.preprocess,
                                        progress=not args.no_progress)
        meta = meta if meta is not None else file_meta
    reference = models[dtypes[0]]
    check_labels(dataset, reference.num_classes)
    try:
        transform, origin = weights_transform(meta, args.resize, args.crop)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # torchvision 0.29 deprecates torchvision.io in favour of torchcodec: its decoders are
    # still the reference of its own transforms, which is what fastres matches.
    warnings.filterwarnings("ignore", message=r"The image decoding and encoding capabilities of TorchVision")
    torch.set_num_threads(1)  # the decode pool is the parallelism; intra-op threads would fight it
    batch = args.batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    print(f"fastres eval: {len(dataset)} images ({dataset.layout}) of {args.data}, {', '.join(dtypes)} on {device}, "
          f"resize {transform.resize}, crop {transform.crop} ({origin}), preprocess {args.preprocess}, batch {batch}",
          file=sys.stderr, flush=True)
    result = evaluate(models, dataset, transform, batch_size=batch, mode=args.preprocess, workers=args.workers,
                      progress=not args.no_progress)
    doc = {"weights": str(args.weights), "weights_dtype": stored, "arch": str(meta.get("arch", reference.arch)),
           "num_classes": reference.num_classes, "device": str(device),
           "preprocess": {"mode": args.preprocess, "resize": transform.resize, "crop": transform.crop,
                          "interpolation": transform.interpolation, "mean": list(transform.mean),
                          "std": list(transform.std), "sizes": origin},
           **result.to_dict()}
    text = json.dumps(doc, indent=2)
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot write it: {exc.strerror or exc}") from None
    print(text if args.json else table(doc))
    print(result.stages.summary(), file=sys.stderr)
    return 1 if result.failed else 0


def table(doc: dict) -> str:
    """The results as text: a line of what was evaluated, a row per dtype, the failures."""
    def pct(v) -> str:
        return "-" if v is None else f"{v:.2f}%"

    ref = doc["reference"]
    lines = [f"{doc['classified']} of {doc['images']} images classified ({doc['layout']}: {doc['data']}); "
             f"{doc['arch']}, {doc['num_classes']} classes, on {doc['device']}",
             f"{'dtype':<14} {'top-1':>8} {'top-5':>8}" + (f" {f'top-1 = {ref}':>17} {'logits rel L2':>14}" if ref else "")]
    for row in doc["results"]:
        line = f"{row['dtype']:<14} {pct(row['top1']):>8} {pct(row['top5']):>8}"
        if ref and row["reference"]:
            line += f" {'reference':>17} {'-':>14}"
        elif ref:
            rel = row["logits_rel_l2"]
            rel = "-" if not row["images"] else "not finite" if rel is None else f"{rel:.2e}"
            line += f" {pct(row['agreement_top1']):>17} {rel:>14}"
        lines.append(line)
    failed = doc["failed"]
    if failed:
        lines.append(f"{len(failed)} images could not be classified (not counted above):")
        lines += [f"  {f['path']}: {f['error']}" for f in failed[:SHOWN_FAILURES]]
        if len(failed) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(failed) - SHOWN_FAILURES} more (--json lists them all)")
    return "\n".join(lines)
