"""The batch shapes a server runs the engine at, each built (and on a GPU CUDA-graphed) once
before the first request: the powers of two below its largest batch, then the largest, and a
batch of n rows padded to the smallest of them that holds it. Shared by `fastres serve`'s
replica (`fastres.scale.serve`) and `fastres bench mlperf`'s system under test
(`fastres.benchmark.mlperf`); imports nothing, so neither pulls the other's dependencies in."""
from __future__ import annotations

MAX_BATCH_LIMIT = 1024


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The captured batch sizes: powers of two below max_batch, then max_batch (8: 1, 2, 4, 8;
    12: 1, 2, 4, 8, 12): at most twice the rows a batch needs, and few CUDA graphs.
    ValueError outside 1..MAX_BATCH_LIMIT."""
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise ValueError(f"max_batch must be between 1 and {MAX_BATCH_LIMIT}, got {max_batch}")
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return (*sizes, max_batch)


def padded_size(n: int, sizes: tuple[int, ...]) -> int:
    """The smallest of `sizes` (ascending, as `batch_sizes` gives them) that holds n rows."""
    return next(s for s in sizes if s >= n)
