"""The TMA GEMM (fastres.kernels.gemm_tma) through conv1x1 and the head: parity with torch in
float64 for the tma and tma_ws variants, every epilogue, tiles hanging over every edge, fused
split-K (within the per-kernel bound of the two-launch split), and the refusals (stride 2, a split warp-specialized tile, rows TMA cannot read)."""
from __future__ import annotations

import pytest
import torch

from fastres import kernels as K
from fastres.kernels import Config
from helpers import DTYPES, KERNEL_RTOL, assert_close, rand_nhwc
from test_conv import ref_conv

VARIANTS = ("tma", "tma_ws")


def case(n, cin, cout, hw, dtype, device):
    x = rand_nhwc(n, cin, hw, hw, dtype=dtype, device=device)
    w = rand_nhwc(cout, cin, 1, 1, dtype=dtype, device=device, scale=cin ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    r = rand_nhwc(n, cout, hw, hw, dtype=dtype, device=device)
    return x, w, b, r


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("relu,residual", [(True, False), (True, True), (False, False)])
def test_parity_every_epilogue(dtype, variant, relu, residual, device):
    # M = 2*7*7 = 98, Cin = 40, Cout = 72: each is a whole tile plus a remainder (16x32x16).
    x, w, b, r = case(2, 40, 72, 7, dtype, device)
    r = r if residual else None
    y = K.conv1x1(x, w, b, relu=relu, residual=r, config=Config(16, 32, 16, 4, 1, variant=variant))
    assert_close(y, ref_conv(x, w, b, relu=relu, residual=r), KERNEL_RTOL[dtype], f"conv1x1 {variant}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n,cin,cout,hw,tile", [
    (1, 24, 8, 3, (32, 16, 16)),     # every tile bigger than the problem
    (3, 64, 96, 5, (64, 64, 32)),    # M = 75: one full and one partial row tile
    (1, 16, 200, 4, (16, 64, 16)),   # Cout over four column tiles, the last partial
])
def test_tiles_over_every_edge(variant, n, cin, cout, hw, tile, device):
    x, w, b, r = case(n, cin, cout, hw, torch.float16, device)
    y = K.conv1x1(x, w, b, residual=r, config=Config(*tile, 4, 1, variant=variant))
    assert_close(y, ref_conv(x, w, b, residual=r), KERNEL_RTOL[torch.float16])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_split_matches_the_two_launch_split(dtype, device):
    """A split TMA GEMM sums its partials in the kernel (one launch, counters left zero): torch's
    result in float64 and the pointer kernel's two-launch split of the same tile, within the
    per-kernel bound. Not bit for bit: the TMA kernel hands tl.dot its weight tile transposed,
    the pointer kernel as loaded, and in the interpreter the BLAS under numpy's matmul may take
    another path for another layout (test_splitk holds the fused sum's order bit for bit where
    it is by construction: the same kernel, tiles and operands)."""
    x, w, b, r = case(1, 96, 48, 4, dtype, device)
    cfg = Config(16, 16, 16, 4, 1, SPLIT_K=3)
    two = K.conv1x1(x, w, b, residual=r, config=cfg)
    counters = torch.zeros(64, dtype=torch.int32, device=device)
    one = K.conv1x1(x, w, b, residual=r, config=Config(16, 16, 16, 4, 1, SPLIT_K=3, variant="tma"),
                    counters=counters)
    assert not counters.any(), "a fused split leaves its counters zero"
    assert_close(one, ref_conv(x, w, b, residual=r), KERNEL_RTOL[dtype], what="fused split")
    assert_close(one, two, KERNEL_RTOL[dtype], what="fused split against the two-launch split")


# The classifier reads float32 pooled features through TMA. On triton 3.6 two warps issue its
# boxes while only warp 0 executes the tensormap acquire fence (bench/NOTES.md, version 11):
# watched on the GPU tier, and never offered by default (test_the_head_is_never_offered_tma).
@pytest.mark.parametrize("cfg", [Config(16, 16, 16, 4, 1, variant="tma"), Config(16, 16, 16, 4, 1, variant="tma_ws"),
                                 Config(16, 16, 16, 4, 1, SPLIT_K=2, variant="tma")], ids=lambda c: c.name)
def test_head_classifier_on_tma(cfg, device):
    x = rand_nhwc(3, 64, 4, 4, dtype=torch.float16, device=device)
    w = (torch.randn(10, 64) * 0.1).half().to(device)
    b = torch.randn(10).to(device)
    ref = x.double().mean((2, 3)).half().double() @ w.double().T + b.double()
    assert_close(K.avgpool_fc(x, w, b, config=cfg), ref, KERNEL_RTOL[torch.float16], cfg.name)


def test_the_head_is_never_offered_tma():
    """Until a GPU has run the float32-feature TMA path, neither the heuristic nor tuning gives
    the head a TMA config, on Hopper in float16 (where the convs are offered them) included."""
    from fastres.device import DeviceInfo
    from fastres.schedule import HEAD, build_schedule

    h100 = DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)
    for batch in (1, 256):
        s = build_schedule("resnet50", (batch, 3, 224, 224), torch.float16, h100)
        (head,) = [st for st in s.steps if st.kernel == HEAD]
        assert not head.config.tma and not head.candidates(torch.float16, h100)
        assert any(c.tma for st in s.steps for c in st.candidates(torch.float16, h100))


