"""8-bit convs (fastres.kernels.quant through the conv launchers): int8 bit for bit against a
torch reference of the same integer math, e4m3 within float32 rounding, the kernels'
quantizers against torch's rounding and cast on every value pattern, and the refusals."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config, config_space, select_config
from fastres.kernels.quant import quantize_probe
from fastres.kernels.splitk import workspace_numel
from helpers import ON_GPU, assert_close, nhwc
from test_conv import IMAGENET_MEAN, IMAGENET_STD, torchvision_normalized

I8, E4M3 = torch.int8, torch.float8_e4m3fn
QMAX = {I8: 127.0, E4M3: 448.0}


def f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def quantize(x: torch.Tensor, inv: float, dtype: torch.dtype) -> torch.Tensor:
    """The conventions' activation quantizer: one float32 multiply, then rint + clamp (int8)
    or clamp + torch's round-to-nearest-even cast (e4m3)."""
    y = x.float() * f32(inv)
    if dtype == I8:
        return torch.round(y).clamp(-128, 127).to(I8)
    return y.clamp(-448, 448).to(E4M3)


def inverse_scale(x: torch.Tensor, dtype: torch.dtype) -> float:
    """float32(qmax / amax), computed in float64 as calibration does."""
    return float(f32(QMAX[dtype] / x.abs().max().double().item()))


def quantized_weights(cout, cin, k, dtype, groups=1):
    """Per-output-channel symmetric weights [cout, cin/groups, k, k] (channels_last) and s_w [cout] float64."""
    w = torch.randn(cout, cin // groups, k, k, dtype=torch.float64)
    s = w.abs().amax((1, 2, 3)) / (127.0 if dtype == I8 else 448.0)
    q = (w / s.view(-1, 1, 1, 1)).clamp(-127 if dtype == I8 else -448, 127 if dtype == I8 else 448)
    q = torch.round(q).to(I8) if dtype == I8 else q.float().to(E4M3)
    return nhwc(q), s


def conv_ref(x, qw, scale, b, *, in_inv=None, stride=1, padding=0, dilation=1, groups=1, relu=True,
             residual=None, residual_scale=None):
    """y = acc * scale + b (+ residual * residual_scale), relu: float32, each op as the kernels do.
    acc: the convolution of the 8-bit operands in float64 (exact for int8, then int32)."""
    qx = x if in_inv is None else quantize(x, in_inv, qw.dtype)
    acc = F.conv2d(qx.double(), qw.double(), None, stride, padding, dilation, groups)
    acc = acc.to(torch.int32).float() if qw.dtype == I8 else acc.float()
    y = acc * scale.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    if residual is not None:
        r = residual.float()
        y = y + (r if residual_scale is None else r * f32(residual_scale))
    return torch.where(y < 0, 0.0, y) if relu else y


def case(n, cin, cout, h, w, k, dtype=I8, *, groups=1, x_dtype=None, stride=1, padding=0, dilation=1):
    """x (8-bit, or float of x_dtype with its in_inv), w, scale, b, and the output's spatial size."""
    xf = torch.randn(n, cin, h, w)
    inv = inverse_scale(xf, dtype)
    x = nhwc(xf.to(x_dtype)) if x_dtype is not None else nhwc(quantize(xf, inv, dtype))
    qw, s_w = quantized_weights(cout, cin, k, dtype, groups)
    scale = (s_w / inv).float()
    b = torch.randn(cout) * 0.3
    oh = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    return x, (inv if x_dtype is not None else None), qw, scale, b, (n, cout, oh, ow)


def empty(shape, dtype, device):
    """An output buffer, NaN-poisoned where the dtype has NaN (int8: -128, rarely a result)."""
    fill = float("nan") if dtype != I8 else -128
    return nhwc(torch.full(shape, fill).to(dtype)).to(device)


def to(device, *ts):
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in ts)


