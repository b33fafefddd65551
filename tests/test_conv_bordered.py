"""The bordered conv (fastres.kernels.conv_bordered): every distinct 3x3 stride-1 geometry of
the seven ResNets at batch 1 and 2, with and without the fused residual, against torch in
float64 (float32 also bitwise against the pointer kernel with the same K steps), the
warp-specialized, persistent and fused-split forms, dilation, what it must never write, and
the refusals."""
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


def case(n, cin, cout, h, w, dtype, pad=1, seed=0):
    torch.manual_seed(seed)
    x = rand_nhwc(n, cin, h, w, dtype=dtype, device="cpu")
    wt = rand_nhwc(cout, cin, 3, 3, dtype=dtype, device="cpu", scale=(cin * 9) ** -0.5)
    b = torch.randn(cout) * 0.5
    r = rand_nhwc(n, cout, h, w, dtype=dtype, device="cpu")
    return x, wt, b, r


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
        if dtype == torch.float32 and n == 2 and residual:
            # The same K steps in the same order as the pointer kernel: the same float32 sums.
            ptr = K.conv_bn_relu(x.to(device), w.to(device), b.to(device), padding=1, residual=r.to(device),
                                 config=Config(32, min(cout, 256), min(cin, 256), 4, 1))
            assert torch.equal(y, ptr)


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
    ref = torch.nn.functional.relu(torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=2,
                                                              dilation=2))
    assert_close(yb, ref, KERNEL_RTOL[torch.float32], "dilated tma_b")
    full = bordered_map(yb, (1, 1))
    interior = torch.zeros_like(full, dtype=torch.bool)
    interior[:, :, 1:-1, 1:-1] = True
    assert torch.equal(full[~interior], torch.zeros_like(full[~interior]))


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
