"""The launches of 8-bit GEMMs (int8, float8 e4m3fn: kernels/quant.py) as the gate compiles them.

The float rows' layers (``fastres.gate.variants``), launched as an 8-bit conv launches them:
its per-channel dequantization scale (``s_ptr``, float32), 8-bit activations in and out
(``out_inv``), an 8-bit residual with its scale (``r_scale``); and, where a quantized layer
meets float ones, a float16 input quantized as it is loaded (``in_inv``) with a float16
residual and output, the heaviest epilogue. int8 splits store int32 partials (the launcher's
float32 workspace viewed as int32). The pointer kernels, the 1x1 TMA GEMM (``tma``, ``tma_ws``),
the TMA conv (``tma``, ``tma_w``) and the bordered ones (``tma_b``, ``tma_b_ws``, ``tma_b_p``:
8-bit inputs only), unsplit (tuning offers 8-bit TMA tiles unsplit);
no fused split (tuning offers ``fused_k`` in float16 only), no average-pool shortcut (float
weights only) and no classifier (``kernels/head.py`` runs float weights).
"""
from __future__ import annotations

import dataclasses

from .variants import (TRITON_TYPE, Variant, _conv_bordered_variant, _conv_tma_variant, _conv_variant,
                       _gemm1x1_variant, _gemm_tma_variant, _splitk_reduce_variant)

QUANT_DTYPES = ("int8", "float8_e4m3fn")
# The scalars are fp32 kernel arguments the JIT never specializes: any value stands for all.
_SCALE = 0.5


def quantized(v: Variant, dtype: str, *, y: str = "x", r: str | None = None) -> Variant:
    """`v`, a float launch's row, as an 8-bit GEMM of `dtype` launches it: output of type `y`
    ("x": the 8-bit dtype, quantized with out_inv), residual of type `r` (default: y's; an
    8-bit one comes with its scale), a float input quantized as it is loaded."""
    meta, pointers, values = dict(v.meta), dict(v.pointers), dict(v.values)
    own = ("x", TRITON_TYPE[dtype])
    r = r or y
    pointers.update(s_ptr="fp32", y_ptr=y, r_ptr=r)
    if dtype == "int8" and "ws_ptr" in pointers and (meta.get("SPLIT") or "SPLITS" in values):
        pointers["ws_ptr"] = "i32"
    if pointers.get("x_ptr", "x") not in own:
        values["in_inv"] = _SCALE
    if meta.get("HAS_RESIDUAL") and r in own:
        values["r_scale"] = _SCALE
    if y in own:
        values["out_inv"] = _SCALE
    tags = ("" if r in own or not meta.get("HAS_RESIDUAL") else f"/r:{r}") + ("" if y in own else f"/y:{y}")
    return dataclasses.replace(v, name=v.name.replace(" [", tags + " [", 1), pointers=tuple(pointers.items()),
                               values=tuple(values.items()))


def quant_variants(kernel: str, dtype: str, family: str = "ptr") -> list[Variant]:
    """The rows of `kernel`'s 8-bit launches at `dtype` ("int8" or "float8_e4m3fn") for configs
    of `family` (``config_family``): per kind of code the heaviest of the float rows' layers (a
    fused residual over none, a split with the residual), to keep the gate's time in bounds."""
    def q(v: Variant, **kw) -> Variant:
        return quantized(v, dtype, **kw)

    if kernel == "conv1x1" and family in ("tma", "tma_ws"):
        ws = family == "tma_ws"
        return [q(_gemm_tma_variant("conv1", 256, 64, 56, True, False, ws=ws)),
                q(_gemm_tma_variant("conv3", 64, 256, 56, True, True, ws=ws)),
                q(_gemm_tma_variant("conv3", 64, 256, 56, True, True, ws=ws, x_type="fp16"), y="fp16")]
    if kernel == "conv" and family in ("tma", "tma_w"):
        a_tma = family == "tma"
        rows = [q(_conv_tma_variant("layer1", 3, 1, 1, 64, 64, 56, True, a_tma=a_tma)),
                q(_conv_tma_variant("layer1", 3, 1, 1, 64, 64, 56, True, a_tma=a_tma, x_type="fp16"), y="fp16")]
        if not a_tma:  # (TMA activations run stride 1 only)
            rows.insert(0, q(_conv_tma_variant("layer2.0", 3, 2, 1, 128, 128, 56, False, a_tma=False)))
        return rows
    if kernel == "conv" and family in ("tma_b", "tma_b_ws", "tma_b_p"):
        kw = {"ws": family == "tma_b_ws", "persistent": family == "tma_b_p"}
        return [q(_conv_bordered_variant("resnet18 layer1", 64, 64, 56, True, **kw)),
                q(_conv_bordered_variant("deeplabv3 layer3", 256, 256, 65, False, dilation=2, **kw))]
    if family != "ptr":
        raise ValueError(f"8-bit {kernel} runs no {family!r} kernel: the pointer kernels, tma / tma_ws for conv1x1, "
                         f"tma / tma_w and the bordered ones for conv")
    if kernel == "conv_stem":
        from ..kernels.pixels import NORM_IEEE

        # the user's float32 NCHW image; uint8 pixels, normalized as torchvision does (IEEE)
        return [q(_conv_variant("stem", 7, 2, 3, 3, 64, 224, False, "ieee", x_type="fp32", x_nchw=True)),
                q(_conv_variant("stem pixels", 7, 2, 3, 3, 64, 224, False, "ieee", x_type="u8", x_nchw=True,
                                normalize=NORM_IEEE))]
    if kernel == "conv":
        return [q(_conv_variant("layer1", 3, 1, 1, 64, 64, 56, True, "ieee")),
                q(_conv_variant("layer2.0", 3, 2, 1, 128, 128, 56, False, "ieee")),
                q(_conv_variant("deeplabv3 layer3", 3, 1, 2, 256, 256, 65, False, "ieee", dilation=2)),
                q(_conv_variant("layer1", 3, 1, 1, 64, 64, 56, True, "ieee", x_type="fp16"), y="fp16"),
                q(_conv_variant("resnet18 layer4", 3, 1, 1, 512, 512, 7, True, "ieee", split=True))]
    if kernel == "conv_grouped":
        return [q(_conv_variant("resnext layer1", 3, 1, 1, 128, 128, 56, True, "ieee", groups=32)),
                q(_conv_variant("resnext layer2.0", 3, 2, 1, 256, 256, 56, False, "ieee", groups=32)),
                q(_conv_variant("resnext101_32x8d layer4", 3, 1, 1, 2048, 2048, 7, False, "ieee", groups=32)),
                q(_conv_variant("resnext layer4", 3, 1, 1, 1024, 1024, 7, False, "ieee", split=True, groups=32,
                                split_k=3))]
    if kernel == "conv1x1":
        return [q(_gemm1x1_variant("conv3", 1, 64, 256, 56, True, True, "ieee")),
                q(_gemm1x1_variant("downsample", 2, 256, 512, 56, False, False, "ieee")),
                q(_gemm1x1_variant("conv3", 1, 64, 256, 56, True, True, "ieee"), y="fp16"),
                q(_gemm1x1_variant("layer4 conv1", 1, 2048, 512, 7, True, False, "ieee", split=True))]
    if kernel == "splitk_reduce":
        return [q(_splitk_reduce_variant("layer4 b1", 49, 2048, 7, True, True, 8)),
                q(_splitk_reduce_variant("layer4 b1", 49, 2048, 7, True, True, 8), y="fp16")]
    raise ValueError(f"kernel {kernel!r} has no 8-bit launches ({dtype}): the GEMM-type convs and the split-K sum do")
