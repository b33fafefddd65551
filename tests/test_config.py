"""fastres.kernels.config: the config space, the GPU heuristic, the interpreter's choice and
use_config overrides (restored on exit, per thread); every dispatchable config computes right."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F

import fastres.kernels.config as config_mod
from fastres import kernels as K
from fastres.kernels import Config, config_space, select_config, tuning_candidates, use_config
from helpers import KERNEL_RTOL, ON_GPU, assert_close, rand_nhwc

KERNELS = ("conv", "conv_stem", "conv1x1", "avgpool", "max_pool2d", "add_relu", "splitk_reduce")
GEMMS = ("conv", "conv_stem", "conv1x1")
SPACE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


@pytest.fixture
def gpu_heuristic(monkeypatch):
    """select_config as on a GPU, whatever this machine is (interpreting() read at call time)."""
    monkeypatch.setattr(config_mod, "interpreting", lambda: False)


def ref_conv(x, w, b, *, stride=1, padding=0, relu=True, residual=None):
    """torch reference in float64 on the CPU."""
    y = F.conv2d(x.double().cpu(), w.double().cpu(), b.double().cpu(), stride=stride, padding=padding)
    if residual is not None:
        y = y + residual.double().cpu()
    return F.relu(y) if relu else y


# ---------------------------------------------------------------- the space itself

@pytest.mark.parametrize("dtype", SPACE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kernel", KERNELS)
def test_space_rules(kernel, dtype):
    space = config_space(kernel, dtype)
    assert space and all(isinstance(c, Config) for c in space)
    assert len(set(space)) == len(space), "duplicate configs"
    for c in space:
        for v in (c.BLOCK_M, c.BLOCK_N, c.BLOCK_K, c.num_warps):
            assert v & (v - 1) == 0, f"{c.name}: block sizes and warps must be powers of two"
        if kernel in GEMMS:
            assert c.BLOCK_M >= 64, f"{c.name}: wgmma needs BLOCK_M >= 64"
            assert c.BLOCK_N >= 16 and c.BLOCK_K >= 16, f"{c.name}: tl.dot needs N, K >= 16"
        if kernel in ("conv", "conv_stem"):
            assert c.num_warps <= 4, f"{c.name}: non-1x1 convs keep num_warps <= 4"
    # The gate's documented spill case must not be in the space.
    assert all(not (c.BLOCK_M == 128 and c.BLOCK_N == 256 and c.BLOCK_K == 64) for c in space)


def test_unknown_kernel_or_dtype():
    with pytest.raises(ValueError, match=r"no config space for kernel 'conv3d' at dtype torch.float16"):
        config_space("conv3d", torch.float16)
    with pytest.raises(ValueError, match=r"no config space for kernel 'conv' at dtype torch.float64"):
        config_space("conv", torch.float64)


def test_config_name_and_launch_kwargs():
    c = Config(64, 32, 16, num_warps=2, num_stages=3, GROUP_M=4)
    assert c.name == "64x32x16_w2_s3"
    assert c.launch_kwargs("BLOCK_M", "GROUP_M") == dict(BLOCK_M=64, GROUP_M=4, num_warps=2, num_stages=3)
    with pytest.raises(Exception):
        c.BLOCK_M = 128  # frozen: a config is a value


# ---------------------------------------------------------------- the GPU heuristic

def segments_of(M: int) -> tuple[int, int]:
    """(N*OH, OW) of a problem of PROBLEMS (square outputs): the tma conv's row segments."""
    hw = next(hw for hw in (112, 56, 28, 14, 7, 1) if M % (hw * hw) == 0)
    return M // hw, hw


PROBLEMS = [
    # M, N, K (pixels, output channels, reduction channels)
    (1 * 112 * 112, 64, 3),       # stem, batch 1
    (256 * 56 * 56, 64, 64),      # layer1, batch 256
    (1 * 7 * 7, 512, 512),        # layer4, batch 1
    (32 * 28 * 28, 128, 128),
    (1, 1, 1),
    (8 * 14 * 14, 1024, 256),
]


