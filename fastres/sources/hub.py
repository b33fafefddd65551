"""Checkpoints of timm's and transformers' ResNets, as downloaded from the Hugging Face Hub:
what `fastres convert` folds when its source is not torchvision's.

- timm: `model.safetensors` or `pytorch_model.bin` in timm's names (torchvision's, plus the
  deep stem's `conv1.0/.3/.6` and the average-pool shortcut's `downsample.1/.2`), alone or in
  a folder whose `config.json` (timm's: "architecture", "pretrained_cfg") gives the
  preprocessing: input_size, crop_pct, interpolation, mean, std.
- transformers: a model folder, `config.json` (model_type "resnet") + `model.safetensors` or
  `pytorch_model.bin`; `preprocessor_config.json` (the image processor's: size.shortest_edge,
  crop_pct, resample, image_mean, image_std) gives the preprocessing. A classifier's file is
  a classifier; ResNetModel's and ResNetBackbone's are trunks (format version 2).

Neither timm nor transformers is imported: the files are read as JSON and tensors.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..plan import ArchSpec, Returns, UnsupportedModelError, check_returns
from .transformers import STAGES, hf_to_torchvision, is_hf_state_dict, spec_from_config

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# PIL's resample codes (transformers' image processors store them) -> torchvision's names.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclasses.dataclass
class HubCheckpoint:
    """A timm or transformers checkpoint in torchvision's names, ready to fold."""

    state_dict: dict[str, torch.Tensor]
    arch: "str | ArchSpec | None"  # None: infer from the state_dict
    returns: Returns | None  # a trunk (transformers' ResNetModel / ResNetBackbone)
    preprocess: dict | None  # Transform fields, with "source"
    source: str  # "timm" or "transformers"
    weights: Path | None  # the file the tensors came from (None: a module)
    eps: "float | dict[str, float]" = 1e-5  # per BatchNorm where a module says


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{path} does not hold a JSON object")
    return data


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UnsupportedModelError(f"{folder} holds no {' or '.join(WEIGHT_FILES)}")


def is_timm_config(config: Mapping | None) -> bool:
    return bool(config) and ("architecture" in config or "pretrained_cfg" in config)


