"""The classifier head: global average pool, then the final linear layer as a GEMM.

Two steps, because one kernel doing both is latency-bound: a program that pools its rows for
each K step walks the H*W pixels one dependent load after another (49 per step at 7x7, 32
steps for 2048 channels), and re-pools them for every class tile. Here the pool reads every
activation once, H*W pixels x a channel block per load, into float32 features [N, C]; the
linear layer is the 1x1-conv GEMM kernel on those features (cast to the weights' dtype as
loaded, or quantized as loaded for an 8-bit classifier: kernels/quant.py), with split-K
(kernels/splitk.py) where the class tiles alone leave SMs idle, as at small batches: 1000
classes in 64-wide tiles are 16 programs for 132 SMs.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._checks import (
    FLOAT_DTYPES, _inverse_scale, check_bias, check_channels_last, check_dequant_scale, check_device, check_precision,
    check_same_dtype, check_tensor, nhwc_strides,
)
from .config import Config, select_config
from .gemm1x1 import _gemm1x1_kernel
from .splitk import check_workspace, conv_split, reduce_partials, split_counters, split_plane
from .launch import launch
from .quant import check_block_k, check_float_weights, check_fp8_device, partials_dtype
from .targets import QUANT_DTYPES


@triton.jit
def _e4m3_value(b):
    """e4m3fn bits (the int8 read as int32) -> float32, exactly, from the bits (triton's
    interpreter upcasts the NaN codes 0x7F / 0xFF to +-480): the exponent rebiased (7 -> 127)
    and the 3 mantissa bits moved up, or for a subnormal its mantissa times 2**-9."""
    u = b & 0xFF
    e = (u >> 3) & 0xF
    m = u & 0x7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    v = tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)
    v = tl.where((u & 0x7F) == 0x7F, float("nan"), v)
    return tl.where(u >= 0x80, -v, v)


@triton.jit
def _pixel_sum(x_ptr, n, rc, c_ok, HW, W, sxn, sxh, sxw, sxc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The float32 sum over the H*W pixels of image n, channels rc: BLOCK_M pixels per load, so a
    7x7 map is one load per program instead of 49 dependent ones. x: float, int8 or e4m3fn."""
    E4M3: tl.constexpr = x_ptr.dtype.element_ty == tl.float8e4nv
    rp = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for p0 in range(0, HW, BLOCK_M):
        p = p0 + rp
        h = p // W
        w = p - h * W
        offs = n * sxn + (h.to(tl.int64) * sxh + w.to(tl.int64) * sxw)[:, None] + rc[None, :] * sxc
        mask = (p < HW)[:, None] & c_ok[None, :]
        if E4M3:
            bits = tl.load(x_ptr.to(tl.pointer_type(tl.int8), bitcast=True) + offs, mask=mask, other=0)
            acc += tl.sum(_e4m3_value(bits.to(tl.int32)), axis=0)
        else:
            acc += tl.sum(tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32), axis=0)
    return acc


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (strides past them only depend on channel counts).
@triton.jit(do_not_specialize=("HW", "W"))
def _avgpool_kernel(
    # pointers
    x_ptr, p_ptr,
    # sizes
    C, HW, W,
    # strides (x: n, h, w, c; p: n)
    sxn, sxh, sxw, sxc,
    spn,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One image (program_id 0) x BLOCK_N channels.
    n = tl.program_id(0).to(tl.int64)
    rc = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = rc < C
    acc = _pixel_sum(x_ptr, n, rc, c_ok, HW, W, sxn, sxh, sxw, sxc, BLOCK_M, BLOCK_N)
    tl.store(p_ptr + n * spn + rc, acc * (1.0 / HW), mask=c_ok)


# The pool of 8-bit codes: the float kernel's, times `scale` = float32(x_scale / (H*W)) (the
# float kernel keeps its arguments, which the compile gate's variants name).
@triton.jit(do_not_specialize=("HW", "W"))
def _avgpool_8bit_kernel(
    # pointers
    x_ptr, p_ptr,
    # sizes
    C, HW, W,
    # strides (x: n, h, w, c; p: n)
    sxn, sxh, sxw, sxc,
    spn,
    # the dequantization and the mean in one factor
    scale,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    rc = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = rc < C
    acc = _pixel_sum(x_ptr, n, rc, c_ok, HW, W, sxn, sxh, sxw, sxc, BLOCK_M, BLOCK_N)
    tl.store(p_ptr + n * spn + rc, acc * scale, mask=c_ok)


def fc_config(N: int, C: int, classes: int, dtype: torch.dtype, device: torch.device | None = None) -> Config:
    """The linear layer's GEMM config (the 1x1-conv space: it is that kernel)."""
    return select_config("conv1x1", dtype, M=N, N=classes, K=C, device=device)


def head_workspace_numel(N: int, C: int, classes: int, config: Config) -> int:
    """Float32 elements `avgpool_fc` needs in its workspace: the pooled features, then the
    split-K partials of the linear layer (if its config splits)."""
    return _pooled_numel(N, C) + conv_split(config, M=N, C=C, CO=classes).workspace


# The linear layer: the 1x1 conv kernel on 1x1 "images", specialized as it was before the
# general kernel left its sizes unspecialized (its index math for OH, OW, M then spills in the
# 128-row and fused split tiles, the gate): OH = OW = 1 constants, and the batch (M)
# specialized: one binary per batch class (1, a multiple of 16, other), none per image size
# (the head sees pooled features).
_fc_kernel = triton.jit(_gemm1x1_kernel.fn, do_not_specialize=("ITERS",))


def _check_scale(x_scale, dtype: torch.dtype) -> None:
    if x_scale is None:
        raise TypeError(f"x is {dtype}: avgpool_fc needs its per-tensor scale, x_scale=<a python float>")
    if isinstance(x_scale, bool) or not isinstance(x_scale, (int, float)):
        raise TypeError(f"x_scale must be a python float, got {type(x_scale).__name__}")
    if not (math.isfinite(x_scale) and x_scale > 0):
        raise ValueError(f"x_scale must be finite and > 0, got {x_scale}")


def _check_classifier(w: torch.Tensor, scale, in_inv) -> dict:
    """The GEMM's quantization keywords for classifier weights `w` [classes, C]: an 8-bit w
    needs `scale` (float32 [classes]) and `in_inv` (the pooled features' inverse scale); a
    float w takes neither."""
    if w.dtype not in QUANT_DTYPES:
        for name, v in (("scale", scale), ("in_inv", in_inv)):
            if v is not None:
                raise ValueError(f"{name}= is for an 8-bit classifier ({', '.join(map(str, QUANT_DTYPES))}), but w is "
                                 f"{w.dtype}")
        return {}
    check_dequant_scale(scale, w, product="s_features * s_w[class]", per="class")
    if in_inv is None:
        raise ValueError(f"w is {w.dtype}: pass in_inv= (a python float, the pooled features' inverse scale) to "
                         "quantize the features as the classifier loads them")
    return dict(s_ptr=scale, in_inv=_inverse_scale("in_inv", in_inv))


def _pooled_numel(N: int, C: int) -> int:
    # Rounded up to 4 floats so that the partials after it start 16-byte aligned, which the
    # JIT specializes on (vectorized stores).
    return -(-N * C // 4) * 4


def avgpool_fc(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    input_precision: str = "ieee",
    config: Config | None = None,
    workspace: torch.Tensor | None = None,
    counters: torch.Tensor | None = None,
    x_scale: float | None = None,
    scale: torch.Tensor | None = None,
    in_inv: float | None = None,
) -> torch.Tensor:
    """logits = mean over H, W of x, times w^T, plus b: torchvision's avgpool + flatten + fc.

    x: [N, C, H, W] channels_last, float16 / bfloat16 / float32, or 8-bit codes (int8,
    float8_e4m3fn) with their per-tensor scale `x_scale` (a python float > 0, required for
    8-bit x and only there): the pooled features are then float32(sum of the codes) *
    float32(x_scale / (H*W)), the sum exact in float32 (for e4m3fn while H*W <= 73).
    w: [classes, C] contiguous, in x's dtype (float x) or any float dtype (8-bit x); or an
    8-bit classifier (int8 or float8_e4m3fn, symmetric per class, for float or 8-bit x) with
    `scale` (float32 [classes]: s_features * s_w[class]) and `in_inv` (a python float: the
    pooled features' inverse scale, 1 / s_features): the float32 pooled features are quantized
    as the GEMM loads them (kernels/quant.py: one float32 multiply, round half to even, clamp;
    the e4m3 cast), summed in int32 (int8) or float32 (e4m3), and the logits are float32(acc) *
    scale + b, in float32. Pointer configs only, BLOCK_K >= 32.
    b: [classes] float32.
    Returns float32 logits [N, classes], or writes them into `out` (any float dtype: the
    engine asks for the input's dtype, rounded once from fp32). The pooled features
    are kept in float32 and rounded to w's dtype only as the product's input.
    `config` is the linear layer's GEMM config (a "conv1x1" config, SPLIT_K included);
    `workspace`: float32 scratch of at least `head_workspace_numel(...)` elements (else a
    fresh buffer); `counters`: a fused split's arrival counters (see conv_bn_relu). Two
    launches, three when split unfused. A TMA config runs the linear layer on the TMA GEMM
    (kernels/gemm_tma.py).
    """
    check_tensor("x", x, rank=4, dtypes=(*FLOAT_DTYPES, *QUANT_DTYPES))
    check_tensor("w", w, rank=2, dtypes=(*FLOAT_DTYPES, *QUANT_DTYPES))
    quantized = x.dtype in QUANT_DTYPES
    if quantized:
        _check_scale(x_scale, x.dtype)
    elif x_scale is not None:
        raise ValueError(f"x_scale is the scale of 8-bit x, but x is {x.dtype}: leave it out")
    elif w.dtype not in QUANT_DTYPES:
        check_same_dtype("x", x, w=w)
    check_device(x=x, w=w, b=b, out=out, scale=scale)
    quant = _check_classifier(w, scale, in_inv)
    check_fp8_device(x.device, w)
    check_channels_last("x", x)
    N, C, H, W = x.shape
    CLS, CW = w.shape
    if CW != C:
        raise ValueError(f"w has {CW} input features (shape {tuple(w.shape)}) but x has {C} channels (shape {tuple(x.shape)})")
    check_bias(b, CLS)
    if w.stride(1) != 1:
        raise ValueError(f"w must be contiguous in its input features, got strides {tuple(w.stride())}")
    if H < 1 or W < 1:
        raise ValueError(f"x has an empty spatial size {H}x{W}")
    if out is not None and (tuple(out.shape) != (N, CLS) or out.dtype not in FLOAT_DTYPES):
        raise ValueError(f"out must be a float tensor of shape {(N, CLS)}, got {out.dtype} with shape {tuple(out.shape)}")
    precision = check_precision(input_precision, w.dtype)
    cfg = config or fc_config(N, C, CLS, w.dtype, x.device)
    if cfg.tma:
        check_float_weights(cfg, w)
    check_block_k(cfg, w)
    splits, iters, _ = conv_split(cfg, M=N, C=C, CO=CLS)
    need = head_workspace_numel(N, C, CLS, cfg)
    check_workspace(workspace, need, x=x, w=w, b=b, out=out)
    y = out if out is not None else torch.empty((N, CLS), device=x.device, dtype=torch.float32)
    if N == 0:
        return y
    ws = workspace if workspace is not None else torch.empty(need, device=x.device, dtype=torch.float32)
    # An int8 classifier's split partials are int32 (exact), in the same float32 buffer.
    pooled, partials = ws[: N * C], ws[_pooled_numel(N, C):].view(partials_dtype(w))

    # The pool's config space has no 8-bit entries: 8-bit codes take float16's tile (it sums
    # in float32 for every dtype).
    pcfg = select_config("avgpool", torch.float16 if quantized else x.dtype, M=H * W, N=C)
    grid = (N, triton.cdiv(C, pcfg.BLOCK_N))
    if quantized:
        # Rounded to float32 here, so that the kernel's float32 argument is exactly this.
        factor = torch.tensor(x_scale / (H * W), dtype=torch.float32).item()
        launch(_avgpool_8bit_kernel, grid,
            x, pooled, C, H * W, W, *nhwc_strides(x), C, factor, **pcfg.launch_kwargs("BLOCK_M", "BLOCK_N"),
        )
    else:
        launch(_avgpool_kernel, grid,
            x, pooled, C, H * W, W, *nhwc_strides(x), C, **pcfg.launch_kwargs("BLOCK_M", "BLOCK_N"),
        )

    # The linear layer is a 1x1 conv over a 1x1 "image" per sample: pooled [N, C] as NHWC
    # rows, logits [N, CLS] likewise; the bias is added in the epilogue (or the split sum).
    y4 = y.view(N, CLS, 1, 1) if y.is_contiguous() else y.unsqueeze(2).unsqueeze(3)
    ys = nhwc_strides(y4)
    if cfg.tma:
        from .gemm_tma import launch_gemm_tma

        launch_gemm_tma(pooled, C, w, b, None, y4, M=N, C=C, CO=CLS, OH=1, OW=1, relu=False, precision=precision,
                        config=cfg, workspace=partials if splits > 1 else None, counters=counters, fc=True)
        return y
    tiles = triton.cdiv(N, cfg.BLOCK_M) * triton.cdiv(CLS, cfg.BLOCK_N)
    fused = splits > 1 and cfg.fused_split
    launch(_fc_kernel, (tiles, splits),
        pooled, w, b, y4, y4, partials if splits > 1 else b, split_counters(counters, tiles, b) if fused else b,
        N, C, 1, 1, CLS, 1, 1, iters, 1, 1,
        C, C, C, 1,
        w.stride(0), 1,
        *ys, *ys, split_plane(N, CLS) if splits > 1 else 0,
        HAS_RESIDUAL=False, RELU=False, INPUT_PRECISION=precision, SPLIT=splits > 1, FUSED=fused, POOL=False,
        **cfg.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"), **quant,
    )
    if splits > 1 and not fused:
        reduce_partials(partials, splits, b, None, y4, M=N, OH=1, OW=1, relu=False,
                        quant={"s_ptr": quant["s_ptr"]} if quant else None)
    return y
