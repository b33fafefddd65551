"""fastres.sources.torchvision: trunks returning several named layers (IntermediateLayerGetter),
FrozenBatchNorm2d, float64 models, dilated and grouped ResNets, and what is refused."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

import fastres
from fastres.models import calibrate_
from fastres.plan import UnsupportedModelError
from helpers import DEVICE, ON_GPU, assert_close


def _resnet18(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return calibrate_(torchvision.models.resnet18(num_classes=5, **kwargs), size=(40, 32))


def _reference(module: torch.nn.Module, x: torch.Tensor):
    return copy.deepcopy(module).double()(x.double())


def test_trunk_returns_its_layers_under_the_callers_names_in_order():
    getter = IntermediateLayerGetter(_resnet18(), return_layers={"layer3": "c3", "layer1": "c1"}).eval()
    fast = fastres.from_torchvision(getter, dtype=torch.float32, device=DEVICE)
    assert isinstance(fast, fastres.ResNet) and fast.num_classes is None
    x = torch.randn(2, 3, 23, 19)
    ref = _reference(getter, x)
    out = fast(x.to(DEVICE))
    assert list(out) == list(ref) == ["c1", "c3"]
    for name in ref:
        assert out[name].dtype == torch.float32
        assert_close(out[name], ref[name], 1e-4, what=name)
    # The trunk stops at its last returned layer: layer4 is neither held nor run.
    schedule = fast.schedule(x)
    assert not any(s.layer.startswith("layer4") for s in schedule.steps) and schedule.steps[-1].kernel != "avgpool_fc"
    assert [o.name for o in schedule.outputs] == ["c1", "c3"]
    assert "c1 (s" in str(schedule) and "=c3" in str(schedule)
    # A second call returns fresh tensors, not the arena's buffers.
    again = fast(x.to(DEVICE))
    assert again["c1"].data_ptr() != out["c1"].data_ptr()
    torch.testing.assert_close(again["c1"], out["c1"], rtol=0, atol=0)


def test_half_trunk_hands_back_the_callers_dtype():
    getter = IntermediateLayerGetter(_resnet18(), return_layers={"layer2": "0"}).eval()
    fast = fastres.from_torchvision(getter, dtype=torch.float16, device=DEVICE)
    x = torch.randn(1, 3, 24, 24)
    out = fast(x.to(DEVICE))["0"]
    assert out.dtype == torch.float32 and out.shape == (1, 128, 3, 3)
    assert_close(out, _reference(getter, x)["0"], 5e-3)
    # A float64 model (torchvision tests some detectors in float64): float64 in, float64 out.
    assert fast(x.double().to(DEVICE))["0"].dtype == torch.float64
    assert fast(torch.empty(0, 3, 24, 24, device=DEVICE))["0"].shape == (0, 128, 3, 3)


def test_frozen_batchnorm_folds_with_its_eps():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4, norm_layer=FrozenBatchNorm2d).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.02 + 0.001)
            m.eps = 0.01  # of the order of the variances: a wrong eps shows
    x = torch.randn(1, 3, 32, 32)
    ref = _reference(model, x)
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    assert_close(fast(x.to(DEVICE)), ref, 1e-4)


def _refuses(module, *words):
    with pytest.raises(UnsupportedModelError) as info:
        fastres.from_torchvision(module, dtype=torch.float32, device=DEVICE)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_refusals():
    _refuses(IntermediateLayerGetter(torchvision.models.resnet18(), {"maxpool": "m", "layer1": "a"}).eval(),
             "maxpool", "layer1..layer4")
    _refuses(IntermediateLayerGetter(torchvision.models.resnet18(), {"layer1": "a"}).train(), "training mode")
    _refuses(IntermediateLayerGetter(torchvision.models.alexnet(), {"features": "f"}).eval(), "features")
    gn = torchvision.models.resnet18(norm_layer=lambda c: torch.nn.GroupNorm(1, c)).eval()
    _refuses(gn, "bn1", "GroupNorm")
    from torchvision.models.feature_extraction import create_feature_extractor

    fx = create_feature_extractor(torchvision.models.resnet18().eval(), {"layer2": "a"}).eval()
    _refuses(fx, "GraphModule", "IntermediateLayerGetter")


def test_dilated_classifier_plans_torchvisions_shapes():
    # The numerics of dilated convs run end to end in test_sources_segmentation (FCN); here the
    # plan a dilated classifier gets: its stages keep their resolution, its logits the same shape.
    model = torchvision.models.resnet50(num_classes=3, replace_stride_with_dilation=[True, False, True]).eval()
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    assert fast.dilate == (True, False, True)
    s = fast.schedule((1, 3, 224, 224))
    assert s.steps[-1].in_shape == (1, 2048, 28, 28) and s.steps[-1].out_shape == (1, 3)


def test_resnext_trunk():
    # Grouped 3x3s at stride 1 and 2 (layer1, layer2), through the engine's plumbing; the full
    # classifier below costs half a minute of the interpreter and adds no other conv geometry.
    torch.manual_seed(0)
    model = calibrate_(torchvision.models.resnext50_32x4d(num_classes=6), size=(32, 32))
    getter = IntermediateLayerGetter(model, return_layers={"layer2": "x"}).eval()
    fast = fastres.from_torchvision(getter, dtype=torch.float32, device=DEVICE)
    assert fast.arch == "resnext50_32x4d"
    assert {s.spec.groups for s in fast.schedule((1, 3, 21, 18)).steps if s.spec is not None} == {1, 32}
    x = torch.randn(1, 3, 21, 18)
    assert_close(fast(x.to(DEVICE))["x"], _reference(getter, x)["x"], 1e-4)


@pytest.mark.skipif(not ON_GPU, reason="a whole ResNeXt costs half a minute or more of the interpreter: GPU only "
                                       "(test_resnext_trunk runs its grouped convs on the CPU)")
@pytest.mark.parametrize("arch", ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"])
def test_resnext_logits(arch):
    torch.manual_seed(0)
    model = calibrate_(getattr(torchvision.models, arch)(num_classes=50), size=(64, 64)).to(DEVICE)
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    assert fast.arch == arch
    x = torch.rand(2, 3, 64, 64, device=DEVICE)
    assert_close(fast(x), _reference(model.cpu(), x.cpu()), 1e-4)
