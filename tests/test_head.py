"""Parity of fastres.kernels.avgpool_fc with torch: adaptive_avg_pool2d(1) + flatten + F.linear in float64.

The head is a pool launch then the 1x1-conv GEMM (split-K at small batches): both paths, the
pool's pixel loop past one block, the workspace and the logits' dtype and strides are covered;
8-bit features, and an 8-bit classifier against the torch reference of its integer math."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config, use_config
from fastres.kernels.head import head_workspace_numel
from helpers import DTYPES, KERNEL_RTOL, TF32_RTOL, assert_close, nhwc, rand_nhwc
from test_quant import E4M3, I8, assert_equal, conv_ref, inverse_scale, quantized_weights


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_avgpool_fc(x, w, b):
    """torch reference in float64 on the CPU: torchvision's avgpool + flatten + fc."""
    pooled = F.adaptive_avg_pool2d(x.double().cpu(), 1).flatten(1)
    return F.linear(pooled, w.double().cpu(), b.double().cpu())


def make_inputs(n, c, h, w, classes, dtype, device):
    # Features after a ReLU are non-negative, as in a real ResNet.
    x = nhwc(rand_nhwc(n, c, h, w, dtype=dtype, device=device).abs())
    wt = (torch.randn(classes, c) * c ** -0.5).to(dtype).to(device)
    b = (torch.randn(classes) * 0.1).to(device)
    return x, wt, b


def check(n, c, h, w, classes, dtype, device, *, input_precision="ieee", config=None, rtol=None):
    x, wt, b = make_inputs(n, c, h, w, classes, dtype, device)
    out = torch.full((n, classes), float("nan"), dtype=torch.float32, device=device)
    y = K.avgpool_fc(x, wt, b, out=out, input_precision=input_precision, config=config)
    assert y.data_ptr() == out.data_ptr() and y.dtype == torch.float32 and y.shape == (n, classes)
    assert_close(y, ref_avgpool_fc(x, wt, b), rtol if rtol is not None else KERNEL_RTOL[dtype], what="avgpool_fc")