def assert_equal(y: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Bit for bit, with the first differing coordinate on failure."""
    y = y.cpu()
    assert y.dtype == ref.dtype and y.shape == ref.shape, \
        f"{what}: {y.dtype} {tuple(y.shape)} vs {ref.dtype} {tuple(ref.shape)}"
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[y.element_size()]
    bad = y.contiguous().view(bits) != ref.contiguous().view(bits)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} values differ, first at {idx}: got "
                             f"{y[idx].item()}, expected {ref[idx].item()}")


def check_int8(y, ref, out_inv, what):
    """y: the kernel's output; ref: the float32 reference before the output's rounding. Bit
    for bit in the interpreter; on a GPU the epilogue's multiply-add may be one fused
    rounding: within one unit of the output dtype there."""
    want = quantize(ref, out_inv, I8) if out_inv is not None else ref.to(y.dtype)
    if not ON_GPU:
        assert_equal(y, want, what)
    elif y.dtype == I8:
        assert (y.cpu().int() - want.int()).abs().max() <= 1, what
    else:
        assert_close(y, want, 1e-6 if y.dtype == torch.float32 else 1e-3, what=what)


# ---------------------------------------------------------------- int8, bit for bit

@pytest.mark.parametrize("k,stride,padding,dilation,groups,hw,cin,cout", [
    (3, 1, 1, 1, 1, (7, 9), 24, 40),     # channels not multiples of 16, odd H/W
    (3, 2, 1, 1, 1, (9, 7), 32, 24),
    (3, 1, 2, 2, 1, (9, 9), 20, 24),     # dilated
    (3, 1, 1, 1, 8, (7, 7), 64, 64),     # grouped (ResNeXt: 8 channels per group)
])
def test_int8_conv_is_the_integer_math(k, stride, padding, dilation, groups, hw, cin, cout, device):
    x, _, qw, scale, b, shape = case(2, cin, cout, *hw, k, groups=groups, stride=stride, padding=padding,
                                     dilation=dilation)
    ref = conv_ref(x, qw, scale, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    inv = inverse_scale(ref, I8)
    y = K.conv_bn_relu(*to(device, x, qw, b), stride=stride, padding=padding, dilation=dilation, groups=groups,
                       scale=scale.to(device), out_inv=inv)
    assert y.dtype == I8 and y.is_contiguous(memory_format=torch.channels_last)
    check_int8(y, ref, inv, "int8 conv")


def test_int8_residuals_and_float_outputs(device):
    """An int8 residual with its scale into an int8 output; a float16 residual (scale 1) into
    float32 and float16 outputs; a float16 input quantized as it is loaded."""
    x, _, qw, scale, b, shape = case(2, 24, 40, 9, 7, 3, padding=1, stride=2)
    r8 = nhwc(torch.randint(-128, 128, shape, dtype=I8))
    rs = 0.03
    ref = conv_ref(x, qw, scale, b, stride=2, padding=1, residual=r8, residual_scale=rs)
    inv = inverse_scale(ref, I8)
    y = K.conv_bn_relu(*to(device, x, qw, b), stride=2, padding=1, residual=r8.to(device), residual_scale=rs,
                       scale=scale.to(device), out_inv=inv)
    check_int8(y, ref, inv, "int8 residual")

    r16 = nhwc(torch.randn(shape).half())
    ref = conv_ref(x, qw, scale, b, stride=2, padding=1, residual=r16)
    for out_dtype in (torch.float32, torch.float16):
        y = K.conv_bn_relu(*to(device, x, qw, b), stride=2, padding=1, residual=r16.to(device), scale=scale.to(device),
                           out=empty(shape, out_dtype, device))
        check_int8(y, ref, None, f"float16 residual, {out_dtype} output")

    xf, in_inv, qw, scale, b, shape = case(1, 32, 16, 5, 5, 3, x_dtype=torch.float16, padding=1)
    ref = conv_ref(xf, qw, scale, b, in_inv=in_inv, padding=1)
    y = K.conv_bn_relu(*to(device, xf, qw, b), padding=1, scale=scale.to(device), in_inv=in_inv,
                       out=empty(shape, torch.float32, device))
    check_int8(y, ref, None, "float16 input quantized at load")


def test_float_conv_takes_an_int8_residual(device):
    """Mixed precision: a float conv's fused residual may be int8 with its scale."""
    x = nhwc(torch.randn(2, 16, 5, 7))
    w = nhwc(torch.randn(24, 16, 3, 3) * 0.1)
    b = torch.randn(24) * 0.3
    r8 = nhwc(torch.randint(-128, 128, (2, 24, 5, 7), dtype=I8))
    y = K.conv_bn_relu(*to(device, x, w, b), padding=1, residual=r8.to(device), residual_scale=0.02)
    ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), padding=1) + r8.double() * float(f32(0.02)))
    assert_close(y, ref, 1e-5, what="float conv + int8 residual")


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_conv1x1(stride, device):
    x, _, qw, scale, b, shape = case(2, 40, 24, 7, 9, 1, stride=stride)
    r8 = nhwc(torch.randint(-128, 128, shape, dtype=I8)) if stride == 1 else None
    ref = conv_ref(x, qw, scale, b, stride=stride, residual=r8, residual_scale=0.05 if r8 is not None else None)
    inv = inverse_scale(ref, I8)
    y = K.conv1x1(*to(device, x, qw, b), stride=stride, residual=None if r8 is None else r8.to(device),
                  residual_scale=0.05 if r8 is not None else None, scale=scale.to(device), out_inv=inv)
    check_int8(y, ref, inv, f"int8 conv1x1 stride {stride}")


