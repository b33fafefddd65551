"""The bottleneck 1x1 convolutions as a plain GEMM: [N*OH*OW, Cin] x [Cin, Cout].

Stride 2 (the downsample projection) only changes which input pixel a GEMM row reads; no
spatial bounds exist (padding is 0), so the K loop runs over channels alone.

pool=True (timm's `d` shortcut: AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), then
the 1x1 conv) averages each row's 2x2 input window as the A tile is loaded: a window clipped by
an odd H or W averages the pixels it has, as count_include_pad=False does. No pooled copy of
the activation is ever written.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import nhwc_strides
from .config import Config, select_config
from .conv import ConvGeometry, alloc_nhwc, check_conv_args
from .indexing import grouped_tile, nhwc_rows
from .gemm_tma import launch_gemm_tma
from .splitk import conv_split, finish_tile, reduce_partials, split_counters, split_workspace
from .launch import launch
from .quant import check_block_k, gemm_operand, mma, partials_dtype


@triton.jit
def _pooled_k_loop(acc, x_ptr, w_ptr, x_row, rn, m_ok, n_ok, h_ok, w_ok, inv, k_lo, k_hi, C, sxh, sxw, sxc, swo, swc,
                   INPUT_PRECISION: tl.constexpr, STEP_K: tl.constexpr, STAGES: tl.constexpr):
    """The K loop with a 2x2-averaged A tile (timm's average-pool shortcut): the window's four
    pixels summed in fp32 and rounded once to the GEMM's dtype, as torch's pool output is.
    Four A loads per step: half the config's K step, pipelined two stages deep (16-bit) or not
    at all (float32), or their registers and buffers outgrow the tile's (the gate measured 248
    KiB of shared memory at 128x64x64 float16, 4 warps, 4 stages, and 24 B spills at its full K
    step, and at 128x64x32 float32 two stages deep)."""
    rk = tl.arange(0, STEP_K)
    a_ptrs = x_ptr + x_row[:, None] + (k_lo + rk)[None, :] * sxc
    b_ptrs = w_ptr + rn.to(tl.int64)[None, :] * swo + (k_lo + rk)[:, None] * swc
    for k0 in tl.range(k_lo, k_hi, STEP_K, num_stages=STAGES):
        k_ok = (k0 + rk) < C
        mk = m_ok[:, None] & k_ok[None, :]
        a = tl.load(a_ptrs, mask=mk, other=0.0).to(tl.float32)
        a += tl.load(a_ptrs + sxw, mask=mk & w_ok[:, None], other=0.0).to(tl.float32)
        a += tl.load(a_ptrs + sxh, mask=mk & h_ok[:, None], other=0.0).to(tl.float32)
        a += tl.load(a_ptrs + sxh + sxw, mask=mk & (h_ok & w_ok)[:, None], other=0.0).to(tl.float32)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot((a * inv[:, None]).to(b.dtype), b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += STEP_K * sxc
        b_ptrs += STEP_K * swc
    return acc


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (the strides depend on channel counts only,
# the split-K plane stride is padded to 16 elements: kernels/splitk.py).
@triton.jit(do_not_specialize=("M", "OH", "OW", "ITERS", "H", "W"))
def _gemm1x1_kernel(
    # pointers (cnt_ptr: the fused split's arrival counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr,
    # sizes (ITERS: K-loop iterations per split, all of them when unsplit; H, W: the input's,
    # read only by POOL)
    M, C, OH, OW, CO, SH, SW, ITERS, H, W,
    # strides (elements, in n, h, w, c order; weights in cout, cin order; the split-K
    # workspace's plane)
    sxn, sxh, sxw, sxc,
    swo, swc,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    FUSED: tl.constexpr, POOL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit GEMMs only (kernels/quant.py, as _conv_kernel's; None for float weights)
    s_ptr=None, in_inv=None, r_scale=None, out_inv=None,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CO, BLOCK_M, BLOCK_N, GROUP_M)
    # Split-K: this program sums channels [k_lo, k_hi) (program_id(1) is 0 when unsplit).
    pid_k = tl.program_id(1)
    k_lo = pid_k * ITERS * BLOCK_K
    k_hi = tl.minimum(k_lo + ITERS * BLOCK_K, C)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < CO
    x_row, ih0, iw0 = nhwc_rows(rm, OH, OW, SH, SW, 0, 0, sxn, sxh, sxw)
    a_ptrs = x_ptr + x_row[:, None] + (k_lo + rk)[None, :] * sxc
    if POOL:
        # The window's second row / column exists unless it falls past an odd H / W.
        h_ok = (ih0 + 1) < H
        w_ok = (iw0 + 1) < W
        inv = 1.0 / ((1.0 + h_ok.to(tl.float32)) * (1.0 + w_ok.to(tl.float32)))
    b_ptrs = w_ptr + rn.to(tl.int64)[None, :] * swo + (k_lo + rk)[:, None] * swc

    # int8 x int8 products sum exactly in int32; float and e4m3 ones in float32.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
    if POOL:
        acc = _pooled_k_loop(acc, x_ptr, w_ptr, x_row, rn, m_ok, n_ok, h_ok, w_ok, inv, k_lo, k_hi, C, sxh, sxw, sxc,
                             swo, swc, INPUT_PRECISION, max(BLOCK_K // 2, 16),
                             2 if x_ptr.dtype.element_ty.primitive_bitwidth == 16 else 1)
    else:
        for k0 in range(k_lo, k_hi, BLOCK_K):
            # Against C, not k_hi: splits are whole BLOCK_K steps, and C's known divisibility by 16
            # keeps the loads vectorized.
            k_ok = (k0 + rk) < C
            a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            # The cast is a no-op except in the classifier head, whose pooled features are float32,
            # and in an 8-bit GEMM reading a float input (quantized here).
            acc = mma(gemm_operand(a, b.dtype, in_inv), b, acc, INPUT_PRECISION)
            a_ptrs += BLOCK_K * sxc
            b_ptrs += BLOCK_K * swc

    finish_tile(
        acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k, OH, OW, CO,
        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, SPLIT, FUSED, s_ptr, r_scale, out_inv,
    )


def conv1x1_config(g: ConvGeometry, dtype: torch.dtype, device: torch.device | None = None) -> Config:
    """The launcher's own config for a 1x1 conv of geometry `g` (the engine fixes it per layer)."""
    return select_config("conv1x1", dtype, M=g.M, N=g.CO, K=g.C, device=device)


