"""Hugging Face transformers' ResNets: `ResNetForImageClassification`, `ResNetModel` and
`ResNetBackbone` (microsoft/resnet-18...152 and DETR-style detectors' trunks).

transformers' ResNet is torchvision's computation under other names, with its own knobs, all
read from the config: `layer_type` (basic, bottleneck with reduction 4 of `hidden_sizes`),
`embedding_size` (the stem's channels), `downsample_in_first_stage` (layer1 strides 2),
`downsample_in_bottleneck` (the bottleneck strides its first 1x1 conv). `hidden_act` must be
relu and `num_channels` 3; anything else is refused with UnsupportedModelError.

The weights are renamed to torchvision's names (`hf_to_torchvision`), so a converted file is
the same format as torchvision's; transformers is needed only for the model handed in.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from ..engine import ENGINE_DTYPES, ResNet, trunk_of
from ..plan import LAYERS, ArchSpec, UnsupportedModelError, arch_blocks, check_spec, fold_params
from .torchvision import check_eval, expect, kind

MODELS = ("ResNetForImageClassification", "ResNetModel", "ResNetBackbone")
# transformers' stage names -> fastres' returned points ("stem" is the embedder's output: after its max pool).
STAGES = {"stem": "maxpool", "stage1": "layer1", "stage2": "layer2", "stage3": "layer3", "stage4": "layer4"}


def require_transformers():
    """transformers, or an ImportError naming the extra that installs it."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("this needs transformers: pip install 'fastres[transformers]'") from exc
    return transformers


def is_transformers(model, name: str | None = None) -> bool:
    t = type(model)
    return t.__module__.startswith("transformers.") and (name is None or t.__name__ == name)