@pytest.mark.parametrize("dtype", SPACE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mnk", PROBLEMS, ids=lambda p: "x".join(map(str, p)))
def test_gpu_heuristic_picks_from_the_space(mnk, kernel, dtype, gpu_heuristic):
    M, N, K_ = mnk
    cfg = select_config(kernel, dtype, M=M, N=N, K=K_)
    # The tile is from the space; a split of it (small grids) is among what tuning measures.
    assert dataclasses.replace(cfg, SPLIT_K=1) in config_space(kernel, dtype)
    assert cfg in K.tuning_candidates(kernel, dtype, M=M, N=N, K=K_, segments=segments_of(M))


@pytest.mark.parametrize("dtype", SPACE_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kernel", GEMMS)
def test_gpu_heuristic_shape_rules(kernel, dtype, gpu_heuristic):
    space = config_space(kernel, dtype)
    widest = max(c.BLOCK_K for c in space)
    # Thin reduction (stem Cin = 3): the smallest BLOCK_K in the space.
    assert select_config(kernel, dtype, M=112 * 112, N=64, K=3).BLOCK_K == min(c.BLOCK_K for c in space)
    # A wide reduction fills the widest BLOCK_K.
    assert select_config(kernel, dtype, M=56 * 56, N=256, K=512).BLOCK_K == widest
    # Plenty of tiles: the biggest tile with that BLOCK_K; too few: the smallest.
    big = select_config(kernel, dtype, M=256 * 56 * 56, N=1024, K=1024)
    small = select_config(kernel, dtype, M=49, N=64, K=1024)
    cands = [c for c in space if c.BLOCK_K == widest]
    assert big.BLOCK_M * big.BLOCK_N == max(c.BLOCK_M * c.BLOCK_N for c in cands)
    assert small.BLOCK_M * small.BLOCK_N == min(c.BLOCK_M * c.BLOCK_N for c in cands)


def test_gpu_heuristic_reads_the_sm_count(monkeypatch, gpu_heuristic):
    """With fewer SMs a mid-sized problem already fills the machine with big tiles."""
    M, N, K_ = 4 * 28 * 28, 128, 128
    many = select_config("conv", torch.float16, M=M, N=N, K=K_, sms=132)
    assert many == select_config("conv", torch.float16, M=M, N=N, K=K_)  # 132 SMs without a CUDA device
    few = select_config("conv", torch.float16, M=M, N=N, K=K_, sms=8)
    assert few.BLOCK_M * few.BLOCK_N >= many.BLOCK_M * many.BLOCK_N
    assert few.BLOCK_M * few.BLOCK_N == max(c.BLOCK_M * c.BLOCK_N for c in config_space("conv", torch.float16)
                                            if c.BLOCK_K == few.BLOCK_K)


def test_planning_for_a_gpu_under_the_interpreter():
    """interpreter=False plans GPU tiles even while the interpreter runs (a schedule for an H100)."""
    gpu = select_config("conv", torch.float16, M=49, N=512, K=512, taps=9, sms=132, interpreter=False)
    assert gpu in {dataclasses.replace(c, SPLIT_K=gpu.SPLIT_K) for c in config_space("conv", torch.float16)}
    assert gpu.SPLIT_K > 1


def test_interpreter_choice_is_clamped_to_the_problem(monkeypatch):
    monkeypatch.setattr(config_mod, "interpreting", lambda: True)
    c = select_config("conv", torch.float32, M=35, N=24, K=3)
    assert c.BLOCK_M <= 64 and c.BLOCK_N <= 32 and c.BLOCK_K == 16, c.name   # next powers of two, >= 16
    c = select_config("conv1x1", torch.float16, M=1, N=1, K=1)
    assert min(c.BLOCK_M, c.BLOCK_N, c.BLOCK_K) >= 16, "tl.dot needs tiles of at least 16"


# ---------------------------------------------------------------- use_config

def test_use_config_overrides_and_restores(gpu_heuristic):
    default = select_config("conv", torch.float16, M=4096, N=256, K=256)
    a, b = Config(64, 64, 16), Config(128, 64, 16)
    with use_config("conv", a) as got:
        assert got is a
        assert select_config("conv", torch.float16, M=4096, N=256, K=256) is a
        assert select_config("conv", torch.float32, M=1, N=1, K=1) is a       # any dtype, any shape
        assert select_config("conv1x1", torch.float16, M=4096, N=256, K=256) != a  # only that kernel
        with use_config("conv", b):
            assert select_config("conv", torch.float16, M=4096, N=256, K=256) is b
        assert select_config("conv", torch.float16, M=4096, N=256, K=256) is a    # outer one back
    assert select_config("conv", torch.float16, M=4096, N=256, K=256) == default


def test_use_config_restores_on_error(gpu_heuristic):
    default = select_config("add_relu", torch.float16)
    with pytest.raises(RuntimeError, match="boom"):
        with use_config("add_relu", Config(256)):
            raise RuntimeError("boom")
    assert select_config("add_relu", torch.float16) == default


def test_use_config_is_thread_local(gpu_heuristic):
    forced = Config(64, 64, 16)
    default = select_config("conv", torch.float16, M=4096, N=256, K=256)
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def other():
        seen["other_sees_main"] = select_config("conv", torch.float16, M=4096, N=256, K=256)
        with use_config("conv", Config(128, 128, 32)):
            inside.set()
            release.wait(10)
        seen["other_after"] = select_config("conv", torch.float16, M=4096, N=256, K=256)

    with use_config("conv", forced):
        t = threading.Thread(target=other)
        t.start()
        assert inside.wait(10)
        # The other thread's override is active now; this thread still sees its own.
        assert select_config("conv", torch.float16, M=4096, N=256, K=256) is forced
        release.set()
        t.join(10)
    assert seen["other_sees_main"] == default and seen["other_after"] == default
    assert select_config("conv", torch.float16, M=4096, N=256, K=256) == default


# ---------------------------------------------------------------- every config computes right

def _space_params():
    out = []
    for kernel in GEMMS:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for c in config_space(kernel, dtype):
                marks = ()
                if dtype == torch.bfloat16 and not ON_GPU:
                    marks = pytest.mark.skip(reason="bf16 tl.dot is wrong in triton's CPU interpreter "
                                                    "(triton issue 11584): GPU only")
                out.append(pytest.param(kernel, dtype, c, marks=marks, id=f"{kernel}-{dtype_id(dtype)}-{c.name}"))
    return out


@pytest.mark.parametrize("kernel,dtype,cfg", _space_params())
def test_every_dispatchable_config(kernel, dtype, cfg, device):
    """Each config the engine may dispatch, forced through use_config, on a problem with tails in
    M, N (Cout 72) and K: conv 3x3 over Cin 40, the stem 7x7/2 over Cin 3 (K = 147) read from an
    NCHW float32 input, conv1x1 over Cin 40."""
    if kernel == "conv_stem":
        x = torch.randn(2, 3, 13, 11).to(device)  # the caller's input as it comes
        cin, k, stride, pad = 3, 7, 2, 3
    else:
        cin, k, stride, pad = 40, (3 if kernel == "conv" else 1), 1, (1 if kernel == "conv" else 0)
        if not config_mod.applies(kernel, cfg, K=cin):
            cin = 2 * cfg.BLOCK_K  # a TMA conv's weight boxes need whole BLOCK_K steps per tap
        x = rand_nhwc(2, cin, 5, 7, dtype=dtype, device=device)
        if cfg.bordered:  # the bordered convs read the interior of a zero-bordered map
            x = K.zero_bordered(x, 1)
    w = rand_nhwc(72, cin, k, k, dtype=dtype, device=device, scale=(cin * k * k) ** -0.5)
    b = torch.randn(72).to(device)
    oh, ow = (x.shape[2] + 2 * pad - k) // stride + 1, (x.shape[3] + 2 * pad - k) // stride + 1
    # A tile that spills with the fused residual is only ever launched without one.
    r = None if config_mod.residual_unsafe(kernel, cfg) else rand_nhwc(2, 72, oh, ow, dtype=dtype, device=device)
    out = torch.full((2, 72, oh, ow), float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    if kernel != "conv1x1":
        # The launcher picks its config from this space for this input (the override is not ignored).
        assert K.conv.reduction(cin, k, k)[2] == kernel
    with use_config(kernel, cfg):
        if kernel == "conv":
            y = K.conv_bn_relu(x, w, b, padding=1, residual=r, out=out)
            ref = ref_conv(x, w, b, padding=1, residual=r)
        elif kernel == "conv_stem":
            y = K.stem_conv(x, w, b, stride=2, padding=3, out=out)
            ref = ref_conv(x, w, b, stride=2, padding=3)
        else:
            y = K.conv1x1(x, w, b, residual=r, out=out)
            ref = ref_conv(x, w, b, residual=r)
    assert_close(y, ref, KERNEL_RTOL[dtype], what=f"{kernel} {cfg.name}")


# ---------------------------------------------------------------- tiles that cannot take a residual

def test_residual_unsafe_tiles_never_reach_a_residual(gpu_heuristic):
    from fastres.gate.run import tasks

    dt = torch.float16
    unsafe = [c for c in config_space("conv", dt) if config_mod.residual_unsafe("conv", c)]
    assert unsafe, "the space has a tile for convs without a residual only (128x128x64, 4 warps)"
    assert not set(unsafe) & set(config_space("conv", dt, residual=True))
    # At batch 256 a 3x3 without a residual (ResNet-50's) takes the big tile; BasicBlock's
    # second 3x3 (with one) cannot, split or not.
    plain = select_config("conv", dt, M=256 * 28 * 28, N=128, K=128, taps=9)
    assert config_mod.residual_unsafe("conv", plain), plain.name
    assert not config_mod.residual_unsafe("conv", select_config("conv", dt, M=256 * 28 * 28, N=128, K=128, taps=9,
                                                                 residual=True))
    for n, hw in ((1, 7), (1, 28), (256, 56)):
        m, seg = n * hw * hw, (n * hw, hw)
        cands = K.tuning_candidates("conv", dt, M=m, N=512, K=512, taps=9, residual=True, segments=seg)
        assert cands and not any(config_mod.residual_unsafe("conv", c) for c in cands)
        assert any(config_mod.residual_unsafe("conv", c)
                   for c in K.tuning_candidates("conv", dt, M=m, N=512, K=512, taps=9, segments=seg))
    # Split, the tile is fine with a residual: the reduce launch adds it.
    split = K.tuning_candidates("conv", dt, M=49, N=512, K=512, taps=9, residual=True, segments=(7, 7))
    assert any(c.SPLIT_K > 1 and dataclasses.replace(c, SPLIT_K=1) in unsafe for c in split)
    # The gate compiles that tile for the launches without a residual, and only those.
    rows = [t for t in tasks(kernels=["conv"], dtypes=["float16"]) if t.config in unsafe]
    metas = [dict(t.variant.meta) for t in rows]
    assert rows and not any(m["HAS_RESIDUAL"] and not m["SPLIT"] for m in metas)
    assert any(m["HAS_RESIDUAL"] and m["SPLIT"] for m in metas)


def test_heuristic_keeps_tiles_within_the_output_channels(gpu_heuristic):
    """64 output channels never get a 128-wide tile (half of it would compute zeros)."""
    for kernel, taps in (("conv", 9), ("conv1x1", 1)):
        assert select_config(kernel, torch.float16, M=256 * 56 * 56, N=64, K=64, taps=taps).BLOCK_N == 64
        assert select_config(kernel, torch.float16, M=256 * 56 * 56, N=256, K=64, taps=taps).BLOCK_N == 128


# ---------------------------------------------------------------- the Hopper-native variants

def test_variant_field_names_and_validates():
    assert Config(64, 64, 64, 4, 4).variant == "ptr"
    assert Config(64, 64, 64, 4, 4, variant="tma").name == "64x64x64_w4_s4_tma"
    assert Config(64, 64, 64, 4, 4, SPLIT_K=3, variant="fused_k").name == "64x64x64_w4_s4_k3_fused_k"
    with pytest.raises(ValueError, match="unknown config variant 'wgmma'"):
        Config(64, 64, 64, variant="wgmma")
    assert Config(64, 64, 64, SPLIT_K=2, variant="fused_k").fused_split
    assert Config(64, 64, 64, SPLIT_K=2, variant="tma").fused_split
    assert not Config(64, 64, 64, SPLIT_K=2).fused_split and not Config(64, 64, 64, variant="fused_k").fused_split


@pytest.mark.parametrize("kernel", ["conv", "conv1x1"])
def test_tma_variants_are_in_hoppers_float16_space_only(kernel):
    tma = {c.variant for c in config_space(kernel, torch.float16, target="sm_90") if c.variant != "ptr"}
    assert tma == ({"tma", "tma_ws"} if kernel == "conv1x1" else {"tma", "tma_w", "tma_b", "tma_b_ws", "tma_b_p"})
    for target in ("sm_80", "sm_89", "sm_100", "sm_120", "gfx942"):
        assert all(c.variant == "ptr" for c in config_space(kernel, torch.float16, target=target))
    for dtype in (torch.bfloat16, torch.float32):
        assert all(c.variant == "ptr" for c in config_space(kernel, dtype, target="sm_90"))


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn], ids=str)
def test_8bit_tma_kernels_are_hoppers_tuning_candidates(dtype):
    """8-bit 1x1 convs get the TMA GEMM's tiles (tma, tma_ws) on sm_90, their other convs the
    TMA and bordered convs' (tma, tma_w, tma_b, tma_b_ws, tma_b_p), unsplit, for tuning only;
    other targets keep the pointer kernels."""
    assert {c.variant for c in config_space("conv1x1", dtype, target="sm_90")} == {"ptr", "tma", "tma_ws"}
    bordered = {"tma_b", "tma_b_ws", "tma_b_p"}
    assert {c.variant for c in config_space("conv", dtype, target="sm_90")} == {"ptr", "tma", "tma_w", *bordered}
    for target in ("sm_89", "sm_100", "sm_120"):
        for kernel in ("conv", "conv1x1"):
            assert all(c.variant == "ptr" for c in config_space(kernel, dtype, target=target))
    c3 = tuning_candidates("conv", dtype, M=49, N=512, K=512, taps=9, sms=132, target="sm_90", segments=(7, 7),
                           bordered=config_mod.bordered_rows(1, 9, 9, 7, 7))
    assert {c.variant for c in c3} == {"ptr", "tma", "tma_w", *bordered}
    assert not any(c.tma and c.SPLIT_K > 1 for c in c3)
    s2 = tuning_candidates("conv", dtype, M=49, N=512, K=512, taps=9, sms=132, target="sm_90", stride=2,
                           segments=(7, 7))
    assert {c.variant for c in s2 if c.tma} == {"tma_w"}
    # layer4 conv1 at batch 1: split-worthy, but the 8-bit TMA tiles are offered unsplit
    cands = tuning_candidates("conv1x1", dtype, M=49, N=512, K=2048, sms=132, target="sm_90")
    assert {"tma", "tma_ws"} <= {c.variant for c in cands} and any(c.SPLIT_K > 1 for c in cands)
    assert not any(c.tma and c.SPLIT_K > 1 for c in cands) and not any(c.variant == "fused_k" for c in cands)
    untuned = select_config("conv1x1", dtype, M=49, N=512, K=2048, sms=132, target="sm_90", interpreter=False)
    assert untuned.variant == "ptr"
    # one byte per channel: 40 channels are 40-byte rows (no TMA box), 48 are 48
    assert not any(c.tma for c in tuning_candidates("conv1x1", dtype, M=4096, N=64, K=40, target="sm_90"))
    assert any(c.tma for c in tuning_candidates("conv1x1", dtype, M=4096, N=64, K=48, target="sm_90"))
    assert not any(c.tma for c in tuning_candidates("conv1x1", dtype, M=4096, N=64, K=48, target="sm_90", stride=2))


@pytest.mark.parametrize("kernel", ["conv", "conv1x1"])
@pytest.mark.parametrize("mnk", PROBLEMS, ids=lambda p: "x".join(map(str, p)))
def test_untuned_heuristic_keeps_the_pointer_kernels(kernel, mnk):
    m, n, k = mnk
    assert select_config(kernel, torch.float16, M=m, N=n, K=k, sms=132, target="sm_90", interpreter=False).variant == "ptr"


def test_tuning_offers_every_variant_family_where_it_applies():
    # ResNet-50 layer4 3x3 at batch 1: split-worthy; every family on sm_90.
    cands = tuning_candidates("conv", torch.float16, M=49, N=512, K=512, taps=9, sms=132, target="sm_90",
                              segments=(7, 7), bordered=config_mod.bordered_rows(1, 9, 9, 7, 7))
    kinds = {(c.variant, c.SPLIT_K > 1) for c in cands}
    assert {("ptr", False), ("ptr", True), ("fused_k", True), ("tma", False), ("tma", True), ("tma_w", False),
            ("tma_w", True), ("tma_b", False), ("tma_b", True), ("tma_b_ws", False), ("tma_b_p", False)} <= kinds
    assert not any(not c.splits and c.SPLIT_K > 1 for c in cands)  # warp-specialized, persistent
    # The bordered convs only where the caller plans their grid (bordered rows given).
    no_rows = tuning_candidates("conv", torch.float16, M=49, N=512, K=512, taps=9, sms=132, target="sm_90",
                                segments=(7, 7))
    assert not any(c.bordered for c in no_rows) and set(no_rows) < set(cands)
    assert all(c.BLOCK_M <= config_mod.FUSED_MAX_BLOCK_M for c in cands if c.fused_split)
    # Stride 2: TMA activations do not apply, TMA weights do.
    s2 = tuning_candidates("conv", torch.float16, M=49, N=512, K=512, taps=9, sms=132, target="sm_90", stride=2,
                            segments=(7, 7))
    assert {c.variant for c in s2} == {"ptr", "fused_k", "tma_w"}
    # 1x1: tma and tma_ws at stride 1, never a split warp-specialized tile; none at stride 2.
    c1 = tuning_candidates("conv1x1", torch.float16, M=49, N=512, K=2048, sms=132, target="sm_90")
    assert {"tma", "tma_ws"} <= {c.variant for c in c1}
    assert not any(c.variant == "tma_ws" and c.SPLIT_K > 1 for c in c1)
    c2 = tuning_candidates("conv1x1", torch.float16, M=49, N=512, K=2048, sms=132, target="sm_90", stride=2)
    assert not any(c.tma for c in c2)
    # A channel count TMA boxes cannot step through whole: no TMA conv offered.
    odd = tuning_candidates("conv", torch.float16, M=4096, N=64, K=48, taps=9, sms=132, target="sm_90")
    assert not any(c.tma for c in odd)
    # Other targets and dtypes: pointer kernels, two-launch splits only.
    for target, dtype in (("sm_80", torch.float16), ("sm_90", torch.bfloat16)):
        other = tuning_candidates("conv", dtype, M=49, N=512, K=512, taps=9, sms=108, target=target)
        assert {c.variant for c in other} == {"ptr"} and any(c.SPLIT_K > 1 for c in other)


def test_grouped_and_dilated_convs_plan_pointer_tiles():
    """conv_grouped: a tile as wide as its K step, the widest K step one group fills; never a
    TMA config; a dilated conv is never offered one either."""
    from fastres.kernels.config import select_config, tuning_candidates
    from fastres.kernels.conv import conv_problem

    assert conv_problem(256, 512, 3, 3) == ("conv", 512, 256, 9)
    assert conv_problem(3, 64, 7, 7) == ("conv_stem", 64, 147, 1)
    for cig, block in ((4, 16), (8, 16), (16, 16), (32, 32), (64, 64)):
        space, n, k, taps = conv_problem(32 * cig, 32 * cig, 3, 3, 32)
        assert (space, n, k, taps) == ("conv_grouped", 32 * cig, cig, 9)
        for dt in (torch.float16, torch.bfloat16):
            for m in (49, 32 * 56 * 56):
                cfg = select_config(space, dt, M=m, N=n, K=k, taps=taps, sms=132, target="sm_90", interpreter=False)
                assert cfg.BLOCK_K == cfg.BLOCK_N == block and cfg.variant == "ptr", (cig, m, cfg)
            cands = tuning_candidates(space, dt, M=49, N=n, K=k, taps=taps, sms=132, target="sm_90", segments=(7, 7))
            assert cands and all(c.BLOCK_K <= max(16, cig) and not c.tma for c in cands), cands
    seg = (32 * 65, 65)
    dense = tuning_candidates("conv", torch.float16, M=32 * 65 * 65, N=256, K=256, taps=9, sms=132, target="sm_90",
                              segments=seg)
    dilated = tuning_candidates("conv", torch.float16, M=32 * 65 * 65, N=256, K=256, taps=9, sms=132, target="sm_90",
                                segments=seg, dilation=2)
    assert any(c.tma for c in dense) and not any(c.tma for c in dilated)
    assert set(dilated) == {c for c in dense if not c.tma}
