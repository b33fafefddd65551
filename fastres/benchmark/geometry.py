"""The shapes a ResNet benchmark runs: every distinct convolution of a torchvision ResNet
(geometry, fused ReLU, fused residual, where it is used), a representative few of them, the
model's floating-point work per image and the classifier head's geometry."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One distinct convolution of a ResNet (geometry + fused epilogue) and where it is used."""

    model: str
    k: int
    stride: int
    pad: int
    cin: int
    cout: int
    h: int
    w: int
    relu: bool
    residual: bool
    uses: tuple[str, ...] = ()

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def key(self) -> tuple:
        return (self.k, self.stride, self.pad, self.cin, self.cout, self.h, self.w, self.relu, self.residual)

    @property
    def name(self) -> str:
        """e.g. '3x3/1 64->64 @56x56 +res relu'."""
        s = f"{self.k}x{self.k}/{self.stride} {self.cin}->{self.cout} @{self.h}x{self.w}"
        return s + (" +res" if self.residual else "") + (" relu" if self.relu else "")

    def flops(self, batch: int) -> int:
        return 2 * batch * self.oh * self.ow * self.cout * self.cin * self.k * self.k

    def bytes(self, batch: int, itemsize: int, in_itemsize: int | None = None) -> int:
        """Fewest bytes moved: input, weights, bias (fp32), output and residual once each;
        `in_itemsize`: the input's, where it differs (an 8-bit stem reads the float image)."""
        act_in = batch * self.cin * self.h * self.w
        act_out = batch * self.cout * self.oh * self.ow
        weights = self.cout * self.cin * self.k * self.k
        return (itemsize * (weights + act_out * (2 if self.residual else 1)) + (in_itemsize or itemsize) * act_in
                + 4 * self.cout)


def _block_roles(model: torch.nn.Module) -> dict[str, tuple[bool, bool]]:
    """(relu, residual) of every conv, from torchvision's block structure: the last conv of a
    BasicBlock / Bottleneck carries the residual add and ReLU, the downsample conv neither."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    roles: dict[str, tuple[bool, bool]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (BasicBlock, Bottleneck)):
            last = "conv2" if isinstance(mod, BasicBlock) else "conv3"
            for child, sub in mod.named_modules():
                if isinstance(sub, torch.nn.Conv2d):
                    full = f"{name}.{child}"
                    if child.startswith("downsample"):
                        roles[full] = (False, False)
                    else:
                        roles[full] = (True, child == last)
    return roles


def conv_layers(model_name: str, size: int = 224) -> list[ConvLayer]:
    """Every distinct convolution of torchvision's `model_name` at `size`x`size` input, in the
    order of first use, found by walking the modules and running a forward on the meta device."""
    import torchvision

    if not hasattr(torchvision.models, model_name):
        raise ValueError(f"unknown torchvision model {model_name!r}")
    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)()
    model.eval()
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(name, tuple(inp[0].shape[2:]))
            ))
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    roles = _block_roles(model)
    distinct: dict[tuple, ConvLayer] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        if mod.groups != 1 or mod.dilation != (1, 1) or mod.kernel_size[0] != mod.kernel_size[1]:
            raise ValueError(f"{model_name}.{name}: only square, ungrouped, undilated convs are benchmarked")
        relu, residual = roles.get(name, (True, False))  # the stem: conv + BN + ReLU
        h, w = seen[name]
        layer = ConvLayer(
            model_name, mod.kernel_size[0], mod.stride[0], mod.padding[0], mod.in_channels, mod.out_channels,
            h, w, relu, residual,
        )
        old = distinct.get(layer.key)
        distinct[layer.key] = dataclasses.replace(old or layer, uses=(old.uses if old else ()) + (name,))
    return list(distinct.values())


def pick_representative(layers: Sequence[ConvLayer], n: int) -> list[ConvLayer]:
    """At most `n` layers covering the most kinds first (kernel size, stride, residual), then
    in order: the smoke run's choice."""
    picked: list[ConvLayer] = []
    kinds = set()
    for layer in layers:
        kind = (layer.k, layer.stride, layer.residual)
        if kind not in kinds and len(picked) < n:
            kinds.add(kind)
            picked.append(layer)
    for layer in layers:
        if len(picked) >= n:
            break
        if layer not in picked:
            picked.append(layer)
    order = {layer.key: i for i, layer in enumerate(layers)}
    return sorted(picked, key=lambda l: order[l.key])


def model_gflop(model_name: str, size: int = 224) -> float:
    """Floating-point work of one image (2 x multiply-adds of the convs and the fc layer), from
    the GEMM of every launch fastres plans (grouped convs counted per group)."""
    from ..device import DeviceInfo
    from ..schedule import build_schedule

    schedule = build_schedule(model_name, (1, 3, size, size), torch.float16, DeviceInfo("plan", sms=1))
    return sum(2 * m * n * k * taps for m, n, k, taps in (s.gemm for s in schedule.steps if s.gemm)) / 1e9


def head_geometry(model_name: str, size: int = 224) -> tuple[int, int, int, int]:
    """(channels, H, W, classes) at the classifier head of torchvision's `model_name`."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)()
    seen = {}

    def record(module, inp, out) -> None:  # a hook that returns something replaces the output
        seen["x"] = tuple(inp[0].shape)

    hook = model.avgpool.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, size, size, device="meta"))
    hook.remove()
    _, c, h, w = seen["x"]
    return c, h, w, model.fc.out_features
