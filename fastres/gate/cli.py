"""The ``fastres check`` subcommand: its options and its ``main`` (``fastres.cli`` dispatches here).

Exit status: 0 when every row passes, 1 when some fail, 2 for a usage error (one line on
stderr), including running under TRITON_INTERPRET.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .report import failing_configs, format_table, summary_line
from .run import gate_rows, tasks
from .target import DEFAULT_TARGET, TARGETS, resolve_targets


def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``fastres check`` to `parser`."""
    from ..kernels.config import KERNELS

    parser.add_argument("--kernel", action="append", metavar="NAME",
                        help=f"only this kernel (repeatable): {', '.join(KERNELS)}")
    parser.add_argument("--dtype", action="append", metavar="DTYPE",
                        help="only this dtype (repeatable): float16, bfloat16, float32, int8, float8_e4m3fn")
    parser.add_argument("--target", action="append", metavar="T",
                        help=f"compile for these GPUs (repeatable, or comma-separated): {', '.join(TARGETS)}, "
                             f"or all (default: {DEFAULT_TARGET.name})")
    parser.add_argument("--all-variants", action="store_true",
                        help=f"every variant of every config on every target (by default targets other than "
                             f"{DEFAULT_TARGET.name} compile each config at its heaviest variants only)")
    parser.add_argument("--family", action="append", metavar="F",
                        help="only rows of these variant families (repeatable, or comma-separated): ptr (pointer "
                             "loads), fused_k (split-K summed in the kernel), tma, tma_w, tma_ws, tma_b, tma_b_ws, tma_b_p "
                             "(Hopper's TMA kernels; tma_b*: the bordered 3x3s)")
    parser.add_argument("--jobs", "-j", type=int, default=_default_jobs(), metavar="N",
                        help="compile in N processes (default: the CPU count)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompile everything (the cache lives in $FASTRES_CACHE_DIR/check, default ~/.cache/fastres)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(args: argparse.Namespace) -> int:
    """Run the gate as `args` say, print the rows, return the exit status."""
    from ..errors import UserError
    from ..kernels._checks import interpreting

    if interpreting():
        raise UserError(
            "TRITON_INTERPRET is set, but the compile gate needs compiled kernels: "
            "run it without (env -u TRITON_INTERPRET fastres check)"
        )
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        targets = resolve_targets(args.target)
        families = None if not args.family else [f.strip() for a in args.family for f in a.split(",") if f.strip()]
        todo = tasks(args.kernel, args.dtype, target=targets, all_variants=args.all_variants, families=families)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t0 = time.perf_counter()
    rows = gate_rows(args.kernel, args.dtype, jobs=args.jobs, use_cache=not args.no_cache,
                     progress=not args.no_progress, target=targets, all_variants=args.all_variants,
                     families=families)
    elapsed = time.perf_counter() - t0
    failed = [r for r in rows if not r["ok"]]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(rows))
        if failed:
            print("\nfailing configs (remove them from the target's space in kernels/config.py or fix the kernel):")
            for line in failing_configs(rows):
                print(f"  {line}")
        print()
    assert len(rows) == len(todo)
    # With --json stdout stays pure JSON: the summary goes to stderr.
    print(summary_line(rows, targets, elapsed), file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0