@pytest.mark.parametrize("variant", ["ptr", "fused_k"])
def test_int8_split_k_is_the_integer_math(variant, device):
    """int32 partials (the float32 workspace viewed as int32): a split sum is the unsplit one."""
    cfg = Config(32, 32, 32, 4, 1, SPLIT_K=3, variant=variant)
    x, _, qw, scale, b, shape = case(1, 48, 40, 5, 5, 3, padding=1)
    r8 = nhwc(torch.randint(-128, 128, shape, dtype=I8))
    ref = conv_ref(x, qw, scale, b, padding=1, residual=r8, residual_scale=0.05)
    inv = inverse_scale(ref, I8)
    ws = torch.full((workspace_numel(25, 40, 3),), float("nan"), device=device)
    y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, residual=r8.to(device), residual_scale=0.05,
                       scale=scale.to(device), out_inv=inv, config=cfg, workspace=ws)
    check_int8(y, ref, inv, f"split conv ({variant})")
    x, _, qw, scale, b, shape = case(1, 96, 24, 3, 5, 1)
    ref = conv_ref(x, qw, scale, b)
    y = K.conv1x1(*to(device, x, qw, b), scale=scale.to(device), config=cfg, out=empty(shape, torch.float32, device))
    check_int8(y, ref, None, f"split conv1x1 ({variant}), float output")


def test_int8_stem_from_floats_and_pixels(device):
    """The stem quantizes the user's float32 NCHW image, or torchvision's normalization of
    uint8 pixels, with in_inv as it loads them."""
    xf = torch.randn(2, 3, 15, 17)
    in_inv = inverse_scale(xf, I8)
    qw, s_w = quantized_weights(24, 3, 7, I8)
    scale, b = (s_w / in_inv).float(), torch.randn(24) * 0.3
    ref = conv_ref(xf, qw, scale, b, in_inv=in_inv, stride=2, padding=3)
    inv = inverse_scale(ref, I8)
    y = K.stem_conv(*to(device, xf, qw, b), scale=scale.to(device), in_inv=in_inv, out_inv=inv)
    check_int8(y, ref, inv, "int8 stem, float32 input")

    pixels = torch.randint(0, 256, (2, 3, 13, 11), dtype=torch.uint8)
    norm = torchvision_normalized(pixels)
    in_inv = inverse_scale(norm, I8)
    scale = (s_w / in_inv).float()
    ref = conv_ref(norm, qw, scale, b, in_inv=in_inv, stride=2, padding=3)
    y = K.stem_conv(*to(device, pixels, qw, b), normalize=K.pixel_norm(IMAGENET_MEAN, IMAGENET_STD, device),
                    scale=scale.to(device), in_inv=in_inv, out=empty(ref.shape, torch.float32, device))
    check_int8(y, ref, None, "int8 stem, uint8 pixels")


