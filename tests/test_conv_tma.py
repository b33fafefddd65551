"""The TMA conv (fastres.kernels.conv_tma): parity with torch in float64 for variant tma
(3x3 stride 1, TMA activations: row segments over every edge, the zero padding from the TMA
unit's out-of-bounds fill) and tma_w (weights by TMA, any stride), every epilogue, fused
split-K, and the refusals."""
from __future__ import annotations

import pytest
import torch

from fastres import kernels as K
from fastres.kernels import Config
from helpers import DTYPES, KERNEL_RTOL, assert_close, rand_nhwc
from test_conv import ref_conv


def case(n, cin, cout, h, w_, k, stride, pad, dtype, device):
    x = rand_nhwc(n, cin, h, w_, dtype=dtype, device=device)
    w = rand_nhwc(cout, cin, k, k, dtype=dtype, device=device, scale=(cin * k * k) ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w_ + 2 * pad - k) // stride + 1
    r = rand_nhwc(n, cout, oh, ow, dtype=dtype, device=device)
    return x, w, b, r


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("relu,residual", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("h,w_,block_m", [
    (9, 13, 16),   # a row of 13 in one 16-wide segment: 3 pixels of each tile idle
    (5, 37, 16),   # rows of 37: two full segments and one of 5
    (4, 16, 16),   # exactly one segment per row
])
def test_tma_activations(dtype, relu, residual, h, w_, block_m, device):
    x, w, b, r = case(2, 32, 40, h, w_, 3, 1, 1, dtype, device)
    r = r if residual else None
    y = K.conv_bn_relu(x, w, b, padding=1, relu=relu, residual=r, config=Config(block_m, 32, 16, 4, 1, variant="tma"))
    assert_close(y, ref_conv(x, w, b, padding=1, relu=relu, residual=r), KERNEL_RTOL[dtype], "conv tma")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k,stride,pad,h", [(3, 2, 1, 11), (3, 1, 1, 7), (1, 2, 0, 9), (5, 1, 2, 6)])
def test_tma_weights_any_stride(dtype, k, stride, pad, h, device):
    x, w, b, r = case(2, 32, 24, h, h + 1, k, stride, pad, dtype, device)
    y = K.conv_bn_relu(x, w, b, stride=stride, padding=pad, residual=r, config=Config(32, 16, 16, 4, 1, variant="tma_w"))
    assert_close(y, ref_conv(x, w, b, stride=stride, padding=pad, residual=r), KERNEL_RTOL[dtype], "conv tma_w")


@pytest.mark.parametrize("variant,stride", [("tma", 1), ("tma_w", 1), ("tma_w", 2)])
def test_fused_split_matches_the_two_launch_split(variant, stride, device):
    """A fused split (one launch, counters left zero) against torch in float64 and against the
    pointer kernel's two-launch split within the per-kernel bound. Not bit for bit, even for
    tma_w's same tiles: its weight tile reaches tl.dot transposed (a [BLOCK_N, BLOCK_K] TMA box),
    the pointer kernel's as loaded, and in the interpreter the BLAS under numpy's matmul may
    take another path for another layout. test_splitk holds the fused sum's order bit for bit
    where it is by construction (the same kernel, tiles and operands)."""
    x, w, b, r = case(1, 48, 32, 7, 7, 3, stride, 1, torch.float16, device)
    two = K.conv_bn_relu(x, w, b, stride=stride, padding=1, residual=r, config=Config(16, 16, 16, 4, 1, SPLIT_K=4))
    ref = ref_conv(x, w, b, stride=stride, padding=1, residual=r)
    counters = torch.zeros(256, dtype=torch.int32, device=device)
    one = K.conv_bn_relu(x, w, b, stride=stride, padding=1, residual=r, counters=counters,
                         config=Config(16, 16, 16, 4, 1, SPLIT_K=4, variant=variant))
    assert not counters.any()
    assert_close(one, ref, KERNEL_RTOL[torch.float16], what=f"{variant} fused split")
    assert_close(one, two, KERNEL_RTOL[torch.float16], what=f"{variant} fused split against the two-launch split")


def test_refusals(device):
    x, w, b, _ = case(1, 32, 16, 8, 8, 3, 1, 1, torch.float16, device)
    with pytest.raises(ValueError, match="stride 1"):
        K.conv_bn_relu(x, w, b, stride=2, padding=1, config=Config(16, 16, 16, 4, 1, variant="tma"))
    with pytest.raises(ValueError, match="multiple of BLOCK_K"):
        K.conv_bn_relu(x, w, b, padding=1, config=Config(16, 16, 64, 4, 1, variant="tma_w"))
    with pytest.raises(ValueError, match="16 input channels"):
        xs = torch.randn(1, 3, 16, 16, device=device)
        ws = rand_nhwc(16, 3, 7, 7, dtype=torch.float16, device=device)
        K.stem_conv(xs, ws, b, config=Config(16, 16, 16, 4, 1, variant="tma_w"))
    with pytest.raises(ValueError, match="unknown config variant"):
        Config(16, 16, 16, variant="tmaa")


# ---------------------------------------------------------------- 8-bit weights

@pytest.mark.parametrize("variant,stride,hw", [("tma", 1, (5, 19)), ("tma_w", 2, (9, 7))])
def test_int8_is_the_integer_math(variant, stride, hw, device):
    """int8 through the TMA conv, bit for bit against test_quant's reference: the zero padding
    from the TMA fill (tma: rows of 19 in 16-wide segments) or the pointer loads' masks (tma_w,
    stride 2), an int8 residual with its scale into an int8 output; a float16 input quantized
    as it is loaded into a float32 output."""
    from test_quant import case as qcase, check_int8, conv_ref, empty, inverse_scale, to

    cfg = Config(16, 32, 32, 4, 1, variant=variant)
    x, _, qw, scale, b, shape = qcase(2, 64, 40, *hw, 3, stride=stride, padding=1)
    r8 = (torch.randn(shape) * 50).round().clamp(-128, 127).to(torch.int8).contiguous(memory_format=torch.channels_last)
    ref = conv_ref(x, qw, scale, b, stride=stride, padding=1, residual=r8, residual_scale=0.05)
    inv = inverse_scale(ref, torch.int8)
    y = K.conv_bn_relu(*to(device, x, qw, b), stride=stride, padding=1, residual=r8.to(device), residual_scale=0.05,
                       scale=scale.to(device), out_inv=inv, config=cfg)
    check_int8(y, ref, inv, f"int8 conv {variant}")

    xf, in_inv, qw, scale, b, shape = qcase(1, 32, 24, 4, 6, 3, x_dtype=torch.float16, stride=stride, padding=1)
    ref = conv_ref(xf, qw, scale, b, in_inv=in_inv, stride=stride, padding=1)
    y = K.conv_bn_relu(*to(device, xf, qw, b), stride=stride, padding=1, scale=scale.to(device), in_inv=in_inv,
                       config=cfg, out=empty(shape, torch.float32, device))
    check_int8(y, ref, None, f"float16 input quantized at load, {variant}")


def test_int8_fused_split_is_the_integer_math(device):
    """A split int8 TMA conv sums int32 partials in its last program: the unsplit integer sum."""
    from test_quant import case as qcase, check_int8, conv_ref, inverse_scale, to

    x, _, qw, scale, b, shape = qcase(1, 64, 24, 4, 5, 3, padding=1)
    ref = conv_ref(x, qw, scale, b, padding=1)
    inv = inverse_scale(ref, torch.int8)
    counters = torch.zeros(16, dtype=torch.int32, device=device)
    y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, scale=scale.to(device), out_inv=inv, counters=counters,
                       config=Config(16, 16, 32, 4, 1, SPLIT_K=3, variant="tma"))
    assert not counters.any()
    check_int8(y, ref, inv, "fused split int8 conv tma")


@pytest.mark.parametrize("variant", ["tma", "tma_w"])
def test_e4m3_within_float32_rounding(variant, device):
    """e4m3 through the TMA conv: the float32 output within float32 rounding of the reference,
    the e4m3 output within one code."""
    from test_quant import E4M3, case as qcase, conv_ref, e4m3_steps, empty, inverse_scale, quantize, to

    x, _, qw, scale, b, shape = qcase(2, 32, 24, 5, 7, 3, E4M3, padding=1)
    cfg = Config(16, 32, 32, 4, 1, variant=variant)
    ref = conv_ref(x, qw, scale, b, padding=1)
    y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, scale=scale.to(device), config=cfg,
                       out=empty(shape, torch.float32, device))
    assert_close(y, ref, 1e-6, what=f"e4m3 conv {variant}, float32 output")
    inv = inverse_scale(ref, E4M3)
    y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, scale=scale.to(device), out_inv=inv, config=cfg)
    assert y.dtype == E4M3 and e4m3_steps(y, quantize(ref, inv, E4M3)).max() <= 1
