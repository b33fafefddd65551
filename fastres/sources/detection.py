"""torchvision's ResNet-FPN detectors: Faster R-CNN, Mask R-CNN, Keypoint R-CNN, RetinaNet and
FCOS (the v2 variants too), and a `BackboneWithFPN` on its own. The ResNet trunk
(`backbone.body`, an IntermediateLayerGetter returning some of layer1..layer4) runs on fastres;
the transform, the FPN, the heads, the box coder and NMS stay torch."""
from __future__ import annotations

import copy

import torch

from .torchvision import check_eval, check_layer_getter, engine, expect, is_torchvision, kind

DETECTORS = ("FasterRCNN", "MaskRCNN", "KeypointRCNN", "RetinaNet", "FCOS")


def is_detector(model) -> bool:
    return any(is_torchvision(model, name) for name in DETECTORS)


def is_backbone_with_fpn(model) -> bool:
    return is_torchvision(model, "BackboneWithFPN")


def _with_fast_body(model: torch.nn.Module, fpn_backbone: torch.nn.Module, what: str, *, dtype, device, cuda_graph,
                    tune) -> torch.nn.Module:
    expect(is_backbone_with_fpn(fpn_backbone), f"{what} is a {kind(fpn_backbone)}, expected torchvision's "
                                               "BackboneWithFPN over a ResNet")
    body = getattr(fpn_backbone, "body", None)
    facts = check_layer_getter(body, f"{what}.body")
    fast = engine(facts, body, dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune)
    # The memo hands deepcopy the engine wherever it meets the body: nothing else is shared.
    return copy.deepcopy(model, memo={id(body): fast})


def from_detection(model: torch.nn.Module, *, dtype: torch.dtype, device=None, cuda_graph: bool = True,
                   tune=False) -> torch.nn.Module:
    """A copy of a detector or a BackboneWithFPN (same class, same call, same outputs) whose
    ResNet trunk is a fastres engine."""
    if is_backbone_with_fpn(model):
        check_eval(model)
        return _with_fast_body(model, model, "the BackboneWithFPN", dtype=dtype, device=device, cuda_graph=cuda_graph,
                               tune=tune)
    expect(is_detector(model), f"expected one of torchvision's {', '.join(DETECTORS)}, got {kind(model)}")
    check_eval(model)
    return _with_fast_body(model, getattr(model, "backbone", None), f"{type(model).__name__}.backbone", dtype=dtype,
                           device=device, cuda_graph=cuda_graph, tune=tune)
