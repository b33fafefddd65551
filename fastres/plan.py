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
    width: int = 64  # torchvision's width_per_group; 128 for the wide variants, 4 or 8 for ResNeXt
    groups: int = 1  # the 3x3 conv's groups (ResNeXt's cardinality)

    def conv_width(self, planes: int) -> int:
        """Channels of a bottleneck's 3x3 conv in a stage of `planes` (torchvision's formula)."""
        return int(planes * (self.width / 64.0)) * self.groups

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
    "resnext50_32x4d": ArchSpec("bottleneck", (3, 4, 6, 3), 4, 32),
    "resnext101_32x8d": ArchSpec("bottleneck", (3, 4, 23, 3), 8, 32),
    "resnext101_64x4d": ArchSpec("bottleneck", (3, 4, 23, 3), 4, 64),
}

LAYERS = ("layer1", "layer2", "layer3", "layer4")
# torchvision's replace_stride_with_dilation: for layer2, layer3, layer4.
NO_DILATION = (False, False, False)
Returns = tuple[tuple[str, str], ...]


def check_dilate(dilate) -> tuple[bool, bool, bool]:
    """replace_stride_with_dilation as a tuple of three bools (layer2, layer3, layer4)."""
    if dilate is None:
        return NO_DILATION
    try:
        values = tuple(dilate)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(isinstance(v, (bool, int)) and v in (0, 1) for v in values):
        raise ValueError(f"dilate (replace_stride_with_dilation) must be 3 bools for layer2..layer4, got {dilate!r}")
    return tuple(bool(v) for v in values)


def check_returns(returns) -> Returns | None:
    """A trunk's outputs as ((layer, name), ...) in execution order, from a mapping layer -> name
    (as IntermediateLayerGetter's return_layers) or pairs; None: the classifier's logits."""
    if returns is None:
        return None
    pairs = list(returns.items()) if isinstance(returns, Mapping) else [tuple(p) for p in returns]
    if not pairs:
        raise UnsupportedModelError("a trunk must return at least one of layer1..layer4")
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in LAYERS or not isinstance(pair[1], str):
            raise UnsupportedModelError(
                f"a trunk returns layer1..layer4 under string names; {pair!r} is not supported")
    layers = [p[0] for p in pairs]
    names = [p[1] for p in pairs]
    if len(set(layers)) != len(layers) or len(set(names)) != len(names):
        raise UnsupportedModelError(f"a trunk returns each layer once under distinct names, got {pairs}")
    return tuple(sorted(pairs, key=lambda p: LAYERS.index(p[0])))


def returns_depth(returns: Returns | None) -> int:
    """How many stages run: up to the last returned layer (4 for the classifier)."""
    return 4 if returns is None else max(LAYERS.index(layer) for layer, _ in returns) + 1


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
    dilation: int = 1
    groups: int = 1

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin // self.groups, self.k, self.k)

    @property
    def kernel(self) -> str:
        return "conv1x1" if self.k == 1 else "conv"


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str  # e.g. "layer3.1"
    convs: tuple[ConvSpec, ...]  # main branch, in order; the last one carries the residual
    downsample: ConvSpec | None


