"""Residual add + ReLU as its own kernel: the unfused path, kept for comparisons."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_channels_last, check_device, check_like, check_no_overlap, check_same_dtype, check_tensor
from .config import Config, select_config
from .launch import launch


# NUMEL (N*C*H*W) stays specialized: with C a multiple of 16 it is one at every batch and size
# (unspecialized, the kernel spilled 16 B on sm_100).
@triton.jit
def _add_relu_kernel(
    x_ptr, r_ptr, y_ptr,
    NUMEL,
    BLOCK_M: tl.constexpr,
):
    # int64: a flat index over a whole batch of activations can pass 2**31.
    i = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = i < NUMEL
    v = tl.load(x_ptr + i, mask=ok, other=0.0).to(tl.float32) + tl.load(r_ptr + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + i, tl.where(v < 0.0, 0.0, v).to(y_ptr.dtype.element_ty), mask=ok)


def add_relu(
    x: torch.Tensor, residual: torch.Tensor, *, out: torch.Tensor | None = None, config: Config | None = None
) -> torch.Tensor:
    """y = relu(x + residual), computed in float32, stored in x's dtype.

    x, residual: [N, C, H, W] channels_last, same shape and dtype (float16 / bfloat16 / float32).
    Returns y: [N, C, H, W] channels_last (written into `out` if given).
    """
    check_tensor("x", x, rank=4)
    check_tensor("residual", residual, rank=4)
    check_same_dtype("x", x, residual=residual)
    check_device(x=x, residual=residual, out=out)
    check_channels_last("x", x)
    check_like("residual", residual, tuple(x.shape), x.dtype)
    check_like("out", out, tuple(x.shape), x.dtype)
    check_no_overlap("out", out, x=x, residual=residual, elementwise=("x", "residual"))
    y = out if out is not None else torch.empty_like(x, memory_format=torch.channels_last)
    numel = x.numel()
    if numel == 0:
        return y
    cfg = config or select_config("add_relu", x.dtype)
    # All three are dense channels_last with one shape, so one flat index addresses them all.
    launch(_add_relu_kernel, (triton.cdiv(numel, cfg.BLOCK_M),), x, residual, y, numel, **cfg.launch_kwargs("BLOCK_M"))
    return y
