"""fastres.from_timm: timm's ResNets (torchvision-shaped, deep stem, average-pool shortcut)
and their features_only trunks, compared with timm's own float64 forward; what is refused."""
from __future__ import annotations

import copy
import sys

import pytest
import torch

import fastres
from fastres.plan import UnsupportedModelError
from helpers import DEVICE, assert_close, randomize_bn_

timm = pytest.importorskip("timm")
from timm.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: E402


def _reference(module: torch.nn.Module, x: torch.Tensor, method: str = "forward"):
    with torch.no_grad():
        return getattr(copy.deepcopy(module).double(), method)(x.double())


def test_resnet18_logits_features_and_head():
    """forward, forward_features and forward_head against timm's own forward in float64.
    forward_head runs on fastres' features and is held to timm's whole forward (logits and
    pre-logits) and to the logits of fastres' own fused head (avgpool_fc, what forward runs):
    neither side of a comparison is a copy of the other. 40x48 leaves layer4 2x2, so the
    global pool averages several pixels (at 1x1 any pool would pass)."""
    torch.manual_seed(0)
    model = randomize_bn_(timm.create_model("resnet18", pretrained=False, num_classes=7))
    fast = fastres.from_timm(model, dtype=torch.float32, device=DEVICE)
    assert fast.engine.arch == "resnet18"  # torchvision-shaped: torchvision's arch
    x = torch.randn(2, 3, 40, 48)
    ref_logits, ref_feats = _reference(model, x), _reference(model, x, "forward_features")
    with torch.no_grad():
        ref_pooled = copy.deepcopy(model).double().forward_head(ref_feats, pre_logits=True)
    assert tuple(ref_feats.shape) == (2, 512, 2, 2)
    logits = fast(x.to(DEVICE))
    assert_close(logits, ref_logits, 1e-4, what="logits")
    feats = fast.forward_features(x.to(DEVICE))
    assert_close(feats, ref_feats, 1e-4, what="forward_features")
    with torch.no_grad():
        head = fast.forward_head(feats)
        pooled = fast.forward_head(feats, pre_logits=True)
    assert_close(head, ref_logits, 1e-4, what="forward_head(forward_features(x)) against timm's forward")
    assert_close(head, logits, 1e-5, what="forward_head against fastres' fused head")
    assert_close(pooled, ref_pooled, 1e-4, what="forward_head(pre_logits=True) against timm's")


@pytest.mark.parametrize("kwargs, shape", [({"num_classes": 0}, (2, 512)),
                                           ({"num_classes": 0, "global_pool": ""}, (2, 512, 1, 2))],
                         ids=["pooled", "unpooled"])