def arch_blocks(arch: str, dilate=NO_DILATION, depth: int = 4) -> tuple[ConvSpec, list[BlockSpec]]:
    """The stem conv and every residual block of `arch` in its first `depth` stages, as
    torchvision builds them with `replace_stride_with_dilation=dilate`: a dilated stage keeps
    its input's resolution, its 3x3 convs dilated (padding = dilation) by the product of the
    strides replaced so far; a stage's first block still uses the previous dilation."""
    spec = ARCHS[arch]
    dilate = check_dilate(dilate)
    if spec.block == "basic" and any(dilate):
        raise UnsupportedModelError(f"{arch} has BasicBlocks, which torchvision does not dilate (replace_stride_with_dilation)")
    stem = ConvSpec("conv1", "bn1", 7, 2, 3, 3, 64, True)
    blocks: list[BlockSpec] = []
    inplanes, dilation = 64, 1
    for li, (planes, count) in enumerate(zip((64, 128, 256, 512), spec.layers[:depth]), start=1):
        previous = dilation
        stride = 2 if li > 1 else 1
        if li > 1 and dilate[li - 2]:
            dilation, stride = dilation * stride, 1
        for bi in range(count):
            s, d = (stride, previous) if bi == 0 else (1, dilation)
            p = f"layer{li}.{bi}"
            out = planes * spec.expansion
            ds = None
            if s != 1 or inplanes != out:
                ds = ConvSpec(f"{p}.downsample.0", f"{p}.downsample.1", 1, s, 0, inplanes, out, False)
            res = "downsample" if ds else "identity"
            if spec.block == "basic":
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 3, s, 1, inplanes, planes, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, 1, 1, planes, out, True, res),
                )
            else:
                width = spec.conv_width(planes)
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 1, 1, 0, inplanes, width, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, s, d, width, width, True, dilation=d, groups=spec.groups),
                    ConvSpec(f"{p}.conv3", f"{p}.bn3", 1, 1, 0, width, out, True, res),
                )
            blocks.append(BlockSpec(p, convs, ds))
            inplanes = out
    return stem, blocks


def arch_convs(arch: str, dilate=NO_DILATION, depth: int = 4) -> list[ConvSpec]:
    """Every conv of `arch` (its first `depth` stages) in execution order (downsample before
    the block's last conv)."""
    stem, blocks = arch_blocks(arch, dilate, depth)
    convs = [stem]
    for b in blocks:
        convs.extend(b.convs[:-1])
        if b.downsample:
            convs.append(b.downsample)
        convs.append(b.convs[-1])
    return convs


def expected_shapes(arch: str, num_classes: int | None, depth: int = 4) -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's state_dict for `arch` (its first `depth` stages; no fc when
    num_classes is None: a trunk), with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for c in arch_convs(arch, depth=depth):
        shapes[f"{c.name}.weight"] = c.weight_shape
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{c.bn}.{field}"] = (c.cout,)
        shapes[f"{c.bn}.num_batches_tracked"] = ()
    if num_classes is not None:
        shapes["fc.weight"] = (num_classes, ARCHS[arch].features)
        shapes["fc.bias"] = (num_classes,)
    return shapes


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def infer_arch(sd: Mapping[str, torch.Tensor], *, trunk: bool = False) -> tuple[str, int | None]:
    """(arch, num_classes) of a torchvision ResNet state_dict, from its keys and shapes.

    trunk: the state_dict of a trunk without fc (num_classes None), possibly holding only its
    first stages (an IntermediateLayerGetter stops at the last layer it returns); the arch is
    then the one whose stages present match.
    """
    fc = _shape(sd, "fc.weight")
    if _shape(sd, "conv1.weight") is None or (not trunk and (fc is None or len(fc) != 2)):
        want = "'conv1.weight'" if trunk else "'conv1.weight' and 'fc.weight'"
        raise UnsupportedModelError(
            f"not a torchvision ResNet state_dict: expected keys {want} "
            f"(got {len(sd)} keys, e.g. {sorted(sd)[:3]})"
        )
    if trunk and fc is not None:
        raise UnsupportedModelError("a trunk has no fc, but the state_dict has 'fc.weight'")
    counts = []
    for li in range(1, 5):
        n = 0
        while _shape(sd, f"layer{li}.{n}.conv1.weight") is not None:
            n += 1
        counts.append(n)
    depth = next((i for i, n in enumerate(counts) if n == 0), 4)
    if depth == 0 or any(counts[depth:]) or (not trunk and depth < 4):
        raise UnsupportedModelError(f"not a torchvision ResNet state_dict: blocks per stage {tuple(counts)}")
    block = "bottleneck" if _shape(sd, "layer1.0.conv3.weight") is not None else "basic"
    conv2 = _shape(sd, "layer1.0.conv2.weight")
    conv1 = _shape(sd, "layer1.0.conv1.weight")
    width, groups = 64, 1
    if block == "bottleneck" and conv1 is not None and conv2 is not None and len(conv2) == 4 and conv2[1] > 0:
        # layer1's 3x3 conv has width_per_group * groups channels, conv2[1] = width_per_group of them per group.
        groups = conv1[0] // conv2[1]
        width = conv1[0] // groups
    for name, spec in ARCHS.items():
        if (spec.block == block and spec.layers[:depth] == tuple(counts[:depth]) and spec.width == width
                and spec.groups == groups):
            return name, (None if trunk else fc[0])
    raise UnsupportedModelError(
        f"unsupported ResNet: {block} blocks per stage {tuple(counts[:depth])}, width per group {width}, "
        f"groups {groups}; supported: {', '.join(ARCHS)}"
    )


