"""Activation ranges for post-training quantization: a histogram of |x| per activation tensor,
collected over the calibration batches, and the range (amax) chosen from it.

Activations are quantized symmetrically per tensor, so only |x| matters. `RangeObserver`
keeps, for one tensor, the element count, the count of exact zeros, the running absolute max
and a histogram of |x| over [0, range) in a fixed number of equal bins; `choose_amax` picks
amax by one of `METHODS`; `clipped_fraction` says how much of the observed data an amax clips.

The histogram is exact under growth. Bin b holds the x with b <= float32(|x| * scale) < b + 1:
one float32 multiply by a float32 `scale` (bins per unit of |x|), then truncation. The first
non-zero batch sets scale to the largest float32 that still puts its max in the last bin; a
later batch whose max does not fit halves scale (exact in binary floating point) as often as
needed, and the old counts are summed in runs of 2**k. Halving commutes with float32 rounding
and floor(y / 2**k) = floor(floor(y) / 2**k), so the result is, count for count, a single pass
over all the batches at the final scale: there is no re-binning error. The price is resolution:
after growth the range is under twice the max, so a bin is at most twice as wide as in a
one-pass histogram fitted to the max, and the data spans more than half of the bins.
(pytorch-quantization's HistogramCalibrator keeps the bin width and adds bins instead; its
histogram, and the entropy search over it, grow without bound when a late batch has a far
larger range.)

Methods, for int8 and float8_e4m3fn alike but for entropy:

- "max": the absolute max seen.
- "percentile": the upper edge of the bin where the cumulative count reaches `percentile` % of
  all elements (zeros included), so at least that share is not clipped.
- "entropy": TensorRT's calibration (Migacz 2017, "8-bit Inference with TensorRT", and
  pytorch-quantization's ``_compute_amax_entropy``). For each candidate threshold of i bins:
  P = bins[0:i] with the outliers (bins i and up) folded into bin i-1; Q = bins[0:i] quantized
  to 128 levels: bin j joins run floor(128 j / i), and each run's count is spread evenly over
  its non-empty bins (empty bins stay empty); amax is the i minimising KL(P || Q), the largest
  i on a tie. KL is infinite where bin i-1 is empty but outliers are folded into it.
  Exact zeros (a ReLU output's many) are left out of P and Q: zero is exact at every scale, so
  they say nothing about the threshold, while as a spike in bin 0 they would dominate the
  first run's divergence (pytorch-quantization overwrites bins[0] with bins[1] for that reason).
  The threshold is bin i's lower edge, as in pytorch-quantization (the paper adds half a bin).
  For float8_e4m3fn, entropy is refused (ValueError). Taking e4m3's rounding cells as the runs
  was tried: e4m3 steps are relative, small values sit in cells of a bin or less, and the KL
  measures little but the histogram's own noise (on a Gaussian with one outlier at 40 sigma,
  the choice flipped between 4.7 and 40 with the sample, at KL 0.00103 against 0.00107).
  Use mse (or max, percentile) for float8_e4m3fn.
- "mse": the candidate threshold (the same set as entropy's) minimising the mean squared error
  of the histogram's distribution quantized with it, each bin standing for its centre: int8 by
  the conventions' float32 math, q = min(rint(x * float32(127 / amax)), 127) dequantized by
  float32(amax / 127); float8_e4m3fn by torch's cast of min(x * float32(448 / amax), 448)
  dequantized by float32(amax / 448). Exact zeros are left out (their error is 0 at any scale).

Candidates start at 128 bins: below that an int8 step would be narrower than a histogram bin
and bin centres would no longer stand for the data. So the smallest threshold entropy and mse
can choose is 128 bins: amax / 16 for a one-pass histogram of 2048 bins, amax / 8 after growth.
Outliers more than 8-16 times beyond the bulk's range need more bins (`num_bins`).

The result is always a positive float no larger than the observed max (a threshold above it
only wastes levels). Degenerate cases: an observer that saw only zeros gives `ZERO_AMAX` (1.0)
for every method, since zeros quantize to zero at any scale and 1.0 keeps the scales ordinary;
a result below `MIN_AMAX` (2**-64) is raised to it, so that 127 / amax, 448 / amax and the
scales stay normal float32 numbers. An observer that saw no element raises ValueError, and a
batch with NaN or Inf raises ValueError naming the tensor before it changes anything.

Everything is deterministic for the same batches in the same order: no sampling, integer
counts, the choice made in float64 on the host.
"""
from __future__ import annotations

import math

import numpy as np
import torch

