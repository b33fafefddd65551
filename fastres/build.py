"""Building an engine from a torchvision module: refuse what fastres cannot run exactly.

Each kind of model has its source module (`fastres.sources`); this one picks it."""
from __future__ import annotations

import torch

from .engine import ENGINE_DTYPES, ResNet
from .plan import NO_DILATION, UnsupportedModelError
from .sources import detection, segmentation
from .sources import torchvision as tv


def check_module(model: torch.nn.Module) -> tuple[str, int, dict[str, float]]:
    """(arch, num_classes, eps per BN) of a supported torchvision ResNet classifier without
    dilation (what a converted file holds); raise UnsupportedModelError otherwise."""
    facts = tv.check_resnet(model)
    if facts.dilate != NO_DILATION:
        raise UnsupportedModelError(f"the model's stages are dilated (replace_stride_with_dilation={list(facts.dilate)}): "
                                    "a converted file holds undilated classifiers only")
    return facts.arch, facts.num_classes, facts.eps


def from_torchvision(
    model: torch.nn.Module,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    cuda_graph: bool = True,
    tune=False,
):
    """A model computing `model(x)` with its ResNet on fastres' Triton kernels.

    model (in eval mode), and what comes back:
    - a torchvision ResNet classifier (resnet18/34/50/101/152, wide_resnet50_2/101_2,
      resnext50_32x4d, resnext101_32x8d/64x4d; any num_classes; any
      replace_stride_with_dilation): a `fastres.ResNet` returning the logits;
    - torchvision's FCN or DeepLabV3 on a ResNet: a copy of the model whose `backbone` is a
      fastres trunk;
    - a ResNet-FPN detector (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, v2 variants) or a
      `BackboneWithFPN`: a copy whose `backbone.body` (`body`) is a fastres trunk;
    - an `IntermediateLayerGetter` over a ResNet: a fastres trunk, returning the same
      OrderedDict of features.
    The copies are called as the original and return the same outputs; everything but the
    trunk (transforms, FPN, heads, NMS) stays torch. A trunk's features come back in its
    input's dtype.

    dtype: the engine's activation/weight dtype (float16, bfloat16 or float32). device:
    defaults to the model's. cuda_graph: on CUDA, capture one graph per input shape. tune:
    measure every conv's configs on the first forward at each batch bucket, remembered on
    disk (True on CUDA, or a fastres.tuning.Tuner); the default picks configs by a heuristic.
    Unsupported models raise UnsupportedModelError (a ValueError) naming what is unsupported.
    """
    if dtype not in ENGINE_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    options = dict(dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune)
    if segmentation.is_segmentation(model):
        return segmentation.from_segmentation(model, **options)
    if detection.is_detector(model) or detection.is_backbone_with_fpn(model):
        return detection.from_detection(model, **options)
    if tv.is_torchvision(model, "IntermediateLayerGetter"):
        facts = tv.check_layer_getter(model)
        return tv.engine(facts, model, **options)
    if isinstance(model, torch.nn.Module) and not tv.is_torchvision(model, "ResNet"):
        for lib in ("timm", "transformers"):
            if type(model).__module__.startswith(lib + "."):
                raise UnsupportedModelError(f"{tv.kind(model)} is a {lib} model: use fastres.from_{lib}(model)")
        raise UnsupportedModelError(
            f"{tv.kind(model)} is not supported: fastres takes a torchvision ResNet (or ResNeXt) classifier, FCN and "
            "DeepLabV3 on a ResNet, the ResNet-FPN detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS), and a "
            "BackboneWithFPN or IntermediateLayerGetter over a ResNet")
    facts = tv.check_resnet(model)
    return tv.engine(facts, model, **options)


__all__ = ["ResNet", "check_module", "from_torchvision"]
