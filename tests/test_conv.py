"""Parity of fastres.kernels.conv_bn_relu with torch: F.conv2d + bias (+ residual) (+ ReLU) in float64.

Covers every distinct non-1x1 conv geometry of ResNet-18/34/50/101/152 and wide_resnet50_2
(walked from torchvision), odd shapes, forced tile configs, a bounded hypothesis fuzz, NaN/Inf
propagation and the launcher's argument checks.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from fastres import kernels as K
from fastres.kernels import Config, use_config
from helpers import DEVICE, DTYPES, KERNEL_RTOL, TF32_RTOL, assert_close, nhwc, rand_nhwc, resnet_conv_geometries



def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_conv(x, w, b, *, stride=1, padding=0, dilation=1, relu=True, residual=None):
    """torch reference in float64 on the CPU: relu(conv2d(x, w) + b (+ residual))."""
    y = F.conv2d(x.double().cpu(), w.double().cpu(), b.double().cpu(), stride=stride, padding=padding,
                 dilation=dilation)
    if residual is not None:
        y = y + residual.double().cpu()
    return F.relu(y) if relu else y


def _geometry_id(g) -> str:
    k, s, p, cin, cout, role = g
    return f"k{k}s{s}p{p}_{cin}to{cout}_{role}"


CONV_GEOMETRIES = [g for g in resnet_conv_geometries() if g[0] != 1]


def make_conv_inputs(n, cin, h, w, cout, kh, kw, dtype, device, *, residual_shape=None):
    """x, w (scaled to keep outputs O(1)), b, residual; all fresh random, channels_last."""
    x = rand_nhwc(n, cin, h, w, dtype=dtype, device=device)
    wt = rand_nhwc(cout, cin, kh, kw, dtype=dtype, device=device, scale=(cin * kh * kw) ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    r = rand_nhwc(*residual_shape, dtype=dtype, device=device) if residual_shape is not None else None
    return x, wt, b, r


def poisoned_out(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)


def run_and_check(n, cin, h, w, cout, kh, kw, *, stride, padding, relu, residual, dtype, device,
                  input_precision="ieee", config=None, rtol=None):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out_shape = (n, cout, oh, ow)
    x, wt, b, r = make_conv_inputs(n, cin, h, w, cout, kh, kw, dtype, device,
                                   residual_shape=out_shape if residual else None)
    out = poisoned_out(out_shape, dtype, device)
    y = K.conv_bn_relu(x, wt, b, stride=stride, padding=padding, relu=relu, residual=r, out=out,
                       input_precision=input_precision, config=config)
    assert y.data_ptr() == out.data_ptr()
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == dtype
    ref = ref_conv(x, wt, b, stride=stride, padding=padding, relu=relu, residual=r)
    assert_close(y, ref, rtol if rtol is not None else KERNEL_RTOL[dtype], what=f"conv_bn_relu {tuple(x.shape)}")
    return y


# ---------------------------------------------------------------- every ResNet geometry

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("geom", CONV_GEOMETRIES, ids=[_geometry_id(g) for g in CONV_GEOMETRIES])
def test_resnet_geometry(geom, dtype, device):
    k, s, p, cin, cout, role = geom
    i = CONV_GEOMETRIES.index(geom)
    # Odd / non-square sizes, stride 2 on odd sizes; batch 1, 2, 3 in turn. The widest layers get
    # one image and at most 16 output pixels: the interpreter's float16 matmul is slow.
    wide = cin * cout >= 512 * 512
    n = 1 if wide else 1 + i % 3
    h, w = (11, 9) if k == 7 else ((7, 5) if s == 2 else ((4, 3) if wide else (5, 6)))
    run_and_check(n, cin, h, w, cout, k, k, stride=s, padding=p, relu=role != "projection",
                  residual=role == "residual", dtype=dtype, device=device)


def test_geometry_list_is_complete():
    """The walk found what the issue lists (guards against a torchvision change emptying it)."""
    geoms = {g[:5] for g in resnet_conv_geometries()}
    expected = {
        (7, 2, 3, 3, 64),
        *((3, 1, 1, c, c) for c in (64, 128, 256, 512, 1024)),
        (3, 2, 1, 64, 128), (3, 2, 1, 128, 256), (3, 2, 1, 256, 512),
        *((3, 2, 1, c, c) for c in (128, 256, 512, 1024)),
        *((1, 1, 0, ci, co) for ci, co in ((256, 64), (512, 128), (1024, 256), (2048, 512), (64, 64))),
        *((1, 1, 0, ci, co) for ci, co in ((64, 256), (128, 512), (256, 1024), (512, 2048))),
        (1, 2, 0, 64, 128), (1, 2, 0, 128, 256), (1, 2, 0, 256, 512), (1, 2, 0, 512, 1024), (1, 2, 0, 1024, 2048),
    }
    assert expected <= geoms, sorted(expected - geoms)


# ---------------------------------------------------------------- odd shapes and flags

ODD = [
    # n, cin, h, w, cout, kh, kw, stride, padding
    (1, 3, 9, 9, 16, 7, 7, 2, 3),          # stem-like, Cin 3
    (3, 24, 7, 5, 40, 3, 3, 1, 1),         # Cin 24, Cout 40, odd non-square
    (2, 40, 9, 7, 24, 3, 3, 2, 1),         # Cin 40, stride 2 on odd sizes
    (3, 40, 5, 11, 8, 3, 3, 2, 0),         # no padding, stride 2
    (1, 17, 8, 6, 33, 5, 5, 3, 2),         # 5x5 stride 3
    (2, 5, 6, 9, 7, 1, 3, (1, 2), (0, 1)),  # non-square kernel, per-axis stride / padding
    (1, 9, 7, 4, 12, 3, 1, (2, 1), (1, 0)),
    (2, 64, 5, 5, 64, 1, 1, 1, 0),         # a 1x1 through the general kernel
    (3, 24, 7, 9, 40, 1, 1, 2, 0),         # strided 1x1 through the general kernel
    (1, 1, 1, 1, 1, 1, 1, 1, 0),           # smallest possible
    (2, 3, 1, 1, 5, 3, 3, 1, 1),           # 1x1 image, all taps but the centre are padding
    (2, 5, 4, 3, 6, 1, 1, 1, 1),           # padding wider than the kernel: border outputs are bias only
    (1, 7, 3, 4, 9, 3, 3, 2, 2),
]


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("residual", [True, False], ids=["res", "nores"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
def test_odd_shapes(case, dtype, residual, relu, device):
    n, cin, h, w, cout, kh, kw, stride, padding = case
    run_and_check(n, cin, h, w, cout, kh, kw, stride=stride, padding=padding, relu=relu,
                  residual=residual, dtype=dtype, device=device)


def test_default_arguments(device):
    """stride=1, padding=0, relu=True, no residual; output allocated channels_last."""
    x, w, b, _ = make_conv_inputs(2, 8, 6, 5, 12, 3, 3, torch.float32, device)
    y = K.conv_bn_relu(x, w, b)
    assert y.shape == (2, 12, 4, 3) and y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref_conv(x, w, b), KERNEL_RTOL[torch.float32])


def test_single_channel_nchw_counts_as_channels_last(device):
    """With C = 1 a contiguous NCHW tensor is also dense NHWC: accepted, and read correctly."""
    x = torch.randn(2, 1, 7, 5).to(device)
    w = torch.randn(4, 1, 3, 3).to(device)
    b = torch.randn(4).to(device)
    assert x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    assert_close(K.conv_bn_relu(x, w, b, padding=1), ref_conv(x, w, b, padding=1), KERNEL_RTOL[torch.float32])


def test_relu_actually_clips_and_residual_actually_adds(device):
    """Guard against a vacuous pass: the chosen data has negatives before ReLU, and the residual matters."""
    n, cin, h, w, cout = 2, 16, 5, 5, 16
    x, wt, b, r = make_conv_inputs(n, cin, h, w, cout, 3, 3, torch.float32, device, residual_shape=(n, cout, h, w))
    y_plain = K.conv_bn_relu(x, wt, b, padding=1, relu=False)
    assert (y_plain < 0).any()
    y_relu = K.conv_bn_relu(x, wt, b, padding=1, relu=True)
    assert (y_relu >= 0).all() and (y_relu == 0).any()
    y_res = K.conv_bn_relu(x, wt, b, padding=1, relu=False, residual=r)
    assert_close(y_res, y_plain.double().cpu() + r.double().cpu(), KERNEL_RTOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_residual_batch_slice_view(dtype, device):
    """x and the residual as channels_last views with a storage offset (batch slices of bigger tensors)."""
    n, cin, h, w, cout = 2, 24, 7, 5, 40
    _, wt, b, _ = make_conv_inputs(n, cin, h, w, cout, 3, 3, dtype, device)
    x = rand_nhwc(n + 1, cin, h, w, dtype=dtype, device=device)[1:]
    big = rand_nhwc(n + 2, cout, h, w, dtype=dtype, device=device)
    r = big[1:1 + n]
    assert r.storage_offset() > 0 and r.is_contiguous(memory_format=torch.channels_last)
    out = poisoned_out((n, cout, h, w), dtype, device)
    y = K.conv_bn_relu(x, wt, b, padding=1, residual=r, out=out)
    assert_close(y, ref_conv(x, wt, b, padding=1, residual=r), KERNEL_RTOL[dtype])


def test_out_batch_slice_view(device):
    """`out` may be a channels_last batch slice of a bigger buffer; neighbours stay untouched."""
    n, cin, h, w, cout = 2, 8, 5, 5, 16
    x, wt, b, _ = make_conv_inputs(n, cin, h, w, cout, 3, 3, torch.float32, device)
    big = poisoned_out((n + 2, cout, h, w), torch.float32, device)
    y = K.conv_bn_relu(x, wt, b, padding=1, out=big[1:1 + n])
    assert_close(y, ref_conv(x, wt, b, padding=1), KERNEL_RTOL[torch.float32])
    assert torch.isnan(big[0]).all() and torch.isnan(big[n + 1]).all()


def test_out_may_be_the_residual(device):
    """out and residual the same buffer: the epilogue reads each residual element before it writes
    the same element, so an engine may reuse the shortcut's buffer for the block's output."""
    n, cin, h, w, cout = 2, 24, 7, 5, 40
    x, wt, b, r = make_conv_inputs(n, cin, h, w, cout, 3, 3, torch.float32, device, residual_shape=(n, cout, h, w))
    ref = ref_conv(x, wt, b, padding=1, residual=r)
    y = K.conv_bn_relu(x, wt, b, padding=1, residual=r, out=r, config=Config(16, 16, 16, num_stages=1))
    assert y.data_ptr() == r.data_ptr()
    assert_close(y, ref, KERNEL_RTOL[torch.float32])


def test_out_overlapping_x_is_refused(device):
    """Writing the output over the input being convolved cannot be right (tiles read neighbours'
    inputs after other tiles wrote them): it must be a clear error, not garbage."""
    x, wt, b, _ = make_conv_inputs(2, 32, 5, 5, 32, 3, 3, torch.float32, device)
    with pytest.raises(ValueError, match=r"out .*overlaps.* x"):
        K.conv_bn_relu(x, wt, b, padding=1, out=x, config=Config(16, 16, 16, num_stages=1))


def test_residual_channel_slice_view_is_refused(device):
    """A channel slice is not dense NHWC: the launcher refuses it with a clear error (no garbage)."""
    n, cin, h, w, cout = 1, 8, 5, 5, 16
    x, wt, b, _ = make_conv_inputs(n, cin, h, w, cout, 3, 3, torch.float32, device)
    big = rand_nhwc(n, 2 * cout, h, w, device=device)
    with pytest.raises(ValueError, match=r"residual must be channels_last"):
        K.conv_bn_relu(x, wt, b, padding=1, residual=big[:, cout:])


# ---------------------------------------------------------------- precision and configs

@pytest.mark.parametrize("geom", [(2, 40, 7, 5, 24, 3, 3, 1, 1), (1, 3, 9, 9, 64, 7, 7, 2, 3)], ids=["3x3", "stem"])
def test_tf32_opt_in(geom, device):
    n, cin, h, w, cout, kh, kw, s, p = geom
    run_and_check(n, cin, h, w, cout, kh, kw, stride=s, padding=p, relu=True, residual=True,
                  dtype=torch.float32, device=device, input_precision="tf32", rtol=TF32_RTOL)


def test_tf32_request_is_ignored_for_half(device):
    """input_precision only matters for float32: float16 with "tf32" runs as usual."""
    run_and_check(2, 24, 5, 5, 16, 3, 3, stride=1, padding=1, relu=True, residual=False,
                  dtype=torch.float16, device=device, input_precision="tf32")


FORCED = [
    Config(16, 16, 16, num_warps=4, num_stages=1, GROUP_M=2),   # smallest tl.dot tile: many M, N, K
                                                                # tails; the last tile group is partial
    Config(32, 16, 16, num_warps=4, num_stages=2),
    Config(64, 64, 16, num_warps=4, num_stages=4),   # from the float16 space
    Config(64, 64, 32, num_warps=4, num_stages=3),   # from the float32 space
    Config(128, 64, 32, num_warps=4, num_stages=3, GROUP_M=1),
    Config(64, 128, 64, num_warps=4, num_stages=4, GROUP_M=2),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cfg", FORCED, ids=[c.name + f"_g{c.GROUP_M}" for c in FORCED])
def test_forced_config(cfg, dtype, device):
    """Cin 20 (not a multiple of BLOCK_K), Cout 24 / 40 (N tails), M = 35 / 36 (M tails)."""
    run_and_check(1, 20, 7, 5, 24, 3, 3, stride=1, padding=1, relu=True, residual=True,
                  dtype=dtype, device=device, config=cfg)
    with use_config("conv", cfg):
        run_and_check(3, 20, 5, 7, 40, 3, 3, stride=2, padding=1, relu=False, residual=False,
                      dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cfg", FORCED[:4], ids=[c.name for c in FORCED[:4]])
def test_forced_config_thin_input(cfg, dtype, device):
    """Below 16 input channels the K loop runs over (kh, kw, cin) at once: K = 7*7*3 = 147 and
    3*3*5 = 45 are not multiples of BLOCK_K."""
    run_and_check(1, 3, 11, 9, 24, 7, 7, stride=2, padding=3, relu=True, residual=False,
                  dtype=dtype, device=device, config=cfg)
    with use_config("conv_stem", cfg):  # thin inputs take the stem's config space
        run_and_check(2, 5, 5, 7, 20, 3, 3, stride=1, padding=1, relu=False, residual=True,
                      dtype=dtype, device=device)


class LaunchSpy:
    """Wraps a @triton.jit kernel so that the meta-parameters of each launch are recorded."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **meta):
            self.launches.append(meta)
            return launch(*args, **meta)

        return run