def test_int8_dot_is_exact(device):
    """The products' sum is exact (int32) at K = 4608 (512 channels x 9 taps' worth), where
    float32 accumulation rounds: pixel 0's partial sums rise past 2**25, then fall back to a
    small total, and odd products added up there lose their low bits."""
    C = 4608
    x = torch.full((1, C, 1, 2), 127, dtype=I8)
    x[0, C // 2:, 0, 0] = -127
    x[0, ::3, 0, 1] = -128
    w = torch.full((16, C, 1, 1), 127, dtype=I8)
    w[:, 1::7] = 126
    w[3, ::5] = -1
    acc = F.conv2d(x.double(), w.double()).to(torch.int32)
    y = K.conv1x1(*to(device, nhwc(x), nhwc(w)), torch.zeros(16, device=device), relu=False,
                  scale=torch.ones(16, device=device), out=empty((1, 16, 1, 2), torch.float32, device))
    assert_equal(y, acc.float(), "int8 dot at K=4608")
    # The data tells the two apart: pixel 0's exact sum is an integer float32 holds, which a
    # float32 running sum of the same products misses.
    products = (x[0, :, 0, 0].int() * w[0, :, 0, 0].int()).numpy().astype("float32")
    running = products[:1].copy()
    for p in products[1:]:
        running += p
    assert abs(int(acc[0, 0, 0, 0])) < 2**24 and float(running[0]) != float(acc[0, 0, 0, 0])


# ---------------------------------------------------------------- e4m3

def e4m3_steps(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """How many e4m3 codes apart two e4m3 tensors are, elementwise (+0 and -0 are one value)."""
    def ordinal(t):
        b = t.cpu().view(torch.uint8).int()
        return torch.where(b >= 128, -(b - 128), b)
    return (ordinal(y) - ordinal(ref)).abs()


def test_e4m3_conv_within_float32_rounding(device):
    """float32 accumulation in BLAS order: the pre-quantization y within float32 rounding, the
    e4m3 output within one code; an e4m3 residual; a split."""
    x, _, qw, scale, b, shape = case(2, 32, 24, 7, 9, 3, E4M3, padding=1)
    r8 = nhwc((torch.randn(shape) * 30).clamp(-448, 448).to(E4M3))
    ref = conv_ref(x, qw, scale, b, padding=1, residual=r8, residual_scale=0.01)
    y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, residual=r8.to(device), residual_scale=0.01,
                       scale=scale.to(device), out=empty(shape, torch.float32, device))
    assert_close(y, ref, 1e-6, what="e4m3 conv, float32 output")
    inv = inverse_scale(ref, E4M3)
    for cfg in (None, Config(32, 32, 32, 4, 1, SPLIT_K=3)):
        y = K.conv_bn_relu(*to(device, x, qw, b), padding=1, residual=r8.to(device), residual_scale=0.01,
                           scale=scale.to(device), out_inv=inv, config=cfg)
        assert y.dtype == E4M3
        steps = e4m3_steps(y, quantize(ref, inv, E4M3))
        assert steps.max() <= 1, f"e4m3 output {steps.max()} codes off (config {cfg})"


def test_e4m3_stem_and_conv1x1(device):
    xf = torch.randn(1, 3, 11, 13)
    in_inv = inverse_scale(xf, E4M3)
    qw, s_w = quantized_weights(16, 3, 7, E4M3)
    scale, b = (s_w / in_inv).float(), torch.randn(16) * 0.3
    ref = conv_ref(xf, qw, scale, b, in_inv=in_inv, stride=2, padding=3)
    y = K.stem_conv(*to(device, xf, qw, b), scale=scale.to(device), in_inv=in_inv,
                    out=empty(ref.shape, torch.float32, device))
    assert_close(y, ref, 1e-6, what="e4m3 stem")
    x, _, qw, scale, b, shape = case(2, 48, 32, 5, 3, 1, E4M3, stride=2)
    ref = conv_ref(x, qw, scale, b, stride=2)
    inv = inverse_scale(ref, E4M3)
    y = K.conv1x1(*to(device, x, qw, b), stride=2, scale=scale.to(device), out_inv=inv)
    assert e4m3_steps(y, quantize(ref, inv, E4M3)).max() <= 1


# ---------------------------------------------------------------- the quantizers themselves

def e4m3_sweep() -> torch.Tensor:
    """float32 values covering e4m3's rounding: every top-16-bit pattern (all exponents, signs,
    subnormals of both formats, saturation, infinities), every tie between adjacent e4m3 values
    and its float32 neighbours."""
    x = (torch.arange(65536, dtype=torch.int64) << 16).to(torch.int32).view(torch.float32)
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3).double()
    grid = codes[~codes.isnan()].unique().sort().values
    ties = ((grid[1:] + grid[:-1]) / 2).float()
    up, down = torch.nextafter(ties, f32(1e30)), torch.nextafter(ties, f32(-1e30))
    edges = torch.tensor([448.0, 464.0, 465.0, 480.0, -464.0, 2.0**-9, 2.0**-10, 3 * 2.0**-11, 2.0**-6 - 2.0**-10])
    return torch.cat([x, ties, up, down, edges.float()])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the sweep's NaNs, in numpy