def conv1x1(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    stride: int | tuple[int, int] = 1,
    pool: bool = False,
    relu: bool = True,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    input_precision: str = "ieee",
    config: Config | None = None,
    workspace: torch.Tensor | None = None,
    counters: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    in_inv: float | None = None,
    residual_scale: float | None = None,
    out_inv: float | None = None,
) -> torch.Tensor:
    """y = relu(x @ w^T + b (+ residual)) over pixels: a 1x1 conv (no padding), fused (one launch, two if split).

    x: [N, Cin, H, W] channels_last, float16 / bfloat16 / float32.
    w: [Cout, Cin, 1, 1] channels_last, x's dtype.  b: [Cout] float32.
    residual: [N, Cout, OH, OW] channels_last, x's dtype; OH = (H-1)//stride + 1.
    pool: average each 2x2/`stride` window first (stride must be 2): timm's AvgPool2d(2, 2,
    ceil_mode=True, count_include_pad=False) then the 1x1 conv, one launch; OH = ceil(H/2).
    Returns y: [N, Cout, OH, OW] channels_last in x's dtype (written into `out` if given).
    A config with SPLIT_K > 1 takes two launches (split K loop, then the sum with the
    epilogue), one if it is fused (``fused_split``); see conv_bn_relu for `workspace` and
    `counters`. A TMA config (``variant="tma"`` / ``"tma_ws"``, kernels/gemm_tma.py) needs
    stride 1 and dense, 16-byte aligned pixel rows.
    Quantized: w int8 or float8_e4m3fn with scale, in_inv, residual_scale, out_inv as in
    conv_bn_relu (pointer and TMA configs; pool=True runs float weights only).
    """
    if isinstance(w, torch.Tensor) and w.dim() == 4 and tuple(w.shape[2:]) != (1, 1):
        raise ValueError(f"conv1x1 needs a [Cout, Cin, 1, 1] weight, got shape {tuple(w.shape)}: use conv_bn_relu")
    g = check_conv_args(x, w, b, stride, 0, residual, out, input_precision, scale=scale, in_inv=in_inv,
                        residual_scale=residual_scale, out_inv=out_inv)
    if pool and (g.SH, g.SW) != (2, 2):
        raise ValueError(f"conv1x1(pool=True) averages 2x2 windows at stride 2, got stride {(g.SH, g.SW)} for x of "
                         f"shape {tuple(x.shape)}")
    if pool and g.q.scale is not None:
        raise ValueError(f"conv1x1(pool=True) runs float weights only, got w {w.dtype} of shape {tuple(w.shape)}")
    cfg = config or conv1x1_config(g, w.dtype, x.device)
    if cfg.tma and pool:
        raise ValueError(f"config {cfg.name}: the TMA GEMM cannot average-pool its A tile; use a pointer-load config")
    check_block_k(cfg, w)
    if cfg.tma:
        return _conv1x1_tma(x, w, b, g, relu, residual, out, cfg, workspace, counters)
    splits, iters, _ = conv_split(cfg, M=g.M, C=g.C, CO=g.CO)
    ws, sws = split_workspace(workspace, splits, g.M, g.CO, b, partials=partials_dtype(w), x=x, w=w, b=b,
                              residual=residual, out=out, scale=g.q.scale)
    y = out if out is not None else alloc_nhwc(g.out_shape, x, g.q.out_dtype)
    if g.M == 0:
        return y
    r = residual if residual is not None else y
    tiles = triton.cdiv(g.M, cfg.BLOCK_M) * triton.cdiv(g.CO, cfg.BLOCK_N)
    fused = splits > 1 and cfg.fused_split
    cnt = split_counters(counters, tiles, b) if fused else b
    launch(_gemm1x1_kernel, (tiles, splits),
        x, w, b, r, y, ws, cnt,
        g.M, g.C, g.OH, g.OW, g.CO, g.SH, g.SW, iters, x.shape[2], x.shape[3],
        *nhwc_strides(x), w.stride(0), w.stride(1),
        *nhwc_strides(r), *nhwc_strides(y), sws,
        HAS_RESIDUAL=residual is not None, RELU=bool(relu), INPUT_PRECISION=g.precision, SPLIT=splits > 1,
        FUSED=fused, POOL=bool(pool), **cfg.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"),
        **g.q.kernel_args,
    )
    if splits > 1 and not fused:
        reduce_partials(ws, splits, b, residual, y, M=g.M, OH=g.OH, OW=g.OW, relu=relu, quant=g.q.kernel_args)
    return y


