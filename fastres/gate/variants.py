"""Which specializations ("variants") each kernel is launched with, as the gate compiles them.

At run time triton's JIT compiles one binary per specialization of a kernel's arguments, and
which integers are 1 or multiples of 16 changes the code (a channel stride of 1 makes the
channel axis contiguous, a channel count divisible by 16 lets masked loads be vectorized),
hence the register count and whether a tile spills. So the gate does not guess: each variant
is a real ResNet-50 layer (batch 32, 224x224 input; channels_last activations, the stem also
reading a contiguous NCHW input; buffers from torch's allocator, hence 16-byte aligned
pointers) whose launch arguments ``fastres.gate.compile.specialize`` turns into the JIT's
specialization, so the gate compiles exactly the binary the engine would run for that layer.
Layers of other sizes differ only in sizes that the code never vectorizes along (M, H, W) as
long as channel counts stay multiples of 16, as in every torchvision ResNet past the stem.

Which of these rows the gate compiles for each config and target, and which must use the tensor
cores, is chosen in ``fastres.gate.selection``.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch


if TYPE_CHECKING:
    from ..kernels.config import Config

DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                                  "int8": torch.int8, "float8_e4m3fn": torch.float8_e4m3fn}
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32",
                  "i8": "int8", "fp8": "float8_e4m3fn", "e4m3": "float8_e4m3fn"}
TRITON_TYPE = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "int8": "i8", "float8_e4m3fn": "fp8e4nv"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One launch specialization of a kernel (everything but the config and the dtype).

    ``meta``: the kernel's constexpr arguments other than the config's; ``values``: the
    integer arguments of a representative launch; ``pointers``: pointer argument -> element
    type ("x" = the engine's dtype, else a triton type such as "fp32").
    """

    name: str
    meta: tuple[tuple[str, Any], ...]
    values: tuple[tuple[str, int], ...]
    pointers: tuple[tuple[str, str], ...]
    gemm_k: int | None = None  # the K the launcher hands select_config (GEMM-type kernels)
    # (K, taps, SPLIT_K asked for) of a conv's K loop: its ITERS argument depends on the
    # config's BLOCK_K, so `specialize` computes it per config, as the launcher does.
    k_loop: tuple[int, int, int] | None = None
    # (module under fastres.kernels, name) of the @triton.jit object this launch runs, where it
    # is not the kernel's own (the classifier's: the same code, specialized differently)
    jit: tuple[str, str] | None = None

    @classmethod
    def make(cls, name: str, meta: dict, values: dict, pointers: dict, gemm_k: int | None = None,
             k_loop: tuple[int, int, int] | None = None, jit: tuple[str, str] | None = None) -> "Variant":
        return cls(name, tuple(meta.items()), tuple(values.items()), tuple(pointers.items()), gemm_k, k_loop, jit)

    @property
    def precision(self) -> str | None:
        return dict(self.meta).get("INPUT_PRECISION")


def _nhwc(n: int, c: int, h: int, w: int, prefix: str) -> dict[str, int]:
    """Element strides of a channels_last [n, c, h, w] tensor, named as the kernels name them."""
    return {f"{prefix}n": h * w * c, f"{prefix}h": w * c, f"{prefix}w": c, f"{prefix}c": 1}


def _nchw(n: int, c: int, h: int, w: int, prefix: str) -> dict[str, int]:
    """The same for a contiguous (NCHW) tensor."""
    return {f"{prefix}n": c * h * w, f"{prefix}h": w, f"{prefix}w": 1, f"{prefix}c": h * w}


def _out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


BATCH = 32  # the representative batch (sizes only; see the module docstring)
# Split-K variants: ResNet-50 layers at batch 1, split as many ways as the heuristic would.
SPLIT_BATCH = 1
_POINTERS_CONV = {"x_ptr": "x", "w_ptr": "x", "b_ptr": "fp32", "r_ptr": "x", "y_ptr": "x", "ws_ptr": "fp32",
                  "n_ptr": "fp32", "cnt_ptr": "fp32"}


