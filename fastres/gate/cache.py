"""The gate's results cache: one JSON file of rows, keyed by everything a row depends on.

Results are stored in ``$FASTRES_CACHE_DIR/check/results.json`` (default root
``~/.cache/fastres``), keyed by the compiled kernel's own source key (triton's
``JITFunction.cache_key``: the text and first line of the ``@triton.jit`` function, of every
jit function it calls and the constexpr globals it reads), the triton version, the gate's own
version, the target, the config, the dtype and the variant (its full specialization). So an
edit recompiles only the rows of the kernels it changes: an unchanged kernel is never
recompiled, a second run only reads JSON, and rows of different targets never mix.
Failures of the toolchain itself (a missing ptxas, a dead worker) are reported but never
cached (the callers' business: ``fastres.gate.run``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .target import DEFAULT_TARGET, Target
from .variants import Variant

if TYPE_CHECKING:
    from ..kernels.config import Config

# Bumped whenever what a row means changes (checks, parsing, specialization rules, the key),
# so that cached rows of an older gate are not reused.
GATE_VERSION = 6


def cache_file() -> Path:
    """Where the rows are cached (follows $FASTRES_CACHE_DIR, read at each call)."""
    from ..tuning import cache_dir

    return cache_dir() / "check" / "results.json"


def kernel_key(kernel: str, variant: str = "ptr") -> str:
    """The source key of the @triton.jit function that `kernel`'s configs of `variant` run
    (``Config.variant``): triton's own ``cache_key``, which changes with the function's text,
    its first line number, the jit functions it calls and the constexpr globals it reads, and
    with nothing else (not with an edit to another kernel), and the arguments the function
    leaves unspecialized (``do_not_specialize``, ``do_not_specialize_on_alignment``). Needs real jit functions: not
    under TRITON_INTERPRET (the gate refuses to run there)."""
    from .compile import kernel_fn
    from .keys import unaligned, unspecialized

    fn = kernel_fn(kernel, variant)
    # Two kernels may share one function (the stem's and the other convs') and differ only in
    # which arguments the JIT leaves unspecialized, which triton's cache_key does not see.
    return json.dumps([fn.cache_key, sorted(unspecialized(fn)), sorted(unaligned(fn))])


def triton_version() -> str:
    """The version of the triton that compiles (part of the key: a new triton may compile differently)."""
    import triton

    return triton.__version__


def row_key(kernel: str, config: Config, dtype: str, variant: Variant, *, source: str | None = None,
            target: Target = DEFAULT_TARGET) -> str:
    """Cache key: the kernel's source key (``kernel_key``, unless given as `source`), triton
    version, gate version, target, config, dtype, variant."""
    payload = json.dumps(
        [GATE_VERSION, source or kernel_key(kernel, config.variant), triton_version(), dataclasses.astuple(target), kernel,
         dataclasses.asdict(config), dtype, dataclasses.astuple(variant)],
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def load_cache(path: Path) -> dict:
    """The cached rows by key; empty when the file is missing or unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_cache(path: Path, new: dict) -> None:
    """Merge `new` into the cache file atomically (concurrent gates may share it)."""
    if not new:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = load_cache(path)
        data.update(new)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not fail the gate
        print(f"fastres check: warning: could not write the cache {path}: {exc}", file=sys.stderr)
