"""The `fastres` command line: run, convert, bench, check, predict, eval, serve.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``main(args) -> int``.
A user mistake is one clear line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import UserError

SUBCOMMANDS = {
    "run": ("fastres.runner", "build a ResNet, run a batch through the Triton forward, check it against torchvision"),
    "convert": ("fastres.convert_cli", "convert a torchvision, timm or transformers checkpoint into a fastres .safetensors file"),
    "bench": ("fastres.benchmark.cli", "benchmark fastres against cuDNN (end to end and per layer)"),
    "check": ("fastres.gate.cli",
              "compile every dispatchable kernel config for GPU targets (default: Hopper, sm_90) and inspect the binaries"),
    "predict": ("fastres.predict.cli", "classify image files (JSON lines or CSV out), preprocessed as torchvision does"),
    "eval": ("fastres.eval_cli", "top-1 and top-5 on a labelled image folder (MLPerf's val_map.txt or torchvision's "
                                 "ImageFolder), several dtypes side by side against float32"),
    "serve": ("fastres.scale.cli", "serve HTTP POST /predict on Ray Serve, with dynamic batching (needs fastres[ray])"),
}
# Subcommands of a subcommand, each its own parser: `fastres bench mlperf ...`.
NESTED = {
    ("bench", "mlperf"): ("fastres.benchmark.mlperf_cli",
                          "MLPerf Inference's LoadGen around the engine: its four scenarios, performance and accuracy "
                          "(needs fastres[mlperf])"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastres", description="ResNet inference with hand-written Triton kernels.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_main=mod.main)
    return parser


def _version() -> str:
    from . import __version__

    return f"fastres {__version__}"


# Subcommands that run kernels: without CUDA they go through triton's CPU interpreter, which
# must be chosen before any kernel module is imported (triton reads it when kernels are defined).
_INTERPRETED = ("run", "bench", "predict", "eval")


def _prepare_environment(argv: list[str]) -> None:
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in _INTERPRETED and "TRITON_INTERPRET" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _prepare_environment(argv)
    nested = NESTED.get(tuple(argv[:2]))
    if nested is not None:
        module, help_text = nested
        parser = argparse.ArgumentParser(prog=f"fastres {argv[0]} {argv[1]}", description=help_text)
        mod = importlib.import_module(module)
        mod.configure(parser)
        args = parser.parse_args(argv[2:])
        args.command, args._main = f"{argv[0]} {argv[1]}", mod.main
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except UserError as exc:
        print(f"fastres {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastres {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from .kernels.targets import UnsupportedDeviceError

        if not isinstance(exc, UnsupportedDeviceError):
            raise
        print(f"fastres {args.command}: error: {exc}", file=sys.stderr)  # a card fastres cannot run on
        return 2


def run_subcommand(name: str, argv: list[str] | None = None) -> int:
    """`python -m fastres.<module> ARGS`: the same as `fastres NAME ARGS`."""
    return main([name, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
