"""How the harness times a call: per-repetition statistics, the timing options, how many
input sets to rotate, the measurement itself (CUDA events, L2 flush) and the run's time budget.

Warm-up calls come first (at least ``--warmup-ms``), then enough repetitions to fill ``--rep-ms``
(between ``--min-reps`` and ``--max-reps``), each timed with its own pair of CUDA events; the
median, p10/p90 and quartiles are reported. End-to-end times are what a caller sees (host
overhead included where the GPU waits for it); per-layer times are device times (the GPU spins
before each repetition until the host has enqueued it). Inputs rotate over several buffer sets
whose total exceeds twice the L2 cache (per-layer sets include weights, bias, residual and
output); where the set count cap keeps the total under that, L2 is also flushed (a memset of
twice its size, outside the timed region) before every repetition.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import torch

MAX_ROTATION_SETS = 32


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default method)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(float(v) for v in values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> dict:
    """Median and spread of per-repetition times in milliseconds."""
    if not samples_ms:
        raise ValueError("no timing samples")
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    var = sum((v - mean) ** 2 for v in samples_ms) / (n - 1) if n > 1 else 0.0
    q1, q3 = percentile(samples_ms, 25), percentile(samples_ms, 75)
    return {
        "median_ms": percentile(samples_ms, 50),
        "p10_ms": percentile(samples_ms, 10),
        "p90_ms": percentile(samples_ms, 90),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "mean_ms": mean,
        "std_ms": math.sqrt(var),
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "reps": n,
    }


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_warmup: int = 2
    min_reps: int = 10
    max_reps: int = 1000


SMOKE_TIMING = TimingOptions(warmup_ms=0.0, rep_ms=0.0, min_warmup=0, min_reps=1, max_reps=1)


def rotation_count(set_bytes: int, l2_bytes: int, max_sets: int = MAX_ROTATION_SETS) -> tuple[int, bool]:
    """How many input sets to cycle so their total exceeds 2 x L2, and whether L2 must also be
    flushed between repetitions because the cap `max_sets` keeps the total under that."""
    target = 2 * l2_bytes
    n = max(2, min(max_sets, -(-target // max(1, set_bytes))))
    return n, n * set_bytes < target


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[int], object],
    n_sets: int,
    *,
    device: torch.device,
    options: TimingOptions = TimingOptions(),
    flush_bytes: int = 0,
    device_time: bool = False,
) -> dict:
    """Time `fn(i)` (i cycles over the `n_sets` input sets): warm-up, then one pair of CUDA
    events per repetition (host clock around a synchronized call on the CPU).

    The repetition count fills `options.rep_ms` at the per-call time seen during warm-up,
    within [min_reps, max_reps]. With `flush_bytes`, a buffer that size is zeroed before every
    repetition, outside the timed region, so that L2 holds nothing of the inputs.

    device_time=False (end to end): the events see what a caller sees, host overhead included
    when the GPU waits for the host (eager at small batch). device_time=True (single kernels):
    before each repetition the GPU spins (torch.cuda._sleep) for twice the host time of one
    call, so that the host has enqueued the whole repetition before its start event runs and
    the events measure device time alone, not launch latency.
    """
    i = 0
    t0 = time.perf_counter()
    n = 0
    host_ms: list[float] = []
    while n < options.min_warmup or (time.perf_counter() - t0) * 1e3 < options.warmup_ms:
        t = time.perf_counter()
        fn(i % n_sets)
        host_ms.append((time.perf_counter() - t) * 1e3)
        i += 1
        n += 1
        sync(device)
    per_call_ms = (time.perf_counter() - t0) * 1e3 / n if n else 0.0
    reps = options.min_reps
    if per_call_ms > 0:
        reps = int(min(options.max_reps, max(options.min_reps, math.ceil(options.rep_ms / per_call_ms))))
    samples: list[float] = []
    lead_cycles = 0
    if device.type == "cuda":
        if device_time and hasattr(torch.cuda, "_sleep"):
            host = percentile(host_ms[1:] or host_ms or [0.05], 50)
            lead_ms = min(2.0, max(0.05, 2.0 * host))
            lead_cycles = int(lead_ms * 1e-3 * _clock_hz(device))
        flush = torch.empty(flush_bytes // 4, dtype=torch.int32, device=device) if flush_bytes else None
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        sync(device)
        for r in range(reps):
            if lead_cycles:
                torch.cuda._sleep(lead_cycles)
            if flush is not None:
                flush.zero_()
            starts[r].record()
            fn(i % n_sets)
            ends[r].record()
            i += 1
        sync(device)
        samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        del flush
    else:
        for r in range(reps):
            t = time.perf_counter()
            fn(i % n_sets)
            samples.append((time.perf_counter() - t) * 1e3)
            i += 1
    stats = summarize(samples)
    stats["warmup_calls"] = n
    stats["timing_mode"] = "device" if lead_cycles else ("events" if device.type == "cuda" else "host")
    return stats


def _clock_hz(device: torch.device) -> float:
    """The SM clock for sizing a spin: the device's reported rate, else 2 GHz (Hopper's boost
    is ~1.98 GHz; a slower clock only makes the spin longer)."""
    khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0) or 0
    return float(khz) * 1e3 if khz > 0 else 2.0e9


class Budget:
    """A wall-clock budget for a whole bench run: measurements stop once it is spent."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()

    def spent(self) -> bool:
        return self.seconds is not None and time.perf_counter() - self.start > self.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
