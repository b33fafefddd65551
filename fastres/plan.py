"""What a torchvision ResNet is, as data: architectures, conv specs, state_dict validation and
BatchNorm folding. Everything here is plain torch on the CPU; the launch schedule built from it is in
schedule.py, the runtime in arena.py and engine.py."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from . import kernels as K


class UnsupportedModelError(ValueError):
    """The model or state_dict is not one fastres can run exactly (never run approximately)."""


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]
    width: int = 64  # torchvision's width_per_group; 128 for the wide variants

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4

    @property
    def features(self) -> int:
        return 512 * self.expansion


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("basic", (2, 2, 2, 2)),
    "resnet34": ArchSpec("basic", (3, 4, 6, 3)),
    "resnet50": ArchSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ArchSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ArchSpec("bottleneck", (3, 8, 36, 3)),
    "wide_resnet50_2": ArchSpec("bottleneck", (3, 4, 6, 3), 128),
    "wide_resnet101_2": ArchSpec("bottleneck", (3, 4, 23, 3), 128),
}


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution of the plan, with its BatchNorm and fused epilogue.

    residual: None, "identity" (the block's input) or "downsample" (the projection's output).
    """

    name: str  # state_dict prefix of the conv, e.g. "layer1.0.conv2"
    bn: str  # state_dict prefix of its BatchNorm
    k: int
    stride: int
    pad: int
    cin: int
    cout: int
    relu: bool
    residual: str | None = None

    @property
    def kernel(self) -> str:
        return "conv1x1" if self.k == 1 else "conv"


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str  # e.g. "layer3.1"
    convs: tuple[ConvSpec, ...]  # main branch, in order; the last one carries the residual
    downsample: ConvSpec | None


def arch_blocks(arch: str) -> tuple[ConvSpec, list[BlockSpec]]:
    """The stem conv and every residual block of `arch`, as torchvision builds them."""
    spec = ARCHS[arch]
    stem = ConvSpec("conv1", "bn1", 7, 2, 3, 3, 64, True)
    blocks: list[BlockSpec] = []
    inplanes = 64
    for li, (planes, count) in enumerate(zip((64, 128, 256, 512), spec.layers), start=1):
        for bi in range(count):
            stride = 2 if (li > 1 and bi == 0) else 1
            p = f"layer{li}.{bi}"
            out = planes * spec.expansion
            ds = None
            if stride != 1 or inplanes != out:
                ds = ConvSpec(f"{p}.downsample.0", f"{p}.downsample.1", 1, stride, 0, inplanes, out, False)
            res = "downsample" if ds else "identity"
            if spec.block == "basic":
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 3, stride, 1, inplanes, planes, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, 1, 1, planes, out, True, res),
                )
            else:
                width = planes * spec.width // 64
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 1, 1, 0, inplanes, width, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, stride, 1, width, width, True),
                    ConvSpec(f"{p}.conv3", f"{p}.bn3", 1, 1, 0, width, out, True, res),
                )
            blocks.append(BlockSpec(p, convs, ds))
            inplanes = out
    return stem, blocks


def arch_convs(arch: str) -> list[ConvSpec]:
    """Every conv of `arch` in execution order (downsample before the block's last conv)."""
    stem, blocks = arch_blocks(arch)
    convs = [stem]
    for b in blocks:
        convs.extend(b.convs[:-1])
        if b.downsample:
            convs.append(b.downsample)
        convs.append(b.convs[-1])
    return convs


