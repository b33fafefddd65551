"""What a torchvision ResNet is, as data: architectures, conv specs, state_dict validation and
BatchNorm folding. Everything here is plain torch on the CPU; the launch schedule built from it is in
schedule.py, the runtime in arena.py and engine.py."""
from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import torch

from . import kernels as K


class UnsupportedModelError(ValueError):
    """The model or state_dict is not one fastres can run exactly (never run approximately)."""


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A ResNet's shape. The defaults are torchvision's; the other fields describe the
    variants timm and transformers build (every one of them a fold-and-run ResNet).

    stem: () the 7x7/2 conv; (c0, c1) timm's deep stem (3x3/2 to c0, 3x3 to c1, 3x3 to
    `inplanes`), each conv with BatchNorm and ReLU. inplanes: the stem's output channels.
    avg_down: a projection shortcut of stride 2 is a 2x2 average pool (ceil_mode,
    count_include_pad=False) then a stride-1 1x1 conv (timm's `d` variants).
    channels: per stage (3x3 width, output channels), where they do not follow torchvision's
    formula (transformers' hidden_sizes with reduction 4). first_stride: layer1's stride (2:
    transformers' downsample_in_first_stage). stride_in_1x1: a bottleneck strides its first
    1x1 conv, not its 3x3 (transformers' downsample_in_bottleneck). name: for messages only.
    """

    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]  # blocks per stage; fewer than four: a trunk's first stages
    width: int = 64  # torchvision's width_per_group; 128 for the wide variants, 4 or 8 for ResNeXt
    groups: int = 1  # the 3x3 conv's groups (ResNeXt's cardinality)
    stem: tuple[int, ...] = ()
    inplanes: int = 64
    avg_down: bool = False
    channels: tuple[tuple[int, int], ...] | None = None
    first_stride: int = 1
    stride_in_1x1: bool = False
    name: str = dataclasses.field(default="", compare=False)

    def conv_width(self, planes: int) -> int:
        """Channels of a bottleneck's 3x3 conv in a stage of `planes` (torchvision's formula)."""
        return int(planes * (self.width / 64.0)) * self.groups

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4

    def stage(self, li: int) -> tuple[int, int]:
        """(3x3 conv width, output channels) of stage `li` (1..4)."""
        if self.channels is not None:
            return tuple(self.channels[li - 1])
        planes = 64 << (li - 1)
        if self.block == "basic":
            return planes, planes
        return self.conv_width(planes), planes * self.expansion

    @property
    def features(self) -> int:
        return self.stage(4)[1]

    @property
    def label(self) -> str:
        return self.name or "resnet"

    def to_json(self) -> str:
        """The fields as JSON (a converted file records a spec torchvision has no name for)."""
        d = dataclasses.asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        d = json.loads(text)
        if not isinstance(d, dict) or set(d) - {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"not an ArchSpec: {text[:200]!r}")
        d["layers"] = tuple(d["layers"])
        d["stem"] = tuple(d.get("stem", ()))
        if d.get("channels") is not None:
            d["channels"] = tuple(tuple(c) for c in d["channels"])
        return check_spec(cls(**d))


def _tv(block, layers, width=64, groups=1, *, name):
    return ArchSpec(block, layers, width, groups, name=name)


ARCHS: dict[str, ArchSpec] = {
    "resnet18": _tv("basic", (2, 2, 2, 2), name="resnet18"),
    "resnet34": _tv("basic", (3, 4, 6, 3), name="resnet34"),
    "resnet50": _tv("bottleneck", (3, 4, 6, 3), name="resnet50"),
    "resnet101": _tv("bottleneck", (3, 4, 23, 3), name="resnet101"),
    "resnet152": _tv("bottleneck", (3, 8, 36, 3), name="resnet152"),
    "wide_resnet50_2": _tv("bottleneck", (3, 4, 6, 3), 128, name="wide_resnet50_2"),
    "wide_resnet101_2": _tv("bottleneck", (3, 4, 23, 3), 128, name="wide_resnet101_2"),
    "resnext50_32x4d": _tv("bottleneck", (3, 4, 6, 3), 4, 32, name="resnext50_32x4d"),
    "resnext101_32x8d": _tv("bottleneck", (3, 4, 23, 3), 8, 32, name="resnext101_32x8d"),
    "resnext101_64x4d": _tv("bottleneck", (3, 4, 23, 3), 4, 64, name="resnext101_64x4d"),
}


def _positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def check_spec(spec: ArchSpec) -> ArchSpec:
    """Refuse a spec fastres cannot run (UnsupportedModelError naming the field)."""
    bad = []
    if spec.block not in ("basic", "bottleneck"):
        bad.append(f"block={spec.block!r}")
    if not 1 <= len(spec.layers) <= 4 or not all(_positive(n) for n in spec.layers):
        bad.append(f"layers={spec.layers!r} (up to four stages of at least one block; fewer: a trunk)")
    if not (_positive(spec.width) and _positive(spec.groups) and _positive(spec.inplanes)):
        bad.append(f"width/groups/inplanes={spec.width}/{spec.groups}/{spec.inplanes}")
    if spec.stem and (len(spec.stem) != 2 or not all(_positive(c) for c in spec.stem)):
        bad.append(f"stem={spec.stem!r} (a deep stem has two inner widths)")
    if spec.channels is not None and (len(spec.channels) != len(spec.layers) or not all(
            len(c) == 2 and _positive(c[0]) and _positive(c[1]) for c in spec.channels)):
        bad.append(f"channels={spec.channels!r}")
    if spec.channels is not None and spec.groups != 1:
        bad.append("grouped 3x3 convs with explicit channels")
    if spec.first_stride not in (1, 2):
        bad.append(f"first_stride={spec.first_stride!r}")
    if bad:
        raise UnsupportedModelError(f"unsupported ResNet shape: {', '.join(bad)}")
    return spec


def arch_spec(arch: "str | ArchSpec") -> ArchSpec:
    """The spec of a torchvision arch name, or `arch` itself (checked) when it is a spec."""
    if isinstance(arch, ArchSpec):
        return check_spec(arch)
    if arch not in ARCHS:
        raise UnsupportedModelError(f"unknown arch {arch!r}; supported: {', '.join(ARCHS)}, or an ArchSpec")
    return ARCHS[arch]


def arch_label(arch: "str | ArchSpec") -> str:
    return arch if isinstance(arch, str) else arch.label


def named(spec: ArchSpec) -> "str | ArchSpec":
    """The torchvision name of a spec equal to one of ARCHS (the name wins), else the spec."""
    return next((n for n, s in ARCHS.items() if s == spec), spec)


LAYERS = ("layer1", "layer2", "layer3", "layer4")
# What a trunk may return: the stem's activation (before the max pool; timm's "act1"), the
# max pool's output (transformers' "stem"), and the stages.
RETURNABLE = ("stem", "maxpool", *LAYERS)
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
        if len(pair) != 2 or pair[0] not in RETURNABLE or not isinstance(pair[1], str):
            raise UnsupportedModelError(
                f"a trunk returns the stem, the maxpool or layer1..layer4 under string names; {pair!r} is not supported")
    layers = [p[0] for p in pairs]
    names = [p[1] for p in pairs]
    if len(set(layers)) != len(layers) or len(set(names)) != len(names):
        raise UnsupportedModelError(f"a trunk returns each layer once under distinct names, got {pairs}")
    return tuple(sorted(pairs, key=lambda p: RETURNABLE.index(p[0])))


def returns_depth(returns: Returns | None) -> int:
    """How many stages run: up to the last returned layer (4 for the classifier; 0 when only
    the stem's outputs are returned)."""
    return 4 if returns is None else max(RETURNABLE.index(layer) for layer, _ in returns) - 1


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
    avg_pool: bool = False  # a 2x2/2 average pool (ceil_mode, count_include_pad=False) before this 1x1 conv

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


def stem_convs(spec: ArchSpec) -> tuple[ConvSpec, ...]:
    """The stem's convs (each with BatchNorm and ReLU), before the max pool."""
    if not spec.stem:
        return (ConvSpec("conv1", "bn1", 7, 2, 3, 3, spec.inplanes, True),)
    c0, c1 = spec.stem
    # timm's deep stem: Sequential(conv, bn, act, conv, bn, act, conv), then bn1.
    return (ConvSpec("conv1.0", "conv1.1", 3, 2, 1, 3, c0, True),
            ConvSpec("conv1.3", "conv1.4", 3, 1, 1, c0, c1, True),
            ConvSpec("conv1.6", "bn1", 3, 1, 1, c1, spec.inplanes, True))


def arch_blocks(arch: "str | ArchSpec", dilate=NO_DILATION, depth: int = 4) -> tuple[tuple[ConvSpec, ...], list[BlockSpec]]:
    """The stem convs and every residual block of `arch` in its first `depth` stages, as
    torchvision builds them with `replace_stride_with_dilation=dilate`: a dilated stage keeps
    its input's resolution, its 3x3 convs dilated (padding = dilation) by the product of the
    strides replaced so far; a stage's first block still uses the previous dilation."""
    spec = arch_spec(arch)
    dilate = check_dilate(dilate)
    if depth > len(spec.layers):
        raise UnsupportedModelError(f"{arch_label(arch)} has {len(spec.layers)} stages, {depth} are needed")
    if spec.block == "basic" and any(dilate):
        raise UnsupportedModelError(f"{arch_label(arch)} has BasicBlocks, which torchvision does not dilate "
                                    "(replace_stride_with_dilation)")
    if any(dilate) and (spec.avg_down or spec.stride_in_1x1 or spec.first_stride != 1):
        raise UnsupportedModelError(f"{arch_label(arch)}: dilation with an average-pool shortcut, a strided 1x1 or a "
                                    "strided first stage is not supported")
    stem = stem_convs(spec)
    blocks: list[BlockSpec] = []
    inplanes, dilation = spec.inplanes, 1
    for li, count in enumerate(spec.layers[:depth], start=1):
        width, out = spec.stage(li)
        previous = dilation
        stride = 2 if li > 1 else spec.first_stride
        if li > 1 and dilate[li - 2]:
            dilation, stride = dilation * stride, 1
        for bi in range(count):
            s, d = (stride, previous) if bi == 0 else (1, dilation)
            p = f"layer{li}.{bi}"
            ds = None
            if s != 1 or inplanes != out:
                if spec.avg_down:  # Sequential(pool or Identity, conv, bn)
                    ds = ConvSpec(f"{p}.downsample.1", f"{p}.downsample.2", 1, s, 0, inplanes, out, False,
                                  avg_pool=s > 1)
                else:
                    ds = ConvSpec(f"{p}.downsample.0", f"{p}.downsample.1", 1, s, 0, inplanes, out, False)
            res = "downsample" if ds else "identity"
            if spec.block == "basic":
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 3, s, 1, inplanes, out, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, 1, 1, out, out, True, res),
                )
            else:
                s1, s3 = (s, 1) if spec.stride_in_1x1 else (1, s)
                convs = (
                    ConvSpec(f"{p}.conv1", f"{p}.bn1", 1, s1, 0, inplanes, width, True),
                    ConvSpec(f"{p}.conv2", f"{p}.bn2", 3, s3, d, width, width, True, dilation=d, groups=spec.groups),
                    ConvSpec(f"{p}.conv3", f"{p}.bn3", 1, 1, 0, width, out, True, res),
                )
            blocks.append(BlockSpec(p, convs, ds))
            inplanes = out
    return stem, blocks


def arch_convs(arch: str, dilate=NO_DILATION, depth: int = 4) -> list[ConvSpec]:
    """Every conv of `arch` (its first `depth` stages) in execution order (downsample before
    the block's last conv)."""
    stem, blocks = arch_blocks(arch, dilate, depth)
    convs = list(stem)
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
        shapes["fc.weight"] = (num_classes, arch_spec(arch).features)
        shapes["fc.bias"] = (num_classes,)
    return shapes


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _stem_of(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], int] | None:
    """(deep stem widths or (), stem output channels) from the stem conv's keys."""
    c7 = _shape(sd, "conv1.weight")
    if c7 is not None:
        if len(c7) != 4 or c7[1:] != (3, 7, 7):
            raise UnsupportedModelError(f"the stem conv 'conv1.weight' has shape {c7}: fastres runs a 7x7 conv on "
                                        "3 channels or timm's deep stem")
        return (), c7[0]
    deep = [_shape(sd, f"conv1.{i}.weight") for i in (0, 3, 6)]
    if all(d is not None for d in deep):
        c0, c1, c2 = deep
        if any(len(d) != 4 or d[2:] != (3, 3) for d in deep) or c0[1] != 3 or c1[1] != c0[0] or c2[1] != c1[0]:
            raise UnsupportedModelError(f"the deep stem's convs have shapes {deep}: expected three chained 3x3 convs on 3 "
                                        "channels")
        return (c0[0], c1[0]), c2[0]
    return None


def infer_arch(sd: Mapping[str, torch.Tensor], *, trunk: bool = False) -> tuple["str | ArchSpec", int | None]:
    """(arch, num_classes) of a ResNet state_dict in torchvision's names (timm's too), from its
    keys and shapes: a torchvision arch name where the shapes are one's, else an ArchSpec (timm's
    deep stem and average-pool shortcut, other depths and widths). Layer strides cannot be read
    off weights: a spec found here strides as torchvision does.

    trunk: the state_dict of a trunk without fc (num_classes None), possibly holding only its
    first stages (an IntermediateLayerGetter stops at the last layer it returns); the arch is
    then the one whose stages present match.
    """
    fc = _shape(sd, "fc.weight")
    stem = _stem_of(sd)
    if stem is None or (not trunk and (fc is None or len(fc) != 2)):
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
    channels = []
    groups = 1
    for li in range(1, depth + 1):
        c1, c2 = _shape(sd, f"layer{li}.0.conv1.weight"), _shape(sd, f"layer{li}.0.conv2.weight")
        last = _shape(sd, f"layer{li}.0.conv3.weight") if block == "bottleneck" else c2
        if c1 is None or c2 is None or last is None or len(c2) != 4 or c2[1] < 1:
            raise UnsupportedModelError(f"not a ResNet state_dict: layer{li}.0's convs are missing or misshaped")
        channels.append((c1[0], last[0]))
        if li == 1 and block == "bottleneck":
            # layer1's 3x3 conv has width_per_group * groups channels, conv2[1] = width_per_group of them per group.
            groups = c1[0] // c2[1]
    width = channels[0][0] // groups if block == "bottleneck" else 64
    avg_down = any(len(_shape(sd, f"layer{li}.0.downsample.1.weight") or ()) == 4 for li in range(1, depth + 1))
    for name, spec in ARCHS.items():
        if (spec.block == block and spec.layers[:depth] == tuple(counts[:depth]) and spec.width == width
                and spec.groups == groups and stem == ((), 64) and not avg_down):
            return name, (None if trunk else fc[0])
    spec = ArchSpec(block, tuple(counts[:depth]), width, groups, stem=stem[0], inplanes=stem[1], avg_down=avg_down,
                    name="resnet")
    if tuple(spec.stage(li) for li in range(1, depth + 1)) != tuple(channels):
        if groups != 1:
            raise UnsupportedModelError(f"unsupported ResNeXt: stage widths {channels} do not follow width per group "
                                        f"{width} and groups {groups}")
        spec = dataclasses.replace(spec, width=64, channels=tuple(channels))
    return check_spec(spec), (None if trunk else fc[0])


def validate_state_dict(sd: Mapping[str, torch.Tensor], arch: str, num_classes: int | None, depth: int = 4) -> None:
    """Every expected key present with its exact shape and a floating dtype; nothing unexpected.
    num_batches_tracked is optional (torchvision's FrozenBatchNorm2d has none)."""
    expected = expected_shapes(arch, num_classes, depth)
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UnsupportedModelError(f"state_dict for {arch_label(arch)} is missing key '{missing[0]}'{more}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise UnsupportedModelError(f"state_dict for {arch_label(arch)} has unexpected key '{unexpected[0]}'{more}")
    for key, shape in expected.items():
        if key not in sd:
            continue
        t = sd[key]
        if not isinstance(t, torch.Tensor):
            raise UnsupportedModelError(f"state_dict key '{key}' is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != shape:
            raise UnsupportedModelError(f"state_dict key '{key}' has shape {tuple(t.shape)}, expected {shape} for {arch_label(arch)}")
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


def param_shapes(arch: str, num_classes: int | None, depth: int = 4, quantized=None) -> dict[str, tuple[int, ...]]:
    """The shapes of fold_params' output (what a converted file must hold); a quantized engine's
    8-bit convs (`quantized`: a fastres.precision.Quantized) also have their weights' per-output-
    channel scales, "<conv>.weight_scale" [Cout] float32, and its 8-bit classifier ("fc" in
    quantized.layers) its per-class scales, "fc.weight_scale" [classes] float32."""
    shapes = {}
    for c in arch_convs(arch, depth=depth):
        shapes[f"{c.name}.weight"] = c.weight_shape
        shapes[f"{c.name}.bias"] = (c.cout,)
        if quantized is not None and c.name in quantized.layers:
            shapes[f"{c.name}.weight_scale"] = (c.cout,)
    if num_classes is not None:
        shapes["fc.weight"] = (num_classes, arch_spec(arch).features)
        shapes["fc.bias"] = (num_classes,)
        if quantized is not None and "fc" in quantized.layers:
            shapes["fc.weight_scale"] = (num_classes,)
    return shapes


def check_params(params: Mapping[str, torch.Tensor], arch: str, num_classes: int | None, dtype: torch.dtype,
                 depth: int = 4, quantized=None) -> None:
    """Folded parameters exactly as the engine runs them (what fold_params makes and a converted
    file holds): every key, nothing else, each shape, weights in `dtype` and biases float32.

    Raises UnsupportedModelError for a missing, unexpected or misshaped tensor, TypeError for a
    wrong dtype.
    """
    expected = param_shapes(arch, num_classes, depth, quantized)
    eight_bit = set() if quantized is None else {f"{name}.weight" for name in quantized.layers}
    missing = [k for k in expected if k not in params]
    if missing:
        raise UnsupportedModelError(f"missing tensor '{missing[0]}' for {arch_label(arch)}")
    unexpected = sorted(set(params) - set(expected))
    if unexpected:
        raise UnsupportedModelError(f"unexpected tensor '{unexpected[0]}' for {arch_label(arch)}")
    for key, shape in expected.items():
        t = params[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensor '{key}' is a {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise UnsupportedModelError(f"tensor '{key}' has shape {tuple(t.shape)}, expected {shape} for {arch_label(arch)}")
        want = (torch.float32 if key.endswith((".bias", ".weight_scale")) else
                quantized.dtype if key in eight_bit else dtype)
        if t.dtype != want:
            raise TypeError(f"tensor '{key}' has dtype {t.dtype}, expected {want}")
