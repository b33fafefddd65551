"""The bottleneck 1x1 convolutions as a plain GEMM: [N*OH*OW, Cin] x [Cin, Cout].

Stride 2 (the downsample projection) only changes which input pixel a GEMM row reads; no
spatial bounds exist (padding is 0), so the K loop runs over channels alone.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import nhwc_strides
from .config import Config, select_config
from .conv import alloc_nhwc, check_conv_args
from .epilogue import bias_residual_relu_store
from .indexing import grouped_tile, nhwc_rows


@triton.jit
def _gemm1x1_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    # sizes
    M, C, OH, OW, CO, SH, SW,
    # strides (elements, in n, h, w, c order; weights in cout, cin order)
    sxn, sxh, sxw, sxc,
    swo, swc,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CO, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < CO
    x_row, _, _ = nhwc_rows(rm, OH, OW, SH, SW, 0, 0, sxn, sxh, sxw)
    a_ptrs = x_ptr + x_row[:, None] + rk[None, :] * sxc
    b_ptrs = w_ptr + rn.to(tl.int64)[None, :] * swo + rk[:, None] * swc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        k_ok = (k0 + rk) < C
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * sxc
        b_ptrs += BLOCK_K * swc

    bias_residual_relu_store(
        acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, OH, OW,
        srn, srh, srw, src, syn, syh, syw, syc, HAS_RESIDUAL, RELU,
    )


def conv1x1(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    stride: int | tuple[int, int] = 1,
    relu: bool = True,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    input_precision: str = "ieee",
    config: Config | None = None,
) -> torch.Tensor:
    """y = relu(x @ w^T + b (+ residual)) over pixels: a 1x1 conv (no padding) in one launch.

    x: [N, Cin, H, W] channels_last, float16 / bfloat16 / float32.
    w: [Cout, Cin, 1, 1] channels_last, x's dtype.  b: [Cout] float32.
    residual: [N, Cout, OH, OW] channels_last, x's dtype; OH = (H-1)//stride + 1.
    Returns y: [N, Cout, OH, OW] channels_last in x's dtype (written into `out` if given).
    """
    if isinstance(w, torch.Tensor) and w.dim() == 4 and tuple(w.shape[2:]) != (1, 1):
        raise ValueError(f"conv1x1 needs a [Cout, Cin, 1, 1] weight, got shape {tuple(w.shape)}: use conv_bn_relu")
    g = check_conv_args(x, w, b, stride, 0, residual, out, input_precision)
    y = out if out is not None else alloc_nhwc(g.out_shape, x)
    if g.M == 0:
        return y
    cfg = config or select_config("conv1x1", x.dtype, M=g.M, N=g.CO, K=g.C, device=x.device)
    r = residual if residual is not None else y
    grid = (triton.cdiv(g.M, cfg.BLOCK_M) * triton.cdiv(g.CO, cfg.BLOCK_N),)
    _gemm1x1_kernel[grid](
        x, w, b, r, y,
        g.M, g.C, g.OH, g.OW, g.CO, g.SH, g.SW,
        *nhwc_strides(x), w.stride(0), w.stride(1),
        *nhwc_strides(r), *nhwc_strides(y),
        HAS_RESIDUAL=residual is not None, RELU=bool(relu), INPUT_PRECISION=g.precision,
        **cfg.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"),
    )
    return y
