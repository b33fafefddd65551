"""`fastres check`: the Hopper compile gate (DESIGN.md section 5, tier 2).

Every kernel in ``KERNELS`` x every config of ``config_space(kernel, dtype)`` x every dtype x
every specialization the engine launches ("variant": kernel size, stride, epilogue, input
precision) is compiled ahead of time for ``GPUTarget("cuda", 90, 32)`` with ``triton.compile``;
no GPU is needed. The cubin is then read with triton's bundled ``cuobjdump``:

- ``--dump-resource-usage``: REG, STACK (and the static SHARED);
- ``--dump-sass``: HGMMA (wgmma) present? LDL / STL (local memory = register spills) present?

A row fails on a compile error, a spill (STACK > 0 or any LDL/STL), dynamic shared memory over
the sm_90 per-block limit (227 KB = 232448 bytes), or a GEMM-type kernel without HGMMA where
Hopper has a wgmma for its operands: float32 with input_precision="ieee" has none (sm_90 has
no fp32 wgmma; triton uses FMA), so those rows report wgmma "no" without failing
(``wgmma_required``).

Specialization. At run time triton's JIT compiles one binary per *specialization* of the
arguments: an integer equal to 1 becomes the constant 1 (a ``constexpr``), an integer or pointer
divisible by 16 gets the ``tt.divisibility = 16`` attribute, other integers are plain ``i32``.
These facts change the code (a channel stride of 1 makes the channel axis contiguous, a channel
count divisible by 16 lets masked loads be vectorized), hence the register count and whether a
tile spills. So the gate does not guess: each variant is a real ResNet-50 layer (batch 32,
224x224 input; channels_last activations, the stem also reading a contiguous NCHW input;
buffers from torch's allocator, hence 16-byte aligned pointers) and its launch arguments are
specialized by the JIT's rules (``specialize``), so the gate compiles exactly the binary the
engine would run for that layer. Layers of other sizes differ only in sizes that the code
never vectorizes along (M, H, W) as long as channel counts stay multiples of 16, as in every
torchvision ResNet past the stem. See ``variants`` for the list.

The interpreter. With ``TRITON_INTERPRET=1`` ``@triton.jit`` gives interpreter functions that
``triton.compile`` refuses, and the choice is made when ``fastres.kernels`` is imported. So
``fastres check`` refuses to run under it: one line on stderr, exit 2 (unset the variable, e.g.
``env -u TRITON_INTERPRET fastres check``). The tests spawn it as a subprocess without it.

Cache. Results are stored in ``$FASTRES_CACHE_DIR/check/results.json`` (default root
``~/.cache/fastres``), keyed by a hash of the text of every ``kernels/*.py`` file, the triton
version, the gate's own version, the config, the dtype and the variant (its full
specialization), so a second run only reads JSON. Failures of the toolchain itself (a missing
ptxas, a dead worker) are reported but never cached.

Python API: ``gate_rows(kernels=None, dtypes=None, jobs=1) -> list[dict]`` (what the command
prints) and ``check_one(kernel, config, dtype, variant)`` for a single row.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

SM90_MAX_SHARED = 232448  # bytes: sm_90 max dynamic shared memory per block (227 KB, opt-in)
TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size
# Bumped whenever what a row means changes (checks, parsing, specialization rules), so that
# cached rows of an older gate are not reused.
GATE_VERSION = 1

DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
_TRITON_TYPE = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}

# kernel name (config.KERNELS) -> (module under fastres.kernels, @triton.jit function)
_KERNEL_FN = {
    "conv": ("conv", "_conv_kernel"),
    "conv_stem": ("conv", "_conv_kernel"),
    "conv1x1": ("gemm1x1", "_gemm1x1_kernel"),
    "avgpool": ("head", "_avgpool_kernel"),
    "max_pool2d": ("pool", "_max_pool_kernel"),
    "add_relu": ("elementwise", "_add_relu_kernel"),
    "splitk_reduce": ("splitk", "_splitk_reduce_kernel"),
}
# Config fields that are constexpr meta-parameters of the kernels (the rest are launch options).
_CONFIG_META = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")

_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")
_SPILL_RE = re.compile(r"\b(LDL|STL)(\.|\s)")
_HGMMA_RE = re.compile(r"\bHGMMA\.")


# --------------------------------------------------------------------------------------------
# Variants: the specializations the engine launches, as concrete ResNet-50 layers
# --------------------------------------------------------------------------------------------


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

    @classmethod
    def make(cls, name: str, meta: dict, values: dict, pointers: dict, gemm_k: int | None = None,
             k_loop: tuple[int, int, int] | None = None) -> "Variant":
        return cls(name, tuple(meta.items()), tuple(values.items()), tuple(pointers.items()), gemm_k, k_loop)

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
_POINTERS_CONV = {"x_ptr": "x", "w_ptr": "x", "b_ptr": "fp32", "r_ptr": "x", "y_ptr": "x", "ws_ptr": "fp32"}


def _split_request(m: int, cout: int, k: int, taps: int) -> int:
    """The SPLIT_K the heuristic asks for a layer (64x64 tiles, 64-wide K steps, 132 SMs)."""
    from .kernels.config import NUM_SMS_DEFAULT, choose_split, k_iters

    return choose_split(-(-m // 64) * -(-cout // 64), k_iters(k, 64, taps), NUM_SMS_DEFAULT)


def _conv_variant(
    label: str, k: int, s: int, p: int, cin: int, cout: int, hw: int, residual: bool, prec: str,
    *, x_type: str = "x", x_nchw: bool = False, split: bool = False,
) -> Variant:
    """A ``_conv_kernel`` launch as ``kernels/conv.py`` makes it (``_launch_conv``)."""
    n = SPLIT_BATCH if split else BATCH
    oh = _out(hw, k, s, p)
    flat = cin < 16  # the launcher reduces over (kh, kw, cin) at once below 16 channels
    kk, taps = (k * k * cin, 1) if flat else (cin, k * k)
    request = _split_request(n * oh * oh, cout, kk, taps) if split else 1
    if split and request < 2:
        raise ValueError(f"variant {label}: the heuristic does not split this layer")
    values = {
        "M": n * oh * oh, "H": hw, "W": hw, "C": cin, "OH": oh, "OW": oh, "CO": cout,
        "SH": s, "SW": s, "PH": p, "PW": p,
        **(_nchw if x_nchw else _nhwc)(n, cin, hw, hw, "sx"),
        # weights [Cout, KH, KW, Cin]
        "swo": k * k * cin, "swh": k * cin, "sww": cin, "swc": 1,
        **_nhwc(n, cout, oh, oh, "sr"), **_nhwc(n, cout, oh, oh, "sy"),
        "sws": n * oh * oh * cout if split else 0,
    }
    meta = {"KH": k, "KW": k, "FLAT_K": flat, "HAS_RESIDUAL": residual, "RELU": True,
            "INPUT_PRECISION": prec, "SPLIT": split}
    x = f"/x:nchw-{x_type}" if x_nchw else ("" if x_type == "x" else f"/x:{x_type}")
    name = f"{k}x{k}/s{s}/relu" + ("/res" if residual else "") + x + ("/splitk" if split else "") + f"/{prec} [{label}]"
    return Variant.make(name, meta, values, dict(_POINTERS_CONV, x_ptr=x_type), gemm_k=kk, k_loop=(kk, taps, request))


def _gemm1x1_variant(label: str, s: int, cin: int, cout: int, hw: int, relu: bool, residual: bool, prec: str,
                     *, split: bool = False):
    """A ``_gemm1x1_kernel`` launch as ``kernels/gemm1x1.py`` makes it."""
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
        "sws": n * oh * oh * cout if split else 0,
    }
    meta = {"HAS_RESIDUAL": residual, "RELU": relu, "INPUT_PRECISION": prec, "SPLIT": split}
    name = (f"1x1/s{s}" + ("/relu" if relu else "") + ("/res" if residual else "") + ("/splitk" if split else "")
            + f"/{prec} [{label}]")
    return Variant.make(name, meta, values, _POINTERS_CONV, gemm_k=cin, k_loop=(cin, 1, request))


def _fc_variant(n: int, y: str, prec: str) -> Variant:
    """The head's linear layer as ``kernels/head.py`` launches ``_gemm1x1_kernel``: float32
    pooled features [n, 2048] as a 1x1 "image" per sample, 1000 classes, logits of type `y`."""
    request = _split_request(n, 1000, 2048, 1)
    values = {
        "M": n, "C": 2048, "OH": 1, "OW": 1, "CO": 1000, "SH": 1, "SW": 1,
        "sxn": 2048, "sxh": 2048, "sxw": 2048, "sxc": 1, "swo": 2048, "swc": 1,
        "srn": 1000, "srh": 1, "srw": 1, "src": 1, "syn": 1000, "syh": 1, "syw": 1, "syc": 1,
        "sws": n * 1000 if request > 1 else 0,
    }
    meta = {"HAS_RESIDUAL": False, "RELU": False, "INPUT_PRECISION": prec, "SPLIT": request > 1}
    name = f"fc/N{n}" + ("/splitk" if request > 1 else "") + ("" if y == "x" else f"/y:{y}") + f"/{prec} [head]"
    pointers = dict(_POINTERS_CONV, x_ptr="fp32", r_ptr=y, y_ptr=y)
    return Variant.make(name, meta, values, pointers, gemm_k=2048, k_loop=(2048, 1, request))


def _splitk_reduce_variant(label: str, m: int, cout: int, hw: int, relu: bool, residual: bool, splits: int,
                           y: str = "x"):
    """A ``_splitk_reduce_kernel`` launch as ``kernels/splitk.py`` makes it; at hw = 1, the
    head's logits [N, classes] viewed as [N, classes, 1, 1] (h and w strides 1)."""
    n = m // (hw * hw)
    strides = _nhwc(n, cout, hw, hw, "s") if hw > 1 else {"sn": cout, "sh": 1, "sw": 1, "sc": 1}
    values = {"M": m, "CO": cout, "OH": hw, "OW": hw, "SPLITS": splits, "sws": m * cout,
              **{"sr" + k[1:]: v for k, v in strides.items()}, **{"sy" + k[1:]: v for k, v in strides.items()}}
    name = "sum" + ("/relu" if relu else "") + ("/res" if residual else "") + ("" if y == "x" else f"/y:{y}") + f" [{label}]"
    return Variant.make(name, {"HAS_RESIDUAL": residual, "RELU": relu}, values,
                        {"ws_ptr": "fp32", "b_ptr": "fp32", "r_ptr": y, "y_ptr": y})


