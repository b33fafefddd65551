"""The bordered conv (fastres.kernels.conv_bordered): every distinct 3x3 stride-1 geometry of
the seven ResNets at batch 1 and 2, with and without the fused residual, against torch in
float64; the warp-specialized, persistent and fused-split forms; tile seams, dilation (FCN's 4,
unequal per axis) with a residual and a split; what it must never write, and the refusals.

Nothing here is compared bit for bit with the pointer kernel: the bordered kernel's M tiles are
rows of the bordered map, not output pixels, so its tl.dot operands differ in shape and row
order from the pointer kernel's, and in the interpreter (tl.dot is numpy's matmul) BLAS may sum
them in another order on another CPU (OpenBLAS's Haswell/Zen kernels do: one float32 unit in 70
of 1,536 outputs). Every output is judged against float64 within DESIGN's per-kernel bound."""
from __future__ import annotations

import functools

import pytest
import torch

from fastres import kernels as K
from fastres.kernels import Config
from fastres.kernels.conv_bordered import bordered_map
from fastres.plan import arch_blocks
from helpers import KERNEL_RTOL, assert_close, rand_nhwc
from test_conv import ref_conv

SEVEN = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")


@functools.lru_cache(maxsize=None)
def stride1_3x3() -> tuple[tuple[int, int], ...]:
    """Distinct (cin, cout) of the 3x3 stride-1 convs of the seven ResNets."""
    found = set()
    for arch in SEVEN:
        _, blocks = arch_blocks(arch)
        for block in blocks:
            for c in block.convs:
                if c.k == 3 and c.stride == 1:
                    found.add((c.cin, c.cout))
    return tuple(sorted(found))


def test_the_geometries_are_the_resnets():
    # BasicBlock widths 64..512, bottleneck widths 64..512, the wide ones' 128..1024.
    assert stride1_3x3() == ((64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024))


def _tile(c: int, variant: str = "tma_b") -> Config:
    # Real tiles, as wide as the interpreter runs fast (a K step inside one tap, several taps
    # and channel blocks per tile, several column tiles for the wide layers).
    return Config(64, min(c, 256), min(c, 256), 4, 1, variant=variant)


def case(n, cin, cout, h, w, dtype, seed=0):
    torch.manual_seed(seed)
    x = rand_nhwc(n, cin, h, w, dtype=dtype, device="cpu")
    wt = rand_nhwc(cout, cin, 3, 3, dtype=dtype, device="cpu", scale=(cin * 9) ** -0.5)
    b = torch.randn(cout) * 0.5
    r = rand_nhwc(n, cout, h, w, dtype=dtype, device="cpu")
    return x, wt, b, r


def _border_is_zero(full: torch.Tensor, pad: tuple[int, int], what: str) -> None:
    """Exact: every element of the bordered map `full` outside its interior is zero."""
    ph, pw = pad
    interior = torch.zeros(full.shape, dtype=torch.bool, device=full.device)
    interior[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw] = True
    border = full[~interior]
    assert torch.equal(border, torch.zeros_like(border)), \
        f"{what}: {int((border != 0).sum())} of {border.numel()} border elements written (or NaN)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cin,cout", stride1_3x3(), ids=lambda v: str(v))
def test_parity_every_resnet_geometry(cin, cout, dtype, device):
    for n, residual in ((1, False), (1, True), (2, False), (2, True)):
        x, w, b, r = case(n, cin, cout, 3, 4, dtype, seed=n)
        r = r if residual else None
        xb = K.zero_bordered(x.to(device), 1)
        out = torch.full((n, cout, 3, 4), float("nan"), dtype=dtype, device=device).contiguous(
            memory_format=torch.channels_last)
        y = K.conv_bn_relu(xb, w.to(device), b.to(device), padding=1, residual=None if r is None else r.to(device),
                           out=out, config=_tile(cin))
        assert_close(y, ref_conv(x, w, b, padding=1, residual=r), KERNEL_RTOL[dtype], f"tma_b n={n} res={residual}")


