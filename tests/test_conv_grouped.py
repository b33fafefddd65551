"""Parity of fastres.kernels.conv_bn_relu on dilated and grouped convs with torch (float64).

The geometries of torchvision's dilated trunks (FCN / DeepLabV3: 3x3 with dilation 2 and 4,
padding = dilation) and of ResNeXt's grouped 3x3s (32x4d, 32x8d, 64x4d at every stage), at tiny
odd spatial sizes; the residual and split-K (two-launch and fused) epilogues; forced tiles that
stay inside a group or span several; the launcher's checks.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config
from helpers import DEVICE, DTYPES, KERNEL_RTOL, assert_close, rand_nhwc


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_conv(x, w, b, *, stride=1, padding=0, dilation=1, groups=1, relu=True, residual=None):
    """torch reference in float64 on the CPU."""
    y = F.conv2d(x.double().cpu(), w.double().cpu(), b.double().cpu(), stride=stride, padding=padding,
                 dilation=dilation, groups=groups)
    if residual is not None:
        y = y + residual.double().cpu()
    return F.relu(y) if relu else y


def check(n, cin, h, w, cout, k, *, stride=1, padding=0, dilation=1, groups=1, relu=True, residual=False,
          dtype=torch.float32, device=DEVICE, config=None):
    """One fused conv against the reference, written into a NaN-poisoned `out`."""
    x = rand_nhwc(n, cin, h, w, dtype=dtype, device=device)
    wt = rand_nhwc(cout, cin // groups, k, k, dtype=dtype, device=device, scale=(cin // groups * k * k) ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    (sh, sw), (ph, pw), (dh, dw) = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding, dilation))
    ref_shape = (n, cout, (h + 2 * ph - dh * (k - 1) - 1) // sh + 1, (w + 2 * pw - dw * (k - 1) - 1) // sw + 1)
    r = rand_nhwc(*ref_shape, dtype=dtype, device=device) if residual else None
    out = torch.full(ref_shape, float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    kwargs = {} if groups == 1 else {"groups": groups}
    y = K.conv_bn_relu(x, wt, b, stride=stride, padding=padding, dilation=dilation, relu=relu, residual=r, out=out,
                       config=config, **kwargs)
    assert y.data_ptr() == out.data_ptr()
    ref = ref_conv(x, wt, b, stride=stride, padding=padding, dilation=dilation, groups=groups, relu=relu, residual=r)
    what = f"conv {tuple(x.shape)} k{k} s{stride} p{padding} d{dilation} g{groups}"
    return assert_close(y, ref, KERNEL_RTOL[dtype], what=what)


# ---------------------------------------------------------------- dilation

DILATED = [
    # n, cin, h, w, cout, k, stride, padding, dilation
    (1, 64, 7, 9, 64, 3, 1, 2, 2),            # layer3 of a dilated trunk (dilation 2, padding 2)
    (2, 32, 9, 5, 48, 3, 1, 4, 4),            # layer4 (dilation 4): most taps fall in the padding
    (1, 24, 11, 7, 40, 3, 2, 2, 2),           # strided and dilated, odd sizes
    (1, 16, 6, 8, 16, 3, 1, (1, 3), (1, 3)),  # per-axis dilation
    (2, 5, 9, 9, 16, 3, 1, 2, 2),             # thin input: the flat-K path
    (1, 16, 5, 5, 24, 3, 1, 0, 2),            # no padding: the output shrinks by 2*dilation
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", DILATED, ids=[f"dil{i}" for i in range(len(DILATED))])
def test_dilated(case, dtype, device):
    n, cin, h, w, cout, k, s, p, d = case
    check(n, cin, h, w, cout, k, stride=s, padding=p, dilation=d, residual=True, dtype=dtype, device=device)


@pytest.mark.parametrize("fused", [False, True], ids=["reduce", "fused"])
def test_dilated_split(fused, device):
    """A split K loop (partials summed by the reduce launch, or by the tile's last program)."""
    cfg = Config(16, 32, 16, 4, 1, SPLIT_K=3, variant="fused_k" if fused else "ptr")
    check(1, 32, 7, 7, 32, 3, padding=4, dilation=4, residual=True, config=cfg, device=device)


def test_dilation_checks(device):
    x = rand_nhwc(1, 16, 5, 5, device=device)
    w, b = rand_nhwc(16, 16, 3, 3, device=device), torch.zeros(16, device=device)
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got dilation=0"):
        K.conv_bn_relu(x, w, b, dilation=0)
    with pytest.raises(TypeError, match=r"dilation must be an int or a pair of ints, got 1.5"):
        K.conv_bn_relu(x, w, b, dilation=1.5)
    with pytest.raises(ValueError, match=r"empty output: .*dilation \(3, 3\) gives -?\d+x-?\d+"):
        K.conv_bn_relu(x, w, b, dilation=3)
    with pytest.raises(ValueError, match=r"the TMA conv runs no grouped convs, and dilated ones only bordered"):
        K.conv_bn_relu(x, w, b, padding=2, dilation=2, config=Config(64, 64, 16, 4, 4, variant="tma"))


# ---------------------------------------------------------------- groups

def _resnext_stages(groups: int, width: int) -> list[tuple]:
    """(label, channels, groups) of each stage's grouped 3x3 of a ResNeXt (groups x width d)."""
    return [(f"{groups}x{width}d_layer{i + 1}", groups * width * 2 ** i, groups) for i in range(4)]


RESNEXT = _resnext_stages(32, 4) + _resnext_stages(32, 8) + _resnext_stages(64, 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("stage", RESNEXT, ids=[s[0] for s in RESNEXT])
def test_resnext_widths(stage, dtype, device):
    """Every stage's grouped 3x3 of resnext50_32x4d, resnext101_32x8d and resnext101_64x4d (4 to
    64 channels per group): stride 1 at an odd size, and the stage's first block at stride 2."""
    _, c, g = stage
    # The interpreter pays per loop step: a 128-wide K step covers a 128-wide tile's groups
    # in one step per tap (the GPU runs the launcher's own config).
    cfg = Config(16, 128, 128, 4, 1) if device.type == "cpu" else None
    check(1, c, 5, 3, c, 3, padding=1, groups=g, dtype=dtype, device=device, config=cfg)
    check(1, c, 5, 4, c, 3, stride=2, padding=1, groups=g, relu=False, dtype=dtype, device=device, config=cfg)


GROUPED_TILES = [
    Config(16, 16, 16, 4, 1),   # 4 groups of 4 per tile, block-diagonal weights
    Config(16, 32, 16, 4, 1),   # 2 groups of 12 output channels per tile, one straddled (COG 12)
    Config(32, 16, 32, 4, 1),   # inside one group; K step wider than a group's 8 input channels
    Config(64, 64, 64, 4, 4),   # from the float16 space
]


@pytest.mark.parametrize("cfg", GROUPED_TILES, ids=[c.name for c in GROUPED_TILES])
@pytest.mark.parametrize("case", [(16, 16, 4), (24, 48, 4), (16, 32, 2), (20, 30, 5)],
                         ids=["cig4", "cig6_cog12", "cig8_cog16", "cig4_cog6"])
def test_forced_tiles(case, cfg, device):
    """Tiles inside a group, spanning several, straddling a group boundary; channel counts
    that are no multiple of the tile; the residual."""
    cin, cout, g = case
    check(2, cin, 5, 5, cout, 3, padding=1, groups=g, residual=True, config=cfg, device=device)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("fused", [False, True], ids=["reduce", "fused"])
def test_grouped_split(fused, dtype, device):
    """Split K loops (reduce launch and fused) with the residual, dilated too."""
    cfg = Config(16, 16, 16, 4, 1, SPLIT_K=3, variant="fused_k" if fused else "ptr")
    check(1, 64, 5, 5, 64, 3, padding=1, groups=2, residual=True, config=cfg, dtype=dtype, device=device)
    check(1, 32, 7, 5, 32, 3, padding=2, dilation=2, groups=8, residual=True, config=cfg, dtype=dtype, device=device)


def test_split_workspace_covers_tiles_spanning_groups(device):
    """A 64-wide tile over groups of 4 channels (ResNeXt 32x4d's layer1: BLOCK_N != BLOCK_K)
    runs its K loop over the 16 groups it spans, 64 channels, not one group's 4: four K steps
    per tap where a plan by Cin/groups counts one, so a 4-way split is 4 planes, not 3. The
    one planner (`conv_split`) says what the launcher launches, and a workspace of exactly
    its size is enough."""
    from fastres.kernels.launch import recording
    from fastres.kernels.splitk import conv_split, workspace_numel

    cfg = Config(16, 64, 16, 4, 1, SPLIT_K=4)
    n, c, h, w, groups = 1, 128, 5, 5, 32
    plan = conv_split(cfg, M=n * h * w, C=c, CO=c, KH=3, KW=3, groups=groups)
    assert plan == (4, 9, workspace_numel(n * h * w, c, 4))
    x = rand_nhwc(n, c, h, w, device=device)
    wt = rand_nhwc(c, c // groups, 3, 3, device=device, scale=(c // groups * 9) ** -0.5)
    b = torch.randn(c).to(device)
    ws = torch.full((plan.workspace,), float("nan"), device=device)
    with recording() as launches:
        y = K.conv_bn_relu(x, wt, b, padding=1, groups=groups, config=cfg, workspace=ws)
    assert launches[0].grid[1] == plan.splits  # then the reduce launch
    assert_close(y, ref_conv(x, wt, b, padding=1, groups=groups), KERNEL_RTOL[torch.float32], what="spanning split")


def test_grouped_default_configs_run(device):
    """Every config select_config / tuning_candidates offer for a grouped conv runs it right
    (the GPU heuristic's choices for an H100, forced here under the interpreter)."""
    from fastres.kernels.config import tuning_candidates
    from fastres.kernels.conv import conv_problem

    space, n, k, taps = conv_problem(64, 64, 3, 3, 16)
    assert (space, n, k, taps) == ("conv_grouped", 64, 4, 9)
    cands = tuning_candidates(space, torch.float16, M=49, N=n, K=k, taps=taps, sms=132, target="sm_90",
                              segments=(7, 7))
    assert cands and not any(c.tma for c in cands)
    for cfg in cands:
        check(1, 64, 7, 7, 64, 3, padding=1, groups=16, config=cfg, dtype=torch.float16, device=device)


def test_depthwise(device):
    """groups = channels (one channel per group) is a grouped conv like any other."""
    check(2, 16, 5, 5, 32, 3, padding=1, groups=16, device=device)


def test_groups_checks(device):
    x = rand_nhwc(1, 16, 5, 5, device=device)
    w, b = rand_nhwc(16, 4, 3, 3, device=device), torch.zeros(16, device=device)
    K.conv_bn_relu(x, w, b, padding=1, groups=4)
    with pytest.raises(ValueError, match=r"groups=3 must divide the input channels \(16\) and the output channels \(16\)"):
        K.conv_bn_relu(x, w, b, groups=3)
    with pytest.raises(ValueError, match=r"groups must be >= 1, got 0"):
        K.conv_bn_relu(x, w, b, groups=0)
    with pytest.raises(TypeError, match=r"groups must be an int, got 2.0"):
        K.conv_bn_relu(x, w, b, groups=2.0)
    with pytest.raises(ValueError, match=r"w has 4 input channels per group \(2 groups\).*w must be \[16, 8, KH, KW\]"):
        K.conv_bn_relu(x, w, b, groups=2)
    with pytest.raises(ValueError, match=r"w has 4 input channels \(shape"):
        K.conv_bn_relu(x, w, b)
    with pytest.raises(ValueError, match=r"the TMA conv runs no grouped convs, and dilated ones only bordered"):
        K.conv_bn_relu(x, w, b, padding=1, groups=4, config=Config(64, 64, 16, 4, 4, variant="tma"))


def test_fold_bn_takes_grouped_weights():
    w = torch.randn(8, 2, 3, 3, dtype=torch.float64)
    g, beta, mean, var = torch.rand(8) + 0.5, torch.randn(8), torch.randn(8), torch.rand(8) + 0.5
    wf, bf = K.fold_bn(w, g, beta, mean, var, 1e-5, dtype=torch.float32)
    scale = g.double() / torch.sqrt(var.double() + 1e-5)
    assert wf.shape == (8, 2, 3, 3) and wf.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(wf.double(), w * scale[:, None, None, None], rtol=1e-6)
    assert torch.allclose(bf.double(), beta.double() - mean.double() * scale, rtol=1e-6)
