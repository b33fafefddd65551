"""Parity of fastres.kernels.conv1x1 (the bottleneck 1x1 GEMM) with torch in float64:
F.conv2d with a 1x1 weight + bias (+ residual) (+ ReLU).

Covers every distinct 1x1 conv geometry of ResNet-18/34/50/101/152 and wide_resnet50_2 (walked
from torchvision): reduce, expand, and the stride-1 / stride-2 downsample projections.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config, use_config
from helpers import DTYPES, KERNEL_RTOL, TF32_RTOL, assert_close, rand_nhwc, resnet_conv_geometries



def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_conv1x1(x, w, b, *, stride=1, relu=True, residual=None):
    """torch reference in float64 on the CPU: relu(conv2d(x, w[.., 1, 1], stride) + b (+ residual))."""
    y = F.conv2d(x.double().cpu(), w.double().cpu(), b.double().cpu(), stride=stride)
    if residual is not None:
        y = y + residual.double().cpu()
    return F.relu(y) if relu else y


def resnet_1x1_geometries() -> tuple[tuple, ...]:
    """Unique (stride, cin, cout, role) of the 1x1 convs (role as in helpers.resnet_conv_geometries)."""
    return tuple((s, cin, cout, role) for k, s, p, cin, cout, role in resnet_conv_geometries() if k == 1)


GEOMETRIES = list(resnet_1x1_geometries())


def make_inputs(n, cin, h, w, cout, dtype, device, *, residual_shape=None):
    x = rand_nhwc(n, cin, h, w, dtype=dtype, device=device)
    wt = rand_nhwc(cout, cin, 1, 1, dtype=dtype, device=device, scale=cin ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    r = rand_nhwc(*residual_shape, dtype=dtype, device=device) if residual_shape is not None else None
    return x, wt, b, r


def poisoned_out(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)


def run_and_check(n, cin, h, w, cout, *, stride, relu, residual, dtype, device, input_precision="ieee",
                  config=None, rtol=None):
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    out_shape = (n, cout, (h - 1) // sh + 1, (w - 1) // sw + 1)
    x, wt, b, r = make_inputs(n, cin, h, w, cout, dtype, device, residual_shape=out_shape if residual else None)
    out = poisoned_out(out_shape, dtype, device)
    y = K.conv1x1(x, wt, b, stride=stride, relu=relu, residual=r, out=out, input_precision=input_precision,
                  config=config)
    assert y.data_ptr() == out.data_ptr()
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == dtype
    ref = ref_conv1x1(x, wt, b, stride=stride, relu=relu, residual=r)
    assert_close(y, ref, rtol if rtol is not None else KERNEL_RTOL[dtype], what=f"conv1x1 {tuple(x.shape)}")
    return y


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=[f"s{s}_{ci}to{co}_{r}" for s, ci, co, r in GEOMETRIES])
def test_resnet_geometry(geom, dtype, device):
    s, cin, cout, role = geom
    i = GEOMETRIES.index(geom)
    wide = cin * cout >= 1024 * 1024          # keep the interpreter's float16 matmul cheap there
    n = 1 if wide else 1 + i % 3
    h, w = (7, 5) if s == 2 else ((4, 3) if wide else (5, 6))
    run_and_check(n, cin, h, w, cout, stride=s, relu=role != "projection", residual=role == "residual",
                  dtype=dtype, device=device)


def test_geometry_list_is_complete():
    geoms = {g[:3] for g in GEOMETRIES}
    expected = {
        (1, 256, 64), (1, 512, 128), (1, 1024, 256), (1, 2048, 512), (1, 64, 64),        # reduce
        (1, 64, 256), (1, 128, 512), (1, 256, 1024), (1, 512, 2048),                    # expand
        (2, 64, 128), (2, 128, 256), (2, 256, 512), (2, 512, 1024), (2, 1024, 2048),    # projections
    }
    assert expected <= geoms, sorted(expected - geoms)
    assert (1, 64, 256, "projection") in GEOMETRIES   # the stride-1 downsample of layer1


ODD = [
    # n, cin, h, w, cout, stride
    (1, 3, 5, 7, 16, 1),
    (3, 24, 7, 5, 40, 1),
    (2, 40, 9, 7, 24, 2),      # stride 2 on odd sizes
    (1, 40, 5, 11, 17, 3),
    (2, 5, 6, 9, 7, (1, 2)),   # per-axis stride
    (1, 1, 1, 1, 1, 1),
    (3, 33, 1, 1, 65, 2),      # 1x1 image
]


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("residual", [True, False], ids=["res", "nores"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
def test_odd_shapes(case, dtype, residual, relu, device):
    n, cin, h, w, cout, stride = case
    run_and_check(n, cin, h, w, cout, stride=stride, relu=relu, residual=residual, dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_matches_general_conv(dtype, device):
    """conv1x1 and conv_bn_relu with a 1x1 weight are the same op."""
    x, wt, b, r = make_inputs(2, 40, 7, 5, 24, dtype, device, residual_shape=(2, 24, 4, 3))
    a = K.conv1x1(x, wt, b, stride=2, residual=r)
    c = K.conv_bn_relu(x, wt, b, stride=2, residual=r)
    assert_close(a, c, KERNEL_RTOL[dtype], what="conv1x1 vs conv_bn_relu")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_residual_batch_slice_view(dtype, device):
    n, cin, h, w, cout = 2, 24, 5, 5, 40
    _, wt, b, _ = make_inputs(n, cin, h, w, cout, dtype, device)
    x = rand_nhwc(n + 2, cin, h, w, dtype=dtype, device=device)[2:]
    big = rand_nhwc(n + 1, cout, h, w, dtype=dtype, device=device)
    r = big[1:]
    assert r.storage_offset() > 0
    y = K.conv1x1(x, wt, b, residual=r, out=poisoned_out((n, cout, h, w), dtype, device))
    assert_close(y, ref_conv1x1(x, wt, b, residual=r), KERNEL_RTOL[dtype])


def test_out_overlapping_x_is_refused(device):
    x, wt, b, _ = make_inputs(2, 64, 5, 5, 64, torch.float32, device)
    with pytest.raises(ValueError, match=r"out .*overlaps.* x"):
        K.conv1x1(x, wt, b, out=x, config=Config(16, 16, 16, num_stages=1))


def test_tf32_opt_in(device):
    run_and_check(2, 40, 5, 7, 72, stride=1, relu=True, residual=True, dtype=torch.float32, device=device,
                  input_precision="tf32", rtol=TF32_RTOL)


FORCED = [
    Config(16, 16, 16, num_stages=1, GROUP_M=3),   # 7 row tiles: groups of 3, 3 and 1
    Config(32, 16, 16, num_stages=2, GROUP_M=1),
    Config(64, 64, 16, num_warps=4, num_stages=4),
    Config(64, 128, 32, num_warps=4, num_stages=3, GROUP_M=2),
    Config(128, 64, 64, num_warps=4, num_stages=4),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cfg", FORCED, ids=[c.name + f"_g{c.GROUP_M}" for c in FORCED])
def test_forced_config(cfg, dtype, device):
    """Cin 40 (K tail for BLOCK_K 16 / 32 / 64), Cout 24 / 72, M = 3*7*5 = 105 / 2*4*3 = 24."""
    run_and_check(3, 40, 7, 5, 24, stride=1, relu=True, residual=True, dtype=dtype, device=device, config=cfg)
    with use_config("conv1x1", cfg):
        run_and_check(2, 40, 7, 5, 72, stride=2, relu=False, residual=False, dtype=dtype, device=device)


def test_forced_config_reaches_the_launch(monkeypatch, device):
    import fastres.kernels.gemm1x1 as mod

    seen = []
    kernel = mod._gemm1x1_kernel

    class Spy:
        def __getitem__(self, grid):
            launch = kernel[grid]

            def run(*args, **meta):
                seen.append((meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"], meta["num_stages"]))
                return launch(*args, **meta)

            return run

    monkeypatch.setattr(mod, "_gemm1x1_kernel", Spy())
    with use_config("conv1x1", Config(32, 16, 16, num_stages=2)):
        run_and_check(1, 20, 5, 5, 20, stride=1, relu=True, residual=False, dtype=torch.float32, device=device)
    assert seen == [(32, 16, 16, 2)]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_nan_inf_propagate(dtype, device):
    n, cin, h, w, cout = 2, 12, 5, 6, 20
    x, wt, b, r = make_inputs(n, cin, h, w, cout, dtype, device, residual_shape=(n, cout, h, w))
    x[0, 3, 2, 1] = float("nan")
    x[1, 7, 4, 4] = float("inf")
    r[1, 2, 0, 5] = float("-inf")
    for relu in (True, False):
        y = K.conv1x1(x, wt, b, relu=relu, residual=r).double().cpu()
        ref = ref_conv1x1(x, wt, b, relu=relu, residual=r)
        assert torch.isnan(ref).any() and torch.isinf(ref).any()
        assert torch.equal(torch.isnan(y), torch.isnan(ref)), f"NaN positions differ from torch (relu={relu})"
        assert torch.equal(torch.isinf(y), torch.isinf(ref)), f"Inf positions differ from torch (relu={relu})"
        assert torch.equal(y[torch.isinf(ref)], ref[torch.isinf(ref)])
        fin = torch.isfinite(ref)
        assert_close(y[fin], ref[fin], KERNEL_RTOL[dtype], what="finite part")


# ---------------------------------------------------------------- bad input

def _ok(device):
    x, w, b, _ = make_inputs(2, 8, 5, 5, 16, torch.float32, device)
    return x, w, b


def test_3x3_weight_refused(device):
    x, _, b = _ok(device)
    w3 = rand_nhwc(16, 8, 3, 3, device=device)
    with pytest.raises(ValueError, match=r"conv1x1 needs a \[Cout, Cin, 1, 1\] weight, got shape \(16, 8, 3, 3\)"):
        K.conv1x1(x, w3, b)


def test_shared_checks(device):
    """conv1x1 validates like conv_bn_relu: rank, layout, channels, bias, residual, dtype, device."""
    x, w, b = _ok(device)
    with pytest.raises(ValueError, match=r"x must have rank 4, got rank 3"):
        K.conv1x1(x[0], w, b)
    with pytest.raises(ValueError, match=r"x must be channels_last"):
        K.conv1x1(x.contiguous(), w, b)
    with pytest.raises(ValueError, match=r"w has 9 input channels .*but x has 8"):
        K.conv1x1(x, rand_nhwc(16, 9, 1, 1, device=device), b)
    with pytest.raises(ValueError, match=r"b must have shape \(16,\).*got \(8,\)"):
        K.conv1x1(x, w, b[:8])
    with pytest.raises(TypeError, match=r"b must be float32.*got torch.float64"):
        K.conv1x1(x, w, b.double())
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 16, 3, 3\) \(the output's\), got \(2, 16, 5, 5\)"):
        K.conv1x1(x, w, b, stride=2, residual=rand_nhwc(2, 16, 5, 5, device=device))
    with pytest.raises(TypeError, match=r"w has dtype torch.float16 but x has dtype torch.float32"):
        K.conv1x1(x, w.half(), b)
    with pytest.raises(ValueError, match=r"w is on meta but x is on"):
        K.conv1x1(x, w.to("meta"), b)
    with pytest.raises(ValueError, match=r"stride must be >= 1.*got stride=0"):
        K.conv1x1(x, w, b, stride=0)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 16, 5, 5\)"):
        K.conv1x1(x, w, b, out=poisoned_out((2, 16, 3, 3), torch.float32, device))


def test_cpu_without_interpreter(monkeypatch):
    x, w, b = _ok(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"x is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        K.conv1x1(x, w, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch(dtype, device):
    x, w, b, _ = make_inputs(0, 8, 7, 5, 16, dtype, device)
    y = K.conv1x1(x, w, b, stride=2)
    assert y.shape == (0, 16, 4, 3) and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)


# timm's `d` shortcut: AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), then the 1x1 conv.
@pytest.mark.parametrize("h, w", [(8, 8), (7, 5), (1, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
def test_avg_pool_shortcut(h, w, dtype, device):
    n, cin, cout = 2, 24, 40
    x, wt, b, _ = make_inputs(n, cin, h, w, cout, dtype, device)
    oh, ow = (h + 1) // 2, (w + 1) // 2
    out = poisoned_out((n, cout, oh, ow), dtype, device)
    y = K.conv1x1(x, wt, b, stride=2, pool=True, relu=False, out=out)
    pooled = F.avg_pool2d(x.double().cpu(), 2, 2, ceil_mode=True, count_include_pad=False)
    if dtype != torch.float32:
        pooled = pooled.to(dtype).double()  # torch's pool output is rounded to the activation dtype
    assert_close(y, ref_conv1x1(pooled, wt, b, relu=False), rtol=KERNEL_RTOL[dtype])


def test_avg_pool_needs_stride_2(device):
    x, wt, b, _ = make_inputs(1, 16, 4, 4, 16, torch.float32, device)
    with pytest.raises(ValueError, match="stride 2"):
        K.conv1x1(x, wt, b, stride=1, pool=True)
