"""Running the gate: which rows there are, compiling the missing ones (in a process pool), the cache.

Python API: ``gate_rows(kernels=None, dtypes=None, jobs=1, target=...) -> list[dict]`` (what
``fastres check`` prints; `target` one ``Target`` or several) and ``check_one(kernel, config,
dtype, variant, target=...)`` for a single row; ``tasks`` lists the (kernel, config, dtype,
variant, target) the gate compiles.

Which variants. ``DEFAULT_TARGET`` (sm_90, where the engine is tuned and benchmarked) gets
every variant of every config of the target's space. Every other target compiles each config
at its heaviest dispatchable variants only (``variants.heaviest``: per input precision, split
or unsplit K loop, float32 or narrower input, and conv or classifier head, the one with the
most register pressure), about a third of the rows, which keeps ``--target all`` within a CI
budget; ``all_variants=True`` (``fastres check --all-variants``) compiles every variant there
too.

The pool. Rows are handed to the workers in chunks of up to ``CHUNK`` distinct binaries of one
target (``chunks``), each compiled and read at once (``compile_rows``): a chunk pays nvdisasm's
start-up once, and rows with the same binary (``binary_key``) share a chunk, so it is compiled
once.

The interpreter. With ``TRITON_INTERPRET=1`` ``@triton.jit`` gives interpreter functions that
``triton.compile`` refuses, and the choice is made when ``fastres.kernels`` is imported. So
the gate refuses to run under it (``fastres check``: one line on stderr, exit 2; unset the
variable, e.g. ``env -u TRITON_INTERPRET fastres check``). The tests spawn it as a subprocess
without it.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
from typing import TYPE_CHECKING, Any, Iterable

import torch

from .cache import cache_file, kernel_key, load_cache, row_key, save_cache
from ..errors import first_line
from .compile import FAMILIES, Task, binary_key, blank_row, compile_row, compile_rows, row_family
from .target import DEFAULT_TARGET, Target
from .selection import dispatchable, engine_space, has_engine_space, heaviest
from .rows import variants
from .variants import DTYPES, Variant, config_family, dtype_name

if TYPE_CHECKING:
    from ..kernels.config import Config


def refuse_interpreter() -> None:
    """Raise RuntimeError under TRITON_INTERPRET (the kernels then cannot be compiled)."""
    from ..kernels._checks import interpreting

    if interpreting():
        raise RuntimeError(
            "TRITON_INTERPRET is set: the compile gate needs real @triton.jit functions; "
            "run it without the variable (e.g. `env -u TRITON_INTERPRET fastres check`)"
        )


def _find_variant(kernel: str, dtype: str, variant: Variant | str | None, family: str = "ptr") -> Variant:
    if isinstance(variant, Variant):
        return variant
    options = variants(kernel, dtype, family)
    if variant is None:
        return options[0]
    for v in options:
        if v.name == variant or v.name.split()[0] == variant:
            return v
    raise ValueError(f"no variant {variant!r} of {kernel} at {dtype}; variants: {[v.name for v in options]}")


def check_one(kernel: str, config: Config, dtype: str | torch.dtype, variant: Variant | str | None = None, *,
              use_cache: bool = True, target: Target = DEFAULT_TARGET) -> dict[str, Any]:
    """Compile and inspect one (kernel, config, dtype, variant) for `target`; returns its row.

    `config` may be any ``Config`` (also one outside the config space, e.g. to show that a
    tile spills); `variant` a ``Variant``, its name or the name's first word (e.g.
    ``"3x3/s1/relu/res/ieee"``); None picks the kernel's first variant.
    """
    refuse_interpreter()
    dt = dtype_name(dtype)
    v = _find_variant(kernel, dt, variant, config_family(config))
    path = cache_file()
    key = row_key(kernel, config, dt, v, target=target)
    if use_cache:
        hit = load_cache(path).get(key)
        if hit is not None:
            return dict(hit, cached=True)
    row = compile_row(kernel, config, dt, v, target=target)
    if use_cache:
        save_cache(path, {key: row})
    return dict(row, cached=False)


def _error_row(task: Task, exc: BaseException) -> dict:
    """The gate itself broke on a row (not the kernel): report it, never cache it."""
    row = blank_row(task.kernel, task.config, task.dtype, task.variant, task.target)
    return dict(row, error="gate error: " + first_line(exc, last=True, limit=400), _transient=True)


def _run_chunk(chunk: list[Task]) -> list[dict]:
    try:
        return compile_rows(chunk)
    except Exception as exc:
        if len(chunk) == 1:
            return [_error_row(chunk[0], exc)]
        # the gate broke on some row: find which, row by row, and report the others' results
        return [row for task in chunk for row in _run_chunk([task])]


# Distinct binaries per chunk: enough that nvdisasm's start-up (about 0.3 CPU-seconds) is a
# small part of a chunk's listing, few enough that two workers finish close together.
CHUNK = 16


def chunks(todo: list[Task], indices: list[int], size: int = CHUNK) -> list[list[int]]:
    """`indices` of `todo` in chunks for ``compile_rows``: each of one target, of at most `size`
    distinct binaries (``binary_key``), every row of a binary in the chunk of its first."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in indices:
        try:
            key = binary_key(todo[i])
        except Exception:  # a row the gate cannot specialize: alone, its worker reports it
            key = f"row {i}"
        groups.setdefault((todo[i].target.name, key), []).append(i)
    out: list[list[int]] = []
    count, last = 0, None
    for (target, _), rows in groups.items():
        if not out or target != last or count == size:
            out.append([])
            count, last = 0, target
        out[-1].extend(rows)
        count += 1
    return out