def _precisions(dtype: str) -> tuple[str, ...]:
    # float16 / bfloat16 always run "ieee" (tf32 only means something for float32 inputs).
    return ("ieee", "tf32") if dtype == "float32" else ("ieee",)


def variants(kernel: str, dtype: str | torch.dtype) -> list[Variant]:
    """The specializations of `kernel` the engine dispatches at `dtype` (what the gate compiles).

    Each is a ResNet-50 layer at batch 32 (224x224), float32 GEMMs in both input precisions:

    - conv_stem: the stem 7x7/2 (Cin = 3, the flat-K path) reading the user's input as the
      engine hands it over: float32, float16 or bfloat16, NCHW or channels_last. (Never split:
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
    """
    dt = _dtype_name(dtype)
    out: list[Variant] = []
    if kernel == "conv_stem":
        # The stem reads the caller's input as it comes: any float dtype, NCHW or channels_last.
        for prec in _precisions(dt):
            for x_type in ("fp32", "fp16", "bf16"):
                out.append(_conv_variant("stem", 7, 2, 3, 3, 64, 224, False, prec, x_type=x_type, x_nchw=True))
                nhwc = "x" if x_type == _TRITON_TYPE[dt] else x_type
                out.append(_conv_variant("stem", 7, 2, 3, 3, 64, 224, False, prec, x_type=nhwc))
    elif kernel == "conv":
        for prec in _precisions(dt):
            for res in (False, True):
                out.append(_conv_variant("layer1", 3, 1, 1, 64, 64, 56, res, prec))
            out.append(_conv_variant("layer2.0", 3, 2, 1, 128, 128, 56, False, prec))
            out.append(_conv_variant("layer1", 1, 1, 0, 256, 64, 56, True, prec))
            out.append(_conv_variant("layer4", 3, 1, 1, 512, 512, 7, False, prec, split=True))
            out.append(_conv_variant("resnet18 layer4", 3, 1, 1, 512, 512, 7, True, prec, split=True))
            out.append(_conv_variant("layer4.0", 3, 2, 1, 512, 512, 14, False, prec, split=True))
    elif kernel == "conv1x1":
        for prec in _precisions(dt):
            out.append(_gemm1x1_variant("conv1", 1, 256, 64, 56, True, False, prec))
            out.append(_gemm1x1_variant("conv3", 1, 64, 256, 56, True, True, prec))
            out.append(_gemm1x1_variant("downsample", 2, 256, 512, 56, False, False, prec))
            out.append(_gemm1x1_variant("layer4 conv1", 1, 2048, 512, 7, True, False, prec, split=True))
            out.append(_gemm1x1_variant("layer4 downsample", 2, 1024, 2048, 14, False, False, prec, split=True))
            for n, y in ((1, "x"), (32, "x"), (1024, "fp32"), (1024, "fp16"), (1024, "bf16")):
                out.append(_fc_variant(n, y, prec))
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
        raise ValueError(f"the gate has no variants for kernel {kernel!r}: describe its launches in fastres/check.py")
    return out