CASES = [
    # n, c, h, w, classes
    (1, 512, 3, 3, 1000),     # resnet18 / 34 head (at a small size)
    (2, 2048, 2, 1, 1000),    # resnet50+ head
    (3, 2048, 1, 1, 10),
    (2, 16, 7, 7, 10),        # the 7x7 map of a 224 input
    (17, 40, 3, 5, 24),       # batch past one row block, C and classes not multiples of 16
    (1, 3, 2, 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=["n{}_c{}_{}x{}_cls{}".format(*c) for c in CASES])
def test_avgpool_fc(case, dtype, device):
    check(*case, dtype, device)


def test_default_allocates_float32(device):
    x, wt, b = make_inputs(2, 64, 3, 3, 10, torch.float16, device)
    y = K.avgpool_fc(x, wt, b)
    assert y.dtype == torch.float32 and y.shape == (2, 10)
    assert_close(y, ref_avgpool_fc(x, wt, b), KERNEL_RTOL[torch.float16])


@pytest.mark.parametrize("out_dtype", DTYPES, ids=dtype_id)
def test_out_in_another_float_dtype(out_dtype, device):
    """`out` may be any float dtype: the fp32 logits are rounded once into it."""
    x, wt, b = make_inputs(3, 64, 2, 3, 20, torch.float16, device)
    out = torch.full((3, 20), float("nan"), dtype=out_dtype, device=device)
    y = K.avgpool_fc(x, wt, b, out=out)
    assert y.data_ptr() == out.data_ptr() and y.dtype == out_dtype
    assert_close(y, ref_avgpool_fc(x, wt, b), max(KERNEL_RTOL[out_dtype], KERNEL_RTOL[torch.float16]))


def test_tf32_opt_in(device):
    check(3, 512, 3, 3, 100, torch.float32, device, input_precision="tf32", rtol=TF32_RTOL)


@pytest.mark.parametrize("cfg", [Config(16, 16, 16, num_stages=1), Config(32, 64, 32, num_stages=1),
                                 Config(16, 16, 16, num_stages=1, SPLIT_K=3), Config(32, 64, 16, num_stages=1, SPLIT_K=64)],
                         ids=lambda c: c.name)
def test_forced_config(cfg, device):
    """Rows, classes and channels all have tails: N = 19, classes = 40, C = 72; unsplit, split
    3 ways, and split more ways than the K loop has steps (clamped)."""
    check(19, 72, 2, 3, 40, torch.float32, device, config=cfg)
    with use_config("conv1x1", cfg):  # the linear layer is the 1x1-conv GEMM
        check(19, 72, 2, 3, 40, torch.float16, device)


def test_pool_loops_past_one_pixel_block(device):
    """A 9x11 map (99 pixels) takes two pixel blocks of the pool at its default config (64)."""
    check(2, 24, 9, 11, 7, torch.float32, device)


@pytest.mark.parametrize("split", [1, 4])
def test_workspace_given_and_poisoned(split, device):
    """A caller's NaN-filled workspace gives the same bits as a fresh one; too small is refused."""
    x, wt, b = make_inputs(2, 96, 3, 3, 30, torch.float16, device)
    cfg = Config(16, 16, 16, num_stages=1, SPLIT_K=split)
    fresh = K.avgpool_fc(x, wt, b, config=cfg)
    need = head_workspace_numel(2, 96, 30, cfg)
    # Pooled features, then (split) 96 channels in 16-wide steps = 6 steps in 3 splits of 2:
    # 3 planes of 2 x 30 partials, each padded to 64 elements (kernels.splitk.split_plane).
    assert need == 2 * 96 + (3 * 64 if split > 1 else 0)
    ws = torch.full((need + 5,), float("nan"), device=device)
    for _ in range(2):
        assert torch.equal(K.avgpool_fc(x, wt, b, config=cfg, workspace=ws), fresh)
    assert_close(fresh, ref_avgpool_fc(x, wt, b), KERNEL_RTOL[torch.float16])
    with pytest.raises(ValueError, match=rf"workspace has {need - 1} elements but this split launch needs {need}"):
        K.avgpool_fc(x, wt, b, config=cfg, workspace=ws[: need - 1])
    with pytest.raises(TypeError, match=r"workspace must be float32"):
        K.avgpool_fc(x, wt, b, config=cfg, workspace=torch.empty(need, dtype=torch.float16, device=device))


def test_strided_out(device):
    """Logits written through a transposed view land where the view says."""
    x, wt, b = make_inputs(3, 32, 2, 2, 12, torch.float32, device)
    base = torch.full((12, 3), float("nan"), device=device)
    y = K.avgpool_fc(x, wt, b, out=base.t(), config=Config(16, 16, 16, num_stages=1, SPLIT_K=2))
    assert y.data_ptr() == base.data_ptr()
    assert_close(base.t(), ref_avgpool_fc(x, wt, b), KERNEL_RTOL[torch.float32], what="transposed out")
    y = K.avgpool_fc(x, wt, b, out=base.t(), config=Config(16, 16, 16, num_stages=1))
    assert_close(base.t(), ref_avgpool_fc(x, wt, b), KERNEL_RTOL[torch.float32], what="transposed out, unsplit")


def test_nan_propagates(device):
    x, wt, b = make_inputs(3, 16, 3, 3, 5, torch.float32, device)
    x[1, 4, 2, 0] = float("nan")
    y = K.avgpool_fc(x, wt, b).cpu()
    ref = ref_avgpool_fc(x, wt, b)
    assert torch.equal(torch.isnan(y), torch.isnan(ref)) and torch.isnan(y[1]).all()
    assert_close(y[[0, 2]], ref[[0, 2]], KERNEL_RTOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch(dtype, device):
    x, wt, b = make_inputs(0, 16, 3, 3, 5, dtype, device)
    y = K.avgpool_fc(x, wt, b)
    assert y.shape == (0, 5) and y.dtype == torch.float32


def test_bad_input(device):
    x, wt, b = make_inputs(2, 16, 3, 3, 5, torch.float32, device)
    with pytest.raises(ValueError, match=r"w has 15 input features \(shape \(5, 15\)\) but x has 16 channels"):
        K.avgpool_fc(x, wt[:, :15], b)
    with pytest.raises(ValueError, match=r"x must have rank 4, got rank 2"):
        K.avgpool_fc(x.mean((2, 3)), wt, b)
    with pytest.raises(ValueError, match=r"w must have rank 2, got rank 4"):
        K.avgpool_fc(x, wt[:, :, None, None], b)
    with pytest.raises(ValueError, match=r"x must be channels_last"):
        K.avgpool_fc(x.contiguous(), wt, b)
    with pytest.raises(ValueError, match=r"b must have shape \(5,\).*got \(4,\)"):
        K.avgpool_fc(x, wt, b[:4])
    with pytest.raises(TypeError, match=r"b must be float32.*got torch.float16"):
        K.avgpool_fc(x, wt, b.half())
    with pytest.raises(TypeError, match=r"w has dtype torch.float16 but x has dtype torch.float32"):
        K.avgpool_fc(x, wt.half(), b)
    with pytest.raises(ValueError, match=r"w is on meta but x is on .*one device"):
        K.avgpool_fc(x, wt.to("meta"), b)
    with pytest.raises(ValueError, match=r"out must be a float tensor of shape \(2, 5\), got torch.int32"):
        K.avgpool_fc(x, wt, b, out=torch.empty(2, 5, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match=r"out must be a float tensor of shape \(2, 5\), got torch.float32 with shape \(2, 6\)"):
        K.avgpool_fc(x, wt, b, out=torch.empty(2, 6, device=device))
    with pytest.raises(ValueError, match=r"x has an empty spatial size 0x3"):
        K.avgpool_fc(rand_nhwc(2, 16, 0, 3, device=device), wt, b)
    with pytest.raises(ValueError, match=r"input_precision must be 'ieee' or 'tf32'"):
        K.avgpool_fc(x, wt, b, input_precision="fp8")


def test_cpu_without_interpreter(monkeypatch):
    x, wt, b = make_inputs(1, 8, 2, 2, 3, torch.float32, torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        K.avgpool_fc(x, wt, b)


# -- 8-bit features: dequantized in the pool, the classifier in float ---------------------------

def rand_codes(shape, dtype):
    """Every code of `dtype` but NaN (e4m3fn: normals, subnormals, +-0, +-448)."""
    if dtype == torch.int8:
        return nhwc(torch.randint(-128, 128, shape, dtype=torch.int32).to(torch.int8))
    bits = torch.randint(0, 0xFF, shape, dtype=torch.int32)
    return nhwc(torch.where(bits == 0x7F, 0, bits).to(torch.uint8).view(torch.float8_e4m3fn))


def ref_pooled_8bit(q, x_scale):
    """float32(sum of the codes) * float32(x_scale / (H*W)): the sum is exact in float32 (int8;
    e4m3fn codes are multiples of 2**-9 up to 448, so up to 73 pixels), in any order."""
    hw = q.shape[2] * q.shape[3]
    return q.float().cpu().sum((2, 3)) * torch.tensor(x_scale / hw, dtype=torch.float32)


@pytest.mark.parametrize("dtype, w_dtype", [(torch.int8, torch.float32), (torch.float8_e4m3fn, torch.float16)],
                         ids=["int8-w_float32", "e4m3fn-w_float16"])
def test_avgpool_fc_8bit(dtype, w_dtype, device):
    """A 9x8 map (72 pixels: two pixel blocks of the pool) with channel and class tails; the
    pooled features (the workspace's head) equal the reference bit for bit, the logits are the
    float classifier on them rounded to w's dtype."""
    n, c, classes, x_scale = 3, 40, 24, 0.0371
    q = rand_codes((n, c, 9, 8), dtype).to(device)
    wt = (torch.randn(classes, c) * c ** -0.5).to(w_dtype).to(device)
    b = (torch.randn(classes) * 0.1).to(device)
    cfg = Config(16, 16, 16, num_stages=1, SPLIT_K=2)
    ws = torch.full((head_workspace_numel(n, c, classes, cfg),), float("nan"), device=device)
    y = K.avgpool_fc(q, wt, b, x_scale=x_scale, config=cfg, workspace=ws)
    pooled = ref_pooled_8bit(q, x_scale)
    assert torch.equal(ws[: n * c].view(n, c).cpu(), pooled)
    ref = F.linear(pooled.to(w_dtype).double(), wt.double().cpu(), b.double().cpu())
    assert y.dtype == torch.float32 and y.shape == (n, classes)
    assert_close(y, ref, KERNEL_RTOL[torch.float32], what="avgpool_fc 8-bit")
    assert_close(y, ref_avgpool_fc(q.float() * x_scale, wt, b), KERNEL_RTOL[w_dtype], what="against the float head")


def test_every_e4m3_code_dequantizes_exactly(device):
    """All 256 codes, one per channel on a 1x1 map with scale 1: the pooled features are their
    values exactly (subnormals, +-448; -0 sums to +0), NaN for 0x7F and 0xFF."""
    q = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).view(1, 256, 1, 1).to(device)
    ws = torch.full((head_workspace_numel(1, 256, 2, Config(16, 16, 16, num_stages=1)),), 0.0, device=device)
    y = K.avgpool_fc(q, torch.ones(2, 256, device=device), torch.zeros(2, device=device), x_scale=1.0,
                     config=Config(16, 16, 16, num_stages=1), workspace=ws)
    values, ref = ws[:256].cpu(), q.float().flatten().cpu()
    nan = torch.isnan(ref)
    assert nan.nonzero().flatten().tolist() == [0x7F, 0xFF] and torch.equal(torch.isnan(values), nan)
    assert torch.equal(values[~nan], ref[~nan])
    assert torch.isnan(y).all()


def test_8bit_bad_input(device):
    q = rand_codes((2, 16, 3, 3), torch.int8).to(device)
    x, wt, b = make_inputs(2, 16, 3, 3, 5, torch.float32, device)
    with pytest.raises(TypeError, match=r"x is torch.int8: avgpool_fc needs its per-tensor scale, x_scale="):
        K.avgpool_fc(q, wt, b)
    with pytest.raises(ValueError, match=r"x_scale is the scale of 8-bit x, but x is torch.float32"):
        K.avgpool_fc(x, wt, b, x_scale=0.5)
    with pytest.raises(TypeError, match=r"x_scale must be a python float, got Tensor"):
        K.avgpool_fc(q, wt, b, x_scale=torch.tensor(0.5))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"x_scale must be finite and > 0"):
            K.avgpool_fc(q, wt, b, x_scale=bad)
    with pytest.raises(TypeError, match=r"x must have dtype in .*got torch.uint8"):
        K.avgpool_fc(q.view(torch.uint8), wt, b, x_scale=0.5)


# -- an 8-bit classifier: the float32 pooled features quantized as the GEMM loads them ----------

def classifier_case(n, c, classes, x_dtype, w_dtype):
    """x (8-bit codes with their x_scale, or float), the classifier's codes [classes, c], its
    scale [classes] = s_features * s_w, in_inv (clipping the features' top fifth, so that the
    clamp runs) and b."""
    x_scale = 0.0371 if x_dtype in (I8, E4M3) else None
    x = rand_codes((n, c, 3, 5), x_dtype) if x_scale else nhwc(torch.randn(n, c, 3, 5).abs().to(x_dtype))
    in_inv = inverse_scale(x.float().mean((2, 3)) * (x_scale or 1.0), w_dtype) * 1.25
    qw, s_w = quantized_weights(classes, c, 1, w_dtype)
    return x, x_scale, qw.reshape(classes, c), (s_w / in_inv).float(), in_inv, torch.randn(classes) * 0.3


def classifier_ref(pooled, qw, scale, b, in_inv):
    """The 8-bit conv's reference on a 1x1 image per sample: the features quantized (one
    float32 multiply, round half to even, clamp; or the e4m3 cast), the dot in float64 (exact
    for int8), logits = float32(acc) * scale + b in float32."""
    return conv_ref(pooled[:, :, None, None], qw[:, :, None, None], scale, b, in_inv=in_inv, relu=False).flatten(1)


def run_classifier(x, x_scale, qw, scale, in_inv, b, cfg, device):
    """(logits, the pooled features the kernel computed: the workspace's head)."""
    n, c = x.shape[:2]
    ws = torch.full((head_workspace_numel(n, c, qw.shape[0], cfg),), float("nan"), device=device)
    y = K.avgpool_fc(x.to(device), qw.to(device), b.to(device), x_scale=x_scale, scale=scale.to(device),
                     in_inv=in_inv, config=cfg, workspace=ws)
    return y, ws[: n * c].view(n, c).cpu()


@pytest.mark.parametrize("x_dtype, cfg", [
    (I8, Config(16, 16, 32, num_stages=1, SPLIT_K=2)),   # int32 partials summed by the reduce launch
    (torch.float16, Config(16, 16, 32, num_stages=1, SPLIT_K=2, variant="fused_k")),
    (torch.float32, Config(16, 16, 32, num_stages=1)),
], ids=["x_int8-split", "x_float16-fused_split", "x_float32"])
def test_int8_classifier_is_the_integer_math(x_dtype, cfg, device):
    """From 8-bit or float features: bit for bit the reference on the pooled features as the
    kernel computed them. 72 channels (three 32-wide K steps), 24 classes (a class tail)."""
    x, x_scale, qw, scale, in_inv, b = classifier_case(3, 72, 24, x_dtype, I8)
    y, pooled = run_classifier(x, x_scale, qw, scale, in_inv, b, cfg, device)
    assert y.dtype == torch.float32 and y.shape == (3, 24)
    assert_equal(y, classifier_ref(pooled, qw, scale, b, in_inv), f"int8 classifier, x {x_dtype}")
    # The features' top fifth was clipped: some codes are at the clamp.
    assert (pooled * in_inv).abs().max() > 127


def test_e4m3_classifier_within_float32_rounding(device):
    """e4m3 features and classifier, split: float32 sums in their own order."""
    x, x_scale, qw, scale, in_inv, b = classifier_case(3, 72, 24, E4M3, E4M3)
    y, pooled = run_classifier(x, x_scale, qw, scale, in_inv, b, Config(16, 16, 32, num_stages=1, SPLIT_K=2), device)
    assert_close(y, classifier_ref(pooled, qw, scale, b, in_inv), 1e-6, what="e4m3 classifier")


def test_8bit_classifier_bad_input(device):
    x, x_scale, qw, scale, in_inv, b = classifier_case(2, 32, 5, I8, I8)
    x, qw, scale, b = x.to(device), qw.to(device), scale.to(device), b.to(device)
    with pytest.raises(ValueError, match=r"w is torch.int8 \(shape \(5, 32\)\): pass scale=, the float32 \[5\]"):
        K.avgpool_fc(x, qw, b, x_scale=x_scale, in_inv=in_inv)
    with pytest.raises(ValueError, match=r"w is torch.int8: pass in_inv="):
        K.avgpool_fc(x, qw, b, x_scale=x_scale, scale=scale)
    with pytest.raises(ValueError, match=r"scale must be a contiguous float32 tensor of shape \(5,\).*torch.float16"):
        K.avgpool_fc(x, qw, b, x_scale=x_scale, scale=scale.half(), in_inv=in_inv)
    with pytest.raises(TypeError, match=r"in_inv must be a python float"):
        K.avgpool_fc(x, qw, b, x_scale=x_scale, scale=scale, in_inv=torch.tensor(in_inv))
    with pytest.raises(ValueError, match=r"steps K by at least 32.*BLOCK_K=16"):
        K.avgpool_fc(x, qw, b, x_scale=x_scale, scale=scale, in_inv=in_inv, config=Config(16, 16, 16, num_stages=1))
    with pytest.raises(TypeError, match=r"w must have dtype in .*got torch.uint8"):
        K.avgpool_fc(x, qw.view(torch.uint8), b, x_scale=x_scale, scale=scale, in_inv=in_inv)
    wf = torch.randn(5, 32, device=device)
    with pytest.raises(ValueError, match=r"scale= is for an 8-bit classifier .* but w is torch.float32"):
        K.avgpool_fc(x, wf, b, x_scale=x_scale, scale=scale)
    with pytest.raises(ValueError, match=r"in_inv= is for an 8-bit classifier .* but w is torch.float32"):
        K.avgpool_fc(x, wf, b, x_scale=x_scale, in_inv=in_inv)
