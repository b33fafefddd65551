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