METHODS = ("max", "percentile", "entropy", "mse")
DTYPES = (torch.int8, torch.float8_e4m3fn)
INT8_LEVELS = 128           # 0..127: the non-negative half of symmetric int8
FP8_MAX = 448.0             # float8_e4m3fn's largest finite value
ZERO_AMAX = 1.0
MIN_AMAX = 2.0 ** -64
MIN_CANDIDATE_BINS = 128

_CHUNK = 1 << 24            # elements binned at a time: bounds the temporaries of a huge batch
_CURVE_CHUNK = 1 << 20      # (candidate, bin) pairs evaluated at a time by the curves
_MAX_SCALE = 2.0 ** 126     # a normal float32: the scale of maxima below ~1e-35 stops here
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class RangeObserver:
    """Statistics of |x| of one activation tensor over calibration batches (module docstring).

    name: what errors call the tensor (a layer's name). num_bins: at least 256, so that the
    data, which spans over half of the bins, always offers `MIN_CANDIDATE_BINS` candidates.

    Attributes: count (elements seen), zeros (of which exactly 0), amax (max |x|, a float32
    value), batches (non-empty batches seen), scale (bins per unit of |x|, a float32 value;
    None until a non-zero element is seen) and bin_width (1 / scale).
    """

    def __init__(self, name: str = "activation", *, num_bins: int = 2048):
        if int(num_bins) < 2 * MIN_CANDIDATE_BINS:
            raise ValueError(f"activation {name!r}: num_bins must be at least {2 * MIN_CANDIDATE_BINS}, got {num_bins}")
        self.name = name
        self.num_bins = int(num_bins)
        self.reset()

    def reset(self) -> None:
        """Forget everything observed."""
        self.count = 0
        self.zeros = 0
        self.amax = 0.0
        self.batches = 0
        self.scale: float | None = None
        self._hist: torch.Tensor | None = None    # int64 [num_bins], on the first non-zero batch's device

    @property
    def bin_width(self) -> float | None:
        return None if self.scale is None else 1.0 / self.scale

    def counts(self) -> torch.Tensor:
        """The histogram, int64 [num_bins] on the CPU: bin b counts the |x| in
        [b, b + 1) * bin_width, exact zeros included (in bin 0)."""
        if self._hist is None:
            hist = torch.zeros(self.num_bins, dtype=torch.int64)
            hist[0] = self.zeros
            return hist
        return self._hist.to("cpu", copy=True)

    def observe(self, x: torch.Tensor) -> None:
        """Add one batch of the activation: any shape and layout, float32, float16 or bfloat16
        (float64 is rounded to float32), on any device. Raises ValueError on NaN or Inf."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"activation {self.name!r}: expected a floating-point tensor, got {got}")
        x = x.detach()
        n = x.numel()
        if n == 0:
            return
        lo, hi = torch.aminmax(x)
        batch_max = float(torch.maximum(-lo, hi))      # NaN if any element is NaN
        if not batch_max <= _FLOAT32_MAX:
            what = ("NaN" if math.isnan(batch_max) else "Inf" if math.isinf(batch_max)
                    else f"|x| = {batch_max:.3e}, beyond float32's range,")
            raise ValueError(f"activation {self.name!r}: {what} in calibration batch {self.batches + 1} "
                             f"(shape {tuple(x.shape)}, {x.dtype}); a range needs finite values")
        peak = np.float32(batch_max)                   # float64 data rounds as its elements will
        self._fit(peak, x.device)
        zeros = n if self.scale is None else self._bin(_flat(x))
        self.count += n
        self.zeros += zeros
        self.amax = max(self.amax, float(peak))
        self.batches += 1

    def _fit(self, peak: np.float32, device: torch.device) -> None:
        """Set or grow the scale so that float32(peak * scale) < num_bins (see the module docstring)."""
        nb = np.float32(self.num_bins)
        with np.errstate(over="ignore"):               # peak * scale may overflow to inf: it then grows
            if self.scale is None:
                if peak == 0:
                    return
                scale = np.float32(min(self.num_bins / float(peak), _MAX_SCALE))
                while peak * scale >= nb:              # the float32 product the binning computes
                    scale = np.nextafter(scale, np.float32(0))
                self.scale = float(scale)
                self._hist = torch.zeros(self.num_bins, dtype=torch.int64, device=device)
                self._hist[0] = self.zeros             # zero batches seen before any range existed
                return
            scale, k = np.float32(self.scale), 0
            while peak * scale >= nb:
                scale, k = scale / np.float32(2), k + 1
        if k:
            self._hist = _merge(self._hist, k)
            self.scale = float(scale)

    def _bin(self, flat: torch.Tensor) -> int:
        """Add flat's |x| to the histogram; returns how many were exactly zero."""
        hist, nonzero = None, None
        for start in range(0, flat.numel(), _CHUNK):
            a = flat[start:start + _CHUNK].to(torch.float32, copy=True).abs_()
            nz = torch.count_nonzero(a)
            # _fit made |x| * scale < num_bins for every element, so truncation is the floor.
            h = torch.bincount(a.mul_(self.scale).to(torch.int32), minlength=self.num_bins)
            hist = h if hist is None else hist.add_(h)
            nonzero = nz if nonzero is None else nonzero.add_(nz)
        self._hist += hist.to(self._hist.device)
        return flat.numel() - int(nonzero)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """x's elements as one dimension, a view in memory order where x is dense in some order of
    its dimensions (channels_last, a transpose): a histogram does not care about the order."""
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    return x.permute(order).reshape(-1)