def wgmma_required(kernel: str, dtype: str | torch.dtype, precision: str | None) -> bool:
    """Whether the row must use HGMMA: GEMM-type kernels, except exact float32 products.

    Hopper's wgmma multiplies fp16, bf16, tf32 and fp8 operands; there is no fp32 wgmma, so
    float32 with input_precision="ieee" (the exact default, DESIGN.md section 4) is always
    compiled to FMA instructions. Those rows are reported (wgmma "no") but do not fail.
    """
    from .kernels.config import GEMM_KERNELS

    if kernel not in GEMM_KERNELS:
        return False
    return not (_dtype_name(dtype) == "float32" and precision == "ieee")


# --------------------------------------------------------------------------------------------
# Specialization and compilation
# --------------------------------------------------------------------------------------------


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        for name, dt in DTYPES.items():
            if dt == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}: choose from {', '.join(DTYPES)}")
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    return name


def kernel_fn(kernel: str):
    """The @triton.jit function of `kernel`."""
    import importlib

    try:
        module, attr = _KERNEL_FN[kernel]
    except KeyError:
        raise ValueError(f"the gate does not know kernel {kernel!r}: add it to _KERNEL_FN in fastres/check.py") from None
    return getattr(importlib.import_module(f"fastres.kernels.{module}"), attr)