def test_refusals(device):
    x, w, b, r = case(1, 32, 16, 6, torch.float16, device)
    with pytest.raises(ValueError, match="stride 1"):
        K.conv1x1(x, w, b, stride=2, config=Config(16, 16, 16, 4, 1, variant="tma"))
    with pytest.raises(ValueError, match="cannot split"):
        K.conv1x1(x, w, b, config=Config(16, 16, 16, 4, 1, SPLIT_K=2, variant="tma_ws"))
    # 20 channels of float16 are 40-byte rows: not 16-byte aligned.
    x20, w20, b20, _ = case(1, 20, 16, 3, torch.float16, device)
    with pytest.raises(ValueError, match="16-byte aligned"):
        K.conv1x1(x20, w20, b20, config=Config(16, 16, 16, 4, 1, variant="tma"))


# ---------------------------------------------------------------- 8-bit weights

@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_is_the_integer_math(variant, device):
    """int8 through TMA, bit for bit against test_quant's reference (int32 accumulator, the
    pointer kernels' dequantization and requantization): an int8 residual with its scale into
    an int8 output, and a float16 input quantized as it is loaded into a float32 output. Cin =
    48 leaves the last K box half past the channels (zero-filled by the TMA unit)."""
    from test_quant import case as qcase, check_int8, conv_ref, empty, inverse_scale, to

    cfg = Config(32, 32, 32, 4, 1, variant=variant)
    x, _, qw, scale, b, shape = qcase(2, 48, 40, 5, 7, 1)
    r8 = rand_nhwc(*shape, dtype=torch.float32, device="cpu").mul(50).round().clamp(-128, 127).to(torch.int8)
    ref = conv_ref(x, qw, scale, b, residual=r8, residual_scale=0.05)
    inv = inverse_scale(ref, torch.int8)
    y = K.conv1x1(*to(device, x, qw, b), residual=r8.to(device), residual_scale=0.05, scale=scale.to(device),
                  out_inv=inv, config=cfg)
    check_int8(y, ref, inv, f"int8 conv1x1 {variant}")

    xf, in_inv, qw, scale, b, shape = qcase(1, 32, 24, 3, 5, 1, x_dtype=torch.float16)
    ref = conv_ref(xf, qw, scale, b, in_inv=in_inv, relu=False)
    y = K.conv1x1(*to(device, xf, qw, b), relu=False, scale=scale.to(device), in_inv=in_inv, config=cfg,
                  out=empty(shape, torch.float32, device))
    check_int8(y, ref, None, f"float16 input quantized at load, {variant}")


def test_int8_fused_split_is_the_integer_math(device):
    """A split int8 TMA GEMM sums int32 partials in its last program: the unsplit integer sum."""
    from test_quant import case as qcase, check_int8, conv_ref, inverse_scale, to

    x, _, qw, scale, b, shape = qcase(1, 96, 24, 3, 5, 1)
    ref = conv_ref(x, qw, scale, b)
    inv = inverse_scale(ref, torch.int8)
    counters = torch.zeros(16, dtype=torch.int32, device=device)
    y = K.conv1x1(*to(device, x, qw, b), scale=scale.to(device), out_inv=inv, counters=counters,
                  config=Config(16, 16, 32, 4, 1, SPLIT_K=3, variant="tma"))
    assert not counters.any()
    check_int8(y, ref, inv, "fused split int8 conv1x1 tma")


@pytest.mark.parametrize("variant", VARIANTS)
def test_e4m3_within_float32_rounding(variant, device):
    """e4m3 through TMA: the float32 output within float32 rounding of the reference, the e4m3
    output within one code."""
    from test_quant import E4M3, case as qcase, conv_ref, e4m3_steps, empty, inverse_scale, quantize, to

    x, _, qw, scale, b, shape = qcase(2, 64, 24, 5, 3, 1, E4M3)
    cfg = Config(32, 32, 32, 4, 1, variant=variant)
    ref = conv_ref(x, qw, scale, b)
    y = K.conv1x1(*to(device, x, qw, b), scale=scale.to(device), config=cfg, out=empty(shape, torch.float32, device))
    assert_close(y, ref, 1e-6, what=f"e4m3 conv1x1 {variant}, float32 output")
    inv = inverse_scale(ref, E4M3)
    y = K.conv1x1(*to(device, x, qw, b), scale=scale.to(device), out_inv=inv, config=cfg)
    assert y.dtype == E4M3 and e4m3_steps(y, quantize(ref, inv, E4M3)).max() <= 1
