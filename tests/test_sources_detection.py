"""fastres.sources.detection: torchvision's ResNet-FPN detectors and BackboneWithFPN keep their
class, call and outputs, with the ResNet trunk (backbone.body) on fastres."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models import detection
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

import fastres
from fastres.plan import UnsupportedModelError, arch_convs
from helpers import DEVICE, assert_close, calibrate_

# builder -> the trunk's returned layers, as torchvision's _resnet_fpn_extractor sets them
DETECTORS = {
    "fasterrcnn_resnet50_fpn": ("layer1", "layer2", "layer3", "layer4"),
    "fasterrcnn_resnet50_fpn_v2": ("layer1", "layer2", "layer3", "layer4"),
    "maskrcnn_resnet50_fpn": ("layer1", "layer2", "layer3", "layer4"),
    "maskrcnn_resnet50_fpn_v2": ("layer1", "layer2", "layer3", "layer4"),
    "keypointrcnn_resnet50_fpn": ("layer1", "layer2", "layer3", "layer4"),
    "retinanet_resnet50_fpn": ("layer2", "layer3", "layer4"),
    "retinanet_resnet50_fpn_v2": ("layer2", "layer3", "layer4"),
    "fcos_resnet50_fpn": ("layer2", "layer3", "layer4"),
}


class ConvCounter(TorchDispatchMode):
    """Counts aten convolutions and batch norms (what still runs in torch)."""

    def __init__(self):
        super().__init__()
        self.convs = self.norms = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.convs += "convolution" in name
        self.norms += "batch_norm" in name
        return func(*args, **(kwargs or {}))


def _build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(detection, name)(weights=None, weights_backbone=None, min_size=64, max_size=64, **kwargs).eval()


# One of each family (fasterrcnn_resnet50_fpn runs end to end below; the v1/v2 siblings share
# their trunk's construction).
@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
                                  "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn"])
def test_detector_keeps_its_class_with_the_trunk_on_fastres(name):
    model = _build(name, num_classes=3)
    before = copy.deepcopy(model.state_dict())
    fast = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    assert type(fast) is type(model) and fast is not model
    body = fast.backbone.body
    assert isinstance(body, fastres.ResNet) and body.arch == "resnet50" and body.dtype == torch.float16
    assert [layer for layer, _ in body.returns] == list(DETECTORS[name])
    assert [n for _, n in body.returns] == [str(i) for i in range(len(DETECTORS[name]))]
    # Everything else stays torch, a copy: the original model is untouched.
    assert type(fast.backbone.fpn) is type(model.backbone.fpn) and fast.backbone.fpn is not model.backbone.fpn
    assert isinstance(model.backbone.body, torchvision.models._utils.IntermediateLayerGetter)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_faster_rcnn_end_to_end():
    """The detector with its trunk on fastres (float32) against torchvision's own forward in
    float64, within DESIGN's bound for a whole float32 network (1e-4); the trunk's BatchNorm
    calibrated (torchvision builds an untrained detector with default statistics, which make
    every fold an identity and hide a wrong one)."""
    # box_score_thresh=0: every candidate box comes back, so boxes and scores are compared, not empty lists.
    model = _build("fasterrcnn_resnet50_fpn", num_classes=3, box_score_thresh=0.0, box_detections_per_img=20)
    calibrate_(model.backbone.body, size=(64, 64))
    images = [torch.rand(3, 64, 80), torch.rand(3, 56, 64)]
    with torch.no_grad(), ConvCounter() as torch_ops:
        ref = copy.deepcopy(model).double()([im.double() for im in images])
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    with torch.no_grad(), ConvCounter() as fast_ops:
        out = fast([im.to(DEVICE) for im in images])
    # The trunk's 53 convs and their batch norms no longer run in torch; the FPN and heads do.
    assert torch_ops.convs - fast_ops.convs == len(arch_convs("resnet50"))
    assert fast_ops.norms == 0 and torch_ops.norms == len(arch_convs("resnet50"))
    # The same boxes in the same order: the reference's top scores are ~1e-5 or more apart,
    # float32's errors ~1e-7, so no near-tie reorders them.
    for r, o in zip(ref, out):
        assert r["boxes"].shape[0] == 20 and o["boxes"].shape == r["boxes"].shape
        assert o["boxes"].dtype == o["scores"].dtype == torch.float32
        assert_close(o["boxes"], r["boxes"], 1e-4, what="boxes")
        assert_close(o["scores"], r["scores"], 1e-4, what="scores")
        assert torch.equal(o["labels"].cpu(), r["labels"])


def test_backbone_with_fpn_frozen_batchnorm():
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3, returned_layers=[2, 3, 4]).eval()
    g = torch.Generator().manual_seed(1)
    for m in backbone.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    fast = fastres.from_torchvision(backbone, dtype=torch.float32, device=DEVICE)
    assert type(fast) is type(backbone) and isinstance(fast.body, fastres.ResNet)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ref = copy.deepcopy(backbone).double()(x.double())
        out = fast(x.to(DEVICE))
    assert list(out) == list(ref) == ["0", "1", "2", "pool"]
    for k in ref:
        assert_close(out[k], ref[k], 1e-4, what=k)


def test_refuses_what_is_not_a_resnet_fpn_trunk():
    torch.manual_seed(0)
    mobile = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=3).eval()
    with pytest.raises(UnsupportedModelError, match="layer1..layer4 of a ResNet"):
        fastres.from_torchvision(mobile, dtype=torch.float32, device=DEVICE)
    model = _build("retinanet_resnet50_fpn", num_classes=3).train()
    with pytest.raises(UnsupportedModelError, match="training mode"):
        fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
