"""fastres.benchmark.timing: percentiles and summaries of synthetic timings, the timed loop on
the CPU (calls, rotation, repetition count) and how many input sets to rotate."""
from __future__ import annotations

import math

import pytest
import torch

from fastres.benchmark.timing import MAX_ROTATION_SETS, TimingOptions, measure, percentile, rotation_count, summarize


@pytest.mark.parametrize("q", [0, 10, 25, 50, 75, 90, 100])
def test_percentile_matches_numpy_linear(q):
    np = pytest.importorskip("numpy")
    values = [float(v) for v in torch.rand(37, generator=torch.Generator().manual_seed(q)) * 10]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_edges():
    assert percentile([3.0], 50) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0  # unsorted input
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_summarize_synthetic_timings():
    samples = [float(i) for i in range(1, 101)]  # 1..100 ms
    s = summarize(samples)
    assert s["reps"] == 100
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["p10_ms"] == pytest.approx(10.9)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["q1_ms"] == pytest.approx(25.75) and s["q3_ms"] == pytest.approx(75.25)
    assert s["iqr_ms"] == pytest.approx(49.5)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["std_ms"] == pytest.approx(math.sqrt(sum((v - 50.5) ** 2 for v in samples) / 99))
    # an outlier moves the mean, not the median
    spiky = [1.0] * 19 + [1000.0]
    t = summarize(spiky)
    assert t["median_ms"] == 1.0 and t["mean_ms"] > 50
    one = summarize([2.5])
    assert one["median_ms"] == one["p10_ms"] == one["p90_ms"] == 2.5 and one["std_ms"] == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_measure_on_cpu_counts_calls_and_rotates():
    calls = []
    opts = TimingOptions(warmup_ms=0.0, rep_ms=0.0, min_warmup=2, min_reps=5, max_reps=5)
    stats = measure(calls.append, 3, device=torch.device("cpu"), options=opts)
    assert stats["reps"] == 5 and stats["warmup_calls"] == 2
    assert calls == [0, 1, 2, 0, 1, 2, 0]  # warm-up and timed calls cycle the input sets
    assert stats["median_ms"] >= 0 and stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


def test_measure_fills_rep_ms_within_bounds():
    import time

    opts = TimingOptions(warmup_ms=5.0, rep_ms=20.0, min_warmup=1, min_reps=3, max_reps=8)
    stats = measure(lambda i: time.sleep(0.002), 1, device=torch.device("cpu"), options=opts)
    assert 3 <= stats["reps"] <= 8
    assert stats["median_ms"] >= 1.5


def test_rotation_count():
    l2 = 50 * 2**20
    assert rotation_count(200 * 2**20, l2) == (2, False)  # big sets: two are enough
    n, flush = rotation_count(30 * 2**20, l2)
    assert n == 4 and not flush and n * 30 * 2**20 >= 2 * l2
    n, flush = rotation_count(1000, l2)  # tiny sets: capped, so L2 is flushed as well
    assert n == MAX_ROTATION_SETS and flush
