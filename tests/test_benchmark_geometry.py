"""fastres.benchmark.geometry: the distinct convs of resnet50 and resnet18 against torchvision's
modules and the engine's plan, their work against the published multiply-adds, and the
representative pick of the smoke run."""
from __future__ import annotations

import pytest
import torch

from fastres.benchmark.geometry import conv_layers, model_gflop, pick_representative


def _torchvision_convs(name: str) -> list[tuple[str, torch.nn.Conv2d]]:
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def test_resnet50_distinct_convs():
    layers = conv_layers("resnet50", 224)
    # stem + layer1 (1x1 in, 3x3, 1x1 out +res, downsample, 1x1 in from 256) + 6 per later stage
    assert len(layers) == 24
    convs = _torchvision_convs("resnet50")
    assert sum(len(l.uses) for l in layers) == len(convs) == 53
    assert sorted(u for l in layers for u in l.uses) == sorted(n for n, _ in convs)
    stem = layers[0]
    assert (stem.k, stem.stride, stem.pad, stem.cin, stem.cout, stem.h, stem.w) == (7, 2, 3, 3, 64, 224, 224)
    assert stem.relu and not stem.residual and stem.uses == ("conv1",) and (stem.oh, stem.ow) == (112, 112)
    assert stem.name == "7x7/2 3->64 @224x224 relu"
    by_use = {u: l for l in layers for u in l.uses}
    ds = by_use["layer2.0.downsample.0"]
    assert (ds.k, ds.stride, ds.cin, ds.cout, ds.h, ds.relu, ds.residual) == (1, 2, 256, 512, 56, False, False)
    c2 = by_use["layer2.0.conv2"]  # torchvision v1.5: the stride sits on the 3x3
    assert (c2.k, c2.stride, c2.pad, c2.cin, c2.cout, c2.h, c2.oh) == (3, 2, 1, 128, 128, 56, 28)
    c3 = by_use["layer4.2.conv3"]
    assert (c3.k, c3.cin, c3.cout, c3.h, c3.relu, c3.residual) == (1, 512, 2048, 7, True, True)
    assert by_use["layer3.5.conv2"] is by_use["layer3.1.conv2"]
    assert len(by_use["layer3.1.conv1"].uses) == 5  # 1024->256 1x1 in blocks 1..5 of stage 3
    # every conv's geometry agrees with its torchvision module
    for name, conv in convs:
        l = by_use[name]
        assert (l.k, l.stride, l.pad, l.cin, l.cout) == (conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.in_channels, conv.out_channels)


def test_conv_work_matches_published_macs():
    # torchvision's _ops metadata (multiply-adds at 224x224), fc included: 4.089 / 1.814 GMACs
    assert model_gflop("resnet50") / 2 == pytest.approx(4.089, rel=2e-3)
    assert model_gflop("resnet18") / 2 == pytest.approx(1.814, rel=2e-3)


def test_resnet18_distinct_convs_and_plan_agree():
    layers = conv_layers("resnet18", 224)
    assert len(layers) == 15
    assert sum(len(l.uses) for l in layers) == len(_torchvision_convs("resnet18")) == 20
    plan = pytest.importorskip("fastres.plan")
    for arch in ("resnet18", "resnet50"):
        ours = {(l.k, l.stride, l.pad, l.cin, l.cout, l.relu, l.residual) for l in conv_layers(arch)}
        theirs = {(c.k, c.stride, c.pad, c.cin, c.cout, c.relu, c.residual is not None) for c in plan.arch_convs(arch)}
        assert ours == theirs, f"{arch}: the bench's conv walk and the engine's plan disagree"


def test_pick_representative_covers_kinds():
    layers = conv_layers("resnet18", 32)
    picked = pick_representative(layers, 4)
    assert len(picked) == 4
    assert {(l.k, l.stride, l.residual) for l in picked} >= {(7, 2, False), (3, 1, False), (3, 1, True), (3, 2, False)}
    assert pick_representative(layers, 100) == layers