@pytest.mark.parametrize("variant,split", [("tma_b_ws", 1), ("tma_b", 3), ("tma_b_p", 1)])
def test_warp_specialized_persistent_and_fused_split(variant, split, device, monkeypatch):
    """The other forms on a problem of 7 x 3 = 21 tiles (16x16 tiles over 106 rows and 48
    channels); the persistent one on 5 programs, so that each loops over several tiles (one
    per SM would give each program one tile)."""
    import fastres.kernels.conv_bordered as conv_bordered

    monkeypatch.setattr(conv_bordered, "persistent_programs", lambda tiles, device: 5)
    x, w, b, r = case(2, 32, 48, 5, 7, torch.float32)
    xb = K.zero_bordered(x.to(device), 1)
    counters = torch.zeros(64, dtype=torch.int32, device=device)
    y = K.conv_bn_relu(xb, w.to(device), b.to(device), padding=1, residual=r.to(device), counters=counters,
                       config=Config(16, 16, 16, 4, 1, SPLIT_K=split, variant=variant))
    assert not counters.any()
    assert_close(y, ref_conv(x, w, b, padding=1, residual=r), KERNEL_RTOL[torch.float32], variant)


def test_dilated_and_into_a_bordered_output(device):
    """Dilation 2 (border 2: a segmentation trunk's), its output written into the interior of
    another bordered map, whose border stays zero."""
    x, w, b, _ = case(1, 32, 16, 6, 5, torch.float32)
    xb = K.zero_bordered(x.to(device), 2)
    yb = K.zero_bordered(torch.full((1, 16, 6, 5), float("nan")).to(device), 1)
    K.conv_bn_relu(xb, w.to(device), b.to(device), padding=2, dilation=2, out=yb, config=Config(16, 16, 16, 4, 1,
                                                                                                variant="tma_b"))
    assert_close(yb, ref_conv(x, w, b, padding=2, dilation=2), KERNEL_RTOL[torch.float32], "dilated tma_b")
    _border_is_zero(bordered_map(yb, (1, 1)), (1, 1), "output")


# (n, cin, cout, h, w, dilation, split, residual, dtype, tile): all odd sizes, so that the
# 16/32-row tiles of the bordered map start mid-row and mid-image; the padding is the dilation
# ("same" 3x3 convs, as the dilated trunks have them).
SEAMS = {
    # 169 map rows (3 images of 7x9) in 11 row tiles, the last one partial; 40 output channels
    # in three 16-wide column tiles, the last one half empty; 18 K steps in 3 splits of 6.
    "seams-split": (3, 32, 40, 5, 7, (1, 1), 3, True, torch.float32, 16),
    # FCN's layer4 (dilation 4, border 4): the taps 4 map rows and 4 columns apart.
    "fcn-dilation-4": (2, 32, 16, 9, 7, (4, 4), 2, True, torch.float16, 32),
    # Unequal dilation per axis, each way round: a tap's row and column offsets swapped
    # would read other pixels.
    "dilation-1x3": (2, 32, 16, 6, 7, (1, 3), 1, False, torch.float32, 16),
    "dilation-3x2-split": (2, 16, 24, 7, 5, (3, 2), 3, True, torch.float16, 16),
}


@pytest.mark.parametrize("n,cin,cout,h,w,dilation,split,residual,dtype,tile", SEAMS.values(), ids=SEAMS.keys())
def test_tile_seams_dilation_residual_split(n, cin, cout, h, w, dilation, split, residual, dtype, tile, device):
    """Several row tiles straddling image rows and images, partial row and column tiles,
    dilation 4 and unequal per axis, a fused residual and a fused split: the output (written
    into the interior of a NaN-filled bordered map) against torch in float64, every pixel
    written, the output's border and the split's counters left zero."""
    pad = dilation
    x, wt, b, r = case(n, cin, cout, h, w, dtype, seed=h * w)
    r = r if residual else None
    xb = K.zero_bordered(x.to(device), pad)
    yb = K.zero_bordered(torch.full((n, cout, h, w), float("nan"), dtype=dtype).to(device), 1)
    counters = torch.zeros(64, dtype=torch.int32, device=device)
    y = K.conv_bn_relu(xb, wt.to(device), b.to(device), padding=pad, dilation=dilation,
                       residual=None if r is None else r.to(device), out=yb, counters=counters,
                       config=Config(tile, 16, 16, 4, 1, SPLIT_K=split, variant="tma_b"))
    assert y.data_ptr() == yb.data_ptr()
    assert_close(yb, ref_conv(x, wt, b, padding=pad, dilation=dilation, residual=r), KERNEL_RTOL[dtype],
                 f"tma_b dilation={dilation} split={split}")
    _border_is_zero(bordered_map(yb, (1, 1)), (1, 1), "output")
    _border_is_zero(bordered_map(xb, pad), pad, "input")
    assert not counters.any(), "a fused split leaves its counters zero"