def timm_preprocess(config: Mapping) -> dict:
    """timm's eval transform from a pretrained_cfg: resize the shorter side to
    floor(input_size / crop_pct), center-crop input_size; its interpolation, mean, std."""
    cfg = config.get("pretrained_cfg", config)
    notes = []
    size = cfg.get("input_size", (3, 224, 224))
    if not isinstance(size, (list, tuple)) or len(size) != 3 or size[1] != size[2]:
        raise UnsupportedModelError(f"timm input_size {size!r}: fastres crops squares")
    crop = int(size[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic"):
        notes.append(f"interpolation {interpolation!r} read as bilinear")
        interpolation = "bilinear"
    if cfg.get("crop_mode", "center") != "center":
        notes.append(f"crop_mode {cfg.get('crop_mode')!r} read as center")
    return dict(resize=int(math.floor(crop / crop_pct)), crop=crop, mean=list(map(float, cfg.get("mean", (0.485, 0.456, 0.406)))),
                std=list(map(float, cfg.get("std", (0.229, 0.224, 0.225)))), interpolation=interpolation,
                source="timm pretrained_cfg" + (f" ({'; '.join(notes)})" if notes else ""))


def transformers_preprocess(processor: Mapping) -> dict:
    """transformers' ConvNext-style image processor (what microsoft/resnet-* use): below 384
    pixels, resize the shorter side to shortest_edge / crop_pct and center-crop shortest_edge."""
    size = processor.get("size", {"shortest_edge": 224})
    edge = int(size.get("shortest_edge", 224) if isinstance(size, Mapping) else size)
    crop_pct = float(processor.get("crop_pct", 224 / 256))
    resize = int(edge / crop_pct) if edge < 384 else edge
    resample = processor.get("resample", 3)
    interpolation = _RESAMPLE.get(resample, "bilinear")
    note = "" if resample in _RESAMPLE else f" (resample {resample!r} read as bilinear)"
    return dict(resize=resize, crop=edge, mean=list(map(float, processor.get("image_mean", (0.485, 0.456, 0.406)))),
                std=list(map(float, processor.get("image_std", (0.229, 0.224, 0.225)))), interpolation=interpolation,
                source="transformers preprocessor_config" + note)


def _transformers(folder: Path, config: Mapping, read: Callable[[Path], dict]) -> HubCheckpoint:
    spec = spec_from_config(config)
    weights = _weights_in(folder)
    sd = hf_to_torchvision(read(weights))
    returns = None
    if "fc.weight" not in sd:
        if "ResNetBackbone" in (config.get("architectures") or ()) and config.get("out_features"):
            returns = check_returns({STAGES[f]: f for f in config["out_features"] if f in STAGES})
        else:  # ResNetModel: its last hidden state
            returns = check_returns({"layer4": "last_hidden_state"})
    processor = _json(folder / "preprocessor_config.json")
    pre = transformers_preprocess(processor) if processor is not None else None
    return HubCheckpoint(sd, spec, returns, pre, "transformers", weights)


def read_hub(path: Path, read: Callable[[Path], dict]) -> HubCheckpoint | None:
    """The checkpoint at `path` (a folder, or a weights file beside its config.json) when it is
    timm's or transformers'; None for anything else (a torchvision checkpoint). `read` reads a
    weights file into a state_dict."""
    folder = path if path.is_dir() else path.parent
    config = _json(folder / "config.json")
    if path.is_dir():
        if config is None:
            raise UnsupportedModelError(f"{path} is not a file but a folder without config.json: give a checkpoint "
                                        "file, or a timm or transformers model folder")
        if config.get("model_type") == "resnet":
            return _transformers(path, config, read)
        if is_timm_config(config):
            weights = _weights_in(path)
            return HubCheckpoint(read(weights), None, None, timm_preprocess(config), "timm", weights)
        raise UnsupportedModelError(f"{path}/config.json is neither timm's nor a transformers ResNet's "
                                    f"(model_type {config.get('model_type')!r})")
    if path.name not in WEIGHT_FILES:
        return None
    sd = read(path)
    if is_hf_state_dict(sd):
        if config is None or config.get("model_type") != "resnet":
            raise UnsupportedModelError(f"{path} holds a transformers ResNet, whose shape only its config.json says: "
                                        "convert the model folder (config.json beside the weights)")
        return _transformers(folder, config, lambda _: sd)
    if is_timm_config(config):
        return HubCheckpoint(sd, None, None, timm_preprocess(config), "timm", path)
    return None


def module_checkpoint(model: torch.nn.Module) -> HubCheckpoint | None:
    """A timm or transformers ResNet module (eval mode) as a checkpoint, checked as
    from_timm / from_transformers check it; None for any other module."""
    t = type(model).__module__
    if t.startswith("timm."):
        from . import timm as source

        if source.is_timm(model, "ResNet"):
            arch, _, eps = source.check_timm_resnet(model)
            returns = None
        else:
            arch, returns, eps = source.check_timm_features(model)
        cfg = getattr(model, "pretrained_cfg", None)
        pre = timm_preprocess(cfg) if isinstance(cfg, Mapping) and "input_size" in cfg else None
        return HubCheckpoint(dict(model.state_dict()), arch, returns, pre, "timm", None, eps)
    if t.startswith("transformers."):
        from . import transformers as source

        source.expect(any(source.is_transformers(model, n) for n in source.MODELS),
                      f"{source.kind(model)} is not supported: fastres takes transformers' {', '.join(source.MODELS)}")
        source.check_eval(model)
        spec = spec_from_config(model.config)
        classifier = source.is_transformers(model, "ResNetForImageClassification")
        eps = source._check_modules(model.resnet if classifier else model, spec, 4)
        sd = hf_to_torchvision(model.state_dict())
        returns = None
        if source.is_transformers(model, "ResNetBackbone"):
            returns = check_returns({STAGES[f]: f for f in model.out_features})
        elif not classifier:
            returns = check_returns({"layer4": "last_hidden_state"})
        return HubCheckpoint(sd, spec, returns, None, "transformers", None, eps)
    return None