def expected_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's state_dict for `arch`, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for c in arch_convs(arch):
        shapes[f"{c.name}.weight"] = (c.cout, c.cin, c.k, c.k)
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{c.bn}.{field}"] = (c.cout,)
        shapes[f"{c.bn}.num_batches_tracked"] = ()
    features = ARCHS[arch].features
    shapes["fc.weight"] = (num_classes, features)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def infer_arch(sd: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """(arch, num_classes) of a torchvision ResNet state_dict, from its keys and shapes."""
    fc = _shape(sd, "fc.weight")
    if _shape(sd, "conv1.weight") is None or fc is None or len(fc) != 2:
        raise UnsupportedModelError(
            "not a torchvision ResNet state_dict: expected keys 'conv1.weight' and 'fc.weight' "
            f"(got {len(sd)} keys, e.g. {sorted(sd)[:3]})"
        )
    counts = []
    for li in range(1, 5):
        n = 0
        while _shape(sd, f"layer{li}.{n}.conv1.weight") is not None:
            n += 1
        counts.append(n)
    block = "bottleneck" if _shape(sd, "layer1.0.conv3.weight") is not None else "basic"
    conv2 = _shape(sd, "layer1.0.conv2.weight")
    conv1 = _shape(sd, "layer1.0.conv1.weight")
    if block == "bottleneck" and conv2 is not None and conv1 is not None and conv2[1] != conv1[0]:
        raise UnsupportedModelError(
            f"grouped convolutions are not supported (layer1.0.conv2.weight has shape {conv2} for "
            f"{conv1[0]} channels: a ResNeXt with groups={conv1[0] // max(conv2[1], 1)})"
        )
    width = 64
    if block == "bottleneck" and conv1 is not None:
        width = conv1[0]
    for name, spec in ARCHS.items():
        if spec.block == block and spec.layers == tuple(counts) and spec.width == width:
            return name, fc[0]
    raise UnsupportedModelError(
        f"unsupported ResNet: {block} blocks per stage {tuple(counts)}, width {width}; supported: {', '.join(ARCHS)}"
    )


def validate_state_dict(sd: Mapping[str, torch.Tensor], arch: str, num_classes: int) -> None:
    """Every expected key present with its exact shape and a floating dtype; nothing unexpected."""
    expected = expected_shapes(arch, num_classes)
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UnsupportedModelError(f"state_dict for {arch} is missing key '{missing[0]}'{more}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise UnsupportedModelError(f"state_dict for {arch} has unexpected key '{unexpected[0]}'{more}")
    for key, shape in expected.items():
        if key not in sd:
            continue
        t = sd[key]
        if not isinstance(t, torch.Tensor):
            raise UnsupportedModelError(f"state_dict key '{key}' is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != shape:
            raise UnsupportedModelError(f"state_dict key '{key}' has shape {tuple(t.shape)}, expected {shape} for {arch}")
        if not key.endswith("num_batches_tracked") and not t.is_floating_point():
            raise UnsupportedModelError(f"state_dict key '{key}' has dtype {t.dtype}, expected a floating dtype")


def fold_params(
    sd: Mapping[str, torch.Tensor], arch: str, num_classes: int, dtype: torch.dtype, eps: float | Mapping[str, float] = 1e-5
) -> dict[str, torch.Tensor]:
    """BN folded into each conv (float64, then cast): the engine's parameters, on the CPU.

    Keys: "<conv>.weight" ([Cout, Cin, KH, KW] channels_last, `dtype`), "<conv>.bias" (float32),
    "fc.weight" ([classes, features], `dtype`), "fc.bias" (float32).
    """
    validate_state_dict(sd, arch, num_classes)
    out: dict[str, torch.Tensor] = {}
    for c in arch_convs(arch):
        e = eps[c.bn] if isinstance(eps, Mapping) else eps
        w, b = K.fold_bn(
            sd[f"{c.name}.weight"].detach().cpu(), sd[f"{c.bn}.weight"].detach().cpu(),
            sd[f"{c.bn}.bias"].detach().cpu(), sd[f"{c.bn}.running_mean"].detach().cpu(),
            sd[f"{c.bn}.running_var"].detach().cpu(), e, dtype=dtype,
        )
        out[f"{c.name}.weight"], out[f"{c.name}.bias"] = w, b
    out["fc.weight"] = sd["fc.weight"].detach().cpu().to(dtype).contiguous()
    out["fc.bias"] = sd["fc.bias"].detach().cpu().float().contiguous()
    return out


def param_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The shapes of fold_params' output (what a converted file must hold)."""
    shapes = {}
    for c in arch_convs(arch):
        shapes[f"{c.name}.weight"] = (c.cout, c.cin, c.k, c.k)
        shapes[f"{c.name}.bias"] = (c.cout,)
    shapes["fc.weight"] = (num_classes, ARCHS[arch].features)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def check_params(params: Mapping[str, torch.Tensor], arch: str, num_classes: int, dtype: torch.dtype) -> None:
    """Folded parameters exactly as the engine runs them (what fold_params makes and a converted
    file holds): every key, nothing else, each shape, weights in `dtype` and biases float32.

    Raises UnsupportedModelError for a missing, unexpected or misshaped tensor, TypeError for a
    wrong dtype.
    """
    expected = param_shapes(arch, num_classes)
    missing = [k for k in expected if k not in params]
    if missing:
        raise UnsupportedModelError(f"missing tensor '{missing[0]}' for {arch}")
    unexpected = sorted(set(params) - set(expected))
    if unexpected:
        raise UnsupportedModelError(f"unexpected tensor '{unexpected[0]}' for {arch}")
    for key, shape in expected.items():
        t = params[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensor '{key}' is a {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise UnsupportedModelError(f"tensor '{key}' has shape {tuple(t.shape)}, expected {shape} for {arch}")
        want = torch.float32 if key.endswith(".bias") else dtype
        if t.dtype != want:
            raise TypeError(f"tensor '{key}' has dtype {t.dtype}, expected {want}")