def _arg_names(fn) -> list[str]:
    import inspect

    return list(inspect.signature(getattr(fn, "fn", fn)).parameters)


def specialize(fn, config, dtype: str | torch.dtype, variant: Variant):
    """(signature, constexprs, attrs, options) for ``triton.compile(ASTSource(...))``.

    Mirrors the JIT (triton 3.6 and 3.8 agree: ``BaseBackend.get_int_specialization`` /
    ``get_tensor_specialization`` and ``parse_attr``): an int equal to 1 -> constexpr 1; an int
    divisible by 16 -> ``i32`` with ``tt.divisibility`` 16; any other int -> ``i32`` (``i64``
    beyond 32 bits); a pointer -> ``*<type>`` with ``tt.divisibility`` 16 (torch's allocator
    aligns every buffer far beyond 16 bytes). Keys: signature by name, constexprs and attrs
    by argument path ``(index,)``: the format both versions' ``ASTSource`` take.
    """
    dt = _dtype_name(dtype)
    meta = dict(variant.meta)
    for f in _CONFIG_META:
        meta.setdefault(f, getattr(config, f))
    values, pointers = dict(variant.values), dict(variant.pointers)
    if variant.k_loop is not None:
        from .kernels.config import k_iters
        from .kernels.splitk import split_plan

        k, taps, request = variant.k_loop
        values["ITERS"] = split_plan(k_iters(k, config.BLOCK_K, taps), request)[1]
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    divisible = [["tt.divisibility", 16]]
    for i, name in enumerate(_arg_names(fn)):
        if name in pointers:
            ty = pointers[name]
            signature[name] = "*" + (_TRITON_TYPE[dt] if ty == "x" else ty)
            attrs[(i,)] = divisible
        elif name in values:
            v = int(values[name])
            if v == 1:
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
                if v % 16 == 0:
                    attrs[(i,)] = divisible
        elif name in meta:
            signature[name] = "constexpr"
            constexprs[(i,)] = meta[name]
        else:
            raise ValueError(f"variant {variant.name!r} gives no value for argument {name!r} of {fn_name(fn)}")
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return signature, constexprs, attrs, options