def _conv1x1_tma(x, w, b, g: ConvGeometry, relu, residual, out, cfg: Config, workspace, counters) -> torch.Tensor:
    if (g.SH, g.SW) != (1, 1):
        raise ValueError(f"config {cfg.name}: the TMA GEMM runs 1x1 convs of stride 1, got stride {(g.SH, g.SW)} "
                         f"for x of shape {tuple(x.shape)}")
    # Its pixels must be the rows of one [M, Cin] matrix: dense channels_last, not the interior
    # window of a bordered map (whose rows jump over the border).
    if not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"config {cfg.name}: the TMA GEMM reads x's pixels as one dense [M, Cin] matrix, got x of "
                         f"shape {tuple(x.shape)} with strides {tuple(x.stride())} (use a pointer config)")
    y = out if out is not None else alloc_nhwc(g.out_shape, x, g.q.out_dtype)
    if g.M == 0:
        return y
    launch_gemm_tma(x, g.C, w.as_strided((g.CO, g.C), (w.stride(0), w.stride(1))),
                    b, residual, y, M=g.M, C=g.C, CO=g.CO, OH=g.OH, OW=g.OW, relu=relu, precision=g.precision,
                    config=cfg, workspace=workspace, counters=counters, quant=g.q.kernel_args)
    return y
