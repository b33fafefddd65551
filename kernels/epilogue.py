"""The fused epilogue shared by the GEMM-type conv kernels: + bias, + residual, ReLU, store.

An 8-bit GEMM (kernels/quant.py) passes its per-channel scale (s_ptr: the accumulator is
dequantized first), an 8-bit or scaled residual its residual_scale (r_scale), and an 8-bit
output its inverse scale (out_inv: quantized at the store). A float GEMM leaves them None: its
code is the same as without them.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .indexing import nhwc_rows
from .quant import dequantize, quantize


@triton.jit
def bias_residual_relu_store(
    acc, rm, rn, m_ok, n_ok,
    b_ptr, r_ptr, y_ptr,
    OH, OW,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    s_ptr=None, r_scale=None, out_inv=None,
):
    # Done in fp32 while the accumulator is still in registers: one rounding, at the store.
    acc = dequantize(acc, rn, n_ok, s_ptr)
    acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0)[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_RESIDUAL:
        # The residual has its own strides: a strided view as shortcut stays correct.
        r_row, _, _ = nhwc_rows(rm, OH, OW, 1, 1, 0, 0, srn, srh, srw)
        res = tl.load(r_ptr + r_row[:, None] + rn[None, :] * src, mask=mask, other=0.0).to(tl.float32)
        if r_scale is not None:
            res = res * r_scale
        acc += res
    if RELU:
        # where(), not maximum(): NaN must propagate as in torch.relu.
        acc = tl.where(acc < 0.0, 0.0, acc)
    y_row, _, _ = nhwc_rows(rm, OH, OW, 1, 1, 0, 0, syn, syh, syw)
    if out_inv is not None:
        y = quantize(acc, out_inv, y_ptr.dtype.element_ty)
    else:
        y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + y_row[:, None] + rn[None, :] * syc, y, mask=mask)