def fn_name(fn) -> str:
    return getattr(getattr(fn, "fn", fn), "__name__", str(fn))


def _cuobjdump() -> str:
    try:
        import triton.knobs

        path = triton.knobs.nvidia.cuobjdump.path
        if path and os.path.isfile(path):
            return path
    except Exception:  # pragma: no cover - older / newer knob layouts
        pass
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(path):
        raise RuntimeError(f"triton's cuobjdump is missing (looked for {path})")
    return path


def parse_resource_usage(text: str) -> dict[str, int]:
    """``cuobjdump --dump-resource-usage`` -> {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}."""
    found: dict[str, int] = {}
    for key, val in _RESOURCE_RE.findall(text):
        found[key] = max(found.get(key, 0), int(val))  # one function per cubin; max if several
    if "REG" not in found or "STACK" not in found:
        raise RuntimeError(f"could not read REG/STACK from cuobjdump's resource usage: {text.strip()[:300]!r}")
    return found


def scan_sass(sass: str) -> dict[str, int]:
    """Count HGMMA (wgmma) and LDL/STL (local memory: spills) instructions in a SASS dump."""
    return {"hgmma": len(_HGMMA_RE.findall(sass)), "local_insts": len(_SPILL_RE.findall(sass))}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # triton's CompilationError puts the source excerpt first and the reason last.
    msg = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {msg}"[:400]