def spec_from_config(config) -> ArchSpec:
    """The ArchSpec of a transformers ResNetConfig (an object or its config.json dict)."""
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, Mapping) else (
        lambda k, d=None: getattr(config, k, d))
    expect(get("model_type", "resnet") == "resnet", f"config model_type {get('model_type')!r} is not 'resnet'")
    expect(get("hidden_act", "relu") == "relu", f"hidden_act {get('hidden_act')!r}: fastres fuses relu only")
    expect(int(get("num_channels", 3)) == 3, f"num_channels {get('num_channels')}: fastres takes 3-channel images")
    layer_type = get("layer_type", "bottleneck")
    expect(layer_type in ("basic", "bottleneck"), f"layer_type {layer_type!r} is not basic or bottleneck")
    depths, hidden = [int(v) for v in get("depths", ())], [int(v) for v in get("hidden_sizes", ())]
    expect(len(depths) == len(hidden) == 4, f"depths {depths} and hidden_sizes {hidden}: fastres runs four stages")
    if layer_type == "bottleneck":
        channels = tuple((h // 4, h) for h in hidden)  # transformers' reduction is 4
        expect(all(w > 0 for w, _ in channels), f"hidden_sizes {hidden} leave a bottleneck without channels")
    else:
        channels = tuple((h, h) for h in hidden)
    spec = ArchSpec("basic" if layer_type == "basic" else "bottleneck", tuple(depths), inplanes=int(get("embedding_size", 64)),
                    channels=channels, first_stride=2 if get("downsample_in_first_stage", False) else 1,
                    stride_in_1x1=layer_type == "bottleneck" and bool(get("downsample_in_bottleneck", False)),
                    name=f"hf-resnet-{layer_type}-{'-'.join(map(str, depths))}")
    return check_spec(spec)


_RENAMES = (
    (r"embedder\.embedder\.convolution\.", "conv1."),
    (r"embedder\.embedder\.normalization\.", "bn1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
    (r"classifier\.1\.", "fc."),
)


def hf_to_torchvision(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ResNet state_dict (any of the three heads) in torchvision's names; an
    unknown key raises UnsupportedModelError."""
    out = {}
    for key, value in sd.items():
        k = key.removeprefix("resnet.")
        for pattern, repl in _RENAMES:
            new, n = re.subn("^" + pattern, repl, k)
            if n:
                out[new] = value
                break
        else:
            raise UnsupportedModelError(f"unexpected key {key!r} in a transformers ResNet state_dict")
    return out


def is_hf_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("resnet.").startswith("embedder.embedder.convolution.") for k in sd)


def _hf_names(spec: ArchSpec, depth: int) -> dict[str, str]:
    """fastres conv / bn names -> transformers module paths (without the "resnet." prefix)."""
    names = {"conv1": "embedder.embedder.convolution", "bn1": "embedder.embedder.normalization"}
    _, blocks = arch_blocks(spec, depth=depth)
    for b in blocks:
        li, j = b.name.split(".")
        base = f"encoder.stages.{int(li[5:]) - 1}.layers.{j}"
        for i, c in enumerate(b.convs):
            names[c.name], names[c.bn] = f"{base}.layer.{i}.convolution", f"{base}.layer.{i}.normalization"
        if b.downsample is not None:
            names[b.downsample.name] = f"{base}.shortcut.convolution"
            names[b.downsample.bn] = f"{base}.shortcut.normalization"
    return names


def _check_modules(trunk: torch.nn.Module, spec: ArchSpec, depth: int) -> dict[str, float]:
    """Every conv, BatchNorm and activation of transformers' embedder + encoder as `spec` says;
    the eps of each BatchNorm (by its torchvision name)."""
    names = _hf_names(spec, depth)
    stem, blocks = arch_blocks(spec, depth=depth)
    eps = {}
    for c in (*stem, *(c for b in blocks for c in (*b.convs, *((b.downsample,) if b.downsample else ())))):
        conv, bn = trunk.get_submodule(names[c.name]), trunk.get_submodule(names[c.bn])
        expect(type(conv) is torch.nn.Conv2d and conv.bias is None and conv.padding_mode == "zeros",
               f"{names[c.name]} is {conv}, expected a bias-free Conv2d")
        got = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups,
               conv.in_channels, conv.out_channels)
        want = ((c.k, c.k), (c.stride, c.stride), (c.pad, c.pad), (1, 1), 1, c.cin, c.cout)
        expect(got == want, f"{names[c.name]} has kernel/stride/padding/dilation/groups/channels {got}, but the config "
                            f"says {want}")
        expect(type(bn) is torch.nn.BatchNorm2d and bn.affine and bn.running_mean is not None,
               f"{names[c.bn]} is {kind(bn)}, expected an affine BatchNorm2d with running statistics")
        eps[c.bn] = float(bn.eps)
    act = trunk.get_submodule("embedder.embedder.activation")
    expect(type(act) is torch.nn.ReLU, f"embedder.embedder.activation is {kind(act)}, expected ReLU")
    pool = trunk.get_submodule("embedder.pooler")
    expect(type(pool) is torch.nn.MaxPool2d and (pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                                  pool.ceil_mode) == (3, 2, 1, 1, False),
           f"embedder.pooler is {pool}, expected MaxPool2d(3, 2, 1)")
    for b in blocks:
        li, j = b.name.split(".")
        layer = trunk.get_submodule(f"encoder.stages.{int(li[5:]) - 1}.layers.{j}")
        expect(type(layer.activation) is torch.nn.ReLU, f"{b.name}'s activation is {kind(layer.activation)}")
        for i, sub in enumerate(layer.layer):
            want = torch.nn.Identity if i == len(layer.layer) - 1 else torch.nn.ReLU
            expect(type(sub.activation) is want, f"{b.name} conv layer {i}'s activation is {kind(sub.activation)}, "
                                                 f"expected {want.__name__}")
        if b.downsample is None:
            expect(type(layer.shortcut) is torch.nn.Identity, f"{b.name}'s shortcut is {kind(layer.shortcut)}")
    return eps


class _Engines:
    """The engines one transformers model needs, built on first use from one set of folded
    parameters: the classifier (logits), or a trunk returning given points. options: as
    ResNet takes them (a quantized engine's quantized= and ranges= too)."""

    def __init__(self, arch: ArchSpec, params: dict, num_classes: int | None, options: dict):
        self.arch, self.params, self.num_classes, self.options = arch, params, num_classes, options
        self._trunks: dict[tuple, ResNet] = {}
        self.classifier = (ResNet(arch, params, num_classes=num_classes, **options) if num_classes is not None
                           else None)

    @classmethod
    def around(cls, engine: ResNet) -> "_Engines":
        """The engines around a built one (a classifier, or a trunk returning every point, as
        `widest` gives): it serves what it computes, trunks of its parameters the rest."""
        options = dict(dtype=engine.dtype, device=engine.device, cuda_graph=engine.cuda_graph,
                       tune=engine.tuner or False, quantized=engine.quantized,
                       ranges=None if engine.ranges is None else engine.ranges.amax)
        engines = cls(engine._arch, engine.params(), None, options)
        engines.num_classes = engine.num_classes
        if engine.num_classes is not None:
            engines.classifier = engine
        else:
            engines._trunks[tuple(layer for layer, _ in engine.returns)] = engine
        return engines

    def widest(self) -> ResNet:
        """The engine that computes every other's values: the classifier, or the trunk
        returning every point (what output_hidden_states runs)."""
        return self.classifier if self.classifier is not None else self.trunk(_ALL)

    def trunk(self, points: tuple[str, ...]) -> ResNet:
        if points not in self._trunks:
            self._trunks[points] = trunk_of(self.arch, self.params, {p: p for p in points}, **self.options)
        return self._trunks[points]


_ALL = ("maxpool", *LAYERS)


def _hidden_states(engines: _Engines, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """transformers' hidden_states: the embedder's output, then each stage's."""
    out = engines.trunk(_ALL)(x)
    return tuple(out[p] for p in _ALL)


class _HFModule(torch.nn.Module):
    def __init__(self, engines: _Engines, config):
        super().__init__()
        self._engines = engines
        self.config = config

    def _flags(self, output_hidden_states, return_dict):
        hs = output_hidden_states if output_hidden_states is not None else getattr(
            self.config, "output_hidden_states", False)
        rd = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return bool(hs), bool(rd)

    def quantization_report(self):
        """A quantized model's calibration report (fastres.quantize): that of the engine it
        calibrated (the classifier, or the trunk returning every stage)."""
        return self._engines.widest().quantization_report()


class HFResNetForImageClassification(_HFModule):
    """transformers' ResNetForImageClassification on fastres: the same output object (logits;
    hidden_states where asked; with labels, the loss transformers computes from the logits:
    cross-entropy, MSE or BCE by the config's problem_type, its own loss function)."""

    def __init__(self, engines: _Engines, config, loss_function=None):
        super().__init__(engines, config)
        self._loss_function = loss_function

    def forward(self, pixel_values: torch.Tensor, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

        if labels is not None and self._loss_function is None:
            raise ValueError("labels: this transformers version's model had no loss_function to compute the loss with")
        hs, rd = self._flags(output_hidden_states, return_dict)
        logits = self._engines.classifier(pixel_values)
        # transformers' own loss of the logits fastres computed (in their dtype)
        loss = None if labels is None else self._loss_function(labels, logits, self.config)
        hidden = _hidden_states(self._engines, pixel_values) if hs else None
        if not rd:
            return ((loss,) if loss is not None else ()) + (logits,) + ((hidden,) if hs else ())
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden)


class HFResNetModel(_HFModule):
    """transformers' ResNetModel on fastres: last_hidden_state, pooler_output [N, C, 1, 1]
    (the average pool runs in torch, as transformers' does), hidden_states where asked."""

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention

        hs, rd = self._flags(output_hidden_states, return_dict)
        if hs:
            hidden = _hidden_states(self._engines, pixel_values)
            last = hidden[-1]
        else:
            hidden, last = None, self._engines.trunk(("layer4",))(pixel_values)["layer4"]
        pooled = torch.nn.functional.adaptive_avg_pool2d(last, (1, 1))
        if not rd:
            return (last, pooled) + ((hidden,) if hs else ())
        return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=last, pooler_output=pooled,
                                                        hidden_states=hidden)


class HFResNetBackbone(_HFModule):
    """transformers' ResNetBackbone on fastres: feature_maps of its out_features, in stage
    order; hidden_states where asked."""

    def __init__(self, engines: _Engines, config, out_features):
        super().__init__(engines, config)
        self.out_features = list(out_features)
        self.stage_names = list(getattr(config, "stage_names", ["stem", "stage1", "stage2", "stage3", "stage4"]))
        bad = [f for f in self.out_features if f not in STAGES]
        expect(not bad, f"out_features {bad} are not among {list(STAGES)}")
        self._points = tuple(STAGES[s] for s in self.stage_names if s in self.out_features)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        from transformers.modeling_outputs import BackboneOutput

        hs, rd = self._flags(output_hidden_states, return_dict)
        if hs:
            hidden = _hidden_states(self._engines, pixel_values)
            maps = tuple(hidden[_ALL.index(p)] for p in self._points)
        else:
            hidden = None
            out = self._engines.trunk(self._points)(pixel_values)
            maps = tuple(out[p] for p in self._points)
        if not rd:
            return (maps,) + ((hidden,) if hs else ())
        return BackboneOutput(feature_maps=maps, hidden_states=hidden, attentions=None)


def from_transformers(model: torch.nn.Module, *, dtype: torch.dtype = torch.float16, device=None,
                      cuda_graph: bool = True, tune=False) -> torch.nn.Module:
    """A module computing what transformers' ResNetForImageClassification, ResNetModel or
    ResNetBackbone computes (in eval mode), its ResNet on fastres; called and answering as the
    original (output objects, return_dict=False tuples, output_hidden_states).
    dtype, device, cuda_graph, tune: as fastres.from_torchvision."""
    require_transformers()
    if dtype not in ENGINE_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    expect(isinstance(model, torch.nn.Module) and any(is_transformers(model, n) for n in MODELS),
           f"{kind(model)} is not supported: fastres takes transformers' {', '.join(MODELS)}")
    check_eval(model)
    for name, mod in model.named_modules():
        expect(not (mod._forward_hooks or mod._forward_pre_hooks), f"{name or 'the model'} has forward hooks, which "
                                                                   "fastres would not run")
    config = model.config
    spec = spec_from_config(config)
    trunk = model.resnet if is_transformers(model, "ResNetForImageClassification") else model
    eps = _check_modules(trunk, spec, 4)
    num_classes = None
    if is_transformers(model, "ResNetForImageClassification"):
        head = model.classifier
        expect(type(head) is torch.nn.Sequential and len(head) == 2 and type(head[1]) is torch.nn.Linear,
               f"classifier is {head}: fastres runs Sequential(Flatten, Linear) (num_labels > 0)")
        num_classes = head[1].out_features
    if device is None:
        device = next(model.parameters()).device
    sd = hf_to_torchvision(model.state_dict())
    params = fold_params(sd, spec, num_classes, dtype, eps, 4)
    engines = _Engines(spec, params, num_classes, dict(dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune))
    if num_classes is not None:
        return HFResNetForImageClassification(engines, config, getattr(model, "loss_function", None))
    if is_transformers(model, "ResNetModel"):
        return HFResNetModel(engines, config)
    return HFResNetBackbone(engines, config, model.out_features)


__all__ = ["from_transformers", "hf_to_torchvision", "spec_from_config"]