def test_refusals(device):
    x, w, b, _ = case(1, 32, 16, 8, 8, torch.float16)
    x, w, b = x.to(device), w.to(device), b.to(device)
    cfg = Config(16, 16, 16, 4, 1, variant="tma_b")
    with pytest.raises(ValueError, match="interior of a zero-bordered"):
        K.conv_bn_relu(x, w, b, padding=1, config=cfg)  # a plain tensor: no border around it
    with pytest.raises(ValueError, match="interior of a zero-bordered"):
        K.conv_bn_relu(K.zero_bordered(x, 2), w, b, padding=1, config=cfg)  # a border of the wrong width
    with pytest.raises(ValueError, match="stride 1"):
        K.conv_bn_relu(K.zero_bordered(x, 1), w, b, stride=2, padding=1, config=cfg)
    for variant in ("tma_b_ws", "tma_b_p"):
        with pytest.raises(ValueError, match="cannot split"):
            K.conv_bn_relu(K.zero_bordered(x, 1), w, b, padding=1, config=Config(16, 16, 16, 4, 1, SPLIT_K=2,
                                                                                    variant=variant))
    with pytest.raises(ValueError, match="dense"):  # the TMA 1x1 GEMM reads dense pixel rows only
        K.conv1x1(K.zero_bordered(x, 1), rand_nhwc(16, 32, 1, 1, dtype=torch.float16, device=device), b,
                  config=Config(16, 16, 16, 4, 1, variant="tma"))


# ---------------------------------------------------------------- 8-bit weights

@pytest.mark.parametrize("variant,split", [("tma_b", 1), ("tma_b", 3), ("tma_b_ws", 1), ("tma_b_p", 1)])
def test_int8_is_the_integer_math(variant, split, device):
    """int8 over a zero-bordered int8 map, bit for bit against test_quant's reference (the
    border's zeros are int8 zeros): an int8 residual with its scale into an int8 output; split,
    the int32 partials summed by the tile's last program."""
    from test_quant import case as qcase, check_int8, conv_ref, inverse_scale, to

    x, _, qw, scale, b, shape = qcase(2, 64, 40, 5, 6, 3, padding=1)
    r8 = (torch.randn(shape) * 50).round().clamp(-128, 127).to(torch.int8).contiguous(memory_format=torch.channels_last)
    ref = conv_ref(x, qw, scale, b, padding=1, residual=r8, residual_scale=0.05)
    inv = inverse_scale(ref, torch.int8)
    counters = torch.zeros(64, dtype=torch.int32, device=device)
    y = K.conv_bn_relu(K.zero_bordered(x.to(device), 1), *to(device, qw, b), padding=1, residual=r8.to(device),
                       residual_scale=0.05, scale=scale.to(device), out_inv=inv, counters=counters,
                       config=Config(16, 32, 32, 4, 1, SPLIT_K=split, variant=variant))
    assert not counters.any()
    check_int8(y, ref, inv, f"int8 conv {variant} split {split}")


def test_e4m3_within_float32_rounding(device):
    from test_quant import E4M3, case as qcase, conv_ref, e4m3_steps, inverse_scale, quantize, to

    x, _, qw, scale, b, shape = qcase(1, 32, 24, 6, 5, 3, E4M3, padding=1)
    ref = conv_ref(x, qw, scale, b, padding=1)
    inv = inverse_scale(ref, E4M3)
    y = K.conv_bn_relu(K.zero_bordered(x.to(device), 1), *to(device, qw, b), padding=1, scale=scale.to(device),
                       out_inv=inv, config=Config(16, 32, 32, 4, 1, variant="tma_b"))
    assert y.dtype == E4M3 and e4m3_steps(y, quantize(ref, inv, E4M3)).max() <= 1
