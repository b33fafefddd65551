"""`fastres predict PATH... --weights FILE`: classify image files, one JSON line (or CSV or
Parquet row) per file in input order, written as results come; the progress (a bar on a terminal, else a
line every few seconds) and the closing time split go to stderr. Exit status: 0, or 1 when a file could not be classified (its line says why, the
others are all there), or 2 for a usage mistake (a missing path, a folder without images, bad
weights or options), which stops before anything runs. `--ray` runs the same on Ray Data
(`fastres.scale`), with the same lines and exit status."""
from __future__ import annotations

import argparse
import sys

from ..errors import first_line
from .options import DTYPE_NAMES, add_preprocess_argument, resolve_device


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively (sorted)")
    p.add_argument("--weights", metavar="FILE", required=True,
                   help="a file written by `fastres convert`, or a torchvision checkpoint (.pth)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 64 on a GPU, 4 on the CPU)")
    p.add_argument("--topk", type=int, default=5, help="classes per image, best first (default 5)")
    p.add_argument("--resize", type=int, default=None,
                   help="shorter side before the crop (default: the torchvision weights' own, else 256)")
    p.add_argument("--crop", type=int, default=None, help="center crop (default: the weights' own, else 224)")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="class names, one per line (default: ImageNet's for 1000 classes, else the index)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write here instead of stdout: .csv for CSV, .jsonl / .json / .ndjson for JSON lines, "
                        ".parquet for Parquet (needs pyarrow)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="engine dtype (default: a converted file's own; float16 for a .pth)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if there is one)")
    p.add_argument("--decode", choices=("auto", "cpu", "cuda"), default="auto",
                   help="JPEG decoding: nvjpeg on the GPU (cuda), the CPU workers (cpu), or nvjpeg where available (auto)")
    add_preprocess_argument(p)
    p.add_argument("--workers", type=int, default=None, help="CPU decode threads (default: the CPU count, at most 32)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels (default 89478485, PIL's decompression-bomb limit)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every $FASTRES_PROGRESS_INTERVAL "
                        "seconds, default 5)")
    ray = p.add_argument_group("on a Ray cluster (needs fastres[ray])")
    ray.add_argument("--ray", action="store_true",
                     help="classify on Ray Data: one actor per GPU of the cluster (without GPUs: one, on a CPU, "
                          "through the interpreter); the files must be readable at their paths on every node")
    ray.add_argument("--address", default=None,
                     help="with --ray: the cluster (host:port, auto, ray://...; default $RAY_ADDRESS, else a new "
                          "local cluster)")
    ray.add_argument("--actors", type=int, default=None, help="with --ray: how many actors (default: one per GPU)")


def _check_args(args) -> None:
    from ..errors import UserError

    for name in ("batch", "topk", "resize", "crop", "workers", "max_pixels", "actors"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("address", "actors"):
        if getattr(args, name) is not None and not args.ray:
            raise UserError(f"--{name} goes with --ray")


def main(args) -> int:
    import warnings

    import torch

    from ..errors import UserError
    from .images import DEFAULT_MAX_PIXELS, NoImagesError, find_images
    from .output import open_writer, output_format

    _check_args(args)
    try:
        output_format(args.out)
        files = find_images(args.paths)
    except (FileNotFoundError, NoImagesError, ValueError) as exc:
        raise UserError(str(exc)) from None
    # torchvision 0.29 deprecates torchvision.io in favour of torchcodec: its decoders are
    # still the reference of its own transforms, which is what fastres matches.
    warnings.filterwarnings("ignore", message=r"The image decoding and encoding capabilities of TorchVision")
    if args.ray:
        from ..scale.cli import predict_on_ray

        return predict_on_ray(args, files)
    predictor = _predictor(args, DEFAULT_MAX_PIXELS)
    torch.set_num_threads(1)  # the decode pool is the parallelism; intra-op threads would fight it
    progress = not args.no_progress  # a bar on a terminal, else a line every few seconds
    print(f"fastres predict: {len(files)} files, {predictor}", file=sys.stderr, flush=True)
    failed = 0
    try:
        with open_writer(args.out, predictor.topk) as writer:
            for pred in predictor.predict_paths(files, progress=progress):
                writer.write(pred)
                writer.flush()
                failed += not pred.ok
    except BrokenPipeError:  # e.g. `fastres predict ... | head`: the reader has all it wants
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        raise UserError(f"cannot write {args.out or 'stdout'}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - never a traceback: what was written stays written
        print(f"fastres predict: error: {first_line(exc)}", file=sys.stderr)
        return 1
    print(predictor.stats.summary(), file=sys.stderr)
    return 1 if failed else 0


def _predictor(args, default_max_pixels: int):
    from ..errors import UserError
    from ..weights import WeightsError
    from .labels import LabelsError
    from .predictor import Predictor

    device = resolve_device(args.device)
    if device.type == "cpu" and args.dtype == "bfloat16":
        raise UserError("bfloat16 needs a GPU: triton's CPU interpreter multiplies bf16 wrongly (triton issue 11584)")
    try:
        return Predictor(args.weights, device=device, dtype=args.dtype, batch_size=args.batch, topk=args.topk,
                         resize=args.resize, crop=args.crop, labels=args.labels, decode=args.decode,
                         workers=args.workers, max_pixels=args.max_pixels or default_max_pixels,
                         preprocess=args.preprocess)
    except (WeightsError, LabelsError, FileNotFoundError, ValueError, TypeError) as exc:
        raise UserError(first_line(exc, typed=False, limit=None)) from None
