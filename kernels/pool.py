"""Max pooling over NHWC activations (the ResNet stem's 3x3 / 2 pool)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_channels_last, check_device, check_like, check_no_overlap, check_tensor, nhwc_strides, out_size, pair
from .config import Config, select_config
from .indexing import nhwc_rows
from .launch import launch


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (strides past them only depend on channel counts).
@triton.jit(do_not_specialize=("P", "H", "W", "OH", "OW"))
def _max_pool_kernel(
    # pointers
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
    acc = tl.full((BLOCK_M, BLOCK_N), float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ih0 + kh
            iw = iw0 + kw
            ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(
                x_ptr + (x_row + (kh * sxh + kw * sxw))[:, None] + rc[None, :] * sxc,
                mask=ok[:, None] & c_ok[None, :], other=float("-inf"),
            )
            # NaN wins, as in torch.max_pool2d.
            acc = tl.maximum(acc, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    y_row, _, _ = nhwc_rows(rp, OH, OW, 1, 1, 0, 0, syn, syh, syw)
    tl.store(
        y_ptr + y_row[:, None] + rc[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
        mask=p_ok[:, None] & c_ok[None, :],
    )


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

    Padding counts as -inf (never wins); NaN propagates. stride=None means kernel_size.
    Returns [N, C, OH, OW] channels_last in x's dtype (written into `out` if given).
    """
    check_tensor("x", x, rank=4)
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
    cfg = config or select_config("max_pool2d", x.dtype)
    grid = (triton.cdiv(P, cfg.BLOCK_M), triton.cdiv(C, cfg.BLOCK_N))
    launch(_max_pool_kernel, grid,
        x, y, P, H, W, C, OH, OW, SH, SW, PH, PW, *nhwc_strides(x), *nhwc_strides(y),
        KH=KH, KW=KW, **cfg.launch_kwargs("BLOCK_M", "BLOCK_N"),
    )
    return y