def validate_state_dict(sd: Mapping[str, torch.Tensor], arch: str, num_classes: int | None, depth: int = 4) -> None:
    """Every expected key present with its exact shape and a floating dtype; nothing unexpected.
    num_batches_tracked is optional (torchvision's FrozenBatchNorm2d has none)."""
    expected = expected_shapes(arch, num_classes, depth)
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
    sd: Mapping[str, torch.Tensor], arch: str, num_classes: int | None, dtype: torch.dtype,
    eps: float | Mapping[str, float] = 1e-5, depth: int = 4,
) -> dict[str, torch.Tensor]:
    """BN folded into each conv (float64, then cast): the engine's parameters, on the CPU.

    Keys: "<conv>.weight" ([Cout, Cin/groups, KH, KW] channels_last, `dtype`), "<conv>.bias"
    (float32), and unless num_classes is None (a trunk), "fc.weight" ([classes, features],
    `dtype`), "fc.bias" (float32). depth: the stages the trunk has.
    """
    validate_state_dict(sd, arch, num_classes, depth)
    out: dict[str, torch.Tensor] = {}
    for c in arch_convs(arch, depth=depth):
        e = eps[c.bn] if isinstance(eps, Mapping) else eps
        w, b = K.fold_bn(
            sd[f"{c.name}.weight"].detach().cpu(), sd[f"{c.bn}.weight"].detach().cpu(),
            sd[f"{c.bn}.bias"].detach().cpu(), sd[f"{c.bn}.running_mean"].detach().cpu(),
            sd[f"{c.bn}.running_var"].detach().cpu(), e, dtype=dtype,
        )
        out[f"{c.name}.weight"], out[f"{c.name}.bias"] = w, b
    if num_classes is not None:
        out["fc.weight"] = sd["fc.weight"].detach().cpu().to(dtype).contiguous()
        out["fc.bias"] = sd["fc.bias"].detach().cpu().float().contiguous()
    return out


def param_shapes(arch: str, num_classes: int | None, depth: int = 4) -> dict[str, tuple[int, ...]]:
    """The shapes of fold_params' output (what a converted file must hold)."""
    shapes = {}
    for c in arch_convs(arch, depth=depth):
        shapes[f"{c.name}.weight"] = c.weight_shape
        shapes[f"{c.name}.bias"] = (c.cout,)
    if num_classes is not None:
        shapes["fc.weight"] = (num_classes, ARCHS[arch].features)
        shapes["fc.bias"] = (num_classes,)
    return shapes


def check_params(params: Mapping[str, torch.Tensor], arch: str, num_classes: int | None, dtype: torch.dtype,
                 depth: int = 4) -> None:
    """Folded parameters exactly as the engine runs them (what fold_params makes and a converted
    file holds): every key, nothing else, each shape, weights in `dtype` and biases float32.

    Raises UnsupportedModelError for a missing, unexpected or misshaped tensor, TypeError for a
    wrong dtype.
    """
    expected = param_shapes(arch, num_classes, depth)
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
