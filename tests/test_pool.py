"""Parity of fastres.kernels.max_pool2d with torch: F.max_pool2d in float64.

A maximum is a selection, so the result must be bitwise equal to the reference (cast back).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config, use_config
from helpers import DTYPES, KERNEL_RTOL, assert_close, nhwc, rand_nhwc


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_max_pool2d(x, kernel_size=3, stride=2, padding=1):
    """torch reference in float64 on the CPU."""
    return F.max_pool2d(x.double().cpu(), kernel_size, stride if stride is not None else kernel_size, padding)


def poisoned(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)


def check(x, kernel_size=3, stride=2, padding=1, *, config=None):
    ref = ref_max_pool2d(x, kernel_size, stride, padding)
    out = poisoned(tuple(ref.shape), x.dtype, x.device)
    y = K.max_pool2d(x, kernel_size, stride, padding, out=out, config=config)
    assert y.data_ptr() == out.data_ptr() and y.dtype == x.dtype
    assert_close(y, ref, KERNEL_RTOL[x.dtype], what="max_pool2d")
    assert torch.equal(y.double().cpu(), ref), "a max pool must select exactly"
    return y


CASES = [
    # shape, kernel_size, stride, padding
    ((2, 64, 12, 12), 3, 2, 1),      # the ResNet stem pool on an even size
    ((3, 64, 11, 9), 3, 2, 1),       # odd, non-square
    ((1, 3, 7, 7), 3, 2, 1),         # C = 3
    ((1, 24, 5, 6), 2, 2, 0),
    ((2, 40, 6, 5), 3, 1, 1),
    ((1, 17, 9, 8), (3, 2), (2, 1), (1, 0)),
    ((2, 8, 7, 7), 3, None, 0),      # stride=None means kernel_size
    ((1, 130, 1, 1), 1, 1, 0),       # C past one channel block
    ((2, 5, 2, 3), 3, 2, 1),         # every window is mostly padding
    ((1, 8, 1, 1), 3, 2, 1),         # a 1x1 map through the stem pool
    ((2, 6, 8, 7), 2, 3, 1),         # stride past the kernel: gaps between windows
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_max_pool2d(case, dtype, device):
    shape, k, s, p = case
    check(rand_nhwc(*shape, dtype=dtype, device=device), k, s, p)


def test_defaults_are_the_resnet_stem_pool(device):
    x = rand_nhwc(2, 16, 9, 10, device=device)
    y = K.max_pool2d(x)
    assert y.shape == (2, 16, 5, 5) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.double().cpu(), ref_max_pool2d(x))


def test_all_negative_input(device):
    """Padding must count as -inf, never as 0."""
    x = -rand_nhwc(2, 8, 7, 7, device=device).abs() - 1
    y = check(x)
    assert (y < 0).all()


@pytest.mark.parametrize("cfg", [Config(16, 16), Config(32, 8), Config(64, 64)], ids=lambda c: c.name)
def test_forced_config(cfg, device):
    """Pixel and channel tails: P = 2*6*5 = 60, C = 40."""
    x = rand_nhwc(2, 40, 11, 9, device=device)
    check(x, config=cfg)
    with use_config("max_pool2d", cfg):
        check(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_nan_inf_propagate(dtype, device):
    x = rand_nhwc(2, 6, 9, 9, dtype=dtype, device=device)
    x[0, 1, 4, 4] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    x[1, 3, 8, 8] = float("-inf")
    x[0, 4, 2:5, 2:5] = float("-inf")      # a whole window of -inf gives -inf
    y = K.max_pool2d(x).double().cpu()
    ref = ref_max_pool2d(x)
    assert torch.isnan(ref).any() and torch.isinf(ref).any()
    assert torch.equal(torch.isnan(y), torch.isnan(ref)), "NaN positions differ from torch"
    ok = ~torch.isnan(ref)
    assert torch.equal(y[ok], ref[ok])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch(dtype, device):
    x = rand_nhwc(0, 8, 7, 7, dtype=dtype, device=device)
    y = K.max_pool2d(x)
    assert y.shape == (0, 8, 4, 4) and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)


def test_bad_input(device):
    x = rand_nhwc(2, 8, 7, 7, device=device)
    with pytest.raises(ValueError, match=r"padding must be between 0 and half the kernel size \(3, 3\), got \(2, 2\)"):
        K.max_pool2d(x, 3, 2, 2)
    with pytest.raises(ValueError, match=r"padding must be between .*\(2, 2\), got \(0, -1\)"):
        K.max_pool2d(x, 2, 2, (0, -1))
    with pytest.raises(ValueError, match=r"kernel_size and stride must be >= 1, got kernel_size=3, stride=0"):
        K.max_pool2d(x, 3, 0, 1)
    with pytest.raises(ValueError, match=r"kernel_size and stride must be >= 1, got kernel_size=0"):
        K.max_pool2d(x, 0, 1, 0)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got 2.5"):
        K.max_pool2d(x, 2.5)
    with pytest.raises(ValueError, match=r"empty output: input 7x7 with kernel \(9, 9\)"):
        K.max_pool2d(x, 9, 1, 0)
    with pytest.raises(ValueError, match=r"x must have rank 4, got rank 3"):
        K.max_pool2d(x[0])
    with pytest.raises(ValueError, match=r"x must be channels_last .*shape \(2, 8, 7, 7\)"):
        K.max_pool2d(x.contiguous())
    with pytest.raises(TypeError, match=r"x must have dtype in .*got torch.int64"):
        K.max_pool2d(x.long())
    with pytest.raises(ValueError, match=r"out must have shape \(2, 8, 4, 4\) \(the output's\), got \(2, 8, 7, 7\)"):
        K.max_pool2d(x, out=poisoned((2, 8, 7, 7), torch.float32, device))
    with pytest.raises(ValueError, match=r"out is on meta but x is on .*one device"):
        K.max_pool2d(x, out=torch.empty((2, 8, 4, 4), device="meta"))


def test_cpu_without_interpreter(monkeypatch):
    x = rand_nhwc(1, 4, 5, 5, device=torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        K.max_pool2d(x)


# -- 8-bit codes: pooled in their dtype, keeping their scale ------------------------------------

QDTYPES = [torch.int8, torch.float8_e4m3fn]


def rand_codes(shape, dtype, device, *, negative=False):
    """Every code of `dtype` but NaN, drawn uniformly (e4m3fn: normals, subnormals, +-0, +-448);
    negative: only negative ones."""
    if dtype == torch.int8:
        q = torch.randint(-128, 0 if negative else 128, shape, dtype=torch.int32).to(torch.int8)
    else:
        bits = torch.randint(0x81 if negative else 0, 0xFF, shape, dtype=torch.int32)
        bits = torch.where(bits == 0x7F, 0, bits)  # 0x7F is NaN; 0xFF is out of the draw
        q = bits.to(torch.uint8).view(torch.float8_e4m3fn)
    return nhwc(q).to(device)


def check_codes(x, kernel_size=3, stride=2, padding=1, *, config=None):
    """The requantized max of the dequantized values (a positive scale drops out of the max):
    the same bits, but for a +0 / -0 tie in e4m3fn, where either is right."""
    ref = F.max_pool2d(x.float().cpu(), kernel_size, stride if stride is not None else kernel_size, padding)
    out = nhwc(torch.full(tuple(ref.shape), 0x7F, dtype=torch.uint8).view(torch.int8).view(x.dtype)).to(x.device)
    y = K.max_pool2d(x, kernel_size, stride, padding, out=out, config=config)
    assert y.data_ptr() == out.data_ptr() and y.dtype == x.dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.float().cpu(), ref), "an 8-bit max pool must select exactly"
    bits = lambda t: t.cpu().view(torch.int8).int()  # noqa: E731
    tie = ref == 0
    assert torch.equal(bits(y)[~tie], bits(ref.to(x.dtype))[~tie])
    return y


@pytest.mark.parametrize("dtype", QDTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[8]], ids=["odd", "asymmetric", "mostly_padding"])
def test_max_pool2d_8bit(case, dtype, device):
    shape, k, s, p = case
    check_codes(rand_codes(shape, dtype, device), k, s, p)


@pytest.mark.parametrize("dtype", QDTYPES, ids=dtype_id)
def test_8bit_padding_never_wins(dtype, device):
    """All codes negative, down to the least one (-128; e4m3fn -448): padding (0 as a value)
    must not appear; channel and pixel tails of a forced tile."""
    x = rand_codes((2, 20, 7, 7), dtype, device, negative=True)
    x[0, :, :2, :2] = x.new_full((), -128 if dtype == torch.int8 else -448.0)
    y = check_codes(x, config=Config(16, 16))
    assert (y.float() < 0).all()


def test_e4m3_nan_wins(device):
    x = rand_codes((1, 4, 6, 6), torch.float8_e4m3fn, device)
    x.view(torch.uint8)[0, 1, 2, 2] = 0x7F   # +NaN
    x.view(torch.uint8)[0, 2, 5, 5] = 0xFF   # -NaN: a NaN too, not the least value
    y = K.max_pool2d(x).float().cpu()
    ref = F.max_pool2d(x.float().cpu(), 3, 2, 1)
    assert torch.isnan(ref).sum() == 2 and torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(y[~torch.isnan(ref)], ref[~torch.isnan(ref)])