def _compile_row(kernel: str, config, dtype: str, variant: Variant) -> dict:
    """Compile one row and inspect its cubin (no cache)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .kernels.config import GEMM_KERNELS

    row: dict[str, Any] = {
        "kernel": kernel, "config": config.name, "dtype": dtype, "variant": variant.name,
        "ok": False, "registers": None, "stack": None, "spills": None, "shared": None,
        "wgmma": None, "gemm": kernel in GEMM_KERNELS,
        "wgmma_required": wgmma_required(kernel, dtype, variant.precision),
        "num_warps": config.num_warps, "num_stages": config.num_stages,
        "local_insts": None, "hgmma_insts": None, "static_shared": None, "error": None,
    }
    t0 = time.perf_counter()
    fn = kernel_fn(kernel)
    signature, constexprs, attrs, options = specialize(fn, config, dtype, variant)
    try:
        compiled = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
            target=GPUTarget(*TARGET), options=options,
        )
    except (OSError, subprocess.SubprocessError, MemoryError):
        raise  # the toolchain could not run (missing ptxas, no memory...): not the kernel's fault
    except Exception as exc:  # a compile error is a result, not a crash of the gate
        row["error"] = "compile error: " + _first_line(exc)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row

    cuobjdump = _cuobjdump()
    with tempfile.TemporaryDirectory(prefix="fastres-check-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run(
            [cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        sass = subprocess.run(
            [cuobjdump, "--dump-sass", path], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    res = parse_resource_usage(usage)
    counts = scan_sass(sass)
    shared = int(compiled.metadata.shared)
    row.update(
        registers=res["REG"], stack=res["STACK"], static_shared=res.get("SHARED"), shared=shared,
        local_insts=counts["local_insts"], hgmma_insts=counts["hgmma"],
        spills=res["STACK"] > 0 or res.get("LOCAL", 0) > 0 or counts["local_insts"] > 0,
        wgmma=counts["hgmma"] > 0,
    )
    problems = []
    if row["spills"]:
        problems.append(f"spills (STACK {res['STACK']} B, {counts['local_insts']} LDL/STL)")
    if shared > SM90_MAX_SHARED:
        problems.append(f"shared memory {shared} B > {SM90_MAX_SHARED} B")
    if row["wgmma_required"] and not row["wgmma"]:
        problems.append("GEMM without HGMMA")
    row["ok"] = not problems
    row["error"] = "; ".join(problems) or None
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_file() -> Path:
    from .tuning import cache_dir

    return cache_dir() / "check" / "results.json"


def _kernel_sources_digest() -> str:
    from . import kernels

    folder = Path(kernels.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _triton_version() -> str:
    import triton

    return triton.__version__


def row_key(kernel: str, config, dtype: str, variant: Variant, *, sources: str | None = None) -> str:
    """Cache key: kernel sources, triton version, gate version, config, dtype, variant."""
    payload = json.dumps(
        [GATE_VERSION, sources or _kernel_sources_digest(), _triton_version(), TARGET, kernel,
         dataclasses.asdict(config), dtype, dataclasses.astuple(variant)],
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _load_cache(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, new: dict) -> None:
    """Merge `new` into the cache file atomically (concurrent gates may share it)."""
    if not new:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load_cache(path)
        data.update(new)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not fail the gate
        print(f"fastres check: warning: could not write the cache {path}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _refuse_interpreter() -> None:
    from .kernels._checks import interpreting

    if interpreting():
        raise RuntimeError(
            "TRITON_INTERPRET is set: the compile gate needs real @triton.jit functions; "
            "run it without the variable (e.g. `env -u TRITON_INTERPRET fastres check`)"
        )


def _find_variant(kernel: str, dtype: str, variant: Variant | str | None) -> Variant:
    if isinstance(variant, Variant):
        return variant
    options = variants(kernel, dtype)
    if variant is None:
        return options[0]
    for v in options:
        if v.name == variant or v.name.split()[0] == variant:
            return v
    raise ValueError(f"no variant {variant!r} of {kernel} at {dtype}; variants: {[v.name for v in options]}")


def check_one(kernel: str, config, dtype: str | torch.dtype, variant: Variant | str | None = None, *,
              use_cache: bool = True) -> dict:
    """Compile and inspect one (kernel, config, dtype, variant); returns its row.

    `config` may be any ``Config`` (also one outside the config space, e.g. to show that a
    tile spills); `variant` a ``Variant``, its name or the name's first word (e.g.
    ``"3x3/s1/relu/res/ieee"``); None picks the kernel's first variant.
    """
    _refuse_interpreter()
    dt = _dtype_name(dtype)
    v = _find_variant(kernel, dt, variant)
    path = cache_file()
    key = row_key(kernel, config, dt, v)
    if use_cache:
        hit = _load_cache(path).get(key)
        if hit is not None:
            return dict(hit, cached=True)
    row = _compile_row(kernel, config, dt, v)
    if use_cache:
        _save_cache(path, {key: row})
    return dict(row, cached=False)


@dataclasses.dataclass(frozen=True)
class _Task:
    kernel: str
    config: Any
    dtype: str
    variant: Variant


def _error_row(task: _Task, exc: BaseException) -> dict:
    """The gate itself broke on a row (not the kernel): report it, never cache it."""
    from .kernels.config import GEMM_KERNELS

    return {
        "kernel": task.kernel, "config": task.config.name, "dtype": task.dtype, "variant": task.variant.name,
        "ok": False, "registers": None, "stack": None, "spills": None, "shared": None, "wgmma": None,
        "gemm": task.kernel in GEMM_KERNELS,
        "wgmma_required": wgmma_required(task.kernel, task.dtype, task.variant.precision),
        "error": "gate error: " + _first_line(exc), "_transient": True,
    }


def _run_task(task: _Task) -> dict:
    try:
        return _compile_row(task.kernel, task.config, task.dtype, task.variant)
    except Exception as exc:
        return _error_row(task, exc)


def tasks(kernels: Iterable[str] | None = None, dtypes: Iterable[str | torch.dtype] | None = None) -> list[_Task]:
    """Every (kernel, config, dtype, variant) the gate compiles, filtered."""
    from .kernels.config import KERNELS, config_space

    names = list(KERNELS) if kernels is None else list(kernels)
    for k in names:
        if k not in KERNELS:
            raise ValueError(f"unknown kernel {k!r}: choose from {', '.join(KERNELS)}")
    dts = list(DTYPES) if dtypes is None else [_dtype_name(d) for d in dtypes]
    out = []
    for k in names:
        for dt in DTYPES:
            if dt not in dts:
                continue
            vs = variants(k, dt)
            for cfg in config_space(k, DTYPES[dt]):
                out.extend(_Task(k, cfg, dt, v) for v in vs if dispatchable(k, cfg, v))
    return out


def dispatchable(kernel: str, config, variant: Variant) -> bool:
    """Whether the engine can launch `config` for the layer of `variant`.

    A GEMM config whose BLOCK_K is wider than the layer's reduction (the K the launcher hands
    ``select_config``) rounded up to a power of two (at least 16, the smallest ``tl.dot`` K)
    is never chosen: ``select_config`` takes the widest BLOCK_K <= that, and a wider K step
    would only multiply zeros. ResNet layers have K >= 64, so today this removes nothing;
    a tile whose fused residual spills (``config.residual_unsafe``) is never launched with a
    residual either;
    every config of the space is compiled for some variant either way.
    """
    from .kernels.config import residual_unsafe

    meta = dict(variant.meta)
    if meta.get("HAS_RESIDUAL") and not meta.get("SPLIT") and residual_unsafe(kernel, config):
        return False  # kept from residual convs by select_config / tuning_candidates(residual=True)
    k = variant.gemm_k
    if k is None:
        return True
    return config.BLOCK_K <= max(16, 1 << max(0, int(k) - 1).bit_length())


def gate_rows(
    kernels: Iterable[str] | None = None,
    dtypes: Iterable[str | torch.dtype] | None = None,
    jobs: int = 1,
    *,
    use_cache: bool = True,
    progress: bool = False,
) -> list[dict]:
    """Run the gate: one row (dict) per (kernel, config, dtype, variant), in a stable order.

    ``jobs`` > 1 compiles in a process pool; ``progress`` shows a bar on stderr (when it is a
    terminal); ``use_cache`` reads and writes the result cache. Keys: kernel, config, dtype, variant, ok, registers, stack, spills, shared, wgmma, gemm,
    wgmma_required, error (None when ok) and a few more (num_warps, num_stages, local_insts,
    hgmma_insts, static_shared, seconds, cached).
    """
    _refuse_interpreter()
    todo = tasks(kernels, dtypes)
    path = cache_file()
    sources = _kernel_sources_digest()
    keys = [row_key(t.kernel, t.config, t.dtype, t.variant, sources=sources) for t in todo]
    cache = _load_cache(path) if use_cache else {}
    rows: list[dict | None] = [None] * len(todo)
    missing = []
    for i, key in enumerate(keys):
        if key in cache:
            rows[i] = dict(cache[key], cached=True)
        else:
            missing.append(i)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), initial=len(todo) - len(missing), desc="fastres check", unit="kernel",
               file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
    fresh: dict[str, dict] = {}

    def done(i: int, row: dict) -> None:
        transient = row.pop("_transient", False)
        rows[i] = dict(row, cached=False)
        if not transient:
            fresh[keys[i]] = row
        bar.update(1)
        if use_cache and len(fresh) >= 32:  # keep progress if interrupted
            _save_cache(path, fresh)
            fresh.clear()

    try:
        if jobs <= 1 or len(missing) <= 1:
            for i in missing:
                done(i, _run_task(todo[i]))
        else:
            # spawn: a fresh interpreter per worker (no forked torch / triton state).
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(missing)), mp_context=ctx) as pool:
                futures = {pool.submit(_run_task, todo[i]): i for i in missing}
                for fut in concurrent.futures.as_completed(futures):
                    i = futures[fut]
                    try:
                        row = fut.result()
                    except Exception as exc:  # a worker died (e.g. out of memory): report the row
                        row = _error_row(todo[i], exc)
                    done(i, row)
    finally:
        bar.close()
        if use_cache:
            _save_cache(path, fresh)
    return [r for r in rows if r is not None]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def configure(parser: argparse.ArgumentParser) -> None:
    from .kernels.config import KERNELS

    parser.add_argument("--kernel", action="append", metavar="NAME",
                        help=f"only this kernel (repeatable): {', '.join(KERNELS)}")
    parser.add_argument("--dtype", action="append", metavar="DTYPE",
                        help="only this dtype (repeatable): float16, bfloat16, float32")
    parser.add_argument("--jobs", "-j", type=int, default=_default_jobs(), metavar="N",
                        help="compile in N processes (default: the CPU count)")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompile everything (the cache lives in $FASTRES_CACHE_DIR/check, default ~/.cache/fastres)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _fmt_table(rows: Sequence[dict]) -> str:
    headers = ["kernel", "config", "dtype", "variant", "regs", "stack", "shared", "wgmma", "ok"]

    def wg(r: dict) -> str:
        if r.get("wgmma") is None:
            return "-"
        if not r.get("gemm"):
            return "-"
        return "yes" if r["wgmma"] else ("no" if r.get("wgmma_required") else "no (fp32 fma)")

    def cell(v) -> str:
        return "-" if v is None else str(v)

    body = [
        [r["kernel"], r["config"], r["dtype"], r.get("variant", ""), cell(r["registers"]), cell(r["stack"]),
         cell(r["shared"]), wg(r), "ok" if r["ok"] else "FAIL: " + str(r.get("error"))]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def _failing_configs(rows: Sequence[dict]) -> list[str]:
    """One line per failing (kernel, config, dtype): how many variants fail and why."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["config"], r["dtype"]), []).append(r)
    lines = []
    for (k, c, d), rs in groups.items():
        bad = [r for r in rs if not r["ok"]]
        if not bad:
            continue
        reasons = []
        spill = [r for r in bad if r.get("spills")]
        if spill:
            reasons.append(f"spills (STACK up to {max(r['stack'] or 0 for r in spill)} B)")
        for r in bad:
            err = r.get("error") or "?"
            for part in err.split("; "):
                if not part.startswith("spills") and part not in reasons:
                    reasons.append(part)
        worst = ", ".join(r.get("variant", "?").split()[0] for r in bad)
        lines.append(f"{k} {c} {d}: {'; '.join(reasons)} in {len(bad)}/{len(rs)} variants ({worst})")
    return lines


