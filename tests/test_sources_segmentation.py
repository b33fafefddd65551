"""fastres.sources.segmentation: FCN and DeepLabV3 keep their class, call and outputs, with the
dilated ResNet backbone on fastres."""
from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models import segmentation

import fastres
from fastres.plan import UnsupportedModelError
from helpers import DEVICE, assert_close, calibrate_

def _build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=3, **kwargs).eval()


@pytest.mark.parametrize("name", ["fcn_resnet101", "deeplabv3_resnet50"])  # fcn_resnet50 runs end to end below
def test_backbone_runs_dilated_on_fastres(name):
    model = _build(name, aux_loss=name.endswith("50"))
    fast = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    assert type(fast) is type(model) and type(fast.classifier) is type(model.classifier)
    trunk = fast.backbone
    assert isinstance(trunk, fastres.ResNet) and trunk.arch == name.split("_")[1]
    assert trunk.dilate == (False, True, True)
    # Output stride 8: layer3 ("aux") and layer4 ("out") at the resolution of layer2.
    s = trunk.schedule((1, 3, 64, 48))
    want = [("out", (1, 2048, 8, 6))] if model.aux_classifier is None else \
        [("aux", (1, 1024, 8, 6)), ("out", (1, 2048, 8, 6))]
    assert [(o.name, o.shape) for o in s.outputs] == want
    dilations = {st.spec.dilation for st in s.steps if st.spec is not None and st.layer.startswith("layer4")}
    assert dilations == {1, 2, 4}  # layer4.0 keeps layer3's dilation 2, then 4


def test_refuses_a_training_model():
    with pytest.raises(UnsupportedModelError, match="training mode"):
        fastres.from_torchvision(_build("fcn_resnet50").train(), dtype=torch.float32, device=DEVICE)


def test_fcn_end_to_end():
    """FCN with its dilated trunk on fastres (float32) against torchvision's float64 forward,
    within DESIGN's whole-network bound; the trunk's BatchNorm calibrated (the untrained
    model's default statistics make every fold an identity and would hide a wrong one)."""
    model = _build("fcn_resnet50", aux_loss=True)
    calibrate_(model.backbone, size=(32, 32))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        out = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)(x.to(DEVICE))
    assert list(out) == list(ref) == ["out", "aux"]
    for k in ref:
        assert out[k].dtype == torch.float32
        assert_close(out[k], ref[k], 1e-4, what=k)
