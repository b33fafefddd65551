"""The launch schedule as data: planned for any device without running a kernel."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import fastres
from fastres.device import DeviceInfo
from fastres.kernels.config import FUSED_MAX_BLOCK_M, Config, choose_split, k_iters
from fastres.kernels.conv import ConvGeometry
from fastres.kernels.conv_tma import tma_rows
from fastres.plan import UnsupportedModelError, arch_convs
from fastres.schedule import CONV, CONV1X1, HEAD, MAXPOOL, STEM, build_schedule

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)


@pytest.fixture
def no_launches(monkeypatch):
    """Planning must not launch (or compile) a kernel."""
    import fastres.kernels.launch as launch

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched while planning a schedule")
    monkeypatch.setattr(launch, "launch", refuse)


def resnet50(batch: int, device: DeviceInfo = H100):
    return build_schedule("resnet50", (batch, 3, 224, 224), torch.float16, device)


def test_resnet50_schedule_at_batch_1(no_launches):
    s = resnet50(1)
    kernels = [step.kernel for step in s.steps]
    # The stem, its max pool, 52 convs of the blocks (16 blocks, 4 with a projection), the head.
    assert len(s.steps) == 55
    assert kernels[:2] == [STEM, MAXPOOL] and kernels[-1] == HEAD
    assert kernels.count(CONV) == 16 and kernels.count(CONV1X1) == 36
    assert [step.layer for step in s.steps if step.spec] == [c.name for c in arch_convs("resnet50")]
    # The residual add is fused into each block's conv3, and only there.
    fused = [step.layer for step in s.steps if step.residual is not None]
    assert fused == [f"layer{li}.{bi}.conv3" for li, n in zip(range(1, 5), (3, 4, 6, 3)) for bi in range(n)]
    # Where a block has a projection, its conv3 adds the projection's output, else the block's input.
    for i, step in enumerate(s.steps):
        if step.residual is not None:
            block = step.layer.rsplit(".", 1)[0]
            proj = [t for t in s.steps[:i] if t.layer == f"{block}.downsample.0"]
            first_of_block = next(j for j, t in enumerate(s.steps) if t.layer == f"{block}.conv1")
            expected = proj[0].dst if proj else s.steps[first_of_block].src
            assert step.residual == expected, step.layer
    # On 132 SMs a batch-1 forward splits the K loop of every late-stage 3x3, the layer3/4
    # 1x1 reductions after the first block's, layer4's projection, and the classifier; no
    # residual conv and nothing in layer1 splits.
    split = {step.layer for step in s.steps if step.splits > 1}
    expected = {f"layer{li}.{bi}.conv2" for li, n in ((2, 4), (3, 6), (4, 3)) for bi in range(n)}
    expected |= {f"layer3.{bi}.conv1" for bi in range(1, 6)} | {f"layer4.{bi}.conv1" for bi in range(3)}
    expected |= {"layer4.0.downsample.0", "fc"}
    assert split == expected
    assert len(split - {"fc"}) == 22
    assert all(step.workspace > 0 for step in s.steps if step.splits > 1)
    assert s.workspace == max(step.workspace for step in s.steps)


def test_resnet50_schedule_at_batch_256_splits_no_conv(no_launches):
    s = resnet50(256)
    assert len(s.steps) == 55
    assert [step.layer for step in s.steps if step.splits > 1] == ["fc"]  # 4 x 16 class tiles
    # The 3x3s get the 128x128 tile at this size, but none wider than its 64 output channels.
    tiles = {(step.config.BLOCK_M, step.config.BLOCK_N, step.spec.cout) for step in s.steps if step.kernel == CONV}
    assert tiles == {(128, 64, 64), (128, 128, 128), (128, 128, 256), (128, 128, 512)}


def test_fewer_sms_split_less():
    few = {st.layer for st in resnet50(1, DeviceInfo("small", sms=16)).steps if st.splits > 1}
    many = {st.layer for st in resnet50(1).steps if st.splits > 1}
    assert few < many


def test_slots_never_overwrite_a_live_activation():
    """Replay the schedule symbolically: every read finds the value its writer left."""
    for arch, shape in (("resnet50", (2, 3, 64, 64)), ("resnet18", (1, 3, 33, 45)), ("wide_resnet50_2", (1, 3, 32, 32))):
        s = build_schedule(arch, shape, torch.float32, H100)
        holder: dict[int, int] = {}  # slot -> index of the step whose output it holds
        producer: dict[str, int] = {}
        for i, step in enumerate(s.steps):
            for slot in (step.src, step.residual):
                if slot is not None:
                    assert slot in holder, (arch, step.layer, slot)
            assert step.dst is None or step.dst not in (step.src, step.residual), (arch, step.layer)
            if step.dst is not None:
                numel = step.out_shape[0] * step.out_shape[1] * step.out_shape[2] * step.out_shape[3]
                assert s.slots[step.dst] >= numel
                holder[step.dst] = i
            producer[step.layer] = i
        # The sources each step reads were produced by the steps the network says.
        for i, step in enumerate(s.steps[1:], start=1):
            if step.src is not None:
                src_step = s.steps[_writer_before(s, i, step.src)]
                assert src_step.out_shape == step.in_shape, (arch, step.layer)


def _writer_before(s, i: int, slot: int) -> int:
    return max(j for j in range(i) if s.steps[j].dst == slot)


def test_with_configs_recomputes_split_and_workspace():
    s = resnet50(1)
    i = next(i for i, step in enumerate(s.steps) if step.splits > 1 and step.kernel == CONV)
    unsplit = dataclasses.replace(s.steps[i].config, SPLIT_K=1)
    t = s.with_configs({i: unsplit})
    assert t.steps[i].splits == 1 and t.steps[i].workspace == 0 and t.steps[i].config == unsplit
    assert t.steps[:i] == s.steps[:i] and t.steps[i + 1:] == s.steps[i + 1:]
    assert s.steps[i].splits > 1  # the original is unchanged
    m, n, _, _ = s.steps[i].gemm
    double = dataclasses.replace(unsplit, SPLIT_K=2)
    assert s.with_configs({i: double}).steps[i].workspace == 2 * m * n


def test_use_config_overrides_apply_while_planning():
    cfg = Config(64, 64, 32, 4, 4)
    with fastres.kernels.use_config("conv", cfg):
        s = resnet50(32)
    assert all(step.config == cfg for step in s.steps if step.kernel == CONV)
    assert all(step.config != cfg for step in s.steps if step.kernel == CONV1X1)


def test_printed_schedule_lists_every_launch():
    s = resnet50(1)
    text = str(s)
    lines = text.splitlines()
    assert "resnet50 schedule: input 1x3x224x224, float16" in lines[0] and "sm_90, 132 SMs" in lines[0]
    assert len(lines) == 2 + 55 + len(s.slots) + 1  # a line per launch, per buffer
    assert lines[-1].startswith("55 launches (16 with a fused residual, 23 with a split K loop)")
    row = next(line for line in lines if " layer4.2.conv2 " in line)
    step = next(st for st in s.steps if st.layer == "layer4.2.conv2")
    assert step.config.name in row and row.rstrip().endswith(str(step.splits))


def test_engine_schedule_matches_the_planner(device):
    fast = fastres.from_torchvision(__import__("test_build").calibrated("resnet18"), dtype=torch.float32,
                                    device=device)
    s = fast.schedule((3, 3, 40, 40))
    assert s == build_schedule("resnet18", (3, 3, 40, 40), torch.float32, DeviceInfo.of(device), num_classes=10)
    assert s.steps[-1].out_shape == (3, 10)
    assert fast.schedule(torch.empty(3, 3, 40, 40)) == s
    assert not fast._arenas  # planning built nothing


@pytest.mark.parametrize("arch, shape, words", [
    ("resnext51", (1, 3, 32, 32), ["unknown arch"]),
    ("resnet18", (1, 4, 32, 32), ["[N, 3, H, W]", "(1, 4, 32, 32)"]),
    ("resnet18", (0, 3, 32, 32), ["[N, 3, H, W]"]),
    ("resnet18", (3, 32, 32), ["[N, 3, H, W]"]),
])
def test_bad_schedule_requests(arch, shape, words):
    with pytest.raises((ValueError, UnsupportedModelError)) as e:
        build_schedule(arch, shape, torch.float16, H100)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_device_info():
    cpu = DeviceInfo.of("cpu")
    assert cpu.name == "cpu-interpreter" and cpu.interpreter == fastres.kernels.interpreting()
    with pytest.raises(ValueError, match="sms"):
        DeviceInfo("x", sms=0)
    assert str(H100) == "NVIDIA H100 80GB HBM3, sm_90, 132 SMs"


@pytest.mark.parametrize("batch", [1, 256])
def test_tma_conv_splits_are_planned_for_the_grid_it_launches(batch, no_launches):
    """The tma conv tiles each output row on its own (N*OH*ceil(OW/BLOCK_M) row tiles, not
    ceil(M/BLOCK_M)): its tuning candidates split for that grid, as the launcher launches it."""
    s = resnet50(batch)
    seen = 0
    for step in s.steps:
        if step.kernel != CONV or step.spec.stride != 1:
            continue
        n, co, oh, ow = step.out_shape
        _, c, h, w = step.in_shape
        g = ConvGeometry(n, c, h, w, co, 3, 3, 1, 1, 1, 1, oh, ow, "ieee")
        tma = [cfg for cfg in step.candidates(torch.float16, H100) if cfg.variant == "tma"]
        assert tma, step.layer
        for cfg in tma:
            seen += 1
            tiles = -(-tma_rows(g, cfg) // cfg.BLOCK_M) * -(-co // cfg.BLOCK_N)
            want = choose_split(tiles, k_iters(c, cfg.BLOCK_K, 9), H100.sms)
            if cfg.SPLIT_K > 1:
                assert cfg.SPLIT_K == want, (step.layer, cfg.name, tiles)
            elif want > 1 and cfg.BLOCK_M <= FUSED_MAX_BLOCK_M:  # offered beside its split (128 rows never split)
                assert dataclasses.replace(cfg, SPLIT_K=want) in tma, (step.layer, cfg.name)
    assert seen
    layer4 = next(st for st in s.steps if st.layer == "layer4.1.conv2")
    splits = {cfg.SPLIT_K for cfg in layer4.candidates(torch.float16, H100)
              if cfg.variant == "tma" and (cfg.BLOCK_M, cfg.BLOCK_N) == (64, 64)}
    # batch 1: 7 row segments x 8 column tiles = 56 programs, split 3 ways to fill 132 SMs
    # (planned from ceil(49 / 64) = 1 row tile it would have been 17 ways); batch 256: never.
    assert splits == ({1, 3} if batch == 1 else {1})


@pytest.mark.parametrize("dilate", [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)])
def test_dilated_trunk_shapes_as_torchvision(dilate):
    # torchvision's test_resnet_dilation: layer4 of resnet50 at 224x224 is 7 * 2**(dilated stages) wide.
    s = build_schedule("resnet50", (1, 3, 224, 224), torch.float16, H100, dilate=dilate, returns={"layer4": "out"})
    f = 2 ** sum(dilate)
    assert [(o.name, o.shape) for o in s.outputs] == [("out", (1, 2048, 7 * f, 7 * f))]
    assert all(st.kernel != "avgpool_fc" for st in s.steps)
    model = __import__("torchvision").models.resnet50(replace_stride_with_dilation=dilate)
    for st in s.steps:
        if st.spec is not None:
            conv = model.get_submodule(st.spec.name)
            assert (conv.stride[0], conv.padding[0], conv.dilation[0]) == (st.spec.stride, st.spec.pad,
                                                                           st.spec.dilation), st.layer


def test_trunk_outputs_stay_alive():
    returns = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    for arch, shape in (("resnet50", (2, 3, 64, 80)), ("resnet18", (1, 3, 33, 45))):
        s = build_schedule(arch, shape, torch.float16, H100, returns=returns)
        assert [o.name for o in s.outputs] == ["0", "1", "2", "3"]
        assert len({o.slot for o in s.outputs}) == 4
        for o in s.outputs:
            assert s.steps[o.step].dst == o.slot and s.steps[o.step].out_shape == o.shape
            stage = s.steps[o.step].layer.split(".")[0]
            assert o.step == max(i for i, st in enumerate(s.steps) if st.layer.startswith(stage + "."))
            later = [st.layer for st in s.steps[o.step + 1:] if st.dst == o.slot]
            assert not later, f"{arch}: output {o.name} (slot {o.slot}) overwritten by {later}"
        assert s.num_classes is None and s.steps[-1].kernel != "avgpool_fc"
        text = str(s)
        assert "trunk returning 0 (s" in text and "=3 " in text


def test_trunk_stops_after_its_last_returned_layer():
    s = build_schedule("resnet18", (1, 3, 32, 32), torch.float16, H100, returns={"layer2": "feat"})
    assert {st.layer.split(".")[0] for st in s.steps} == {"conv1", "maxpool", "layer1", "layer2"}
    with pytest.raises(UnsupportedModelError, match="layer1..layer4"):
        build_schedule("resnet18", (1, 3, 32, 32), torch.float16, H100, returns={"fc": "logits"})
    with pytest.raises(UnsupportedModelError, match="BasicBlocks"):
        build_schedule("resnet18", (1, 3, 32, 32), torch.float16, H100, dilate=(False, False, True))


def test_resnext_grouped_convs_are_planned_per_group():
    s = build_schedule("resnext50_32x4d", (1, 3, 64, 64), torch.float16, H100)
    grouped = [st for st in s.steps if st.spec is not None and st.spec.groups > 1]
    assert len(grouped) == 16 and {st.spec.groups for st in grouped} == {32}
    for st in grouped:
        assert st.space == "conv_grouped" and st.kernel == "conv_bn_relu"
        # (M, N, K, taps): K is one group's input channels, per tap.
        assert st.gemm[1:] == (st.spec.cout, st.spec.cin // 32, 9), st.layer
    assert [st.spec.cin for st in grouped if st.layer.endswith(".0.conv2")] == [128, 256, 512, 1024]


def test_grouped_split_workspace_is_what_the_launcher_needs():
    # A forced tile wider than its K step (64 columns over groups of 4 channels: 16 groups,
    # four K steps per tap) split 4 ways: the schedule sizes the workspace by the launcher's
    # own K loop, not by Cin/groups (which plans 3 splits of 3 steps and 3 planes). Each
    # grouped step is launched (recorded, not run) with exactly the schedule's workspace.
    from fastres.kernels.launch import recording

    cfg = Config(16, 64, 16, 4, 1, SPLIT_K=4)
    with fastres.kernels.use_config("conv_grouped", cfg):
        s = build_schedule("resnext50_32x4d", (1, 3, 32, 32), torch.float32, H100)
    grouped = [st for st in s.steps if st.space == "conv_grouped"]
    assert grouped and all(st.config == cfg for st in grouped)
    assert grouped[0].splits == 4
    for st in grouped:
        n, c, h, w = st.in_shape
        x = torch.empty(st.in_shape).contiguous(memory_format=torch.channels_last)
        wt = torch.empty(st.spec.cout, c // st.spec.groups, 3, 3).contiguous(memory_format=torch.channels_last)
        ws = torch.empty(st.workspace)
        with recording(run=False) as launches:
            fastres.kernels.conv_bn_relu(x, wt, torch.zeros(st.spec.cout), stride=st.spec.stride, padding=1,
                                         groups=st.spec.groups, config=cfg, workspace=ws)
        assert launches[0].grid[1] == st.splits, st.layer


def _all_bordered(s):
    """`s` with every stride-1 3x3 on the bordered conv."""
    cfg = Config(64, 64, 64, 4, 4, variant="tma_b")
    return s.with_configs({i: cfg for i, st in enumerate(s.steps)
                           if st.kernel == CONV and st.spec.stride == 1 and st.spec.k == 3})


@pytest.mark.parametrize("arch,shape", [("resnet50", (2, 3, 64, 64)), ("resnet18", (1, 3, 33, 45)),
                                        ("wide_resnet50_2", (1, 3, 32, 32))])
def test_bordered_slots_are_never_overwritten_while_live(arch, shape, no_launches):
    """Replayed symbolically: a bordered slot holds only activations of its own shape (so every
    write lands on its interior), each bordered conv reads a slot bordered by its padding, and
    no write lands on a slot whose activation is still to be read."""
    s = _all_bordered(build_schedule(arch, shape, torch.float16, H100))
    assert any(b is not None for b in s.borders)
    live: dict[int, int] = {}  # slot -> the step that wrote what it holds
    last_read: dict[int, int] = {}  # step that wrote a value -> the last step reading it
    for i, st in enumerate(s.steps):
        for slot in (st.src, st.residual):
            if slot is not None:
                last_read[live[slot]] = i
        if st.dst is not None:
            live[st.dst] = i
    live.clear()
    for i, st in enumerate(s.steps):
        if st.config.bordered:
            assert s.border(st.src) is not None and s.border(st.src).pad == (st.spec.pad, st.spec.pad), st.layer
            assert s.border(st.src).shape == st.in_shape, st.layer
        if st.dst is not None:
            b = s.border(st.dst)
            assert b is None or b.shape == st.out_shape, (arch, st.layer)
            held = live.get(st.dst)
            assert held is None or last_read.get(held, -1) <= i, f"{arch}: {st.layer} overwrites step {held}'s output"
            live[st.dst] = i
    # The plain layout is the default's: bordering is chosen by the configs alone.
    plain = build_schedule(arch, shape, torch.float16, H100)
    assert plain.borders == () and _all_bordered(plain).with_configs(
        {i: st.config for i, st in enumerate(plain.steps)}).slots == plain.slots


@pytest.mark.parametrize("batch", [1, 256])
def test_printed_schedule_shows_bordered_buffers(batch, no_launches):
    """ResNet-50 with every stride-1 3x3 bordered: one bordered buffer per stage (layer1's 64x56x56
    ... layer4's 512x7x7), each line saying what its border costs; the summary the total."""
    s = _all_bordered(resnet50(batch))
    lines = str(s).splitlines()
    borders = [b for b in s.borders if b is not None]
    assert [b.shape[1:] for b in borders] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    for b in borders:
        n, c, h, w = b.shape
        assert b.extra == n * c * ((h + 2) * (w + 2) - h * w)
    rows = [line for line in lines if "bordered 1x1 around" in line]
    assert len(rows) == 4 and all("MiB of border" in r for r in rows)
    extra = sum(b.extra for b in borders) * 2 / 2**20
    assert f"(4 bordered, {extra:.2f} MiB of border)" in lines[-1]
    assert sum(s.slots) > sum(resnet50(batch).slots)


def test_timm_d_variant_adds_no_pool_launch():
    """resnet50d: the deep stem is three convs, and each strided average-pool shortcut is the
    one 1x1 GEMM launch that torchvision's strided projection is (the pool in its A loads)."""
    from fastres.plan import ARCHS

    d = dataclasses.replace(ARCHS["resnet50"], stem=(32, 32), avg_down=True, name="resnet50d")
    tv = build_schedule("resnet50", (1, 3, 64, 64), torch.float16, H100)
    sd = build_schedule(d, (1, 3, 64, 64), torch.float16, H100)
    assert len(sd.steps) == len(tv.steps) + 2 and sd.arch == "resnet50d"
    assert [s.kernel for s in sd.steps[:4]] == [STEM, CONV, CONV, MAXPOOL]
    pooled = [s for s in sd.steps if s.spec is not None and s.spec.avg_pool]
    assert [(s.layer, s.kernel, s.in_shape[2:], s.out_shape[2:]) for s in pooled] == [
        ("layer2.0.downsample.1", CONV1X1, (16, 16), (8, 8)), ("layer3.0.downsample.1", CONV1X1, (8, 8), (4, 4)),
        ("layer4.0.downsample.1", CONV1X1, (4, 4), (2, 2))]
    assert [s.layer for s in sd.steps if s.kernel == CONV1X1 and "downsample" in s.layer][0] == "layer1.0.downsample.1"
