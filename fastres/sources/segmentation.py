"""torchvision's segmentation models on a ResNet: FCN and DeepLabV3 (resnet50/101 backbones,
dilated as torchvision builds them). The backbone (an IntermediateLayerGetter returning "out"
and, with aux_loss, "aux") runs on fastres; the classifier heads and the upsampling stay torch."""
from __future__ import annotations

import copy

import torch

from .torchvision import check_eval, check_layer_getter, engine, expect, is_torchvision, kind

MODELS = ("FCN", "DeepLabV3")


def is_segmentation(model) -> bool:
    return any(is_torchvision(model, name) for name in MODELS)


def from_segmentation(model: torch.nn.Module, *, dtype: torch.dtype, device=None, cuda_graph: bool = True,
                      tune=False) -> torch.nn.Module:
    """A copy of `model` (same class, same call, same outputs) whose backbone is a fastres engine."""
    expect(is_segmentation(model), f"expected torchvision's FCN or DeepLabV3, got {kind(model)}")
    check_eval(model)
    trunk = getattr(model, "backbone", None)
    facts = check_layer_getter(trunk, f"{type(model).__name__}.backbone")
    fast = engine(facts, trunk, dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune)
    # The memo hands deepcopy the engine wherever it meets the backbone: nothing else is shared.
    return copy.deepcopy(model, memo={id(trunk): fast})
