"""Max pooling over NHWC activations (the ResNet stem's 3x3 / 2 pool).

8-bit activations (int8, float8_e4m3fn) pool in their own dtype and keep their scale: a
per-tensor symmetric quantization is monotonic, so the max of the codes is the code of the
max. Nothing is converted: int8 codes compare as integers; e4m3fn codes are read as their
int8 bits and mapped to integers in the order of their values (no float<->fp8 cast, which
triton's interpreter gets wrong), and the winning bits are stored back. The kernel tells the
three apart by its pointers' element type, so the float binaries are what they were.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import (
    FLOAT_DTYPES, check_channels_last, check_device, check_like, check_no_overlap, check_tensor, nhwc_strides, out_size,
    pair,
)
from .config import Config, select_config
from .indexing import nhwc_rows
from .launch import launch
from .targets import QUANT_DTYPES


@triton.jit
def _e4m3_key(b):
    """e4m3fn bits (the int8 read as int32) -> an int32 in the order of the values: 0..126 for
    +0..448, -1..-127 for -0..-448 (-0 below +0: equal values, either is right), 127 for a NaN
    of either sign (it wins, as torch's NaN does)."""
    return tl.where((b & 0x7F) == 0x7F, 127, tl.where(b >= 0, b, -b - 129))


@triton.jit
def _e4m3_bits(k):
    """The inverse of _e4m3_key: the int8 bits (a NaN comes back as +NaN, 0x7F)."""
    return tl.where(k >= 0, k, -k - 129).to(tl.int8)


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (strides past them only depend on channel counts).
@triton.jit(do_not_specialize=("P", "H", "W", "OH", "OW"))
def _max_pool_kernel(
    # pointers (float, int8 or e4m3fn; y in x's type)
    x_ptr, y_ptr,
    # sizes
    P, H, W, C, OH, OW, SH, SW, PH, PW,
    # strides (n, h, w, c)
    sxn, sxh, sxw, sxc,
    syn, syh, syw, syc,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rp = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rc = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    p_ok = rp < P
    c_ok = rc < C
    x_row, ih0, iw0 = nhwc_rows(rp, OH, OW, SH, SW, PH, PW, sxn, sxh, sxw)
    INT8: tl.constexpr = x_ptr.dtype.element_ty == tl.int8
    E4M3: tl.constexpr = x_ptr.dtype.element_ty == tl.float8e4nv
    # Padding never wins: it reads as -inf, or as the least 8-bit code (-128; e4m3fn: -448,
    # bits 0xFE, key -127).
    if INT8:
        acc = tl.full((BLOCK_M, BLOCK_N), -128, tl.int32)
    elif E4M3:
        acc = tl.full((BLOCK_M, BLOCK_N), -127, tl.int32)
        x_bits = x_ptr.to(tl.pointer_type(tl.int8), bitcast=True)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ih0 + kh
            iw = iw0 + kw
            ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            offs = (x_row + (kh * sxh + kw * sxw))[:, None] + rc[None, :] * sxc
            mask = ok[:, None] & c_ok[None, :]
            if INT8:
                acc = tl.maximum(acc, tl.load(x_ptr + offs, mask=mask, other=-128).to(tl.int32))
            elif E4M3:
                acc = tl.maximum(acc, _e4m3_key(tl.load(x_bits + offs, mask=mask, other=-2).to(tl.int32)))
            else:
                v = tl.load(x_ptr + offs, mask=mask, other=float("-inf"))
                # NaN wins, as in torch.max_pool2d.
                acc = tl.maximum(acc, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    y_row, _, _ = nhwc_rows(rp, OH, OW, 1, 1, 0, 0, syn, syh, syw)
    y_offs = y_row[:, None] + rc[None, :] * syc
    y_mask = p_ok[:, None] & c_ok[None, :]
    if INT8:
        tl.store(y_ptr + y_offs, acc.to(tl.int8), mask=y_mask)
    elif E4M3:
        tl.store(y_ptr.to(tl.pointer_type(tl.int8), bitcast=True) + y_offs, _e4m3_bits(acc), mask=y_mask)
    else:
        tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int] = 3,
    stride: int | tuple[int, int] | None = 2,
    padding: int | tuple[int, int] = 1,
    *,
    out: torch.Tensor | None = None,
    config: Config | None = None,
) -> torch.Tensor:
    """torch.nn.functional.max_pool2d over a channels_last [N, C, H, W] tensor.

    x: float16 / bfloat16 / float32, or 8-bit codes (int8, float8_e4m3fn), whose output has
    the input's scale: bit for bit the requantized max of the dequantized values.
    Padding never wins; NaN propagates (an e4m3fn NaN comes out as 0x7F). stride=None means
    kernel_size. Returns [N, C, OH, OW] channels_last in x's dtype (written into `out` if given).
    """
    check_tensor("x", x, rank=4, dtypes=(*FLOAT_DTYPES, *QUANT_DTYPES))
    check_device(x=x, out=out)
    check_channels_last("x", x)
    KH, KW = pair("kernel_size", kernel_size)
    SH, SW = pair("stride", kernel_size if stride is None else stride)
    PH, PW = pair("padding", padding)
    if KH < 1 or KW < 1 or SH < 1 or SW < 1:
        raise ValueError(f"kernel_size and stride must be >= 1, got kernel_size={kernel_size}, stride={stride}")
    if not (0 <= PH <= KH // 2 and 0 <= PW <= KW // 2):
        raise ValueError(f"padding must be between 0 and half the kernel size {(KH, KW)}, got {(PH, PW)}")
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    if OH < 1 or OW < 1:
        raise ValueError(f"empty output: input {H}x{W} with kernel {(KH, KW)}, stride {(SH, SW)}, padding {(PH, PW)}")
    shape = (N, C, OH, OW)
    check_like("out", out, shape, x.dtype, window=True)
    check_no_overlap("out", out, x=x)
    y = out if out is not None else torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    P = N * OH * OW
    if P == 0 or C == 0:
        return y
    # The pool's config space has no 8-bit entries: 8-bit codes take float16's tile (its
    # accumulator is 32-bit for every dtype).
    cfg = config or select_config("max_pool2d", torch.float16 if x.dtype in QUANT_DTYPES else x.dtype)
    grid = (triton.cdiv(P, cfg.BLOCK_M), triton.cdiv(C, cfg.BLOCK_N))
    launch(_max_pool_kernel, grid,
        x, y, P, H, W, C, OH, OW, SH, SW, PH, PW, *nhwc_strides(x), *nhwc_strides(y),
        KH=KH, KW=KW, **cfg.launch_kwargs("BLOCK_M", "BLOCK_N"),
    )
    return y