def launched_config(meta) -> tuple:
    return tuple(meta[f] for f in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"))


def _cfg_tuple(c: Config) -> tuple:
    return (c.BLOCK_M, c.BLOCK_N, c.BLOCK_K, c.GROUP_M, c.num_warps, c.num_stages)


def test_forced_config_reaches_the_launch(monkeypatch, device):
    """use_config is what the launch gets; config= wins over use_config."""
    import fastres.kernels.conv as conv_mod

    spy = LaunchSpy(conv_mod._conv_kernel)
    monkeypatch.setattr(conv_mod, "_conv_kernel", spy)
    forced, explicit = Config(32, 16, 16, num_warps=2, num_stages=2, GROUP_M=3), Config(16, 32, 16, num_stages=1)
    with use_config("conv", forced):
        run_and_check(1, 20, 5, 5, 20, 3, 3, stride=1, padding=1, relu=True, residual=False,
                      dtype=torch.float32, device=device)
        run_and_check(1, 20, 5, 5, 20, 3, 3, stride=1, padding=1, relu=True, residual=False,
                      dtype=torch.float32, device=device, config=explicit)
    assert [launched_config(m) for m in spy.launches] == [_cfg_tuple(forced), _cfg_tuple(explicit)]


# ---------------------------------------------------------------- stem_conv: the user's input as it comes

def _stem_inputs(n, h, w, x_dtype, w_dtype, layout, device):
    x = torch.randn(n, 3, h, w).to(x_dtype).to(device)
    if layout == "channels_last":
        x = nhwc(x)
    elif layout == "strided":        # a crop of a bigger NCHW batch: no dense layout at all
        x = torch.randn(n + 1, 3, h + 2, w + 3).to(x_dtype).to(device)[1:, :, 1:1 + h, 2:2 + w]
    wt = rand_nhwc(64, 3, 7, 7, dtype=w_dtype, device=device, scale=(3 * 49) ** -0.5)
    b = (torch.randn(64) * 0.5).to(device)
    return x, wt, b


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("x_dtype,w_dtype", [
    (torch.float32, torch.float32), (torch.float32, torch.float16), (torch.float16, torch.float16),
    (torch.float16, torch.float32),
], ids=["f32-f32", "f32-f16", "f16-f16", "f16-f32"])
def test_stem_conv(x_dtype, w_dtype, layout, device):
    """stem_conv == conv_bn_relu on x cast to w's dtype and packed channels_last."""
    x, wt, b = _stem_inputs(2, 11, 9, x_dtype, w_dtype, layout, device)
    out = poisoned_out((2, 64, 6, 5), w_dtype, device)
    y = K.stem_conv(x, wt, b, out=out)
    assert y.data_ptr() == out.data_ptr() and y.dtype == w_dtype
    ref = ref_conv(x.to(w_dtype), wt, b, stride=2, padding=3, relu=True)
    assert_close(y, ref, KERNEL_RTOL[w_dtype], what=f"stem_conv x {x_dtype} {layout}")


def test_stem_conv_checks(device):
    x, wt, b = _stem_inputs(1, 9, 9, torch.float32, torch.float16, "nchw", device)
    with pytest.raises(ValueError, match=r"w must be channels_last"):
        K.stem_conv(x, wt.contiguous(), b)
    with pytest.raises(ValueError, match=r"w has 3 input channels .*but x has 4"):
        K.stem_conv(torch.randn(1, 4, 9, 9, device=device), wt, b)
    with pytest.raises(TypeError, match=r"x is uint8 \(pixels\): pass normalize="):
        K.stem_conv(x.to(torch.uint8), wt, b)
    with pytest.raises(TypeError, match=r"x must have dtype in .*got torch.int32"):
        K.stem_conv(x.to(torch.int32), wt, b)
    with pytest.raises(TypeError, match=r"out must have dtype torch.float16 .*got torch.float32"):
        K.stem_conv(x, wt, b, out=poisoned_out((1, 64, 5, 5), torch.float32, device))
    with pytest.raises(ValueError, match=r"w is on meta but x is on"):
        K.stem_conv(x, wt.to("meta"), b)


# ---------------------------------------------------------------- stem_conv on uint8 pixels

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_normalized(pixels: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """What torchvision's classification transforms make of uint8 pixels (float32)."""
    import torchvision.transforms.functional as TF

    return TF.normalize(TF.convert_image_dtype(pixels.cpu(), torch.float), list(mean), list(std))


def every_pixel_value(n, h, w, layout, device):
    """uint8 [n, 3, h, w] holding each of the 256 values in every channel (then random ones)."""
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    for c in range(3):
        x[0, c].view(-1)[:256] = torch.roll(torch.arange(256, dtype=torch.uint8), 37 * c)
    if layout == "channels_last":
        return nhwc(x).to(device)
    if layout == "strided":
        big = torch.zeros(n + 1, 3, h + 2, w + 3, dtype=torch.uint8)
        big[1:, :, 1:1 + h, 2:2 + w] = x
        return big.to(device)[1:, :, 1:1 + h, 2:2 + w]
    return x.to(device)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("w_dtype", DTYPES, ids=dtype_id)
def test_stem_pixels_are_bitwise_the_float_path(w_dtype, layout, device):
    """uint8 pixels normalized in the stem's loads give bitwise the stem's output on
    torchvision's normalized float32 batch: the same GEMM operand, zero padding included."""
    x = every_pixel_value(2, 17, 16, layout, device)
    wt = rand_nhwc(64, 3, 7, 7, dtype=w_dtype, device=device, scale=(3 * 49) ** -0.5)
    b = (torch.randn(64) * 0.5).to(device)
    y = K.stem_conv(x, wt, b, normalize=K.pixel_norm(IMAGENET_MEAN, IMAGENET_STD, device))
    floats = torchvision_normalized(x).to(device)
    assert y.dtype == w_dtype and torch.equal(y, K.stem_conv(floats, wt, b))
    # and the float path is the convolution of the normalized image padded with zeros
    padded = F.pad(floats.double().cpu(), (3, 3, 3, 3), value=0.0)
    assert_close(y, ref_conv(padded, wt, b, stride=2, padding=0), KERNEL_RTOL[w_dtype], what="stem on pixels")


def test_stem_pixels_padding_is_zero_in_normalized_space(device):
    """A black image: every normalized value is -mean/std, the border taps read 0, not that."""
    x = torch.zeros(1, 3, 9, 9, dtype=torch.uint8, device=device)
    wt = nhwc(torch.ones(1, 3, 7, 7)).to(device)
    b = torch.zeros(1, device=device)
    y = K.stem_conv(x, wt, b, relu=False, normalize=K.pixel_norm(IMAGENET_MEAN, IMAGENET_STD, device))
    per_tap = sum(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    # output (0, 0) covers input rows/cols -3..3: 4x4 taps inside, the rest padding
    assert y[0, 0, 0, 0].item() == pytest.approx(16 * per_tap, rel=1e-5)
    assert y[0, 0, 2, 2].item() == pytest.approx(49 * per_tap, rel=1e-5)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_stem_pixels_multiply_add_rounds_like_torchvision(half):
    """For half weights the stem normalizes with one multiply-add (kernels/conv.py): for every
    pixel value of every ImageNet channel its float32 result, rounded once (FMA) or twice,
    casts to the same half value as torchvision's ((x / 255) - mean) / std."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    expected = torchvision_normalized(pixels).to(half)
    table = K.pixel_norm(IMAGENET_MEAN, IMAGENET_STD)
    scale, shift = table[2].view(3, 1, 1), table[3].view(3, 1, 1)
    x = pixels.float()
    two_roundings = x * scale + shift
    fma = (x.double() * scale.double() + shift.double()).float()
    assert torch.equal(two_roundings.to(half), expected) and torch.equal(fma.to(half), expected)


def test_pixel_norm_table():
    t = K.pixel_norm([0.5, 0.25], [0.5, 2.0])
    assert t.dtype == torch.float32 and t.shape == (4, 2)
    assert t[:, 0].tolist() == pytest.approx([0.5, 0.5, 1 / 127.5, -1.0])
    with pytest.raises(ValueError, match="one value per channel"):
        K.pixel_norm([0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="std must be positive"):
        K.pixel_norm([0.5], [0.0])


def test_stem_pixels_checks(device):
    x = torch.zeros(1, 3, 9, 9, dtype=torch.uint8, device=device)
    wt = rand_nhwc(64, 3, 7, 7, device=device)
    b = torch.zeros(64, device=device)
    norm = K.pixel_norm(IMAGENET_MEAN, IMAGENET_STD, device)
    with pytest.raises(TypeError, match=r"normalize= is for uint8 pixels, but x is torch.float32"):
        K.stem_conv(x.float(), wt, b, normalize=norm)
    with pytest.raises(ValueError, match=r"normalize must be pixel_norm\(mean, std\): float32 of shape \(4, 3\)"):
        K.stem_conv(x, wt, b, normalize=norm[:2])
    with pytest.raises(ValueError, match=r"normalize must be contiguous"):
        K.stem_conv(x, wt, b, normalize=norm.t().contiguous().t())
    with pytest.raises(ValueError, match=r"stem normalizes pixels of up to 15 channels"):
        K.stem_conv(torch.zeros(1, 16, 9, 9, dtype=torch.uint8, device=device), rand_nhwc(8, 16, 3, 3, device=device),
                    torch.zeros(8, device=device), normalize=K.pixel_norm([0.5] * 16, [0.5] * 16, device))
    with pytest.raises(TypeError, match=r"must have dtype in"):
        K.conv_bn_relu(nhwc(x), wt, b)  # only the stem reads pixels


# ---------------------------------------------------------------- fuzz

@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    k=st.sampled_from([1, 3, 5, 7]),
    stride=st.integers(1, 3),
    pad_frac=st.integers(0, 3),
    cin=st.integers(1, 40),
    cout=st.integers(1, 40),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    n=st.integers(1, 3),
    relu=st.booleans(),
    residual=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_geometry(k, stride, pad_frac, cin, cout, h, w, n, relu, residual, dtype, seed):
    padding = min(pad_frac, k // 2)
    assume((h + 2 * padding - k) // stride + 1 >= 1 and (w + 2 * padding - k) // stride + 1 >= 1)
    torch.manual_seed(seed)
    run_and_check(n, cin, h, w, cout, k, k, stride=stride, padding=padding, relu=relu, residual=residual,
                  dtype=dtype, device=DEVICE)


# ---------------------------------------------------------------- NaN / Inf

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_nan_inf_propagate(dtype, relu, device):
    n, cin, h, w, cout = 2, 12, 7, 6, 20
    x, wt, b, r = make_conv_inputs(n, cin, h, w, cout, 3, 3, dtype, device, residual_shape=(n, cout, 4, 3))
    x[0, 3, 2, 1] = float("nan")
    x[1, 7, 5, 4] = float("inf")
    x[1, 0, 0, 0] = float("-inf")
    r[0, 5, 3, 2] = float("nan")
    y = K.conv_bn_relu(x, wt, b, stride=2, padding=1, relu=relu, residual=r)
    ref = ref_conv(x, wt, b, stride=2, padding=1, relu=relu, residual=r)
    yd = y.double().cpu()
    assert torch.isnan(ref).any() and torch.isinf(ref).any()
    assert torch.equal(torch.isnan(yd), torch.isnan(ref)), "NaN positions differ from torch"
    assert torch.equal(torch.isinf(yd), torch.isinf(ref)), "Inf positions differ from torch"
    assert torch.equal(yd[torch.isinf(ref)], ref[torch.isinf(ref)]), "Inf signs differ from torch"
    fin = torch.isfinite(ref)
    assert_close(yd[fin], ref[fin], KERNEL_RTOL[dtype], what="finite part")


# ---------------------------------------------------------------- bad input

def _ok(device, dtype=torch.float32):
    x, w, b, _ = make_conv_inputs(2, 8, 6, 6, 16, 3, 3, dtype, device)
    return x, w, b


def test_wrong_rank(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"x must have rank 4, got rank 3 with shape \(8, 6, 6\)"):
        K.conv_bn_relu(x[0], w, b, padding=1)
    with pytest.raises(ValueError, match=r"w must have rank 4, got rank 2"):
        K.conv_bn_relu(x, w.reshape(16, -1), b, padding=1)


def test_nchw_refused(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"x must be channels_last .*shape \(2, 8, 6, 6\).*strides \(288, 36, 6, 1\)"):
        K.conv_bn_relu(x.contiguous(), w, b, padding=1)
    with pytest.raises(ValueError, match=r"w must be channels_last .*shape \(16, 8, 3, 3\)"):
        K.conv_bn_relu(x, w.contiguous(), b, padding=1)


def test_out_refused_when_wrong(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 16, 6, 6\) \(the output's\), got \(2, 16, 4, 4\)"):
        K.conv_bn_relu(x, w, b, padding=1, out=poisoned_out((2, 16, 4, 4), torch.float32, device))
    with pytest.raises(TypeError, match=r"out must have dtype torch.float32 .*got torch.float16"):
        K.conv_bn_relu(x, w, b, padding=1, out=poisoned_out((2, 16, 6, 6), torch.float16, device))
    with pytest.raises(ValueError, match=r"out must be channels_last"):
        K.conv_bn_relu(x, w, b, padding=1, out=torch.empty(2, 16, 6, 6, device=device))


def test_channel_mismatch(device):
    x, w, b = _ok(device)
    w9 = rand_nhwc(16, 9, 3, 3, device=device)
    with pytest.raises(ValueError, match=r"w has 9 input channels .*but x has 8"):
        K.conv_bn_relu(x, w9, b, padding=1)


def test_bad_bias(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"b must have shape \(16,\).*got \(15,\)"):
        K.conv_bn_relu(x, w, b[:15], padding=1)
    with pytest.raises(ValueError, match=r"b must have shape \(16,\).*got \(1, 16\)"):
        K.conv_bn_relu(x, w, b[None], padding=1)
    with pytest.raises(TypeError, match=r"b must be float32.*got torch.float16"):
        K.conv_bn_relu(x, w, b.half(), padding=1)
    with pytest.raises(ValueError, match=r"b must be contiguous"):
        K.conv_bn_relu(x, w, torch.randn(32, device=device)[::2], padding=1)


@pytest.mark.parametrize("arg", ["b", "residual", "out"])
def test_non_tensor_argument(arg, device):
    x, w, b = _ok(device)
    kw = dict(b=b, residual=None, out=None)
    kw[arg] = [0.0] * 16
    with pytest.raises(TypeError, match=rf"{arg} must be a torch.Tensor, got list"):
        K.conv_bn_relu(x, w, kw["b"], padding=1, residual=kw["residual"], out=kw["out"])


def test_bad_residual(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 16, 6, 6\) \(the output's\), got \(2, 16, 5, 6\)"):
        K.conv_bn_relu(x, w, b, padding=1, residual=rand_nhwc(2, 16, 5, 6, device=device))
    with pytest.raises(TypeError, match=r"residual must have dtype torch.float32 .*got torch.float16"):
        K.conv_bn_relu(x, w, b, padding=1, residual=rand_nhwc(2, 16, 6, 6, dtype=torch.float16, device=device))


def test_dtype_mismatch(device):
    x, w, b = _ok(device)
    with pytest.raises(TypeError, match=r"w has dtype torch.float16 but x has dtype torch.float32"):
        K.conv_bn_relu(x, w.half(), b, padding=1)
    with pytest.raises(TypeError, match=r"x must have dtype in .*got torch.float64"):
        K.conv_bn_relu(x.double(), w.double(), b, padding=1)


def test_different_devices(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"w is on meta but x is on .*one device"):
        K.conv_bn_relu(x, w.to("meta"), b, padding=1)
    with pytest.raises(ValueError, match=r"b is on meta but x is on .*one device"):
        K.conv_bn_relu(x, w, b.to("meta"), padding=1)


def test_cpu_without_interpreter(monkeypatch):
    """CPU tensors need TRITON_INTERPRET=1 (read at call time); otherwise a clear error, on any machine."""
    x, w, b = _ok(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"x is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        K.conv_bn_relu(x, w, b, padding=1)


def test_empty_output_geometry(device):
    x, w, b, _ = make_conv_inputs(1, 4, 2, 5, 8, 3, 3, torch.float32, device)
    with pytest.raises(ValueError, match=r"empty output: input 2x5 with kernel 3x3.*gives 0x3"):
        K.conv_bn_relu(x, w, b)


@pytest.mark.parametrize("stride,padding,exc,msg", [
    (0, 1, ValueError, r"stride must be >= 1 and padding >= 0, got stride=0"),
    ((1, -1), 1, ValueError, r"stride must be >= 1 .*got stride=\(1, -1\)"),
    (1, -1, ValueError, r"padding >= 0, got stride=1, padding=-1"),
    (1.5, 1, TypeError, r"stride must be an int or a pair of ints, got 1.5"),
    ((1, 1, 1), 1, TypeError, r"stride must be an int or a pair of ints, got \(1, 1, 1\)"),
    (1, "same", TypeError, r"padding must be an int or a pair of ints, got 'same'"),
], ids=["stride0", "stride_neg", "pad_neg", "stride_float", "stride_triple", "pad_str"])
def test_invalid_stride_padding(stride, padding, exc, msg, device):
    x, w, b = _ok(device)
    with pytest.raises(exc, match=msg):
        K.conv_bn_relu(x, w, b, stride=stride, padding=padding)


def test_invalid_input_precision(device):
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"input_precision must be 'ieee' or 'tf32', got 'tf16'"):
        K.conv_bn_relu(x, w, b, padding=1, input_precision="tf16")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch(dtype, device):
    x, w, b, _ = make_conv_inputs(0, 8, 7, 5, 16, 3, 3, dtype, device)
    y = K.conv_bn_relu(x, w, b, stride=2, padding=1)
    assert y.shape == (0, 16, 4, 3) and y.dtype == dtype and y.device.type == device.type
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_interpreter_flag_is_set_on_cpu():
    """The suite itself must run the kernels through the interpreter when there is no GPU."""
    if DEVICE.type == "cpu":
        assert os.environ.get("TRITON_INTERPRET") == "1" and K.interpreting()


def test_residual_shifted_over_out_is_refused(device):
    """out may be the residual itself, but not a view shifted over it: programs would read
    residual elements another program already overwrote."""
    n, cin, h, w, cout = 2, 16, 5, 5, 16
    x, wt, b, _ = make_conv_inputs(n, cin, h, w, cout, 3, 3, torch.float32, device)
    big = rand_nhwc(n + 1, cout, h, w, device=device)
    with pytest.raises(ValueError, match=r"out overlaps residual"):
        K.conv_bn_relu(x, wt, b, padding=1, residual=big[1:], out=big[:-1])


def test_bf16_on_cpu_is_refused(device):
    if device.type != "cpu":
        pytest.skip("bf16 runs on a GPU")
    x = rand_nhwc(1, 16, 5, 5, dtype=torch.bfloat16, device=device)
    w = rand_nhwc(16, 16, 3, 3, dtype=torch.bfloat16, device=device)
    with pytest.raises(TypeError, match="11584"):
        K.conv_bn_relu(x, w, torch.zeros(16, device=device), padding=1)
