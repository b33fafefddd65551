"""The classifier head: global average pool fused with the final linear layer."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import (
    FLOAT_DTYPES, check_bias, check_channels_last, check_device, check_precision, check_same_dtype, check_tensor, nhwc_strides,
)
from .config import Config, select_config


@triton.jit
def _avgpool_fc_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes
    N, C, H, W, CLS,
    # strides (x: n, h, w, c; w: class, channel; y: n, class)
    sxn, sxh, sxw, sxc,
    swo, swc,
    syn, syo,
    # meta-parameters
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < N
    n_ok = rn < CLS
    x_row = rm.to(tl.int64) * sxn
    inv_hw = 1.0 / (H * W)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        c = k0 + rk
        c_ok = c < C
        mask = m_ok[:, None] & c_ok[None, :]
        # The pooled features never leave registers: sum in fp32, scale once.
        pooled = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for h in range(0, H):
            for w in range(0, W):
                pooled += tl.load(
                    x_ptr + (x_row + (h * sxh + w * sxw))[:, None] + c[None, :] * sxc, mask=mask, other=0.0
                ).to(tl.float32)
        pooled = pooled * inv_hw
        wt = tl.load(w_ptr + rn.to(tl.int64)[None, :] * swo + c[:, None] * swc, mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(pooled.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION)
    acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0)[None, :]
    tl.store(y_ptr + rm.to(tl.int64)[:, None] * syn + rn[None, :] * syo, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def avgpool_fc(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    input_precision: str = "ieee",
    config: Config | None = None,
) -> torch.Tensor:
    """logits = mean over H, W of x, times w^T, plus b: torchvision's avgpool + flatten + fc.

    x: [N, C, H, W] channels_last, float16 / bfloat16 / float32.
    w: [classes, C] in x's dtype (contiguous).  b: [classes] float32.
    Returns float32 logits [N, classes], or writes them into `out` (any float dtype: the
    engine asks for the input's dtype, rounded once from fp32). The pooled features
    are kept in float32 and rounded to x's dtype only as the product's input.
    """
    check_tensor("x", x, rank=4)
    check_tensor("w", w, rank=2)
    check_same_dtype("x", x, w=w)
    check_device(x=x, w=w, b=b, out=out)
    check_channels_last("x", x)
    N, C, H, W = x.shape
    CLS, CW = w.shape
    if CW != C:
        raise ValueError(f"w has {CW} input features (shape {tuple(w.shape)}) but x has {C} channels (shape {tuple(x.shape)})")
    check_bias(b, CLS)
    if H < 1 or W < 1:
        raise ValueError(f"x has an empty spatial size {H}x{W}")
    if out is not None and (tuple(out.shape) != (N, CLS) or out.dtype not in FLOAT_DTYPES):
        raise ValueError(f"out must be a float tensor of shape {(N, CLS)}, got {out.dtype} with shape {tuple(out.shape)}")
    precision = check_precision(input_precision, x.dtype)
    y = out if out is not None else torch.empty((N, CLS), device=x.device, dtype=torch.float32)
    if N == 0:
        return y
    cfg = config or select_config("avgpool_fc", x.dtype, M=N, N=CLS, K=C, device=x.device)
    grid = (triton.cdiv(N, cfg.BLOCK_M), triton.cdiv(CLS, cfg.BLOCK_N))
    _avgpool_fc_kernel[grid](
        x, w, b, y, N, C, H, W, CLS, *nhwc_strides(x), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
        INPUT_PRECISION=precision, **cfg.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K"),
    )
    return y
