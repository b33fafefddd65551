"""torchvision's ResNets and their trunks: check a module is exactly what fastres runs, and
read off its architecture, dilation, returned layers and BatchNorm eps.

A classifier is `torchvision.models.ResNet` (ResNet, Wide ResNet, ResNeXt; any
replace_stride_with_dilation torchvision builds). A trunk is an `IntermediateLayerGetter` over
one (what the segmentation models hold as `backbone` and the detectors as `backbone.body`),
returning any of layer1..layer4 under its own names. BatchNorm2d and torchvision's
FrozenBatchNorm2d both fold (each with its own eps).
"""
from __future__ import annotations

import dataclasses

import torch

from ..engine import ENGINE_DTYPES, ResNet
from ..plan import (ARCHS, LAYERS, arch_label, arch_spec, Returns, UnsupportedModelError, arch_blocks, check_returns, fold_params, infer_arch,
                    returns_depth)


@dataclasses.dataclass(frozen=True)
class ResNetFacts:
    """What fastres needs of a checked torchvision ResNet or trunk: the engine's arguments."""

    arch: str
    num_classes: int | None  # None: a trunk
    returns: Returns | None  # a trunk's (layer, name) pairs in execution order
    dilate: tuple[bool, bool, bool]
    eps: dict[str, float]  # per BatchNorm (state_dict prefix)

    @property
    def depth(self) -> int:
        return returns_depth(self.returns)


def kind(m) -> str:
    t = type(m)
    return f"{t.__module__}.{t.__qualname__}"


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise UnsupportedModelError(msg)


def is_torchvision(m, name: str) -> bool:
    t = type(m)
    return t.__name__ == name and t.__module__.startswith("torchvision.")


def check_eval(model: torch.nn.Module, what: str = "the model") -> None:
    """Refuse a model (or any BatchNorm in it) in training mode, and forward hooks fastres would skip."""
    expect(not model.training, f"{what} is in training mode: call model.eval() first (BatchNorm is folded with its "
                               "running statistics)")
    for name, mod in model.named_modules():
        # A BatchNorm left training would use batch statistics in torchvision's forward.
        expect(not (mod.training and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)),
               f"{name} is in training mode while the model is not: call model.eval() "
               "(BatchNorm is folded with its running statistics)")


def _check_hooks(model: torch.nn.Module) -> None:
    for name, mod in model.named_modules():
        hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks") if getattr(mod, h, None)]
        expect(not hooks, f"{name or 'the model'} has forward hooks, which fastres would not run")


def _check_conv(conv, name: str, spec) -> None:
    expect(type(conv) is torch.nn.Conv2d, f"{name} is a {kind(conv)}, expected torch.nn.Conv2d")
    expect(conv.bias is None, f"{name} has a bias: torchvision ResNet convs have none")
    expect(conv.padding_mode == "zeros", f"{name} has padding_mode={conv.padding_mode!r}: only 'zeros' is supported")
    got = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)
    want = ((spec.k, spec.k), (spec.stride, spec.stride), (spec.pad, spec.pad), (spec.dilation, spec.dilation),
            spec.groups)
    expect(got == want, f"{name} has kernel/stride/padding/dilation/groups {got}, but a torchvision {{arch}} has "
                        f"{want} there")


def _check_bn(bn, name: str) -> float:
    if is_torchvision(bn, "FrozenBatchNorm2d"):
        return float(bn.eps)
    expect(type(bn) is torch.nn.BatchNorm2d,
           f"{name} is a {kind(bn)}, expected torch.nn.BatchNorm2d or torchvision.ops.FrozenBatchNorm2d")
    expect(bn.affine and bn.track_running_stats and bn.running_mean is not None,
           f"{name} must be affine with running statistics to be folded")
    return float(bn.eps)


def _dilate_of(module, arch: str, depth: int) -> tuple[bool, bool, bool]:
    """replace_stride_with_dilation as torchvision applied it: a stage after the first is
    dilated where its first block's strided conv has stride 1."""
    strided = "conv2" if arch_spec(arch).block == "bottleneck" else "conv1"
    dilate = []
    for li in range(2, 5):
        stage = getattr(module, f"layer{li}", None) if li <= depth else None
        conv = getattr(stage[0], strided, None) if isinstance(stage, torch.nn.Sequential) and len(stage) else None
        dilate.append(isinstance(conv, torch.nn.Conv2d) and tuple(conv.stride) == (1, 1))
    return tuple(dilate)