def _merge(hist: torch.Tensor, k: int) -> torch.Tensor:
    """hist at 2**-k times its scale: bin b's count moves to bin b >> k."""
    nb = hist.numel()
    run = min(1 << k, nb)                   # from nb on, every bin moves to bin 0
    padded = torch.cat([hist, hist.new_zeros((-nb) % run)])
    merged = padded.view(-1, run).sum(1)
    out = hist.new_zeros(nb)
    out[:merged.numel()] = merged
    return out


def choose_amax(observer: RangeObserver, method: str, *, dtype: torch.dtype = torch.int8,
                percentile: float = 99.99) -> float:
    """The activation range (amax, > 0) of `observer`'s data by `method` (one of `METHODS`) for
    quantization to `dtype` (torch.int8 or torch.float8_e4m3fn; "entropy" is int8's only);
    `percentile` in (0, 100] is used by "percentile". See the module docstring for each method
    and the degenerate cases. Raises ValueError for an observer that saw no element."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: expected one of {', '.join(METHODS)}")
    _check_dtype(dtype)
    if method == "entropy" and dtype != torch.int8:
        raise ValueError(f"entropy calibration is defined for int8, not {dtype}: on e4m3's relative steps "
                         f"its KL measures little but histogram noise; use 'mse', 'max' or 'percentile'")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    amax = _observed_max(observer)
    if amax == 0:
        return ZERO_AMAX
    if method == "max":
        chosen = amax
    elif method == "percentile":
        cumulative = torch.cumsum(observer.counts(), 0).double()
        b = int(torch.searchsorted(cumulative, percentile / 100 * observer.count))
        chosen = (b + 1) * observer.bin_width
    else:
        counts = _nonzero_counts(observer)
        bins, values = kl_divergences(counts) if method == "entropy" else quantization_mse(counts, dtype)
        chosen = amax if bins.numel() == 0 else int(bins[_last_argmin(values)]) * observer.bin_width
    return max(min(chosen, amax), MIN_AMAX)


def clipped_fraction(observer: RangeObserver, amax: float) -> float:
    """The share of `observer`'s elements with |x| > amax, from the histogram: 0.0 from the
    observed max up; exact at bin edges (where percentile, entropy and mse put amax) but for
    elements equal to amax; elsewhere linear within the bin holding amax (off by at most that
    bin's count / count)."""
    if not amax >= 0:
        raise ValueError(f"activation {observer.name!r}: amax must be >= 0, got {amax}")
    if amax >= _observed_max(observer):
        return 0.0
    counts = _nonzero_counts(observer)
    pos = amax * observer.scale                     # in bins; below num_bins since amax < max
    b = min(int(pos), observer.num_bins - 1)
    above = counts[b + 1:].sum() + counts[b] * (b + 1 - pos)
    return float(above) / observer.count


def kl_divergences(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 entropy calibration's curve (module docstring) over a histogram of |x|.

    counts: [B] non-negative counts of |x| in equal bins from 0 (exact zeros left out).
    Returns (bins, kl): int64 [M], the candidate thresholds in bins, from 128 to the last
    non-empty bin + 1 (none if that is below 128), and float64 [M], KL(P || Q) of each.
    Only non-empty bins enter the sums, through prefix sums over them: the cost is
    candidates x (non-empty bins + levels), not candidates x bins.
    """
    h, bins = _candidates(counts)
    if not bins.numel():
        return bins, torch.zeros(0, dtype=torch.float64)
    filled = h.nonzero().reshape(-1)                 # the non-empty bins, ascending
    hf = h[filled]
    total = hf.sum()
    zero = hf.new_zeros(1)
    count_sum = torch.cat([zero, hf.cumsum(0)])      # count_sum[k]: the first k non-empty bins
    hlogh_sum = torch.cat([zero, (hf * hf.log()).cumsum(0)])
    out = []
    for i in bins.split(max(1, _CURVE_CHUNK // (INT8_LEVELS + 1))):
        # in bins, ceil(128 g / i): level g holds bins starts[g] .. starts[g + 1] - 1; starts[128] = i
        starts = (torch.arange(INT8_LEVELS + 1) * i[:, None] + INT8_LEVELS - 1) // INT8_LEVELS
        edges = torch.searchsorted(filled, starts)   # the same in non-empty bins
        inside = edges[:, -1]                        # how many non-empty bins lie below bin i
        run_count = count_sum[edges[:, 1:]] - count_sum[edges[:, :-1]]
        run_filled = (edges[:, 1:] - edges[:, :-1]).double().clamp_min(1)
        inner = count_sum[inside]                    # Q's total; P's is `total`
        outliers = total - inner                     # folded into bin i - 1 of P
        last = h[i - 1]                              # in the top level, 127, as i >= 128
        q_last = torch.where(last > 0, run_count[:, -1] / run_filled[:, -1], 0.0)
        # sum(p log p) - sum(p log q) over P's bins, with q = run count / its non-empty bins;
        # p > 0 = q (outliers folded into an empty bin) gives +inf, as it should.
        p_log_p = hlogh_sum[inside] - torch.xlogy(last, last) + torch.xlogy(last + outliers, last + outliers)
        p_log_q = (torch.xlogy(run_count, run_count / run_filled).sum(1)
                   + torch.where(outliers > 0, outliers * q_last.log(), 0.0))
        kl = (p_log_p - p_log_q) / total + torch.log(inner / total)   # P and Q normalized
        out.append(torch.where(inner > 0, kl, math.inf))
    return bins, torch.cat(out)


def quantization_mse(counts: torch.Tensor, dtype: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """The mse calibration's curve (module docstring) over a histogram of |x|.

    counts: [B] non-negative counts of |x| in equal bins from 0 (exact zeros left out).
    Returns (bins, mse): int64 [M], the candidate thresholds in bins (as kl_divergences), and
    float64 [M], the mean squared error per counted element, in units of a bin width squared.
    """
    _check_dtype(dtype)
    h, bins = _candidates(counts)
    if not bins.numel():
        return bins, torch.zeros(0, dtype=torch.float64)
    filled = h.nonzero().reshape(-1)
    hf = h[filled]
    centres = filled.double() + 0.5
    levels = INT8_LEVELS - 1 if dtype == torch.int8 else FP8_MAX
    out = []
    for i in bins.split(max(1, _CURVE_CHUNK // filled.numel())):
        t = i[:, None].double()
        inv = (levels / t).float()                   # the conventions: float32(levels / amax)
        step = (t / levels).float().double()         # float32(amax / levels)
        y = (centres.float() * inv).clamp_(max=levels)
        q = y.round_() if dtype == torch.int8 else y.to(torch.float8_e4m3fn).float()
        out.append(((q.double() * step - centres) ** 2 * hf).sum(1) / hf.sum())
    return bins, torch.cat(out)


def _observed_max(observer: RangeObserver) -> float:
    if observer.count == 0:
        raise ValueError(f"activation {observer.name!r}: no calibration data observed (no batch reached it, "
                         f"or every batch was empty)")
    return observer.amax


def _nonzero_counts(observer: RangeObserver) -> torch.Tensor:
    """The histogram as float64, exact zeros left out of bin 0."""
    counts = observer.counts().double()
    counts[0] -= observer.zeros
    return counts


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"calibration for {dtype}: expected torch.int8 or torch.float8_e4m3fn")


def _candidates(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """counts as float64 up to the last non-empty bin, and the candidate thresholds in bins."""
    h = counts.detach().to("cpu", torch.float64).reshape(-1)
    if (h < 0).any():
        raise ValueError("histogram counts must be non-negative")
    filled = h.nonzero()
    top = int(filled[-1]) + 1 if filled.numel() else 0
    return h[:top], torch.arange(MIN_CANDIDATE_BINS, max(top + 1, MIN_CANDIDATE_BINS))


def _last_argmin(values: torch.Tensor) -> int:
    """Index of the last minimum (the largest threshold on a tie)."""
    hits = (values == values.min()).nonzero()
    return int(hits[-1])


__all__ = ["RangeObserver", "choose_amax", "clipped_fraction", "kl_divergences", "quantization_mse",
           "METHODS", "ZERO_AMAX", "MIN_AMAX"]