def test_feature_extractor_num_classes_0(kwargs, shape):
    """timm's feature extractor (num_classes=0: fc is Identity): the trunk on fastres, timm's own
    pool after it; timm's attributes (num_classes, num_features, pretrained_cfg, feature_info)
    and get_classifier() as the model's."""
    torch.manual_seed(1)
    model = randomize_bn_(timm.create_model("resnet18", pretrained=False, **kwargs))
    fast = fastres.from_timm(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(2, 3, 32, 40)
    out = fast(x.to(DEVICE))
    assert tuple(out.shape) == shape and fast.engine.returns is not None
    assert_close(out, _reference(model, x), 1e-4, what="features")
    assert (fast.num_classes, fast.num_features) == (model.num_classes, model.num_features) == (0, 512)
    assert fast.pretrained_cfg == model.pretrained_cfg and len(fast.feature_info) == len(model.feature_info)
    assert type(fast.get_classifier()) is torch.nn.Identity


@pytest.mark.parametrize("block, size", [(BasicBlock, (32, 32)), (Bottleneck, (30, 27))], ids=["basic", "bottleneck"])
def test_deep_stem_and_average_pool_shortcut(block, size):
    """timm's `d` variant (resnet18d / resnet50d's shape, smaller): deep stem, 2x2 average pool
    before the strided projection; odd sizes clip the pool's windows (count_include_pad=False)."""
    torch.manual_seed(1)
    model = randomize_bn_(ResNet(block=block, layers=(1, 1, 2, 1), stem_width=16, stem_type="deep", avg_down=True,
                                 num_classes=5, drop_path_rate=0.1), seed=1)
    fast = fastres.from_timm(model, dtype=torch.float32, device=DEVICE)
    spec = fast.engine.spec
    assert spec.stem == (16, 16) and spec.inplanes == 32 and spec.avg_down
    pooled = [s for s in fast.engine.schedule((1, 3, *size)).steps if s.spec is not None and s.spec.avg_pool]
    assert [s.layer for s in pooled] == ["layer2.0.downsample.1", "layer3.0.downsample.1", "layer4.0.downsample.1"]
    x = torch.randn(2, 3, *size)
    assert_close(fast(x.to(DEVICE)), _reference(model, x), 1e-4, what="logits")


def test_c_variant_deep_stem_plain_shortcut():
    torch.manual_seed(2)
    model = randomize_bn_(ResNet(block=BasicBlock, layers=(1, 1, 1, 1), stem_width=8, stem_type="deep",
                                 num_classes=3), seed=2)
    fast = fastres.from_timm(model, dtype=torch.float32, device=DEVICE)
    assert not fast.engine.spec.avg_down
    x = torch.randn(1, 3, 33, 35)
    assert_close(fast(x.to(DEVICE)), _reference(model, x), 1e-4, what="logits")


@pytest.mark.parametrize("feature_cls", ["list", "dict"])
def test_features_only(feature_cls):
    torch.manual_seed(3)
    model = randomize_bn_(timm.create_model("resnet26d", pretrained=False, features_only=True, out_indices=(0, 1, 3),
                                            feature_cls=feature_cls), seed=3)
    fast = fastres.from_timm(model, dtype=torch.float32, device=DEVICE)
    assert fast.engine.depth == 3  # timm dropped layer4; so does the engine
    x = torch.randn(2, 3, 32, 32)
    ref, out = _reference(model, x), fast(x.to(DEVICE))
    assert type(out) is type(ref) or (isinstance(out, dict) and isinstance(ref, dict))
    if feature_cls == "dict":
        assert list(out) == list(ref)
        ref, out = list(ref.values()), list(out.values())
    assert [tuple(t.shape) for t in out] == [tuple(t.shape) for t in ref] == [(2, 64, 16, 16), (2, 256, 8, 8),
                                                                              (2, 1024, 2, 2)]
    for i, (o, r) in enumerate(zip(out, ref)):
        assert_close(o, r, 1e-4, what=f"feature {i}")


@pytest.mark.parametrize("name, kwargs, match", [
    ("seresnet18", {}, "squeeze-excitation"),
    ("resnetaa34d", {}, "anti-alias"),
    ("resnet18", {"act_layer": "silu"}, "fuses ReLU only"),
    ("resnet18", {"output_stride": 16}, "dilated"),
    ("resnet18", {"global_pool": "max"}, "global average pool"),
    ("resnet18", {"num_classes": 0, "global_pool": "max"}, "global average pool"),
    ("resnet18", {"replace_stem_pool": True}, "conv-pool stems"),
    ("resnetv2_50", {}, "ResNetV2"),
])
def test_refused(name, kwargs, match):
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with pytest.raises(UnsupportedModelError, match=match):
        fastres.from_timm(model, dtype=torch.float32, device=DEVICE)


def test_training_mode_refused():
    model = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(UnsupportedModelError, match="training mode"):
        fastres.from_timm(model, dtype=torch.float32, device=DEVICE)


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # an import of timm now fails as if it were missing
    with pytest.raises(ImportError, match=r"pip install 'fastres\[timm\]'"):
        fastres.from_timm(torch.nn.Linear(1, 1))


def test_from_torchvision_points_to_from_timm():
    with pytest.raises(UnsupportedModelError, match=r"use fastres.from_timm\(model\)"):
        fastres.from_torchvision(timm.create_model("resnet18", pretrained=False).eval())