def _check_stages(module, arch: str, dilate, depth: int, eps: dict[str, float]) -> None:
    """The stem and the first `depth` stages of `module` are exactly torchvision's `arch`."""
    stem, blocks = arch_blocks(arch, dilate, depth)

    def conv_bn(parent, cname, bname, spec, prefix=""):
        _check_conv(getattr(parent, cname), prefix + cname, spec)
        eps[spec.bn] = _check_bn(getattr(parent, bname), prefix + bname)

    conv_bn(module, "conv1", "bn1", stem[0])
    expect(type(module.relu) is torch.nn.ReLU, f"relu is a {kind(module.relu)}, expected torch.nn.ReLU")
    mp = module.maxpool
    expect(type(mp) is torch.nn.MaxPool2d and (mp.kernel_size, mp.stride, mp.padding, mp.dilation, mp.ceil_mode) in
           ((3, 2, 1, 1, False), ((3, 3), (2, 2), (1, 1), (1, 1), False)),
           f"maxpool is {mp}, expected MaxPool2d(kernel_size=3, stride=2, padding=1)")
    block_type = "BasicBlock" if arch_spec(arch).block == "basic" else "Bottleneck"
    for spec in blocks:
        layer, idx = spec.name.split(".")
        block = getattr(module, layer)[int(idx)]
        expect(is_torchvision(block, block_type) and type(block).__module__.startswith("torchvision.models"),
               f"{spec.name} is a {kind(block)}, expected torchvision's {block_type}")
        names = ["conv1", "bn1", "conv2", "bn2", "relu"] + (["conv3", "bn3"] if block_type == "Bottleneck" else [])
        names += ["downsample"] if spec.downsample else []
        got = {n for n, m in block.named_children()}
        expect(got == set(names), f"{spec.name} has submodules {sorted(got)}, expected {sorted(names)}")
        expect(type(block.relu) is torch.nn.ReLU, f"{spec.name}.relu is a {kind(block.relu)}, expected torch.nn.ReLU")
        for i, cs in enumerate(spec.convs, start=1):
            conv_bn(block, f"conv{i}", f"bn{i}", cs, spec.name + ".")
        if spec.downsample:
            ds = block.downsample
            expect(type(ds) is torch.nn.Sequential and len(ds) == 2,
                   f"{spec.name}.downsample is {ds}, expected Sequential(conv1x1, BatchNorm2d)")
            conv_bn(ds, "0", "1", spec.downsample, spec.name + ".downsample.")


def _checked(module, arch: str, depth: int) -> tuple[tuple[bool, bool, bool], dict[str, float]]:
    dilate = _dilate_of(module, arch, depth)
    eps: dict[str, float] = {}
    try:
        _check_stages(module, arch, dilate, depth, eps)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(str(exc).replace("{arch}", arch_label(arch))) from None
    return dilate, eps


_STEM = ("conv1", "bn1", "relu", "maxpool")


def check_resnet(model: torch.nn.Module) -> ResNetFacts:
    """The facts of a torchvision ResNet classifier (ResNet, Wide ResNet, ResNeXt, any
    replace_stride_with_dilation) in eval mode; UnsupportedModelError otherwise."""
    expect(isinstance(model, torch.nn.Module), f"expected a torchvision ResNet module, got {type(model).__name__}")
    expect(is_torchvision(model, "ResNet") and type(model).__module__.startswith("torchvision.models"),
           f"expected a torchvision ResNet (torchvision.models.resnet.ResNet), got {kind(model)}")
    check_eval(model)
    _check_hooks(model)
    children = {n for n, _ in model.named_children()}
    want = {*_STEM, *LAYERS, "avgpool", "fc"}
    expect(children == want, f"the model's submodules {sorted(children)} differ from torchvision's ResNet {sorted(want)}")
    arch, num_classes = infer_arch(model.state_dict())
    ap = model.avgpool
    expect(type(ap) is torch.nn.AdaptiveAvgPool2d and ap.output_size in (1, (1, 1)),
           f"avgpool is {ap}, expected AdaptiveAvgPool2d((1, 1))")
    expect(type(model.fc) is torch.nn.Linear and model.fc.bias is not None, f"fc is {model.fc}, expected a Linear with bias")
    dilate, eps = _checked(model, arch, 4)
    return ResNetFacts(arch, num_classes, None, dilate, eps)


def check_layer_getter(getter: torch.nn.Module, what: str = "the trunk") -> ResNetFacts:
    """The facts of torchvision's IntermediateLayerGetter over a ResNet (the segmentation
    models' `backbone`, the detectors' `backbone.body`) returning some of layer1..layer4."""
    expect(is_torchvision(getter, "IntermediateLayerGetter"),
           f"{what} is a {kind(getter)}, expected torchvision's IntermediateLayerGetter over a ResNet")
    check_eval(getter, what)
    _check_hooks(getter)
    return_layers = dict(getattr(getter, "return_layers", {}))
    bad = [k for k in return_layers if k not in LAYERS]
    expect(not bad, f"{what} returns {bad}: fastres returns only layer1..layer4 of a ResNet")
    returns = check_returns(return_layers)
    depth = returns_depth(returns)
    children = [n for n, _ in getter.named_children()]
    want = [*_STEM, *LAYERS[:depth]]
    expect(children == want, f"{what} has submodules {children}, expected a ResNet's {want}")
    try:
        arch, _ = infer_arch(getter.state_dict(), trunk=True)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{what}: {exc}") from None
    dilate, eps = _checked(getter, arch, depth)
    return ResNetFacts(arch, None, returns, dilate, eps)


def engine(facts: ResNetFacts, module: torch.nn.Module, *, dtype: torch.dtype, device, cuda_graph: bool,
           tune) -> ResNet:
    """The fastres engine of a checked module (its BatchNorm folded into `dtype` weights)."""
    if dtype not in ENGINE_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    if device is None:
        device = next(module.parameters(), next(module.buffers(), torch.empty(0))).device
    params = fold_params(module.state_dict(), facts.arch, facts.num_classes, dtype, facts.eps, facts.depth)
    return ResNet(facts.arch, params, num_classes=facts.num_classes, returns=facts.returns, dilate=facts.dilate,
                  dtype=dtype, device=device, cuda_graph=cuda_graph, tune=tune)
