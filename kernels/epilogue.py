"""The fused epilogue shared by the GEMM-type conv kernels: + bias, + residual, ReLU, store."""
from __future__ import annotations

import triton
import triton.language as tl

from .indexing import nhwc_rows


@triton.jit
def bias_residual_relu_store(
    acc, rm, rn, m_ok, n_ok,
    b_ptr, r_ptr, y_ptr,
    OH, OW,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
):
    # Done in fp32 while the accumulator is still in registers: one rounding, at the store.
    acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0)[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_RESIDUAL:
        # The residual has its own strides: a strided view as shortcut stays correct.
        r_row, _, _ = nhwc_rows(rm, OH, OW, 1, 1, 0, 0, srn, srh, srw)
        res = tl.load(r_ptr + r_row[:, None] + rn[None, :] * src, mask=mask, other=0.0)
        acc += res.to(tl.float32)
    if RELU:
        # where(), not maximum(): NaN must propagate as in torch.relu.
        acc = tl.where(acc < 0.0, 0.0, acc)
    y_row, _, _ = nhwc_rows(rm, OH, OW, 1, 1, 0, 0, syn, syh, syw)
    tl.store(y_ptr + y_row[:, None] + rn[None, :] * syc, acc.to(y_ptr.dtype.element_ty), mask=mask)
