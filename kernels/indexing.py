"""Index arithmetic shared by the GEMM-type kernels.

Offsets into activations are int64: a batch of NHWC activations passes 2**31 elements long
before anything else gives out (ResNet-50's stem output at batch 2048 is 1.6e9 elements),
and an int32 overflow there would read and write the wrong pixels silently.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_device


@triton.jit
def nhwc_rows(
    m,  # [BLOCK_M] flattened output-pixel indices n*OH*OW + oh*OW + ow
    OH, OW, SH, SW, PH, PW,
    sn, sh, sw,
):
    """Map output pixels to (int64 offset of input pixel (n, oh*SH-PH, ow*SW-PW), ih0, iw0)."""
    ohw = OH * OW
    n = m // ohw
    rem = m - n * ohw
    oh = rem // OW
    ow = rem - oh * OW
    ih0 = oh * SH - PH
    iw0 = ow * SW - PW
    base = n.to(tl.int64) * sn + ih0.to(tl.int64) * sh + iw0.to(tl.int64) * sw
    return base, ih0, iw0


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program id -> (tile row, tile column), GROUP_M row-tiles at a time so that the weight
    tiles they share are still in L2."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    group_rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows
    return pid_m, pid_n


@triton.jit
def _rows_probe_kernel(
    out_ptr, m_ptr,
    COUNT, OH, OW, SH, SW, PH, PW,
    sn, sh, sw,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < COUNT
    m = tl.load(m_ptr + i, mask=ok, other=0)
    base, ih0, iw0 = nhwc_rows(m, OH, OW, SH, SW, PH, PW, sn, sh, sw)
    tl.store(out_ptr + i, base, mask=ok)


def nhwc_row_offsets(
    m: torch.Tensor, *, out_hw: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
    strides: tuple[int, int, int],
) -> torch.Tensor:
    """Run `nhwc_rows` on int32 pixel indices `m` [COUNT]; returns the int64 offsets [COUNT].

    Exposed so the overflow boundary can be tested without allocating 2**31 elements.
    """
    check_device(m=m)
    if m.dtype != torch.int32 or m.dim() != 1:
        raise TypeError(f"m must be a 1-D int32 tensor, got {m.dtype} with shape {tuple(m.shape)}")
    out = torch.empty(m.shape, dtype=torch.int64, device=m.device)
    BLOCK = 128
    _rows_probe_kernel[(triton.cdiv(m.numel(), BLOCK),)](
        out, m, m.numel(), *out_hw, *stride, *padding, *strides, BLOCK=BLOCK,
    )
    return out
