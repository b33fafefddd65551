"""What `fastres.quantize` takes: the float engine it calibrates, and the model it gives back.

Every model quantize takes holds one float engine that computes every value the model's
forward returns from the model's input: a torchvision classifier or trunk, a fastres.ResNet
(itself); timm's ResNet (its classifier engine, the fc included; `forward_features` runs a
trunk of the same parameters), a timm feature extractor or features_only trunk (its trunk);
transformers' ResNetForImageClassification (its classifier engine), ResNetModel and
ResNetBackbone (the trunk returning every stage: `output_hidden_states` runs it); the
segmentation models' backbone and the detectors' `backbone.body`. That engine is calibrated
once and the model rebuilt around the quantized one: the same class, called the same way, whose
other engines (the trunks built on first use) keep its 8-bit codes and activation ranges.

The detectors' trunk reads what their transform makes of the images (resized, normalized,
padded): calibration batches are passed through it. Everything else's engine reads the model's
input as it is.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable

import torch

from ..engine import ResNet

_FLOAT = dict(dtype=torch.float32, device="cpu", cuda_graph=False)  # what calibration reads: exact folds, any machine


@dataclasses.dataclass(frozen=True)
class Intake:
    """engine: the float engine calibrated; device: where the quantized model runs unless told;
    inputs: the engine's input [N, 3, H', W'] from a calibration batch (None: the batch itself);
    wrap: the model made around the quantized engine (None: the engine itself)."""

    engine: ResNet
    device: torch.device
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None
    wrap: Callable[[ResNet], torch.nn.Module] | None = None

    def batches(self, calibration: Iterable) -> Iterable:
        """calibration as the engine's inputs: iterable as often as calibration is."""
        if self.inputs is None:
            return calibration
        if iter(calibration) is calibration:
            return (_mapped(item, self.inputs) for item in calibration)
        return _Mapped(calibration, self.inputs)

    def model(self, engine: ResNet) -> torch.nn.Module:
        return engine if self.wrap is None else self.wrap(engine)


class _Mapped:
    def __init__(self, items: Iterable, fn: Callable):
        self.items, self.fn = items, fn

    def __iter__(self):
        return (_mapped(item, self.fn) for item in self.items)

    def __len__(self) -> int:
        return len(self.items)


def _mapped(item, fn: Callable):
    x = item[0] if isinstance(item, (tuple, list)) else item
    # anything but an image batch goes through as it is, for quantize to refuse with its shape
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
        with torch.no_grad():
            return fn(x)
    return x


def intake(model) -> Intake:
    """The Intake of `model`: a torchvision ResNet classifier, an IntermediateLayerGetter over
    one, an FCN or DeepLabV3, a ResNet-FPN detector or BackboneWithFPN, a timm or transformers
    ResNet (or what fastres.from_timm / from_transformers made of one), or a fastres.ResNet."""
    from ..sources import timm as tm
    from ..sources import transformers as hf

    if isinstance(model, ResNet):
        return Intake(_float(model), model.device)
    if isinstance(model, (tm.TimmResNet, tm.TimmFeatures)):
        return _timm(model, model.engine.device)
    if isinstance(model, hf._HFModule):
        return _transformers(model, model._engines.widest().device)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a ResNet module (torchvision's, timm's, transformers') or a fastres.ResNet, "
                        f"got {type(model).__name__}")
    device = _device_of(model)
    if tm.is_timm(model):
        return _timm(tm.from_timm(model, **_FLOAT), device)
    if hf.is_transformers(model):
        return _transformers(hf.from_transformers(model, **_FLOAT), device)
    from ..build import from_torchvision
    from ..sources import detection, segmentation

    fast = from_torchvision(model, **_FLOAT)
    if segmentation.is_segmentation(model):
        return _around(fast, fast.backbone, device)
    if detection.is_backbone_with_fpn(model):
        return _around(fast, fast.body, device)
    if detection.is_detector(model):
        return _around(fast, fast.backbone.body, device, lambda x: fast.transform(list(x))[0].tensors)
    return Intake(_float(fast), device)


def _float(engine: ResNet) -> ResNet:
    if engine.quantized is not None:
        raise ValueError("the model is already quantized")
    return engine


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters(), next(module.buffers(), torch.empty(0))).device


def _around(copied: torch.nn.Module, engine: ResNet, device, inputs=None) -> Intake:
    """A torchvision copy (from_torchvision's) whose trunk is `engine`: the same copy again,
    the quantized engine in its place."""
    return Intake(_float(engine), device, inputs, lambda q: copy.deepcopy(copied, memo={id(engine): q}))


def _timm(fast: torch.nn.Module, device) -> Intake:
    from ..sources.timm import TimmResNet, TimmFeatures

    if isinstance(fast, TimmFeatures):
        return Intake(_float(fast.engine), device, wrap=lambda q: TimmFeatures(q, fast.as_list, fast.feature_info))

    def wrap(q: ResNet) -> TimmResNet:
        # timm's pool and Linear run on the engine's features: on its device
        return TimmResNet(q, copy.deepcopy(fast.global_pool).to(q.device), copy.deepcopy(fast.fc).to(q.device), fast)

    return Intake(_float(fast.engine), device, wrap=wrap)


def _transformers(fast: torch.nn.Module, device) -> Intake:
    from ..sources import transformers as hf

    def wrap(q: ResNet) -> torch.nn.Module:
        engines = hf._Engines.around(q)
        if isinstance(fast, hf.HFResNetForImageClassification):
            return hf.HFResNetForImageClassification(engines, fast.config, fast._loss_function)
        if isinstance(fast, hf.HFResNetBackbone):
            return hf.HFResNetBackbone(engines, fast.config, fast.out_features)
        return hf.HFResNetModel(engines, fast.config)

    return Intake(_float(fast._engines.widest()), device, wrap=wrap)
