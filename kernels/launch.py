"""Launching kernels, and compiling them ahead of the first launch in parallel.

Every launcher launches through `launch`. Inside `precompiling()`, the same calls compile
their kernels instead of running them, on a thread pool (triton's AsyncCompileMode: most of a
compile runs outside the GIL, and ptxas is a process of its own), so an engine building a new
input shape compiles its tens of kernels, and every candidate config tuning will measure, at
once rather than one after the other on the first forward.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, NamedTuple

import triton

from ._checks import interpreting

# Inside precompiling(): the set of kernels warmed up so far (None outside).
_warming_up: contextvars.ContextVar[set | None] = contextvars.ContextVar("fastres_warming_up", default=None)
# Inside recording(): (the launches made so far, whether they still run); None outside.
_recorded: contextvars.ContextVar[tuple[list, bool] | None] = contextvars.ContextVar("fastres_recorded", default=None)


class Launch(NamedTuple):
    """One launch as `recording()` saw it: the @triton.jit kernel, its grid, its positional
    arguments and its keyword arguments (constexprs and launch options)."""

    fn: object
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def kernel(self) -> str:
        return getattr(self.fn, "__name__", None) or getattr(getattr(self.fn, "fn", None), "__name__", repr(self.fn))

    @property
    def meta(self) -> tuple:
        return tuple(sorted(self.kwargs.items()))

    @property
    def tensors(self) -> tuple:
        """The tensors it was given (positionally): the buffers its kernel reads and writes."""
        import torch

        return tuple(a for a in self.args if isinstance(a, torch.Tensor))

    @property
    def key(self) -> tuple:
        """What makes two launches the same launch of the same compiled kernel, buffers aside."""
        return self.kernel, self.grid, self.meta


@contextlib.contextmanager
def recording(*, run: bool = True) -> Iterator[list[Launch]]:
    """Record every launch made in this block (this thread and context), in order. run=False
    records without launching (the launchers still check their arguments and plan their
    configs; their outputs stay unwritten). Tests use it to see what a call launches, which
    buffers it hands the kernels and which binaries it needs (fastres.gate.keys)."""
    launches: list[Launch] = []
    token = _recorded.set((launches, run))
    try:
        yield launches
    finally:
        _recorded.reset(token)


def launch(kernel, grid, *args, **kwargs) -> None:
    """kernel[grid](*args, **kwargs); inside `precompiling()`, only compile it for these arguments."""
    recorded = _recorded.get()
    if recorded is not None:
        recorded[0].append(Launch(kernel, tuple(grid), args, kwargs))
        if not recorded[1]:
            return
    warmed = _warming_up.get()
    if warmed is not None:
        warmed.add(kernel)
        kernel.warmup(*args, grid=grid, **kwargs)
    else:
        kernel[grid](*args, **kwargs)


def forget_unfinished(kernels) -> int:
    """Drop compiles still pending (or failed) from the JIT caches of `kernels`, so that their
    next launch compiles afresh instead of waiting on a dead thread pool or re-raising an old
    error; returns how many were dropped."""
    dropped = 0
    for fn in kernels:
        for cache in getattr(fn, "device_caches", {}).values():
            kernel_cache = cache[0]
            for key in [k for k, v in kernel_cache.items() if type(v).__name__ == "FutureKernel"]:
                del kernel_cache[key]
                dropped += 1
    return dropped


def can_precompile() -> bool:
    """Compiled kernels (not the interpreter) and a triton with AsyncCompileMode (>= 3.4)."""
    return not interpreting() and hasattr(triton, "AsyncCompileMode")


@contextlib.contextmanager
def precompiling(workers: int | None = None, progress: str | None = None) -> Iterator[None]:
    """Launches in this block (this thread) are compiled on `workers` threads, not run; the
    block's exit waits for every compile. `progress`: a tqdm label for that wait.

    Raises RuntimeError where `can_precompile()` is False: nothing could be launched there
    without running it.
    """
    if not can_precompile():
        raise RuntimeError("precompiling needs compiled triton kernels (not TRITON_INTERPRET) and triton >= 3.4")
    from concurrent.futures import ThreadPoolExecutor, as_completed

    workers = workers or max(1, min(32, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
    from triton.runtime import _async_compile

    warmed: set = set()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="fastres-compile") as pool:
            mode = triton.AsyncCompileMode(pool)
            with mode:
                token = _warming_up.set(warmed)
                try:
                    yield
                finally:
                    _warming_up.reset(token)
                if progress is not None and mode.raw_futures:
                    from tqdm import tqdm

                    for _ in tqdm(as_completed(mode.raw_futures), total=len(mode.raw_futures), desc=progress,
                                  unit="kernel", disable=None, leave=False):
                        pass
    except BaseException:
        # A failed compile leaves triton's async mode active in this thread (its __exit__
        # resets it only after every compile succeeded) and the failure in the JIT cache.
        _async_compile.active_mode.set(None)
        forget_unfinished(warmed)
        raise


def _tma_allocator(size: int, alignment: int, stream):
    import torch

    return torch.empty(size, device="cuda", dtype=torch.int8)


def _current_allocator():
    """The allocator triton would call now (None where triton keeps it elsewhere)."""
    try:
        from triton.runtime._allocation import _allocator
    except ImportError:
        return None
    return _allocator.get()


def ensure_tma_allocator() -> None:
    """Give triton the scratch allocator its in-kernel TMA descriptors need (128 bytes per
    descriptor, from torch's caching allocator, so a CUDA graph capture keeps it in its pool).

    triton keeps the allocator in a ContextVar: what one thread sets, another thread, an
    executor's worker or a context copied before the set does not see. So every TMA launch
    calls this first, and it sets the allocator in the context it runs in wherever triton's
    null allocator is still there; an allocator the caller set is kept. The interpreter never
    calls it, but gets it too, so that which contexts have one can be checked on a CPU.
    """
    current = _current_allocator()
    if current is not None and type(current).__name__ != "NullAllocator":
        return
    triton.set_allocator(_tma_allocator)


def has_tma_allocator() -> bool:
    """Whether a TMA launch in the current thread and context would find an allocator."""
    current = _current_allocator()
    return current is not None and type(current).__name__ != "NullAllocator"
