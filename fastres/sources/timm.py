"""timm's ResNets (`timm.models.resnet.ResNet`) and their `features_only` trunks.

What runs: the torchvision-shaped ones (resnet18...152, wide_resnet50_2/101_2, resnext), the
deep stem of the `c`/`d`/`s` variants (three 3x3 convs, any stem width) and the `d` shortcut
(2x2 average pool, then a 1x1 conv: one GEMM launch that averages as it loads), any blocks per
stage and widths, any num_classes. DropBlock and DropPath are identities in eval mode. What
timm also builds and fastres does not run exactly (squeeze-excitation or any attention layer,
anti-aliasing, other activations, norms or poolings, dilation, a stem without its max pool,
the tiered / conv-pool stems) is refused with UnsupportedModelError naming the part.

timm itself is needed only to build the model handed in; fastres never imports it otherwise.
"""
from __future__ import annotations

import collections
import copy
import dataclasses

import torch

from ..engine import ENGINE_DTYPES, ResNet
from ..plan import (LAYERS, UnsupportedModelError, arch_blocks, arch_spec, check_returns, fold_params, infer_arch,
                    returns_depth)
from .torchvision import check_eval, expect, kind

EXTRA = "timm"


def require_timm():
    """timm, or an ImportError naming the extra that installs it."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError("this needs timm: pip install 'fastres[timm]'") from exc
    return timm


def is_timm(model, name: str | None = None) -> bool:
    t = type(model)
    return t.__module__.startswith("timm.") and (name is None or t.__name__ == name)


def _check_hooks(model: torch.nn.Module) -> None:
    for name, mod in model.named_modules():
        hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks") if getattr(mod, h, None)]
        expect(not hooks, f"{name or 'the model'} has forward hooks, which fastres would not run")


def _conv(conv, name: str, spec) -> None:
    expect(type(conv) is torch.nn.Conv2d, f"{name} is a {kind(conv)}, expected torch.nn.Conv2d (timm's Conv2dSame "
                                          "and other padding schemes are not supported)")
    expect(conv.bias is None and conv.padding_mode == "zeros", f"{name} has a bias or padding_mode "
                                                               f"{conv.padding_mode!r}: not a ResNet conv")
    got = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups,
           conv.in_channels, conv.out_channels)
    stride = 1 if spec.avg_pool else spec.stride  # the pool before it strides
    want = ((spec.k, spec.k), (stride, stride), (spec.pad, spec.pad), (spec.dilation, spec.dilation),
            spec.groups, spec.cin, spec.cout)
    expect(got == want, f"{name} has kernel/stride/padding/dilation/groups/channels {got}, expected {want} "
                        "(dilated timm ResNets, output_stride < 32, are not supported)")


def _bn(bn, name: str) -> float:
    expect(type(bn) is torch.nn.BatchNorm2d, f"{name} is a {kind(bn)}, expected torch.nn.BatchNorm2d")
    expect(bn.affine and bn.track_running_stats and bn.running_mean is not None,
           f"{name} must be affine with running statistics to be folded")
    return float(bn.eps)


def _relu(mod, name: str) -> None:
    expect(type(mod) is torch.nn.ReLU, f"{name} is a {kind(mod)}: fastres fuses ReLU only")


def _identity_in_eval(mod, name: str, what: str) -> None:
    """DropBlock / DropPath: identities in eval mode; anything else in their place is refused."""
    if mod is None or type(mod) is torch.nn.Identity:
        return
    expect(type(mod).__name__ in ("DropBlock2d", "DropPath") and is_timm(mod),
           f"{name} is a {kind(mod)}: expected timm's {what} (an identity in eval mode)")


def _check_stem(model, spec, eps) -> None:
    stem, _ = arch_blocks(spec, depth=0)
    if not spec.stem:
        _conv(model.conv1, "conv1", stem[0])
    else:
        seq = model.conv1
        expect(type(seq) is torch.nn.Sequential and len(seq) == 7,
               f"conv1 is {kind(seq)}, expected timm's deep stem Sequential(conv, bn, act, conv, bn, act, conv)")
        for i in (2, 5):
            _relu(seq[i], f"conv1.{i}")
        for c in stem:
            _conv(model.get_submodule(c.name), c.name, c)
    for c in stem:
        eps[c.bn] = _bn(model.get_submodule(c.bn), c.bn)
    _relu(model.act1, "act1")


def _check_maxpool(mp) -> None:
    expect(type(mp) is torch.nn.MaxPool2d and (mp.kernel_size, mp.stride, mp.padding, mp.dilation, mp.ceil_mode) in
           ((3, 2, 1, 1, False), ((3, 3), (2, 2), (1, 1), (1, 1), False)),
           f"maxpool is {kind(mp)} ({mp}), expected MaxPool2d(kernel_size=3, stride=2, padding=1) "
           "(timm's conv-pool stems and anti-aliased pools are not supported)")


_BLOCK_CHILDREN = {
    "BasicBlock": {"conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "act2", "downsample", "se",
                   "drop_path"},
    "Bottleneck": {"conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "act3",
                   "downsample", "se", "drop_path"},
}


def _check_blocks(model, spec, depth: int, eps) -> None:
    _, blocks = arch_blocks(spec, depth=depth)
    block_type = "BasicBlock" if spec.block == "basic" else "Bottleneck"
    for b in blocks:
        block = model.get_submodule(b.name)
        expect(is_timm(block, block_type), f"{b.name} is a {kind(block)}, expected timm's {block_type}")
        extra = {n for n, _ in block.named_children()} - _BLOCK_CHILDREN[block_type]
        expect(not extra, f"{b.name} has submodules {sorted(extra)} that timm's ResNet blocks do not")
        expect(getattr(block, "se", None) is None, f"{b.name}.se is a {kind(block.se)}: squeeze-excitation and other "
                                                   "attention layers are not supported")
        expect(type(getattr(block, "aa", None)) is torch.nn.Identity,
               f"{b.name}.aa is a {kind(getattr(block, 'aa', None))}: anti-aliased ResNets are not supported")
        _identity_in_eval(getattr(block, "drop_block", None), f"{b.name}.drop_block", "DropBlock2d")
        _identity_in_eval(getattr(block, "drop_path", None), f"{b.name}.drop_path", "DropPath")
        for i in range(1, len(b.convs) + 1):
            _relu(getattr(block, f"act{i}"), f"{b.name}.act{i}")
        for c in b.convs:
            _conv(model.get_submodule(c.name), c.name, c)
            eps[c.bn] = _bn(model.get_submodule(c.bn), c.bn)
        ds = block.downsample
        if b.downsample is None:
            expect(ds is None, f"{b.name}.downsample is {kind(ds)}, but the block keeps its shape")
            continue
        c = b.downsample
        expect(type(ds) is torch.nn.Sequential and len(ds) == (3 if spec.avg_down else 2),
               f"{b.name}.downsample is {ds}, expected Sequential({'pool, ' if spec.avg_down else ''}conv1x1, "
               "BatchNorm2d)")
        if spec.avg_down:
            pool = ds[0]
            if c.avg_pool:
                expect(type(pool) is torch.nn.AvgPool2d and _pool_args(pool) == (2, 2, 0, True, False),
                       f"{b.name}.downsample.0 is {pool}, expected AvgPool2d(2, 2, ceil_mode=True, "
                       "count_include_pad=False)")
            else:
                expect(type(pool) is torch.nn.Identity, f"{b.name}.downsample.0 is {pool}, expected Identity")
        _conv(model.get_submodule(c.name), c.name, c)
        eps[c.bn] = _bn(model.get_submodule(c.bn), c.bn)


def _pool_args(pool) -> tuple:
    def one(v):
        return v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else tuple(v))
    return (one(pool.kernel_size), one(pool.stride), one(pool.padding), pool.ceil_mode, pool.count_include_pad)


def _spec_of(model, trunk: bool):
    """The arch read off the weights (a torchvision name where timm's model is one), labelled
    with timm's architecture name otherwise."""
    found, num_classes = infer_arch(model.state_dict(), trunk=trunk)
    if not isinstance(found, str):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        found = dataclasses.replace(found, name=str(cfg.get("architecture") or "timm-resnet"))
    return found, num_classes


def check_timm_resnet(model: torch.nn.Module):
    """(arch, num_classes, eps per BN) of a timm ResNet classifier in eval mode; num_classes is
    None for a feature extractor (timm's num_classes=0: fc is Identity)."""
    expect(is_timm(model, "ResNet"), f"expected timm's ResNet (timm.models.resnet.ResNet), got {kind(model)}")
    check_eval(model)
    _check_hooks(model)
    children = {n for n, _ in model.named_children()}
    want = {"conv1", "bn1", "act1", "maxpool", *LAYERS, "global_pool", "fc"}
    expect(children == want, f"the model's submodules {sorted(children)} differ from timm's ResNet {sorted(want)}")
    gp, fc = model.global_pool, model.fc
    pool_type = getattr(gp, "pool_type", None)
    features = type(fc) is torch.nn.Identity  # num_classes=0: the pooled (or, with global_pool='', unpooled) features
    expect(type(gp).__name__ == "SelectAdaptivePool2d" and (
        (pool_type == "avg" and not gp.is_identity() and type(getattr(gp, "flatten", None)) is torch.nn.Flatten)
        or (features and pool_type == "" and gp.is_identity())),
        f"global_pool is {gp}: fastres runs the flattened global average pool, or none with num_classes=0")
    expect(features or (type(fc) is torch.nn.Linear and fc.bias is not None),
           f"fc is {fc}: fastres runs a Linear classifier with bias, or none (num_classes=0)")
    arch, num_classes = _spec_of(model, trunk=features)
    if features:
        num_classes = None
    spec = arch_spec(arch)
    eps: dict[str, float] = {}
    _check_stem(model, spec, eps)
    _check_maxpool(model.maxpool)
    _check_blocks(model, spec, 4, eps)
    return arch, num_classes, eps


def _feature_returns(model) -> tuple:
    """The trunk's returns (stem or layerN -> output key) of a timm FeatureListNet/FeatureDictNet."""
    return_layers = dict(getattr(model, "return_layers", {}))
    where = {"act1": "stem", **{layer: layer for layer in LAYERS}}
    bad = [k for k in return_layers if k not in where]
    expect(return_layers and not bad, f"the features_only model returns {bad or 'nothing'}: fastres returns act1 and "
                                      "layer1..layer4 of a ResNet")
    return check_returns({where[k]: str(v) for k, v in return_layers.items()})


def check_timm_features(model: torch.nn.Module):
    """(arch, returns, eps) of timm's `features_only=True` ResNet (FeatureListNet / FeatureDictNet)."""
    expect(is_timm(model, "FeatureListNet") or is_timm(model, "FeatureDictNet"),
           f"expected a timm features_only model (FeatureListNet or FeatureDictNet), got {kind(model)}")
    expect(not getattr(model, "concat", False), "a features_only model with concat=True is not supported")
    expect(getattr(model, "output_fmt", "NCHW") in ("NCHW", getattr(getattr(model, "output_fmt", None), "NCHW", None)),
           f"features_only output_fmt {getattr(model, 'output_fmt', None)} is not supported (NCHW only)")
    check_eval(model)
    _check_hooks(model)
    returns = _feature_returns(model)
    depth = max(0, returns_depth(returns))
    children = [n for n, _ in model.named_children()]
    want = ["conv1", "bn1", "act1", "maxpool", *LAYERS[:depth]]
    expect(children[:len(want)] == want and set(children) <= {*want, *LAYERS},
           f"the features_only model has submodules {children}, expected a ResNet's {want}")
    expect(depth > 0, "a features_only ResNet returning only act1 is not supported: return a stage too")
    arch, _ = _spec_of(model, trunk=True)
    spec = arch_spec(arch)
    eps: dict[str, float] = {}
    _check_stem(model, spec, eps)
    _check_maxpool(model.maxpool)
    _check_blocks(model, spec, depth, eps)
    return arch, returns, eps


class TimmResNet(torch.nn.Module):
    """timm's ResNet on fastres: `forward(x)` gives the logits, and `forward_features(x)` /
    `forward_head(x, pre_logits=False)` what timm's do (the head, a global average pool and
    the Linear, stays torch and runs as timm's does; forward_features builds a trunk engine
    returning layer4 on first use, `engine.trunk`: a quantized engine's is quantized alike). A
    feature extractor (timm's num_classes=0) is the trunk engine and timm's own pool: forward
    gives the pooled features (unpooled with global_pool='')."""

    def __init__(self, engine: ResNet, global_pool: torch.nn.Module, fc: torch.nn.Module,
                 source: torch.nn.Module | None = None):
        super().__init__()
        self.engine = engine
        self.global_pool, self.fc = global_pool, fc
        self._trunk: ResNet | None = None if engine.num_classes else engine
        for name in ("num_classes", "num_features", "head_hidden_size", "pretrained_cfg", "default_cfg",
                     "feature_info"):
            if hasattr(source, name):
                setattr(self, name, copy.deepcopy(getattr(source, name)))

    def get_classifier(self) -> torch.nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._trunk is self.engine:
            return self.forward_head(self.forward_features(x))
        return self.engine(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self._trunk is None:
            self._trunk = self.engine.trunk({"layer4": "layer4"})
        return self._trunk(x)["layer4"]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def quantization_report(self):
        """A quantized model's calibration report (fastres.quantize): its engine's."""
        return self.engine.quantization_report()


class TimmFeatures(torch.nn.Module):
    """timm's features_only ResNet on fastres: the same list (FeatureListNet) or dict
    (FeatureDictNet) of features, NCHW-shaped (channels_last in memory)."""

    def __init__(self, engine: ResNet, as_list: bool, feature_info=None):
        super().__init__()
        self.engine = engine
        self.as_list = as_list
        self.feature_info = feature_info

    def forward(self, x: torch.Tensor):
        out = self.engine(x)
        return list(out.values()) if self.as_list else collections.OrderedDict(out)

    def quantization_report(self):
        """A quantized model's calibration report (fastres.quantize): its engine's."""
        return self.engine.quantization_report()


def from_timm(model: torch.nn.Module, *, dtype: torch.dtype = torch.float16, device=None, cuda_graph: bool = True,
              tune=False) -> torch.nn.Module:
    """A module computing what timm's `model` (in eval mode) computes, its ResNet on fastres.

    model: `timm.create_model(<a ResNet>)`: a TimmResNet (forward, forward_features,
    forward_head as timm's); with features_only=True: a TimmFeatures returning the same list
    (or dict) of stages. dtype, device, cuda_graph, tune: as fastres.from_torchvision.
    Anything timm builds that fastres does not run exactly raises UnsupportedModelError.
    """
    require_timm()
    if dtype not in ENGINE_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    if not isinstance(model, torch.nn.Module) or not is_timm(model):
        raise UnsupportedModelError(f"expected a timm model, got {kind(model)}")
    if device is None:
        device = next(model.parameters(), next(model.buffers(), torch.empty(0))).device
    options = dict(dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune)
    if is_timm(model, "FeatureListNet") or is_timm(model, "FeatureDictNet"):
        arch, returns, eps = check_timm_features(model)
        params = fold_params(model.state_dict(), arch, None, dtype, eps, returns_depth(returns))
        engine = ResNet(arch, params, returns=returns, **options)
        return TimmFeatures(engine, is_timm(model, "FeatureListNet"), getattr(model, "feature_info", None))
    if not is_timm(model, "ResNet"):
        raise UnsupportedModelError(f"{kind(model)} is not supported: fastres takes timm's ResNet "
                                    "(timm.models.resnet.ResNet) and its features_only trunks; ResNetV2 (pre-activation), "
                                    "ByobNet and other families are not")
    arch, num_classes, eps = check_timm_resnet(model)
    if num_classes is None:
        params = fold_params(model.state_dict(), arch, None, dtype, eps, 4)
        engine = ResNet(arch, params, returns={"layer4": "layer4"}, **options)
    else:
        params = fold_params(model.state_dict(), arch, num_classes, dtype, eps)
        engine = ResNet(arch, params, num_classes=num_classes, **options)
    return TimmResNet(engine, copy.deepcopy(model.global_pool), copy.deepcopy(model.fc), model)