def main(args: argparse.Namespace) -> int:
    from .cli import UserError
    from .kernels._checks import interpreting

    if interpreting():
        raise UserError(
            "TRITON_INTERPRET is set, but the compile gate needs compiled kernels: "
            "run it without (env -u TRITON_INTERPRET fastres check)"
        )
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    try:
        todo = tasks(args.kernel, args.dtype)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t0 = time.perf_counter()
    rows = gate_rows(args.kernel, args.dtype, jobs=args.jobs, use_cache=not args.no_cache,
                     progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    failed = [r for r in rows if not r["ok"]]
    cached = sum(1 for r in rows if r.get("cached"))
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(_fmt_table(rows))
        if failed:
            print("\nfailing configs (remove them from kernels/config.py or fix the kernel):")
            for line in _failing_configs(rows):
                print(f"  {line}")
        print()
    summary = (
        f"fastres check: {len(rows) - len(failed)}/{len(rows)} rows ok, {len(failed)} failed "
        f"({len({(r['kernel'], r['config'], r['dtype']) for r in failed})} configs) "
        f"for sm_90 with triton {_triton_version()} in {elapsed:.1f} s ({cached} cached)"
    )
    assert len(rows) == len(todo)
    # With --json stdout stays pure JSON: the summary goes to stderr.
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0


def _cli(argv: list[str] | None = None) -> int:
    """``python -m fastres.check``: the same as ``fastres check``."""
    from .cli import run_subcommand

    return run_subcommand("check", argv)


if __name__ == "__main__":
    from fastres.check import _cli as _entry

    sys.exit(_entry())