def test_e4m3_encoding_is_torchs_cast(device):
    x = e4m3_sweep()
    q = quantize_probe(x.to(device), 1.0, E4M3).cpu()
    ref = x.clamp(-448, 448).to(E4M3)
    bad = q.view(torch.uint8) != ref.view(torch.uint8)
    assert not bad.any(), f"{int(bad.sum())} codes differ, e.g. {x[bad][:5].tolist()}"
    # and with a scale: one float32 multiply first
    q = quantize_probe(x[:4096].to(device), 3.5, E4M3).cpu()
    assert torch.equal(q.view(torch.uint8), quantize(x[:4096], 3.5, E4M3).view(torch.uint8))


def test_int8_rounding_is_half_to_even_then_clamp(device):
    x = torch.cat([torch.arange(-140 * 8, 140 * 8) / 8.0, torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5,
                                                                        -128.5, -127.5, 1e30, -1e30, -0.0])])
    for inv in (1.0, 0.7310585, 3.0):
        q = quantize_probe(x.float().to(device), inv, I8).cpu()
        assert torch.equal(q, quantize(x, inv, I8)), f"inv {inv}"


# ---------------------------------------------------------------- configs and refusals

def test_8bit_config_spaces():
    for dtype in (I8, E4M3):
        for kernel in ("conv", "conv_stem", "conv_grouped", "conv1x1"):
            space = config_space(kernel, dtype)
            # (Hopper's default target: the TMA kernels too, tests/test_config.py)
            tma = {"conv1x1": ("tma", "tma_ws"),
                   "conv": ("tma", "tma_w", "tma_b", "tma_b_ws", "tma_b_p")}.get(kernel, ())
            assert space and all(c.variant in ("ptr", *tma) and c.BLOCK_K >= 32 for c in space), (kernel, dtype)
            assert select_config(kernel, dtype, M=64, N=16, K=16).BLOCK_K >= 32
        assert config_space("splitk_reduce", dtype)
    assert config_space("conv", I8, target="sm_80")
    for target in ("sm_80", "sm_86", "gfx942"):
        with pytest.raises(ValueError, match=f"float8_e4m3fn runs on .*not on {target}"):
            config_space("conv", E4M3, target=target)
    for target in K.quant.FP8_TARGETS:
        assert config_space("conv", E4M3, target=target)


