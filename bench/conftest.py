"""pytest-benchmark set-up for bench/: the device, the interpreter, and a timer that waits
for the device.

On a machine without CUDA the kernels run through triton's interpreter (set before triton is
first imported, which is why it happens here at import time) at tiny shapes only.
"""
from __future__ import annotations

import itertools
import os
import time

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"


def synced_perf_counter() -> float:
    """time.perf_counter after the device has finished all queued work."""
    torch.cuda.synchronize()
    return time.perf_counter()


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def device_benchmark(benchmark):
    """pytest-benchmark's fixture with a timer that synchronizes the device, so a round measures
    launch + device time as the host sees it (no overlap with the next round).

    The harness (`fastres bench`) times with CUDA events instead; expect these numbers to sit a
    few microseconds above its medians for short kernels.
    """
    if ON_GPU:
        if hasattr(benchmark, "_timer"):
            benchmark._timer = synced_perf_counter
        else:  # pragma: no cover - a pytest-benchmark without the attribute
            raise pytest.UsageError("this pytest-benchmark has no _timer attribute: cannot install the synchronizing timer")
    return benchmark


def run_rotating(benchmark, fn, n_sets: int, *, rounds: int, warmup_rounds: int) -> None:
    """benchmark.pedantic over fn(i), i cycling through n_sets input sets (one call per round)."""
    counter = itertools.count()
    benchmark.pedantic(
        fn, setup=lambda: ((next(counter) % n_sets,), {}), rounds=rounds, warmup_rounds=warmup_rounds, iterations=1,
    )
