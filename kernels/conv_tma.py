"""KxK convolutions with TMA loads on Hopper: the weights always, the activations at stride 1.

Weights [Cout, KH, KW, Cin] are a 2-D [Cout, KH*KW*Cin] tensor: a BLOCK_N x BLOCK_K box at
column tap*Cin + c0 is one tap's channel block (Cin must be a multiple of BLOCK_K, so that a
box never straddles two taps). Activations (``variant="tma"``, stride 1): a 4-D box
[1, 1, BLOCK_M, BLOCK_K] of the NHWC input at (n, oh + kh - PH, ow0 + kw - PW, c0), i.e. one
tap of BLOCK_M consecutive output pixels of one output row; the TMA unit zero-fills every
element outside the image (negative coordinates included), which is exactly the conv's zero
padding, and the box stays in shared memory for wgmma (a box spanning several rows would
have to be reshaped in registers: measured, 186 registers and A from registers). The price is
that a tile covers one row segment: a map narrower than BLOCK_M leaves rows of the tile idle
(bench/NOTES.md counts it per stage). ``variant="tma_w"``: the activations by pointer loads,
as kernels/conv.py does (any stride and padding), the weights by TMA. int8 and e4m3 weights
take the pointer kernels' 8-bit epilogue (kernels/quant.py), the input 8-bit or a float one
quantized as its tile is loaded.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import nhwc_strides
from .config import Config, m_tiles
from .gemm_tma import check_tma_rows
from .indexing import grouped_tile, nhwc_rows
from .launch import ensure_tma_allocator, launch
from .quant import gemm_operand, mma, partials_dtype
from .splitk import conv_split, finish_tile, split_counters, split_workspace


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (strides past them only depend on channel counts).
@triton.jit(do_not_specialize=("M", "MT", "N", "H", "W", "OH", "OW", "ITERS"))
def _conv_tma_kernel(
    # pointers (cnt_ptr: the fused split's arrival counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr,
    # sizes (MT: rows of the tile grid's M axis: output pixels, or for TMA activations
    # N*OH*ceil(OW / BLOCK_M) row segments times BLOCK_M; ITERS: K-loop steps per split)
    M, MT, N, H, W, C, OH, OW, CO, SH, SW, PH, PW, ITERS,
    # strides (elements, in n, h, w, c order; the weights' output-channel rows; the split-K
    # workspace's plane)
    sxn, sxh, sxw, sxc,
    swo,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr, A_TMA: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit GEMMs only (kernels/quant.py, as _conv_kernel's; None for float weights)
    s_ptr=None, in_inv=None, r_scale=None, out_inv=None,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), MT, CO, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[CO, KH * KW * C], strides=[swo, 1],
                                       block_shape=[BLOCK_N, BLOCK_K])
    if A_TMA:
        # Tile pid_m: segment `seg` of output row (n, oh).
        segs = tl.cdiv(OW, BLOCK_M)
        row = pid_m // segs
        ow0 = (pid_m - row * segs) * BLOCK_M
        n = row // OH
        oh = row - n * OH
        ow = ow0 + tl.arange(0, BLOCK_M)
        m_ok = ow < OW
        rm = row * OW + ow
        x_desc = tl.make_tensor_descriptor(x_ptr, shape=[N, H, W, C], strides=[sxn, sxh, sxw, 1],
                                           block_shape=[1, 1, BLOCK_M, BLOCK_K])
    else:
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = rm < M
        x_row, ih0, iw0 = nhwc_rows(rm, OH, OW, SH, SW, PH, PW, sxn, sxh, sxw)
    rk = tl.arange(0, BLOCK_K)

    n_cb = C // BLOCK_K
    it0 = pid_k * ITERS
    it1 = tl.minimum(it0 + ITERS, KH * KW * n_cb)
    # int8 x int8 products sum exactly in int32; float and e4m3 ones in float32.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
    for it in range(it0, it1):
        tap = it // n_cb
        c0 = (it - tap * n_cb) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        b = w_desc.load([pid_n * BLOCK_N, tap * C + c0])
        if A_TMA:
            a = x_desc.load([n, oh - PH + kh, ow0 - PW + kw, c0]).reshape(BLOCK_M, BLOCK_K)
        else:
            ih = ih0 + kh
            iw = iw0 + kw
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(x_ptr + (x_row + (kh * sxh + kw * sxw))[:, None] + (c0 + rk)[None, :] * sxc,
                        mask=row_ok[:, None], other=0.0)
        # (an 8-bit conv reading a float input quantizes its A tile here; the weight box is
        # K-major, as wgmma takes 8-bit B operands)
        acc = mma(gemm_operand(a, b.dtype, in_inv), b.T, acc, INPUT_PRECISION)

    finish_tile(
        acc, rm, rn, m_ok, rn < CO, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k, OH, OW, CO,
        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, SPLIT, True, s_ptr, r_scale, out_inv,
    )


def tma_rows(g, config: Config) -> int:
    """MT: the rows of the tile grid's M axis for geometry `g` (see the kernel's arguments)."""
    return m_tiles(config, g.M, (g.N * g.OH, g.OW)) * config.BLOCK_M if config.variant == "tma" else g.M


def check_tma_weights(config: Config, g, w: torch.Tensor) -> None:
    """Raises ValueError where TMA cannot read `w` [Cout, KH, KW, Cin] as dense [Cout, KH*KW*Cin]
    rows in boxes of BLOCK_K input channels (every TMA conv's weight operand)."""
    if g.C % config.BLOCK_K:
        raise ValueError(f"config {config.name}: TMA weight boxes need Cin a multiple of BLOCK_K={config.BLOCK_K}, "
                         f"got w of shape {tuple(w.shape)}")
    swo, swc, swh, sww = w.stride()
    # (strides of size-1 dimensions are arbitrary: a 1x1 kernel's say nothing)
    if swc != 1 or (g.KW > 1 and sww != g.C) or (g.KH > 1 and swh != g.KW * g.C):
        raise ValueError(f"config {config.name}: TMA reads the weights as dense [Cout, KH*KW*Cin] rows, "
                         f"got w of shape {tuple(w.shape)} with strides {tuple(w.stride())}")
    check_tma_rows("w", w, swo)


def launch_conv_tma(x, w, b, g, relu: bool, residual, out, config: Config, workspace, counters, y) -> None:
    """Launch `_conv_tma_kernel` for the checked conv geometry `g` (kernels/conv.py checks the
    tensors; an 8-bit conv's scales are `g.q`); raises ValueError where `config`'s variant
    cannot run this conv."""
    if config.variant not in ("tma", "tma_w"):
        raise ValueError(f"config {config.name}: a conv's TMA variants are tma and tma_w")
    check_tma_weights(config, g, w)
    swo = w.stride(0)
    sxn, sxh, sxw, sxc = nhwc_strides(x)
    a_tma = config.variant == "tma"
    if a_tma:
        if (g.SH, g.SW) != (1, 1):
            raise ValueError(f"config {config.name}: TMA activations need stride 1, got stride {(g.SH, g.SW)} "
                             f"(variant tma_w loads them by pointer)")
        if sxc != 1:
            raise ValueError(f"config {config.name}: TMA activations need a channels_last x, got strides {tuple(x.stride())}")
        for s in (sxn, sxh, sxw):
            check_tma_rows("x", x, s)
    mt = tma_rows(g, config)
    splits, iters, _ = conv_split(config, M=g.M, C=g.C, CO=g.CO, KH=g.KH, KW=g.KW)
    ws, sws = split_workspace(workspace, splits, g.M, g.CO, b, partials=partials_dtype(w), x=x, w=w, b=b,
                              residual=residual, out=out, scale=g.q.scale)
    tiles = triton.cdiv(mt, config.BLOCK_M) * triton.cdiv(g.CO, config.BLOCK_N)
    cnt = split_counters(counters, tiles, b) if splits > 1 else b
    r = residual if residual is not None else y
    ensure_tma_allocator()
    launch(_conv_tma_kernel, (tiles, splits),
        x, w, b, r, y, ws, cnt,
        g.M, mt, g.N, g.H, g.W, g.C, g.OH, g.OW, g.CO, g.SH, g.SW, g.PH, g.PW, iters,
        sxn, sxh, sxw, sxc, swo,
        *nhwc_strides(r), *nhwc_strides(y), sws,
        KH=g.KH, KW=g.KW, A_TMA=a_tma, HAS_RESIDUAL=residual is not None, RELU=bool(relu),
        INPUT_PRECISION=g.precision, SPLIT=splits > 1,
        **config.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"), **g.q.kernel_args,
    )
