"""Split-K (fastres.kernels.splitk) through the conv launchers: parity with torch in float64
for every config of every conv space split, uneven and clamped splits, every epilogue, the
workspace (given, reused, poisoned, refused), determinism, and the split heuristic's choices."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import fastres.kernels.config as config_mod
from fastres import kernels as K
from fastres.kernels import Config, config_space, select_config, tuning_candidates
from fastres.kernels.config import MIN_ITERS_PER_SPLIT, MIN_SAVED_ITERS, choose_split, k_iters
from fastres.kernels.splitk import reduce_partials, split_plan, workspace_numel
from helpers import DTYPES, KERNEL_RTOL, ON_GPU, assert_close, nhwc, rand_nhwc
from test_conv import ref_conv


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def poisoned(shape, dtype, device):
    return nhwc(torch.full(shape, float("nan"), dtype=dtype)).to(device)


def conv_case(kernel, n, cin, cout, hw, k, stride, pad, dtype, device, residual=True):
    """Inputs of one conv and its output shape; the stem's input is NCHW float32 as a user's."""
    if kernel == "conv_stem":
        x = torch.randn(n, cin, hw, hw).to(device)
    else:
        x = rand_nhwc(n, cin, hw, hw, dtype=dtype, device=device)
    w = rand_nhwc(cout, cin, k, k, dtype=dtype, device=device, scale=(cin * k * k) ** -0.5)
    b = (torch.randn(cout) * 0.5).to(device)
    oh = (hw + 2 * pad - k) // stride + 1
    r = rand_nhwc(n, cout, oh, oh, dtype=dtype, device=device) if residual else None
    return x, w, b, r, (n, cout, oh, oh)


def launch(kernel, x, w, b, r, *, stride, pad, relu=True, out=None, config=None, workspace=None, counters=None):
    if kernel == "conv1x1":
        return K.conv1x1(x, w, b, stride=stride, relu=relu, residual=r, out=out, config=config, workspace=workspace,
                         counters=counters)
    if kernel == "conv_stem":
        return K.stem_conv(x, w, b, stride=stride, padding=pad, relu=relu, out=out, config=config,
                           workspace=workspace, counters=counters)
    return K.conv_bn_relu(x, w, b, stride=stride, padding=pad, relu=relu, residual=r, out=out, config=config,
                          workspace=workspace, counters=counters)


# ---------------------------------------------------------------- the plan

@pytest.mark.parametrize("iters,split,expected", [
    (72, 17, (15, 5)),   # uneven: 14 splits of 5 and one of 2, none empty
    (72, 8, (8, 9)),
    (3, 8, (3, 1)),      # more splits asked than iterations: one iteration each
    (10, 1, (1, 10)),
    (1, 4, (1, 1)),
    (5, 0, (1, 5)),
    (0, 4, (1, 0)),      # an empty K loop (no input channels)
])
def test_split_plan(iters, split, expected):
    splits, per = split_plan(iters, split)
    assert (splits, per) == expected
    if iters:
        assert (splits - 1) * per < iters <= splits * per, "no empty split, every iteration covered"


def test_workspace_numel():
    assert workspace_numel(49, 512, 1) == 0
    assert workspace_numel(49, 512, 15) == 15 * 49 * 512
    # planes padded to 16 elements: the head's 1000 classes at batch 1
    assert workspace_numel(1, 1000, 8) == 8 * 1008


def test_choose_split_rules():
    sms = 132
    # ResNet-50 layer4 3x3 at batch 1: 8 tiles of 64x64, 72 K steps.
    s = choose_split(8, 72, sms)
    assert s == 17 and 72 // s >= MIN_ITERS_PER_SPLIT
    assert choose_split(8, 72, sms) * 8 >= sms, "the split fills the SMs"
    assert choose_split(66, 100, sms) == 2          # exactly half the SMs idle: split
    assert choose_split(67, 100, sms) == 1          # a grid over half the SMs: not split
    assert choose_split(8, 7, sms) == 1             # too short to split (< 2 x MIN_ITERS_PER_SPLIT)
    assert choose_split(8, 8, sms) == 1             # 2 x 4: saves 4 steps, under MIN_SAVED_ITERS
    assert choose_split(49, 9, sms) == 1            # layer1's 3x3 at batch 1: 9 -> 5 steps, not worth a launch
    assert choose_split(8, 16, sms) == 4            # 16 -> 4 steps
    for programs, iters in ((8, 72), (16, 36), (26, 18), (66, 100), (1, 1000)):
        s = choose_split(programs, iters, sms)
        assert iters - -(-iters // s) >= MIN_SAVED_ITERS and iters // s >= MIN_ITERS_PER_SPLIT
    assert choose_split(1, 1000, sms) == sms        # one tile: one split per SM


def test_empty_problems_are_not_split(monkeypatch):
    """Batch 0 reaches select_config before the launchers return early: no division by zero."""
    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    assert choose_split(0, 72, 132) == 1 and choose_split(8, 0, 132) == 1
    for kernel, taps in (("conv", 9), ("conv1x1", 1), ("conv_stem", 1)):
        assert select_config(kernel, torch.float16, M=0, N=64, K=64, taps=taps).SPLIT_K == 1
        assert all(c.SPLIT_K == 1 for c in tuning_candidates(kernel, torch.float16, M=0, N=64, K=64, taps=taps))


def test_heuristic_splits_small_grids_only(monkeypatch):
    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    dt = torch.float16
    # batch 1, layer4: 3x3 512->512 at 7x7 and the 1x1 2048->512.
    c = select_config("conv", dt, M=49, N=512, K=512, taps=9)
    assert c.SPLIT_K > 1 and dataclasses.replace(c, SPLIT_K=1) in config_space("conv", dt)
    c = select_config("conv1x1", dt, M=49, N=512, K=2048)
    assert c.SPLIT_K > 1
    # batch 256: plenty of tiles, no split anywhere.
    assert select_config("conv", dt, M=256 * 49, N=512, K=512, taps=9).SPLIT_K == 1
    assert select_config("conv1x1", dt, M=256 * 49, N=512, K=2048).SPLIT_K == 1
    # The stem's flat K loop (147 / 32 = 5 steps) is never split.
    assert select_config("conv_stem", dt, M=16 * 16, N=64, K=147).SPLIT_K == 1
    # Elementwise kernels ignore split-K entirely.
    assert select_config("add_relu", dt).SPLIT_K == 1


def test_tuning_candidates(monkeypatch):
    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    dt = torch.float16
    rows = config_mod.bordered_rows  # the bordered convs' grid over the 9x9 bordered 7x7 map
    small = tuning_candidates("conv", dt, M=49, N=512, K=512, taps=9, segments=(7, 7), bordered=rows(1, 9, 9, 7, 7))
    base = config_space("conv", dt)
    assert set(base) <= set(small)
    assert all(c.SPLIT_K > 1 for c in small if c not in base) and len(small) > len(base)
    assert select_config("conv", dt, M=49, N=512, K=512, taps=9) in small
    assert tuning_candidates("conv", dt, M=256 * 49, N=512, K=512, taps=9, segments=(256 * 7, 7),
                             bordered=rows(256, 9, 9, 7, 7)) == base
    assert tuning_candidates("max_pool2d", dt, M=1, N=1, K=1) == config_space("max_pool2d", dt)


def test_config_name_shows_the_split():
    assert Config(64, 64, 64, 4, 4, SPLIT_K=8).name == "64x64x64_w4_s4_k8"
    assert "_k" not in Config(64, 64, 64, 4, 4).name


# ---------------------------------------------------------------- parity

def _space_params():
    out = []
    for kernel in ("conv", "conv_stem", "conv1x1"):
        for dtype in (torch.float32, torch.float16):
            for c in config_space(kernel, dtype):
                if not c.splits:
                    continue  # warp-specialized or persistent: never split (kernels/gemm_tma.py, kernels/conv_bordered.py)
                out.append(pytest.param(kernel, dtype, c, id=f"{kernel}-{dtype_id(dtype)}-{c.name}"))
                if (c.variant == "ptr" and kernel != "conv_stem" and dtype in config_mod.HOPPER_DTYPES
                        and c.BLOCK_M <= config_mod.FUSED_MAX_BLOCK_M):
                    f = dataclasses.replace(c, variant="fused_k")
                    out.append(pytest.param(kernel, dtype, f, id=f"{kernel}-{dtype_id(dtype)}-{f.name}"))
    return out


@pytest.mark.parametrize("kernel,dtype,cfg", _space_params())
def test_every_config_split(kernel, dtype, cfg, device):
    """Each config of each conv space, split 3 ways (fused too where tuning offers that), on a
    problem with tails in M, N and K (a TMA conv: whole BLOCK_K steps per tap)."""
    if kernel == "conv_stem":
        case = dict(cin=3, k=7, stride=2, pad=3, hw=13)
    elif kernel == "conv":
        case = dict(cin=2 * cfg.BLOCK_K if cfg.tma else 72, k=3, stride=1, pad=1, hw=5)
    else:
        case = dict(cin=200, k=1, stride=1, pad=0, hw=5)
    x, w, b, r, shape = conv_case(kernel, 2, case["cin"], 72, case["hw"], case["k"], case["stride"], case["pad"],
                                  dtype, device, residual=kernel != "conv_stem")  # split: every tile takes one
    if cfg.bordered:  # the bordered conv reads the interior of a zero-bordered map
        x = K.zero_bordered(x, case["pad"])
    out = poisoned(shape, dtype, device)
    y = launch(kernel, x, w, b, r, stride=case["stride"], pad=case["pad"], out=out,
               config=dataclasses.replace(cfg, SPLIT_K=3))
    assert y.data_ptr() == out.data_ptr()
    ref = ref_conv(x, w, b, stride=case["stride"], padding=case["pad"], residual=r)
    assert_close(y, ref, KERNEL_RTOL[dtype], what=f"{kernel} {cfg.name} split 3")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("split", [2, 5, 64])  # 64: more than the K loop has steps, clamped
@pytest.mark.parametrize("relu,residual", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("kernel,k,stride,pad", [
    ("conv", 3, 1, 1), ("conv", 3, 2, 1), ("conv1x1", 1, 1, 0), ("conv1x1", 1, 2, 0),
])
def test_split_epilogues(kernel, k, stride, pad, relu, residual, split, dtype, device):
    x, w, b, r, shape = conv_case(kernel, 1, 96, 80, 7, k, stride, pad, dtype, device, residual=residual)
    cfg = Config(64, 64, 32, 4, 1, SPLIT_K=split)
    y = launch(kernel, x, w, b, r, stride=stride, pad=pad, relu=relu, out=poisoned(shape, dtype, device), config=cfg)
    ref = ref_conv(x, w, b, stride=stride, padding=pad, relu=relu, residual=r)
    assert_close(y, ref, KERNEL_RTOL[dtype], what=f"{kernel} {k}x{k}/{stride} split {split}")


def test_residual_may_be_out(device):
    """As unsplit: the residual read in the reduce launch may be the output buffer itself."""
    x, w, b, r, shape = conv_case("conv", 1, 64, 64, 6, 3, 1, 1, torch.float32, device)
    ref = ref_conv(x, w, b, padding=1, residual=r)
    y = K.conv_bn_relu(x, w, b, padding=1, residual=r, out=r, config=Config(32, 32, 16, 4, 1, SPLIT_K=4))
    assert y.data_ptr() == r.data_ptr()
    assert_close(y, ref, KERNEL_RTOL[torch.float32], what="residual is out")


def test_workspace_given_reused_and_poisoned(device):
    """A caller's workspace (NaN-filled, bigger than needed) gives the same bits as a fresh one,
    twice in a row: no state is carried between launches, the sum order is fixed."""
    x, w, b, r, shape = conv_case("conv1x1", 1, 256, 128, 7, 1, 1, 0, torch.float16, device)
    cfg = Config(64, 64, 32, 4, 1, SPLIT_K=4)
    fresh = K.conv1x1(x, w, b, residual=r, config=cfg)
    ws = torch.full((workspace_numel(49, 128, 4) + 100,), float("nan"), device=device)
    for _ in range(2):
        y = K.conv1x1(x, w, b, residual=r, config=cfg, workspace=ws)
        assert torch.equal(y, fresh)
    assert_close(fresh, ref_conv(x, w, b, residual=r), KERNEL_RTOL[torch.float16], what="split 1x1")


def test_unsplit_ignores_the_workspace(device):
    x, w, b, r, shape = conv_case("conv", 1, 32, 32, 5, 3, 1, 1, torch.float32, device)
    y = K.conv_bn_relu(x, w, b, padding=1, residual=r, config=Config(32, 32, 16, 4, 1), workspace=torch.empty(0))
    assert_close(y, ref_conv(x, w, b, padding=1, residual=r), KERNEL_RTOL[torch.float32], what="unsplit")


def test_nan_propagates_through_the_split(device):
    x, w, b, r, shape = conv_case("conv1x1", 1, 64, 32, 4, 1, 1, 0, torch.float32, device, residual=False)
    x[0, 5, 1, 2] = float("nan")
    y = K.conv1x1(x, w, b, config=Config(16, 16, 16, 4, 1, SPLIT_K=4))
    assert torch.isnan(y[0, :, 1, 2]).all()
    assert torch.isfinite(y[0, :, 0, 0]).all()


def test_reduce_partials_direct(device):
    """The reduce launch alone: sum of the planes in float32, + bias + residual, ReLU, cast."""
    splits, n, co, hw = 5, 2, 48, 3
    m = n * hw * hw
    ws = torch.randn(splits, m, co).to(device)
    b = torch.randn(co).to(device)
    r = rand_nhwc(n, co, hw, hw, dtype=torch.float16, device=device)
    y = poisoned((n, co, hw, hw), torch.float16, device)
    reduce_partials(ws.reshape(-1), splits, b, r, y, M=m, OH=hw, OW=hw, relu=True)
    ref = ws.double().sum(0).cpu() + b.double().cpu()
    ref = ref.view(n, hw, hw, co).permute(0, 3, 1, 2) + r.double().cpu()
    assert_close(y, ref.relu(), KERNEL_RTOL[torch.float16], what="reduce_partials")


# ---------------------------------------------------------------- refusals

def test_workspace_refusals(device):
    x, w, b, r, shape = conv_case("conv1x1", 1, 128, 64, 4, 1, 1, 0, torch.float32, device)
    cfg = Config(16, 16, 16, 4, 1, SPLIT_K=4)
    need = workspace_numel(16, 64, 4)
    with pytest.raises(TypeError, match=r"workspace must be float32 \(partial sums\), got torch.float16"):
        K.conv1x1(x, w, b, residual=r, config=cfg, workspace=torch.empty(need, dtype=torch.float16, device=device))
    with pytest.raises(ValueError, match=rf"workspace has {need - 1} elements but this split launch needs {need}"):
        K.conv1x1(x, w, b, residual=r, config=cfg, workspace=torch.empty(need - 1, device=device))
    with pytest.raises(ValueError, match=r"workspace must be 1-D \(it is carved up by element\), got shape \(2, "):
        K.conv1x1(x, w, b, residual=r, config=cfg, workspace=torch.empty(2, need, device=device))
    with pytest.raises(ValueError, match=r"workspace must be contiguous"):
        K.conv1x1(x, w, b, residual=r, config=cfg, workspace=torch.empty(2 * need, device=device)[::2])
    with pytest.raises(TypeError, match=r"workspace must be a torch.Tensor, got list"):
        K.conv1x1(x, w, b, residual=r, config=cfg, workspace=[0.0] * need)
    # A workspace that is (part of) an input or the output would be overwritten while read.
    big = torch.empty(need + 64 * 16, device=device)
    with pytest.raises(ValueError, match=r"workspace overlaps b in memory"):
        K.conv1x1(x, w, big[:64], residual=r, config=cfg, workspace=big)
    out = torch.empty(need + 16 * 64, device=device)
    y = out[:16 * 64].view(1, 4, 4, 64).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match=r"workspace overlaps out in memory"):
        K.conv1x1(x, w, b, residual=r, out=y, config=cfg, workspace=out)


@pytest.mark.skipif(ON_GPU, reason="device mismatch needs a CPU tensor beside a GPU one; shown on the CPU")
def test_workspace_on_another_device_is_named():
    meta_ws = torch.empty(10000, device="meta")
    x, w, b, r, shape = conv_case("conv1x1", 1, 128, 64, 4, 1, 1, 0, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"workspace is on meta but"):
        K.conv1x1(x, w, b, residual=r, config=Config(16, 16, 16, 4, 1, SPLIT_K=4), workspace=meta_ws)


def test_k_iters():
    assert k_iters(512, 64, 9) == 72
    assert k_iters(147, 32) == 5
    assert k_iters(200, 64) == 4


# ---------------------------------------------------------------- fused split-K

@pytest.mark.parametrize("kernel,k,stride,pad", [
    ("conv", 3, 1, 1), ("conv", 3, 2, 1), ("conv1x1", 1, 1, 0), ("conv1x1", 1, 2, 0),
])
@pytest.mark.parametrize("relu,residual", [(True, True), (True, False), (False, False)])
def test_fused_split_is_bitwise_the_two_launch_split(kernel, k, stride, pad, relu, residual, device):
    """The last program of each tile sums the partials in the reduce launch's order: the same
    bits, and the counters are zero again after the launch (a replayed graph reuses them)."""
    x, w, b, r, shape = conv_case(kernel, 1, 96, 80, 7, k, stride, pad, torch.float16, device, residual=residual)
    two = launch(kernel, x, w, b, r, stride=stride, pad=pad, relu=relu, config=Config(16, 32, 16, 4, 1, SPLIT_K=5))
    counters = torch.zeros(K.COUNTER_WORDS, dtype=torch.int32, device=device)
    fused = Config(16, 32, 16, 4, 1, SPLIT_K=5, variant="fused_k")
    for _ in range(2):  # the second launch finds the counters the first left
        one = launch(kernel, x, w, b, r, stride=stride, pad=pad, relu=relu, config=fused, counters=counters)
        assert torch.equal(one, two)
        assert not counters.any()


def test_fused_split_head_and_stem(device):
    x = rand_nhwc(2, 96, 3, 3, dtype=torch.float16, device=device)
    w = (torch.randn(40, 96) * 0.1).half().to(device)
    b = torch.randn(40).to(device)
    two = K.avgpool_fc(x, w, b, config=Config(16, 16, 16, 4, 1, SPLIT_K=3))
    one = K.avgpool_fc(x, w, b, config=Config(16, 16, 16, 4, 1, SPLIT_K=3, variant="fused_k"))
    assert torch.equal(one, two)
    xs, ws, bs, _, _ = conv_case("conv_stem", 1, 3, 16, 13, 7, 2, 3, torch.float16, device, residual=False)
    two = launch("conv_stem", xs, ws, bs, None, stride=2, pad=3, config=Config(16, 16, 16, 4, 1, SPLIT_K=4))
    one = launch("conv_stem", xs, ws, bs, None, stride=2, pad=3, config=Config(16, 16, 16, 4, 1, SPLIT_K=4,
                                                                                  variant="fused_k"))
    assert torch.equal(one, two)


def test_fused_split_counters_are_checked(device):
    x, w, b, r, _ = conv_case("conv", 1, 32, 32, 5, 3, 1, 1, torch.float16, device)
    cfg = Config(16, 16, 16, 4, 1, SPLIT_K=3, variant="fused_k")
    for bad, msg in ((torch.zeros(8, dtype=torch.int64, device=device), "int32"),
                     (torch.zeros(1, dtype=torch.int32, device=device), "4 tiles")):
        with pytest.raises(ValueError, match=msg):
            K.conv_bn_relu(x, w, b, padding=1, residual=r, config=cfg, counters=bad)


@pytest.mark.skipif(not ON_GPU, reason="the fused split's arrival race needs programs running at once: GPU only")
def test_fused_split_is_deterministic_on_gpu(device):
    """Programs of one tile arrive in any order on a GPU; the last one's sum is in a fixed
    order whoever it is, so every launch gives the same bits as the two-launch split."""
    x, w, b, r, _ = conv_case("conv", 1, 512, 512, 7, 3, 1, 1, torch.float16, device)
    base = select_config("conv", torch.float16, M=49, N=512, K=512, taps=9, device=device)
    split = dataclasses.replace(base, SPLIT_K=max(2, base.SPLIT_K), BLOCK_M=64)
    two = launch("conv", x, w, b, r, stride=1, pad=1, config=split)
    counters = torch.zeros(K.COUNTER_WORDS, dtype=torch.int32, device=device)
    fused = dataclasses.replace(split, variant="fused_k")
    for _ in range(100):
        one = launch("conv", x, w, b, r, stride=1, pad=1, config=fused, counters=counters)
        assert torch.equal(one, two)
    assert not counters.any()
