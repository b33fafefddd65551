"""Building an engine from a torchvision module: refuse what fastres cannot run exactly."""
from __future__ import annotations

import torch

from .engine import ENGINE_DTYPES, ResNet
from .plan import ARCHS, UnsupportedModelError, arch_blocks, fold_params, infer_arch


def _kind(m) -> str:
    t = type(m)
    return f"{t.__module__}.{t.__qualname__}"


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise UnsupportedModelError(msg)


def _check_conv(conv, name: str, spec) -> None:
    _expect(isinstance(conv, torch.nn.Conv2d) and type(conv) is torch.nn.Conv2d, f"{name} is a {_kind(conv)}, expected torch.nn.Conv2d")
    _expect(conv.groups == 1, f"{name} has groups={conv.groups}: grouped convolutions (ResNeXt) are not supported")
    _expect(tuple(conv.dilation) == (1, 1), f"{name} has dilation {tuple(conv.dilation)}: only dilation 1 is supported")
    _expect(conv.bias is None, f"{name} has a bias: torchvision ResNet convs have none")
    _expect(conv.padding_mode == "zeros", f"{name} has padding_mode={conv.padding_mode!r}: only 'zeros' is supported")
    got = (conv.kernel_size, conv.stride, conv.padding)
    want = ((spec.k, spec.k), (spec.stride, spec.stride), (spec.pad, spec.pad))
    _expect(tuple(map(tuple, got)) == want,
            f"{name} has kernel/stride/padding {got}, but a torchvision {{arch}} has {want} there")


def _check_bn(bn, name: str) -> None:
    _expect(type(bn) is torch.nn.BatchNorm2d, f"{name} is a {_kind(bn)}, expected torch.nn.BatchNorm2d")
    _expect(bn.affine and bn.track_running_stats and bn.running_mean is not None,
            f"{name} must be affine with running statistics to be folded")


def check_module(model: torch.nn.Module) -> tuple[str, int, dict[str, float]]:
    """(arch, num_classes, eps per BN) of a supported torchvision ResNet; raise otherwise."""
    _expect(isinstance(model, torch.nn.Module), f"expected a torchvision ResNet module, got {type(model).__name__}")
    t = type(model)
    _expect(t.__name__ == "ResNet" and t.__module__.startswith("torchvision.models"),
            f"expected a torchvision ResNet (torchvision.models.resnet.ResNet), got {_kind(model)}")
    _expect(not model.training, "the model is in training mode: call model.eval() first (BatchNorm is folded with its running statistics)")
    for name, mod in model.named_modules():
        # A BatchNorm left training would use batch statistics in torchvision's forward.
        _expect(not (mod.training and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)),
                f"{name} is in training mode while the model is not: call model.eval() "
                "(BatchNorm is folded with its running statistics)")
        hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks") if getattr(mod, h, None)]
        _expect(not hooks, f"{name or 'the model'} has forward hooks, which fastres would not run")
    children = {n for n, _ in model.named_children()}
    want = {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"}
    _expect(children == want, f"the model's submodules {sorted(children)} differ from torchvision's ResNet {sorted(want)}")
    arch, num_classes = infer_arch(model.state_dict())
    stem, blocks = arch_blocks(arch)
    eps: dict[str, float] = {}

    def conv_bn(parent, cname, bname, spec, prefix=""):
        _check_conv(getattr(parent, cname), prefix + cname, spec)
        bn = getattr(parent, bname)
        _check_bn(bn, prefix + bname)
        eps[spec.bn] = float(bn.eps)

    try:
        conv_bn(model, "conv1", "bn1", stem)
        _expect(type(model.relu) is torch.nn.ReLU, f"relu is a {_kind(model.relu)}, expected torch.nn.ReLU")
        mp = model.maxpool
        _expect(type(mp) is torch.nn.MaxPool2d and (mp.kernel_size, mp.stride, mp.padding, mp.dilation, mp.ceil_mode) in
                ((3, 2, 1, 1, False), ((3, 3), (2, 2), (1, 1), (1, 1), False)),
                f"maxpool is {mp}, expected MaxPool2d(kernel_size=3, stride=2, padding=1)")
        ap = model.avgpool
        _expect(type(ap) is torch.nn.AdaptiveAvgPool2d and ap.output_size in (1, (1, 1)),
                f"avgpool is {ap}, expected AdaptiveAvgPool2d((1, 1))")
        _expect(type(model.fc) is torch.nn.Linear and model.fc.bias is not None, f"fc is {model.fc}, expected a Linear with bias")
        block_type = "BasicBlock" if ARCHS[arch].block == "basic" else "Bottleneck"
        for spec in blocks:
            layer, idx = spec.name.split(".")
            block = getattr(model, layer)[int(idx)]
            bt = type(block)
            _expect(bt.__name__ == block_type and bt.__module__.startswith("torchvision.models"),
                    f"{spec.name} is a {_kind(block)}, expected torchvision's {block_type}")
            names = ["conv1", "bn1", "conv2", "bn2", "relu"] + (["conv3", "bn3"] if block_type == "Bottleneck" else [])
            names += ["downsample"] if spec.downsample else []
            got = {n for n, m in block.named_children()}
            _expect(got == set(names), f"{spec.name} has submodules {sorted(got)}, expected {sorted(names)}")
            _expect(type(block.relu) is torch.nn.ReLU, f"{spec.name}.relu is a {_kind(block.relu)}, expected torch.nn.ReLU")
            for i, cs in enumerate(spec.convs, start=1):
                conv_bn(block, f"conv{i}", f"bn{i}", cs, spec.name + ".")
            if spec.downsample:
                ds = block.downsample
                _expect(type(ds) is torch.nn.Sequential and len(ds) == 2,
                        f"{spec.name}.downsample is {ds}, expected Sequential(conv1x1, BatchNorm2d)")
                conv_bn(ds, "0", "1", spec.downsample, spec.name + ".downsample.")
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(str(exc).replace("{arch}", arch)) from None
    return arch, num_classes, eps


def from_torchvision(
    model: torch.nn.Module,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str | None = None,
    cuda_graph: bool = True,
    tune=False,
) -> ResNet:
    """A fastres engine computing `model(x)` with Triton kernels.

    model: a torchvision ResNet (resnet18/34/50/101/152, wide_resnet50_2/101_2, any
    num_classes) in eval mode. dtype: the engine's activation/weight dtype (float16,
    bfloat16 or float32). device: defaults to the model's. cuda_graph: on CUDA, capture one
    graph per input shape. tune: measure every conv's configs on the first forward at each
    batch bucket, remembered on disk (True on CUDA, or a fastres.tuning.Tuner); the default
    picks configs by a heuristic. Unsupported models raise UnsupportedModelError (a ValueError).
    """
    if dtype not in ENGINE_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    arch, num_classes, eps = check_module(model)
    if device is None:
        device = next(model.parameters()).device
    params = fold_params(model.state_dict(), arch, num_classes, dtype, eps)
    return ResNet(arch, params, num_classes=num_classes, dtype=dtype, device=device, cuda_graph=cuda_graph,
                  tune=tune)
