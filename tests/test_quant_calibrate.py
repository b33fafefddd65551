"""fastres.quant.calibrate: the histogram of |x| (exact under growth), the four range methods on
distributions whose answer is known, the entropy curve against a direct implementation of the
published algorithm, clipped fractions, and the degenerate cases."""
from __future__ import annotations

import math

import pytest
import torch

from fastres.quant.calibrate import (METHODS, MIN_AMAX, ZERO_AMAX, RangeObserver, choose_amax,
                                     clipped_fraction, kl_divergences)

FP8 = torch.float8_e4m3fn
DTYPES = [torch.int8, FP8]
# entropy is int8's alone (the module docstring says why)
CASES = [(torch.int8, m) for m in METHODS] + [(FP8, m) for m in METHODS if m != "entropy"]


def observed(*batches: torch.Tensor, num_bins: int = 2048) -> RangeObserver:
    obs = RangeObserver("layer1.0.conv2", num_bins=num_bins)
    for x in batches:
        obs.observe(x)
    return obs


def quantization_error(x: torch.Tensor, amax: float, dtype: torch.dtype) -> float:
    """Mean squared error of x quantized with amax as the quantization conventions do it."""
    levels = 127 if dtype == torch.int8 else 448
    inv = torch.tensor(levels / amax, dtype=torch.float32)
    step = torch.tensor(amax / levels, dtype=torch.float32).double()
    y = x * inv
    q = torch.round(y).clamp(-128, 127) if dtype == torch.int8 else y.clamp(-448, 448).to(FP8).float()
    return ((q.double() * step - x.double()) ** 2).mean().item()


def test_histogram_grows_exactly(device):
    """Batches of growing range (1e-4 to 300: past num_bins doublings), zeros first, float16 in
    channels_last: the counts equal one pass over all the data at the final scale, bit for bit,
    and a bin is less than twice as wide as in a one-pass histogram fitted to the max."""
    batches = [
        torch.zeros(100),
        torch.randn(5000) * 1e-4,
        (torch.randn(2, 8, 5, 7) * 2).half().contiguous(memory_format=torch.channels_last),
        torch.relu(torch.randn(4000)) * 300,
        torch.randn(3000).bfloat16(),
    ]
    obs = observed(*[b.to(device) for b in batches])
    data = torch.cat([b.float().reshape(-1) for b in batches]).abs()
    assert obs.count == data.numel() and obs.zeros == int((data == 0).sum()) and obs.batches == 5
    assert obs.amax == data.max().item()
    expected = torch.bincount((data * obs.scale).to(torch.int64), minlength=obs.num_bins)
    assert torch.equal(obs.counts(), expected), "grown histogram != one pass at the final scale"
    one_pass = observed(data)
    assert one_pass.bin_width <= obs.bin_width < 2 * one_pass.bin_width
    assert obs.num_bins / 2 <= obs.amax * obs.scale < obs.num_bins


def test_uniform_data_all_methods_near_the_max():
    obs = observed(torch.rand(2 ** 16) * 2 - 1, num_bins=512)
    for dtype, method in CASES:
        amax = choose_amax(obs, method, dtype=dtype)
        assert 0.95 * obs.amax <= amax <= obs.amax, (dtype, method, amax, obs.amax)


def test_gaussian_with_outliers():
    """One value at 40 sigma among 2**19: max is the outlier; percentile, entropy and int8 mse
    clip it, staying above 3 sigma; mse is at least as good as the alternatives on the data."""
    x = torch.randn(2 ** 19)
    x[0] = -40.0
    obs = observed(x)
    assert choose_amax(obs, "max") == 40.0
    chosen = {(dtype, method): choose_amax(obs, method, dtype=dtype) for dtype, method in CASES}
    for method in ("percentile", "entropy", "mse"):
        assert 3 < chosen[torch.int8, method] < 20, (method, chosen[torch.int8, method])
    # e4m3's relative steps make clipping the outlier cost more than it saves
    assert chosen[FP8, "mse"] > 30
    for dtype in DTYPES:
        best = chosen[dtype, "mse"]
        rivals = [obs.amax, chosen[dtype, "percentile"], 0.8 * best, min(1.25 * best, obs.amax)]
        err = quantization_error(x, best, dtype)
        assert err <= 1.01 * min(quantization_error(x, r, dtype) for r in rivals), dtype