def test_8bit_refusals(device):
    x, _, qw, scale, b, shape = case(1, 32, 16, 5, 5, 3, padding=1)
    x, qw, scale, b = to(device, x, qw, scale, b)
    conv = lambda **kw: K.conv_bn_relu(x, kw.pop("w", qw), b, padding=1, **kw)  # noqa: E731
    with pytest.raises(ValueError, match=r"w is torch.int8 \(shape \(16, 32, 3, 3\)\): pass scale="):
        conv(out_inv=1.0)
    with pytest.raises(ValueError, match=r"scale must be a contiguous float32 tensor of shape \(16,\)"):
        conv(scale=scale[:8], out_inv=1.0)
    with pytest.raises(ValueError, match="the output is torch.int8: pass out_inv="):
        conv(scale=scale)
    with pytest.raises(ValueError, match="out_inv= quantizes an 8-bit output, but out is torch.float32"):
        conv(scale=scale, out_inv=1.0, out=empty((1, 16, 5, 5), torch.float32, device))
    with pytest.raises(ValueError, match=r"x is torch.float32 .* pass in_inv="):
        K.conv_bn_relu(x.float(), qw, b, padding=1, scale=scale, out_inv=1.0)
    with pytest.raises(ValueError, match="in_inv= quantizes a float input, but x is already torch.int8"):
        conv(scale=scale, out_inv=1.0, in_inv=2.0)
    with pytest.raises(TypeError, match="in_inv must be a python float"):
        K.conv_bn_relu(x.float(), qw, b, padding=1, scale=scale, out_inv=1.0, in_inv=torch.tensor(2.0))
    with pytest.raises(TypeError, match="w is uint8 .*symmetric int8 or float8_e4m3fn"):
        conv(w=qw.view(torch.uint8), scale=scale, out_inv=1.0)
    with pytest.raises(ValueError, match="residual is torch.int8: pass residual_scale="):
        conv(scale=scale, out_inv=1.0, residual=nhwc(torch.zeros(1, 16, 5, 5, dtype=I8)).to(device))
    with pytest.raises(ValueError, match="scale= is for 8-bit weights"):
        K.conv_bn_relu(x.float(), qw.float(), b, padding=1, scale=scale)
    with pytest.raises(ValueError, match="BLOCK_K=16"):
        conv(scale=scale, out_inv=1.0, config=Config(32, 32, 16, 4, 1))
    with pytest.raises(ValueError, match="a bordered conv reads its input in w's dtype"):
        K.conv_bn_relu(K.zero_bordered(x.half(), 1), qw, b, padding=1, scale=scale, in_inv=2.0, out_inv=1.0,
                       config=Config(64, 64, 64, 4, 4, variant="tma_b"))
    with pytest.raises(ValueError, match="runs float weights only"):
        K.conv1x1(x, qw[:, :, :1, :1].contiguous(memory_format=torch.channels_last), b, stride=2, pool=True,
                  scale=scale, out_inv=1.0)


def test_float_launches_pass_no_quant_arguments(device):
    """The default path is today's: a float conv's launch has none of the 8-bit arguments."""
    from fastres.kernels.launch import recording

    x, w, b = nhwc(torch.randn(1, 16, 4, 4)), nhwc(torch.randn(16, 16, 3, 3)), torch.zeros(16)
    with recording(run=False) as launches:
        K.conv_bn_relu(*to(device, x, w, b), padding=1, config=Config(32, 32, 16, 4, 1, SPLIT_K=2))
    assert len(launches) == 2  # the split conv and its reduce
    assert all(not {"s_ptr", "in_inv", "r_scale", "out_inv"} & set(launch.kwargs) for launch in launches)


def test_fp8_refused_on_a_gpu_without_e4m3(monkeypatch):
    """A float8_e4m3fn launch on an sm_80 / sm_86 card is refused up front (int8 runs there)."""
    from fastres.kernels import quant, targets

    monkeypatch.setattr(targets, "device_facts", lambda device: targets.DeviceFacts("A100", "sm_80", 108, 166912))
    cuda = torch.device("cuda")
    with pytest.raises(ValueError, match=r"float8_e4m3fn runs on sm_89, .*not on sm_80 \(A100\): use int8 there"):
        quant.check_fp8_device(cuda, torch.zeros(1, dtype=I8), torch.zeros(1, dtype=E4M3))
    quant.check_fp8_device(cuda, torch.zeros(1, dtype=I8), None)