def as_targets(target: Target | Iterable[Target]) -> tuple[Target, ...]:
    """One target or several, as a tuple (each once, in order)."""
    if isinstance(target, Target):
        return (target,)
    out: list[Target] = []
    for t in target:
        if t not in out:
            out.append(t)
    return tuple(out)


def tasks(kernels: Iterable[str] | None = None, dtypes: Iterable[str | torch.dtype] | None = None, *,
          target: Target | Iterable[Target] = DEFAULT_TARGET, all_variants: bool = False,
          families: Iterable[str] | None = None) -> list[Task]:
    """Every (kernel, config, dtype, variant, target) the gate compiles, filtered: per target,
    the configs ``engine_space`` dispatches there, at every dispatchable variant on
    ``DEFAULT_TARGET`` (or with `all_variants`), else at the heaviest ones (``heaviest``);
    `families`: only rows of these variant families (``row_family``)."""
    from ..kernels.config import KERNELS

    wanted = None if families is None else set(families)
    if wanted is not None and not wanted <= set(FAMILIES):
        raise ValueError(f"unknown variant family {sorted(wanted - set(FAMILIES))[0]!r}: choose from {', '.join(FAMILIES)}")

    names = list(KERNELS) if kernels is None else list(kernels)
    for k in names:
        if k not in KERNELS:
            raise ValueError(f"unknown kernel {k!r}: choose from {', '.join(KERNELS)}")
    dts = list(DTYPES) if dtypes is None else [dtype_name(d) for d in dtypes]
    out = []
    for tgt in as_targets(target):
        every = all_variants or tgt == DEFAULT_TARGET
        for k in names:
            for dt in DTYPES:
                if dt not in dts or not has_engine_space(k, dt, tgt):
                    continue
                for cfg in engine_space(k, dt, tgt):
                    ok = [v for v in variants(k, dt, config_family(cfg)) if dispatchable(k, cfg, v, dt, tgt)]
                    out.extend(Task(k, cfg, dt, v, tgt) for v in (ok if every else heaviest(dt, ok))
                               if wanted is None or row_family(cfg, v) in wanted)
    return out


def gate_rows(
    kernels: Iterable[str] | None = None,
    dtypes: Iterable[str | torch.dtype] | None = None,
    jobs: int = 1,
    *,
    use_cache: bool = True,
    progress: bool = False,
    target: Target | Iterable[Target] = DEFAULT_TARGET,
    all_variants: bool = False,
    families: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the gate for `target` (one or several): one row (dict) per (kernel, config, dtype,
    variant, target) of ``tasks``, in a stable order (target by target).

    ``jobs`` > 1 compiles in a process pool; ``progress`` shows a bar on stderr (when it is a
    terminal); ``use_cache`` reads and writes the result cache. Keys: those of
    ``fastres.gate.compile`` (kernel, config, dtype, variant, target, ok, error (None when
    ok), registers, stack, spills, shared, shared_limit, gemm, tensor_core, ...; on sm_90 also
    wgmma, wgmma_required, hgmma_insts) and cached.
    """
    refuse_interpreter()
    todo = tasks(kernels, dtypes, target=target, all_variants=all_variants, families=families)
    path = cache_file()
    sources: dict[tuple[str, str], str] = {}  # (kernel, Config.variant) -> its jit function's key
    for t in todo:
        if (t.kernel, t.config.variant) not in sources:
            sources[t.kernel, t.config.variant] = kernel_key(t.kernel, t.config.variant)
    keys = [row_key(t.kernel, t.config, t.dtype, t.variant, source=sources[t.kernel, t.config.variant], target=t.target)
            for t in todo]
    cache = load_cache(path) if use_cache else {}
    rows: list[dict | None] = [None] * len(todo)
    missing = []
    for i, key in enumerate(keys):
        if key in cache:
            rows[i] = dict(cache[key], cached=True)
        else:
            missing.append(i)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), initial=len(todo) - len(missing), desc="fastres check", unit="kernel",
               file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
    fresh: dict[str, dict] = {}

    def done(i: int, row: dict) -> None:
        transient = row.pop("_transient", False)
        rows[i] = dict(row, cached=False)
        if not transient:
            fresh[keys[i]] = row
        bar.update(1)
        if use_cache and len(fresh) >= 32:  # keep progress if interrupted
            save_cache(path, fresh)
            fresh.clear()

    try:
        work = chunks(todo, missing)
        if jobs <= 1 or len(work) <= 1:
            for chunk in work:
                for i, row in zip(chunk, _run_chunk([todo[i] for i in chunk])):
                    done(i, row)
        else:
            # spawn: a fresh interpreter per worker (no forked torch / triton state).
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=ctx) as pool:
                futures = {pool.submit(_run_chunk, [todo[i] for i in chunk]): chunk for chunk in work}
                for fut in concurrent.futures.as_completed(futures):
                    chunk = futures[fut]
                    try:
                        rows_done = fut.result()
                    except Exception as exc:  # a worker died (e.g. out of memory): report its rows
                        rows_done = [_error_row(todo[i], exc) for i in chunk]
                    for i, row in zip(chunk, rows_done):
                        done(i, row)
    finally:
        bar.close()
        if use_cache:
            save_cache(path, fresh)
    return [r for r in rows if r is not None]