def direct_kl(counts: list[int]) -> dict[int, float]:
    """Migacz 2017 as written, one candidate and one bin at a time: {bins i: KL(P || Q)}."""
    top = max(j for j, c in enumerate(counts) if c) + 1
    curve = {}
    for i in range(128, top + 1):
        p = counts[:i]
        p[i - 1] += sum(counts[i:])
        level = [j * 128 // i for j in range(i)]
        mass, used = {}, {}
        for j in range(i):
            mass[level[j]] = mass.get(level[j], 0) + counts[j]
            used[level[j]] = used.get(level[j], 0) + (counts[j] > 0)
        q = [mass[level[j]] / used[level[j]] if counts[j] else 0.0 for j in range(i)]
        kl = 0.0
        for pj, qj in zip(p, q):
            if pj:
                kl = math.inf if qj == 0 else kl + pj / sum(p) * math.log(pj / sum(p) / (qj / sum(q)))
        curve[i] = kl
    return curve


def test_entropy_matches_direct_implementation():
    """A 300-bin histogram with exact zeros, a gap and outliers: the same KL for every candidate
    (infinite where the last bin is empty but holds outliers), the same choice."""
    x = torch.cat([torch.randn(20000).abs(), torch.zeros(3000), torch.tensor([9.0, 9.5, 10.0])])
    obs = observed(x, num_bins=300)
    counts = obs.counts()
    counts[0] -= obs.zeros
    reference = direct_kl(counts.tolist())
    bins, kl = kl_divergences(counts)
    assert bins.tolist() == list(reference)
    ref = torch.tensor(list(reference.values()), dtype=torch.float64)
    assert torch.equal(torch.isinf(kl), torch.isinf(ref)) and torch.isinf(ref).any()
    finite = torch.isfinite(ref)
    assert torch.allclose(kl[finite], ref[finite], rtol=1e-9, atol=1e-12)
    best = max(reference, key=lambda i: (-reference[i], i))       # least KL, then the largest i
    assert choose_amax(obs, "entropy") == min(best * obs.bin_width, obs.amax)


def test_percentile_and_clipped_fraction():
    x = torch.randn(2 ** 16)
    x[:1000] = 0
    obs = observed(x)
    a = x.abs()
    amax = choose_amax(obs, "percentile", percentile=99.0)
    exact = (a > amax).double().mean().item()
    assert exact <= 0.01 and abs(clipped_fraction(obs, amax) - exact) <= 1 / x.numel()
    assert choose_amax(obs, "percentile", percentile=100) == obs.amax
    # within a bin: linear, off by at most that bin's share
    some = 1.2345
    in_bin = ((a * obs.scale).floor() == math.floor(some * obs.scale)).double().mean().item()
    assert abs(clipped_fraction(obs, some) - (a > some).double().mean().item()) <= in_bin
    assert clipped_fraction(obs, obs.amax) == 0.0
    assert clipped_fraction(obs, 0.0) == pytest.approx((a > 0).double().mean().item())


def test_degenerate_cases():
    empty = observed(torch.empty(0, 3))
    for call in (lambda: choose_amax(empty, "max"), lambda: clipped_fraction(empty, 1.0)):
        with pytest.raises(ValueError, match="'layer1.0.conv2': no calibration data"):
            call()
    zeros = observed(torch.zeros(4, 3), torch.zeros(7))
    assert all(choose_amax(zeros, method, dtype=dtype) == ZERO_AMAX for dtype, method in CASES)
    assert clipped_fraction(zeros, ZERO_AMAX) == 0.0
    constant = observed(torch.full((1000,), -5.0))
    for dtype, method in CASES:
        assert 5.0 - constant.bin_width <= choose_amax(constant, method, dtype=dtype) <= 5.0
    # tiny values: fewer than 128 bins filled (the scale stops at 2**126), amax raised to MIN_AMAX
    tiny = observed(torch.randn(1000) * 1e-37)
    assert all(choose_amax(tiny, m) == MIN_AMAX for m in METHODS)

    obs = observed(torch.randn(100))
    before = (obs.count, obs.amax, obs.counts())
    for bad, what in ((float("nan"), "NaN"), (float("inf"), "Inf"), (-float("inf"), "Inf")):
        x = torch.randn(10)
        x[3] = bad
        with pytest.raises(ValueError, match=f"'layer1.0.conv2': {what} in calibration batch 2"):
            obs.observe(x.half())
    assert (obs.count, obs.amax) == before[:2] and torch.equal(obs.counts(), before[2])
    with pytest.raises(TypeError, match="floating-point"):
        obs.observe(torch.ones(3, dtype=torch.int8))
    for kwargs, match in (({"method": "kl"}, "unknown calibration method"),
                          ({"method": "max", "dtype": torch.float16}, "expected torch.int8"),
                          ({"method": "entropy", "dtype": FP8}, "entropy calibration is defined for int8"),
                          ({"method": "percentile", "percentile": 0}, "percentile")):
        with pytest.raises(ValueError, match=match):
            choose_amax(obs, **kwargs)
    with pytest.raises(ValueError, match="num_bins"):
        RangeObserver(num_bins=128)