def _plane(m: int, cout: int) -> int:
    """The split-K workspace's plane stride, as the launchers pad it (kernels.splitk.split_plane)."""
    from ..kernels.splitk import split_plane

    return split_plane(m, cout)


def _counters(fused: bool) -> dict[str, str]:
    """A fused split's launch passes its int32 counters; any other, the bias as a stand-in."""
    return {"cnt_ptr": "i32" if fused else "fp32"}


def _split_request(m: int, cout: int, k: int, taps: int) -> int:
    """The SPLIT_K the heuristic asks for a layer (64x64 tiles, 64-wide K steps, 132 SMs)."""
    from ..kernels.config import NUM_SMS_DEFAULT, choose_split, k_iters

    return choose_split(-(-m // 64) * -(-cout // 64), k_iters(k, 64, taps), NUM_SMS_DEFAULT)


def _conv_variant(
    label: str, k: int, s: int, p: int, cin: int, cout: int, hw: int, residual: bool, prec: str,
    *, x_type: str = "x", x_nchw: bool = False, split: bool = False, normalize: int = 0, fused: bool = False,
    groups: int = 1, split_k: int | None = None, dilation: int = 1,
) -> Variant:
    """A ``_conv_kernel`` launch as ``kernels/conv.py`` makes it (``_launch_conv``); normalize:
    the stem's NORMALIZE mode for uint8 pixels (kernels.pixels.NORM_FMA / NORM_IEEE); fused: a
    split summed in the kernel (a ``fused_k`` config); groups: a grouped conv (ResNeXt), whose
    K loop runs over the input channels of a tile's groups (``k_loop``'s K: one group's); split_k:
    the split asked for, where the heuristic's 64x64 tiles would not split the layer."""
    n = SPLIT_BATCH if split else BATCH
    oh = _out(hw, dilation * (k - 1) + 1, s, p)
    flat = cin < 16 and groups == 1  # the launcher reduces over (kh, kw, cin) at once below 16 channels
    kk, taps = (k * k * cin, 1) if flat else (cin // groups, k * k)
    request = (split_k or _split_request(n * oh * oh, cout, kk, taps)) if split else 1
    if split and request < 2:
        raise ValueError(f"variant {label}: the heuristic does not split this layer")
    values = {
        "M": n * oh * oh, "H": hw, "W": hw, "C": cin, "OH": oh, "OW": oh, "CO": cout,
        "SH": s, "SW": s, "PH": p, "PW": p, "DH": dilation, "DW": dilation, "CIG": cin // groups, "COG": cout // groups,
        **(_nchw if x_nchw else _nhwc)(n, cin, hw, hw, "sx"),
        # weights [Cout, KH, KW, Cin/groups]
        "swo": k * k * cin // groups, "swh": k * cin // groups, "sww": cin // groups, "swc": 1,
        **_nhwc(n, cout, oh, oh, "sr"), **_nhwc(n, cout, oh, oh, "sy"),
        "sws": _plane(n * oh * oh, cout) if split else 0,
    }
    meta = {"KH": k, "KW": k, "FLAT_K": flat, "GROUPED": groups > 1, "HAS_RESIDUAL": residual, "RELU": True,
            "INPUT_PRECISION": prec, "SPLIT": split, "FUSED": fused, "NORMALIZE": normalize}
    x = f"/x:nchw-{x_type}" if x_nchw else ("" if x_type == "x" else f"/x:{x_type}")
    g = (f"/g{groups}" if groups > 1 else "") + (f"/d{dilation}" if dilation > 1 else "")
    name = f"{k}x{k}/s{s}{g}/relu" + ("/res" if residual else "") + x + _split_tag(split, fused) + f"/{prec} [{label}]"
    return Variant.make(name, meta, values, dict(_POINTERS_CONV, x_ptr=x_type, **_counters(fused)), gemm_k=kk,
                        k_loop=(kk, taps, request))


def _split_tag(split: bool, fused: bool) -> str:
    return ("/splitk-fused" if fused else "/splitk") if split else ""


def _gemm1x1_variant(label: str, s: int, cin: int, cout: int, hw: int, relu: bool, residual: bool, prec: str,
                     *, split: bool = False, fused: bool = False, pool: bool = False):
    """A ``_gemm1x1_kernel`` launch as ``kernels/gemm1x1.py`` makes it (pool: timm's average-pool
    shortcut, the 2x2 windows averaged in the A loads)."""
    n = SPLIT_BATCH if split else BATCH
    oh = _out(hw, 1, s, 0)
    request = _split_request(n * oh * oh, cout, cin, 1) if split else 1
    if split and request < 2:
        raise ValueError(f"variant {label}: the heuristic does not split this layer")
    values = {
        "M": n * oh * oh, "C": cin, "OH": oh, "OW": oh, "CO": cout, "SH": s, "SW": s,
        **_nhwc(n, cin, hw, hw, "sx"),
        "swo": cin, "swc": 1,
        **_nhwc(n, cout, oh, oh, "sr"), **_nhwc(n, cout, oh, oh, "sy"),
        "sws": _plane(n * oh * oh, cout) if split else 0,
        "H": hw, "W": hw,
    }
    meta = {"HAS_RESIDUAL": residual, "RELU": relu, "INPUT_PRECISION": prec, "SPLIT": split, "FUSED": fused,
            "POOL": pool}
    name = (f"1x1/s{s}" + ("/avgpool" if pool else "") + ("/relu" if relu else "") + ("/res" if residual else "") + _split_tag(split, fused)
            + f"/{prec} [{label}]")
    return Variant.make(name, meta, values, dict(_POINTERS_CONV, **_counters(fused)), gemm_k=cin,
                        k_loop=(cin, 1, request))


def _fc_variant(n: int, y: str, prec: str, fused: bool = False) -> Variant:
    """The head's linear layer as ``kernels/head.py`` launches ``_gemm1x1_kernel``: float32
    pooled features [n, 2048] as a 1x1 "image" per sample, 1000 classes, logits of type `y`."""
    request = _split_request(n, 1000, 2048, 1)
    values = {
        "M": n, "C": 2048, "OH": 1, "OW": 1, "CO": 1000, "SH": 1, "SW": 1, "H": 1, "W": 1,
        "sxn": 2048, "sxh": 2048, "sxw": 2048, "sxc": 1, "swo": 2048, "swc": 1,
        "srn": 1000, "srh": 1, "srw": 1, "src": 1, "syn": 1000, "syh": 1, "syw": 1, "syc": 1,
        "sws": _plane(n, 1000) if request > 1 else 0,
    }
    meta = {"HAS_RESIDUAL": False, "RELU": False, "INPUT_PRECISION": prec, "SPLIT": request > 1,
            "FUSED": fused and request > 1, "POOL": False}
    name = f"fc/N{n}" + _split_tag(request > 1, fused) + ("" if y == "x" else f"/y:{y}") + f"/{prec} [head]"
    pointers = dict(_POINTERS_CONV, x_ptr="fp32", r_ptr=y, y_ptr=y, **_counters(fused and request > 1))
    return Variant.make(name, meta, values, pointers, gemm_k=2048, k_loop=(2048, 1, request), jit=("head", "_fc_kernel"))


def _conv_tma_variant(label: str, k: int, s: int, p: int, cin: int, cout: int, hw: int, residual: bool, *,
                      a_tma: bool, split: bool = False, x_type: str = "x") -> Variant:
    """A ``_conv_tma_kernel`` launch as ``kernels/conv_tma.py`` makes it (x_type: its input's
    type where it is not the engine's dtype). MT (the tile grid's row count) is a multiple of
    BLOCK_M, so of 16, for every config: its specialization does not depend on the config,
    and the 64-row figure stands for all."""
    n = SPLIT_BATCH if split else BATCH
    oh = _out(hw, k, s, p)
    request = _split_request(n * oh * oh, cout, cin, k * k) if split else 1
    if split and request < 2:
        raise ValueError(f"variant {label}: the heuristic does not split this layer")
    mt = n * oh * -(-oh // 64) * 64 if a_tma else n * oh * oh
    values = {
        "M": n * oh * oh, "MT": mt, "N": n, "H": hw, "W": hw, "C": cin, "OH": oh, "OW": oh, "CO": cout,
        "SH": s, "SW": s, "PH": p, "PW": p, **_nhwc(n, cin, hw, hw, "sx"), "swo": k * k * cin,
        **_nhwc(n, cout, oh, oh, "sr"), **_nhwc(n, cout, oh, oh, "sy"),
        "sws": _plane(n * oh * oh, cout) if split else 0,
    }
    meta = {"KH": k, "KW": k, "A_TMA": a_tma, "HAS_RESIDUAL": residual, "RELU": True, "INPUT_PRECISION": "ieee",
            "SPLIT": split}
    x = "" if x_type == "x" else f"/x:{x_type}"
    name = (f"{k}x{k}/s{s}/relu" + ("/res" if residual else "") + ("/x:tma" if a_tma else "") + x
            + _split_tag(split, split) + f" [{label}]")
    return Variant.make(name, meta, values, dict(_POINTERS_CONV, x_ptr=x_type, **_counters(split)), gemm_k=cin,
                        k_loop=(cin, k * k, request))


def _conv_bordered_variant(label: str, cin: int, cout: int, hw: int, residual: bool, *, ws: bool,
                           split: bool = False, dilation: int = 1, persistent: bool = False) -> Variant:
    """A ``_conv_bordered_kernel`` launch as ``kernels/conv_bordered.py`` makes it: a 3x3
    stride-1 conv (padding = dilation) over a zero-bordered hw x hw map. The grid's and the
    map's row counts (MT, MP, HP, WP) are not specialized on; nor are an output's strides
    into a bordered slot of another class than a plain one's (channel counts divisible by 16).
    persistent: the ``tma_b_p`` launch (``_conv_bordered_persistent_kernel``, one program per SM)."""
    from ..kernels.config import bordered_rows

    n = SPLIT_BATCH if split else BATCH
    p = dilation
    request = _split_request(n * hw * hw, cout, cin, 9) if split else 1
    if split and request < 2:
        raise ValueError(f"variant {label}: the heuristic does not split this layer")
    hp = hw + 2 * p
    values = {
        "MT": bordered_rows(n, hp, hp, hw, hw), "MP": n * hp * hp, "C": cin, "HP": hp, "WP": hp, "OH": hw, "OW": hw,
        "CO": cout, "DH": dilation, "DW": dilation, "sxm": cin, "swo": 9 * cin,
        **_nhwc(n, cout, hw, hw, "sr"), **_nhwc(n, cout, hw, hw, "sy"),
        "sws": _plane(n * hw * hw, cout) if split else 0, "PROGRAMS": 132,
    }
    meta = {"KH": 3, "KW": 3, "HAS_RESIDUAL": residual, "RELU": True, "INPUT_PRECISION": "ieee", "SPLIT": split,
            "WARP_SPECIALIZE": ws}
    name = ("3x3/s1" + (f"/d{dilation}" if dilation > 1 else "") + "/relu" + ("/res" if residual else "")
            + "/x:bordered" + _split_tag(split, split) + ("/ws" if ws else "") + ("/persistent" if persistent else "")
            + f" [{label}]")
    return Variant.make(name, meta, values, dict(_POINTERS_CONV, **_counters(split)), gemm_k=cin,
                        k_loop=(cin, 9, request),
                        jit=("conv_bordered", "_conv_bordered_persistent_kernel") if persistent else None)


def _gemm_tma_variant(label: str, cin: int, cout: int, hw: int, relu: bool, residual: bool, *, ws: bool,
                      split: bool = False, head: tuple[int, str] | None = None, x_type: str = "x") -> Variant:
    """A ``_gemm_tma_kernel`` launch as ``kernels/gemm_tma.py`` makes it: a 1x1 stride-1 conv
    (x_type: its input's type where it is not the engine's dtype), or with `head` = (N, logits
    type) the classifier on float32 pooled features."""
    if head is not None:
        n, y = head
        m, oh, pointers = n, 1, dict(_POINTERS_CONV, x_ptr="fp32", r_ptr=y, y_ptr=y)
        out = {"srn": cout, "srh": 1, "srw": 1, "src": 1, "syn": cout, "syh": 1, "syw": 1, "syc": 1}
        request = _split_request(n, cout, cin, 1)
        split = request > 1
    else:
        n = SPLIT_BATCH if split else BATCH
        m, oh, pointers = n * hw * hw, hw, dict(_POINTERS_CONV, x_ptr=x_type)
        out = {**_nhwc(n, cout, hw, hw, "sr"), **_nhwc(n, cout, hw, hw, "sy")}
        request = _split_request(m, cout, cin, 1) if split else 1
        if split and request < 2:
            raise ValueError(f"variant {label}: the heuristic does not split this layer")
    values = {"M": m, "C": cin, "OH": oh, "OW": oh, "CO": cout, "sxm": cin, "swo": cin, **out,
              "sws": _plane(m, cout) if split else 0}
    pointers = dict(pointers, **_counters(split))
    meta = {"HAS_RESIDUAL": residual, "RELU": relu, "INPUT_PRECISION": "ieee", "SPLIT": split, "WARP_SPECIALIZE": ws}
    what = f"fc/N{n}" if head is not None else "1x1/s1"
    y = "" if head is None or head[1] == "x" else f"/y:{head[1]}"
    x = "" if x_type == "x" else f"/x:{x_type}"
    name = (what + ("/relu" if relu else "") + ("/res" if residual else "") + x + _split_tag(split, split) + y
            + ("/ws" if ws else "") + f" [{label}]")
    return Variant.make(name, meta, values, pointers, gemm_k=cin, k_loop=(cin, 1, request),
                        jit=("gemm_tma", "_fc_tma_kernel") if head is not None else None)


def _tma_variants(kernel: str, family: str) -> list[Variant]:
    """The launches a config of a TMA `family` (``Config.variant``) runs in the engine."""
    if kernel == "conv" and family == "tma":
        return [_conv_tma_variant("layer1", 3, 1, 1, 64, 64, 56, False, a_tma=True),
                _conv_tma_variant("layer1", 3, 1, 1, 64, 64, 56, True, a_tma=True),
                _conv_tma_variant("layer1", 1, 1, 0, 256, 64, 56, True, a_tma=True),
                _conv_tma_variant("layer4", 3, 1, 1, 512, 512, 7, False, a_tma=True, split=True),
                _conv_tma_variant("resnet18 layer4", 3, 1, 1, 512, 512, 7, True, a_tma=True, split=True)]
    if kernel == "conv" and family == "tma_w":
        return [_conv_tma_variant("layer2.0", 3, 2, 1, 128, 128, 56, False, a_tma=False),
                _conv_tma_variant("layer1", 3, 1, 1, 64, 64, 56, True, a_tma=False),
                _conv_tma_variant("layer4.0", 3, 2, 1, 512, 512, 14, False, a_tma=False, split=True)]
    if kernel == "conv" and family in ("tma_b", "tma_b_ws"):
        ws = family == "tma_b_ws"
        out = [_conv_bordered_variant("layer1", 64, 64, 56, False, ws=ws),
               _conv_bordered_variant("resnet18 layer1", 64, 64, 56, True, ws=ws),
               _conv_bordered_variant("deeplabv3 layer3", 256, 256, 65, False, ws=ws, dilation=2)]
        if not ws:  # warp-specialized tiles never split
            out += [_conv_bordered_variant("layer4", 512, 512, 7, False, ws=ws, split=True),
                    _conv_bordered_variant("resnet18 layer4", 512, 512, 7, True, ws=ws, split=True)]
        return out
    if kernel == "conv" and family == "tma_b_p":
        return [_conv_bordered_variant("layer1", 64, 64, 56, False, ws=False, persistent=True),
                _conv_bordered_variant("resnet18 layer1", 64, 64, 56, True, ws=False, persistent=True),
                _conv_bordered_variant("deeplabv3 layer3", 256, 256, 65, False, ws=False, dilation=2, persistent=True)]
    if kernel == "conv1x1" and family in ("tma", "tma_ws"):
        ws = family == "tma_ws"
        out = [_gemm_tma_variant("conv1", 256, 64, 56, True, False, ws=ws),
               _gemm_tma_variant("conv3", 64, 256, 56, True, True, ws=ws)]
        heads = ((1024, "fp32"), (1024, "fp16"), (1024, "bf16"))
        if not ws:  # warp-specialized tiles never split
            out.append(_gemm_tma_variant("layer4 conv1", 2048, 512, 7, True, False, ws=ws, split=True))
            heads = ((1, "x"), (32, "x")) + heads
        out += [_gemm_tma_variant("head", 2048, 1000, 1, False, False, ws=ws, head=h) for h in heads]
        return out
    raise ValueError(f"the gate has no {family!r} variants for kernel {kernel!r}")


def config_family(config: Config) -> str:
    """Which kernel function and launches a config compiles to: "ptr" (the pointer kernels,
    split sums fused or not) or its TMA variant."""
    return config.variant if config.tma else "ptr"


def _splitk_reduce_variant(label: str, m: int, cout: int, hw: int, relu: bool, residual: bool, splits: int,
                           y: str = "x"):
    """A ``_splitk_reduce_kernel`` launch as ``kernels/splitk.py`` makes it; at hw = 1, the
    head's logits [N, classes] viewed as [N, classes, 1, 1] (h and w strides 1)."""
    n = m // (hw * hw)
    strides = _nhwc(n, cout, hw, hw, "s") if hw > 1 else {"sn": cout, "sh": 1, "sw": 1, "sc": 1}
    values = {"M": m, "CO": cout, "OH": hw, "OW": hw, "SPLITS": splits, "sws": _plane(m, cout),
              **{"sr" + k[1:]: v for k, v in strides.items()}, **{"sy" + k[1:]: v for k, v in strides.items()}}
    name = "sum" + ("/relu" if relu else "") + ("/res" if residual else "") + ("" if y == "x" else f"/y:{y}") + f" [{label}]"
    return Variant.make(name, {"HAS_RESIDUAL": residual, "RELU": relu}, values,
                        {"ws_ptr": "fp32", "b_ptr": "fp32", "r_ptr": y, "y_ptr": y})


def _precisions(dtype: str) -> tuple[str, ...]:
    # float16 / bfloat16 always run "ieee" (tf32 only means something for float32 inputs).
    return ("ieee", "tf32") if dtype == "float32" else ("ieee",)


def float_variants(kernel: str, dtype: str | torch.dtype, family: str = "ptr") -> list[Variant]:
    """The specializations of `kernel` the engine dispatches at `dtype` (what the gate compiles)
    for configs of `family` (``config_family``; the TMA families: ``_tma_variants``).

    Each is a ResNet-50 layer at batch 32 (224x224), float32 GEMMs in both input precisions:

    - conv_stem: the stem 7x7/2 (Cin = 3, the flat-K path) reading the user's input as the
      engine hands it over: float32, float16 or bfloat16, NCHW or channels_last; and uint8
      NCHW pixels normalized in its loads (``ResNet.forward_pixels``). (Never split:
      its K loop is at most 10 steps, under two splits' worth by ``choose_split``'s rule.)
    - conv: 3x3/1 with and without the fused residual
      (BasicBlock conv1 / conv2); 3x3/2 (a stage's first 3x3, never a residual); 1x1/1 with
      the residual (``conv_bn_relu`` on a 1x1 weight, the heavier of its two epilogues); split-K
      3x3/1 and 3x3/2 of layer4 at batch 1, and ResNet-18's layer4 3x3 with its residual
      (added by the reduce launch when split).
    - conv1x1: (ReLU, residual) = (yes, no) bottleneck conv1, (yes, yes) conv3, (no, no) the
      strided downsample; split-K conv1 and downsample of layer4 at batch 1.
    - splitk_reduce: the sum of the partials with each epilogue (ReLU with and without the
      residual, neither: the downsample), at layer4's batch-1 size.
    - conv1x1, also the head's linear layer on float32 pooled features [N, 2048] -> 1000
      classes: split at batch 1 and 32 (the JIT makes N = 1 a constant), unsplit at batch
      1024 with logits in each float dtype (the engine returns logits in the input's dtype).
    - avgpool: the head's pool over ResNet-50's 7x7 x 2048 map.
    - max_pool2d: the stem's 3x3/2 pool; add_relu: one flat launch.

    Every split-K variant of conv and conv1x1 comes twice: summed by the reduce launch, and
    fused (summed by the tile's last program: the ``fused_k`` configs, dispatched on Hopper).
    8-bit dtypes (int8, float8_e4m3fn): ``fastres.gate.variants_8bit.quant_variants``; the two
    together: ``fastres.gate.rows.variants``.
    """
    dt = dtype_name(dtype)
    if family != "ptr":
        return _tma_variants(kernel, family)
    out: list[Variant] = []
    if kernel == "conv_stem":
        # The stem reads the caller's input as it comes: any float dtype, NCHW or channels_last.
        for prec in _precisions(dt):
            for x_type in ("fp32", "fp16", "bf16"):
                out.append(_conv_variant("stem", 7, 2, 3, 3, 64, 224, False, prec, x_type=x_type, x_nchw=True))
                nhwc = "x" if x_type == TRITON_TYPE[dt] else x_type
                out.append(_conv_variant("stem", 7, 2, 3, 3, 64, 224, False, prec, x_type=nhwc))
            # uint8 pixels (fastres.predict's batches: NCHW), normalized in the loads as the
            # launcher does for this dtype
            from ..kernels.pixels import NORM_FMA, NORM_IEEE

            mode = NORM_IEEE if dt == "float32" else NORM_FMA
            out.append(_conv_variant("stem pixels", 7, 2, 3, 3, 64, 224, False, prec, x_type="u8", x_nchw=True,
                                     normalize=mode))
    elif kernel == "conv":
        for prec in _precisions(dt):
            for res in (False, True):
                out.append(_conv_variant("layer1", 3, 1, 1, 64, 64, 56, res, prec))
            out.append(_conv_variant("layer2.0", 3, 2, 1, 128, 128, 56, False, prec))
            out.append(_conv_variant("layer1", 1, 1, 0, 256, 64, 56, True, prec))
            # a dilated trunk's 3x3 (FCN / DeepLabV3 layer3 at a 520x520 input: dilation 2 on 65x65;
            # dilation 4 is the same binary)
            out.append(_conv_variant("deeplabv3 layer3", 3, 1, 2, 256, 256, 65, False, prec, dilation=2))
            for fused in (False, True):
                out.append(_conv_variant("layer4", 3, 1, 1, 512, 512, 7, False, prec, split=True, fused=fused))
                out.append(_conv_variant("resnet18 layer4", 3, 1, 1, 512, 512, 7, True, prec, split=True, fused=fused))
                out.append(_conv_variant("layer4.0", 3, 2, 1, 512, 512, 14, False, prec, split=True, fused=fused))
    elif kernel == "conv_grouped":
        # ResNeXt's grouped 3x3s: resnext50_32x4d's layer1 (4 channels per group; also with a residual,
        # which the launcher takes though no torchvision model passes one), layer2.0's strided
        # one (8 per group), and split at batch 1: layer4's (32 per group, 7x7; split 3 ways as
        # tuning_candidates splits its 64x16x16 tile).
        for prec in _precisions(dt):
            for res in (False, True):
                out.append(_conv_variant("resnext layer1", 3, 1, 1, 128, 128, 56, res, prec, groups=32))
            out.append(_conv_variant("resnext layer2.0", 3, 2, 1, 256, 256, 56, False, prec, groups=32))
            # 64 channels per group (resnext101_32x8d's layer4): the 64-wide K step
            out.append(_conv_variant("resnext101_32x8d layer4", 3, 1, 1, 2048, 2048, 7, False, prec, groups=32))
            for fused in (False, True):
                out.append(_conv_variant("resnext layer4", 3, 1, 1, 1024, 1024, 7, False, prec, split=True,
                                         fused=fused, groups=32, split_k=3))
    elif kernel == "conv1x1":
        for prec in _precisions(dt):
            out.append(_gemm1x1_variant("conv1", 1, 256, 64, 56, True, False, prec))
            out.append(_gemm1x1_variant("conv3", 1, 64, 256, 56, True, True, prec))
            out.append(_gemm1x1_variant("downsample", 2, 256, 512, 56, False, False, prec))
            out.append(_gemm1x1_variant("avg-pool downsample", 2, 256, 512, 56, False, False, prec, pool=True))
            for fused in (False, True):
                out.append(_gemm1x1_variant("layer4 conv1", 1, 2048, 512, 7, True, False, prec, split=True, fused=fused))
                out.append(_gemm1x1_variant("layer4 downsample", 2, 1024, 2048, 14, False, False, prec, split=True,
                                            fused=fused))
            for n, y in ((1, "x"), (32, "x"), (1024, "fp32"), (1024, "fp16"), (1024, "bf16")):
                out.append(_fc_variant(n, y, prec))
            for n in (1, 32):
                out.append(_fc_variant(n, "x", prec, fused=True))
    elif kernel == "avgpool":
        values = {"C": 2048, "HW": 49, "W": 7, **_nhwc(BATCH, 2048, 7, 7, "sx"), "spn": 2048}
        out.append(Variant.make("7x7 [head pool]", {}, values, {"x_ptr": "x", "p_ptr": "fp32"}))
    elif kernel == "max_pool2d":
        values = {
            "P": BATCH * 56 * 56, "H": 112, "W": 112, "C": 64, "OH": 56, "OW": 56, "SH": 2, "SW": 2, "PH": 1, "PW": 1,
            **_nhwc(BATCH, 64, 112, 112, "sx"), **_nhwc(BATCH, 64, 56, 56, "sy"),
        }
        out.append(Variant.make("3x3/s2 [stem pool]", {"KH": 3, "KW": 3}, values, {"x_ptr": "x", "y_ptr": "x"}))
    elif kernel == "splitk_reduce":
        for relu, res in ((True, False), (True, True), (False, False)):
            out.append(_splitk_reduce_variant("layer4 b1", 49, 2048, 7, relu, res, 8))
        # The head's logits, in the caller's dtype, at batch 1 (N = 1 a constant) and 32.
        for n, splits in ((1, 8), (32, 8)):
            for y in ("fp32", "fp16", "bf16"):
                out.append(_splitk_reduce_variant(f"head N{n}", n, 1000, 1, False, False, splits, y))
    elif kernel == "add_relu":
        out.append(Variant.make(
            "flat [layer1 out]", {}, {"NUMEL": BATCH * 256 * 56 * 56}, {"x_ptr": "x", "r_ptr": "x", "y_ptr": "x"}
        ))
    else:
        raise ValueError(
            f"the gate has no variants for kernel {kernel!r}: describe its launches in fastres/gate/variants.py"
        )
    return out


def dtype_name(dtype: str | torch.dtype) -> str:
    """The name in ``DTYPES`` of a torch dtype, a dtype name or an alias ("bf16", "half"...)."""
    if isinstance(dtype, torch.dtype):
        for name, dt in DTYPES.items():
            if dt == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}: choose from {', '.join(DTYPES)}")
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    return name
