"""The ResNet trunk inside a torchvision detection or segmentation checkpoint, read off its
state_dict keys: the trunk's own state_dict, the layers the model returns from it, and its
dilation. What `fastres convert` folds when a checkpoint is a whole detector or segmenter.

- Detection (`backbone.body.*`): the FPN's lateral convs (`backbone.fpn.inner_blocks.<i>`)
  say which layers feed it, by their input channels (returned as "0", "1", ... in order, as
  torchvision's _resnet_fpn_extractor names them); no dilation.
- Segmentation (`backbone.*` beside `classifier.*`: FCN, DeepLabV3): layer4 returned as "out",
  and layer3 as "aux" where the checkpoint has an `aux_classifier`; dilated as torchvision
  builds them, replace_stride_with_dilation=[False, True, True].
- A ResNet's without fc.* (timm's features_only, a saved IntermediateLayerGetter or FCN
  backbone): every stage, and the dilation the caller states (the weights cannot show it).
And the same trunks as modules (FCN, DeepLabV3, IntermediateLayerGetter), whose dilation
their convs show.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import torch

from ..plan import LAYERS, NO_DILATION, Returns, UnsupportedModelError, check_returns
from . import segmentation
from . import torchvision as tv
from .torchvision import ResNetFacts

# Output channels of layer1..layer4 per block type (a Bottleneck's expansion is 4).
_CHANNELS = {"bottleneck": (256, 512, 1024, 2048), "basic": (64, 128, 256, 512)}
SEGMENTATION_DILATION = (False, True, True)


@dataclasses.dataclass(frozen=True)
class TrunkCheckpoint:
    state_dict: dict[str, torch.Tensor]
    returns: Returns
    dilate: tuple[bool, bool, bool]
    source: str  # "detection", "segmentation", "features", "IntermediateLayerGetter", timm's, transformers'


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def features_trunk(sd: Mapping[str, torch.Tensor]) -> TrunkCheckpoint | None:
    """A ResNet state_dict without a classifier (timm's `features_only` model, a torchvision
    IntermediateLayerGetter): a trunk returning the stem's activation and every stage present,
    named "0", "1", ... as timm's features_only models number them (out_indices 0..n). None
    where the state_dict has an fc or no stem."""
    if "fc.weight" in sd or not any(k in sd for k in ("conv1.weight", "conv1.0.weight")):
        return None
    present = [layer for layer in LAYERS if f"{layer}.0.conv1.weight" in sd]
    points = ["stem", *LAYERS[:len(present)]]
    return TrunkCheckpoint(dict(sd), check_returns({p: str(i) for i, p in enumerate(points)}), NO_DILATION,
                           "features")


# Why a ResNet state_dict without fc.* is refused without a dilation, and what to pass.
BARE_TRUNK_DILATION = (
    "a ResNet state_dict without fc.* is a bare trunk, and its weights do not show whether its stages were dilated "
    "(an FCN's or DeepLabV3's backbone is, at stride 8 instead of 32; timm's features_only model and an "
    "IntermediateLayerGetter over a plain ResNet are not): pass the dilation it was built with, torchvision's "
    "replace_stride_with_dilation for layer2..layer4: dilate=[False, False, False] (command line: --dilate none) "
    "for an undilated trunk, dilate=[False, True, True] (--dilate 0,1,1) for an FCN's or DeepLabV3's; or convert "
    "the module itself (its dilation is read off its convs)")


def trunk_module(src: torch.nn.Module) -> tuple[ResNetFacts, str, dict[str, torch.Tensor]] | None:
    """(facts, source, state_dict) of a torchvision trunk module, its dilation read off its
    convs as from_torchvision reads it: an IntermediateLayerGetter over a ResNet, or an FCN's
    or DeepLabV3's backbone; None for any other module."""
    if segmentation.is_segmentation(src):
        tv.check_eval(src)
        getter = getattr(src, "backbone", None)
        return tv.check_layer_getter(getter, f"{type(src).__name__}.backbone"), "segmentation", getter.state_dict()
    if tv.is_torchvision(src, "IntermediateLayerGetter"):
        return tv.check_layer_getter(src), "IntermediateLayerGetter", src.state_dict()
    return None


def check_dilate_agrees(dilate: tuple[bool, bool, bool], trunk: TrunkCheckpoint | None) -> None:
    """A dilation given for a source that states its own (a detection or segmentation
    checkpoint, a module; a classifier: undilated) must be that one."""
    own = NO_DILATION if trunk is None else trunk.dilate
    if dilate != own:
        what = ("a classifier (converted files hold undilated classifiers only)" if trunk is None else
                f"a {trunk.source} trunk, built with replace_stride_with_dilation={list(own)}")
        raise UnsupportedModelError(f"dilate={list(dilate)} contradicts the source, which is {what}")


def split_trunk(sd: Mapping[str, torch.Tensor]) -> TrunkCheckpoint | None:
    """The trunk of a detection or segmentation checkpoint; None for anything else (a
    classifier's state_dict among them)."""
    if "backbone.body.conv1.weight" in sd:
        body = _strip(sd, "backbone.body.")
        block = "bottleneck" if "layer1.0.conv3.weight" in body else "basic"
        lateral = []
        i = 0
        while isinstance(sd.get(f"backbone.fpn.inner_blocks.{i}.0.weight"), torch.Tensor):
            lateral.append(int(sd[f"backbone.fpn.inner_blocks.{i}.0.weight"].shape[1]))
            i += 1
        if not lateral:
            raise UnsupportedModelError("a detection checkpoint without FPN lateral convs "
                                        "('backbone.fpn.inner_blocks.0.0.weight'): which layers it returns is unknown")
        layers = []
        for cin in lateral:
            if cin not in _CHANNELS[block]:
                raise UnsupportedModelError(f"an FPN lateral conv takes {cin} channels, which no layer of a "
                                            f"{block} ResNet gives ({_CHANNELS[block]})")
            layers.append(LAYERS[_CHANNELS[block].index(cin)])
        returns = check_returns([(layer, str(n)) for n, layer in enumerate(layers)])
        return TrunkCheckpoint(body, returns, NO_DILATION, "detection")
    if "backbone.conv1.weight" in sd and any(k.startswith("classifier.") for k in sd):
        returns = {"layer4": "out"}
        if any(k.startswith("aux_classifier.") for k in sd):
            returns["layer3"] = "aux"
        return TrunkCheckpoint(_strip(sd, "backbone."), check_returns(returns), SEGMENTATION_DILATION, "segmentation")
    return None


def torchvision_weights_name(path: Path, sha256: str, arch: str, num_classes: int) -> str | None:
    """The torchvision weights entry (e.g. "ResNet50_Weights.IMAGENET1K_V2") a checkpoint file
    came from, or None: its file name is the entry's download name (torchvision names them
    `<arch>-<first 8 hex digits of the file's sha256>.pth`), or its sha256 starts with those 8
    digits (a renamed download); the entry must be for `arch` with `num_classes` categories."""
    try:
        from torchvision.models import get_model_weights

        entries = list(get_model_weights(arch))
    except Exception:  # noqa: BLE001 - no torchvision, or one without this arch's weights
        return None
    for entry in entries:
        filename = entry.url.rsplit("/", 1)[-1]
        digits = Path(filename).stem.rsplit("-", 1)[-1].lower()
        same = path.name == filename or (len(digits) >= 8 and sha256.lower().startswith(digits))
        if same and len(entry.meta.get("categories") or ()) == num_classes:
            return f"{type(entry).__name__}.{entry.name}"
    return None
