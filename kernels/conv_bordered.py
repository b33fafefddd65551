"""Stride-1 KxK convolutions over a zero-bordered activation: every tap one 2-D TMA box.

The input is the interior view of a zero-bordered NHWC map: x [N, C, H, W] lives inside a
dense [N, C, H+2PH, W+2PW] channels_last tensor whose border (PH rows above and below, PW
columns left and right) holds zeros (``zero_bordered`` makes one; the engine's schedule gives
such a slot to every activation a bordered conv reads, zeroed once when its arena is bound).
Flattened, that map is a 2-D matrix [N*HP*WP, C] (HP = H+2PH, WP = W+2PW). A tile's rows are
BLOCK_M consecutive positions (n, hp, wp) of it, each the top-left corner of one output
pixel's window: output (n, oh, ow) sits at row n*HP*WP + oh*WP + ow, and its tap (kh, kw)
reads row + kh*DH*WP + kw*DW (the issue's centred form, (kh*DH - PH)*WP + (kw*DW - PW) from
the output's own position in the map, shifted by the constant PH*WP + PW). So one tap of a
tile is one [BLOCK_M, BLOCK_K] box at a constant row offset: the TMA unit brings it to shared
memory as it is, wgmma reads both operands there, and the K loop has no mask, no reshape and
no bounds arithmetic; the zero padding is the border's zeros. Rows whose window is not an
output (hp >= OH or wp >= OW: the border columns and rows between images) compute garbage
that the epilogue never stores, so a bordered output slot keeps its zeros; that is the
layout's price, (HP*WP)/(H*W) - 1 more MMA rows (+7.3% at 56x56, +14.8% at 28x28, +30.6% at
14x14, +65% at 7x7). Weights [Cout, KH, KW, Cin] are [Cout, KH*KW*Cin] rows read by TMA as in
kernels/conv_tma.py (Cin a multiple of BLOCK_K).

``variant="tma_b"``: a split K loop is summed by the tile's last program (kernels/splitk.py).
``variant="tma_b_ws"``: the K loop warp-specialized (a producer warp issues the loads, the
consumer warps the wgmmas); never split, as an atomic makes triton drop the specialization.
``variant="tma_b_p"``: persistent: a grid of one program per SM (``persistent_programs``),
each taking tiles pid, pid + programs, ... in the grouped order, its tile and K loops flattened
into one software pipeline so that a tile's epilogue overlaps the next tile's first loads;
never split.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import nhwc_strides
from .config import BORDERED_VARIANTS, NUM_SMS_DEFAULT, Config, bordered_rows
from .conv_tma import check_tma_weights
from .gemm_tma import check_tma_rows
from .epilogue import bias_residual_relu_store
from .indexing import grouped_tile
from .launch import ensure_tma_allocator, launch
from .quant import mma, partials_dtype
from .splitk import conv_split, finish_tile, split_counters, split_workspace


@triton.jit
def _tap_offsets(it, n_cb, C, WP, DH, DW, KW: tl.constexpr, BLOCK_K: tl.constexpr):
    """K step `it` (tap-major, BLOCK_K channels each) -> (its tap's row offset in the flattened
    map, its first channel, its column of the [Cout, KH*KW*Cin] weights)."""
    tap = it // n_cb
    c0 = (it - tap * n_cb) * BLOCK_K
    kh = tap // KW
    kw = tap - kh * KW
    return kh * DH * WP + kw * DW, c0, tap * C + c0


@triton.jit
def _window_outputs(r, MT, HP, WP, OH, OW):
    """Rows r of the map (window corners (n, hp, wp)) -> (their output pixels n*OH*OW + hp*OW
    + wp, which rows have one: the border columns and rows between images have none)."""
    n = r // (HP * WP)
    rem = r - n * (HP * WP)
    hp = rem // WP
    wp = rem - hp * WP
    return n * (OH * OW) + hp * OW + wp, (r < MT) & (hp < OH) & (wp < OW)


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (the strides left depend on channel counts only).
@triton.jit(do_not_specialize=("MT", "MP", "HP", "WP", "OH", "OW", "ITERS"))
def _conv_bordered_kernel(
    # pointers (x_ptr: the bordered map's first element, border included; cnt_ptr: the fused
    # split's arrival counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr,
    # sizes (MT: rows of the tile grid, up to the last output's window corner; MP: rows of
    # the whole bordered map, N*HP*WP; ITERS: K-loop steps per split)
    MT, MP, C, HP, WP, OH, OW, CO, DH, DW, ITERS,
    # strides (elements: the map's pixel rows; the weights' output-channel rows; residual and
    # output in n, h, w, c order; the split-K workspace's plane)
    sxm, swo,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit convs only (kernels/quant.py: dequantization scale, residual scale, output inverse
    # scale; None for float weights). The input is 8-bit itself: a float one quantized in
    # registers would leave wgmma's A operand there, not in shared memory.
    s_ptr=None, r_scale=None, out_inv=None,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), MT, CO, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[MP, C], strides=[sxm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[CO, KH * KW * C], strides=[swo, 1],
                                       block_shape=[BLOCK_N, BLOCK_K])
    r0 = pid_m * BLOCK_M
    n0 = pid_n * BLOCK_N
    n_cb = C // BLOCK_K
    it0 = pid_k * ITERS
    it1 = tl.minimum(it0 + ITERS, KH * KW * n_cb)
    # int8 x int8 products sum exactly in int32; float and e4m3 ones in float32.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
    for it in tl.range(it0, it1, warp_specialize=WARP_SPECIALIZE):
        dr, c0, wk = _tap_offsets(it, n_cb, C, WP, DH, DW, KW, BLOCK_K)
        # Rows past MP (the last tile's tail) are zero-filled by the TMA unit.
        a = x_desc.load([r0 + dr, c0])
        b = w_desc.load([n0, wk])
        acc = mma(a, b.T, acc, INPUT_PRECISION)

    rm, m_ok = _window_outputs(r0 + tl.arange(0, BLOCK_M), MT, HP, WP, OH, OW)
    rn = n0 + tl.arange(0, BLOCK_N)
    finish_tile(
        acc, rm, rn, m_ok, rn < CO, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k, OH, OW, CO,
        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, SPLIT, True, s_ptr, r_scale, out_inv,
    )


@triton.jit(do_not_specialize=("MT", "MP", "HP", "WP", "OH", "OW", "PROGRAMS"))
def _conv_bordered_persistent_kernel(
    # pointers (as _conv_bordered_kernel's; no split, so no workspace or counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    # sizes (PROGRAMS: the grid, one program per SM)
    MT, MP, C, HP, WP, OH, OW, CO, DH, DW, PROGRAMS,
    # strides
    sxm, swo,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit convs only (kernels/quant.py: dequantization scale, residual scale, output inverse
    # scale; None for float weights). The input is 8-bit itself: a float one quantized in
    # registers would leave wgmma's A operand there, not in shared memory.
    s_ptr=None, r_scale=None, out_inv=None,
):
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[MP, C], strides=[sxm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[CO, KH * KW * C], strides=[swo, 1],
                                       block_shape=[BLOCK_N, BLOCK_K])
    n_cb = C // BLOCK_K
    k_steps = KH * KW * n_cb
    tiles = tl.cdiv(MT, BLOCK_M) * tl.cdiv(CO, BLOCK_N)
    for tile in tl.range(tl.program_id(0), tiles, PROGRAMS, flatten=True):
        pid_m, pid_n = grouped_tile(tile, MT, CO, BLOCK_M, BLOCK_N, GROUP_M)
        r0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
        for it in range(0, k_steps):
            dr, c0, wk = _tap_offsets(it, n_cb, C, WP, DH, DW, KW, BLOCK_K)
            a = x_desc.load([r0 + dr, c0])
            b = w_desc.load([n0, wk])
            acc = mma(a, b.T, acc, INPUT_PRECISION)
        rm, m_ok = _window_outputs(r0 + tl.arange(0, BLOCK_M), MT, HP, WP, OH, OW)
        rn = n0 + tl.arange(0, BLOCK_N)
        bias_residual_relu_store(
            acc, rm, rn, m_ok, rn < CO, b_ptr, r_ptr, y_ptr,
            OH, OW, srn, srh, srw, src, syn, syh, syw, syc, HAS_RESIDUAL, RELU, s_ptr, r_scale, out_inv,
        )


def persistent_programs(tiles: int, device: torch.device) -> int:
    """The persistent conv's grid: one program per SM of `device` (an H100's 132 off CUDA), at
    most one per tile."""
    sms = NUM_SMS_DEFAULT
    if device.type == "cuda":
        from .targets import device_facts

        sms = device_facts(device).sms
    return max(1, min(int(tiles), sms))


def bordered_map(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """The whole zero-bordered map [N, C, H+2PH, W+2PW] (channels_last, dense) whose interior
    view x [N, C, H, W] is; raises ValueError where x is not such a view (its strides or
    storage leave no room for the border). The border's zeros are the caller's promise."""
    N, C, H, W = x.shape
    ph, pw = padding
    hp, wp = H + 2 * ph, W + 2 * pw
    sxn, sxh, sxw, sxc = nhwc_strides(x)
    want = (hp * wp * C, wp * C, C, 1)
    base = x.storage_offset() - ph * sxh - pw * sxw
    end = base + N * hp * wp * C
    if (sxn if N > 1 else want[0], sxh, sxw, sxc) != want or base < 0 or end * x.element_size() > x.untyped_storage().nbytes():
        raise ValueError(
            f"a bordered conv reads x as the interior of a zero-bordered [N, C, H+{2 * ph}, W+{2 * pw}] channels_last "
            f"map (kernels.zero_bordered); got x of shape {tuple(x.shape)} with strides {tuple(x.stride())} "
            f"(n, h, w, c strides {want} wanted) at storage offset {x.storage_offset()}"
        )
    return x.as_strided((N, C, hp, wp), (want[0], 1, wp * C, C), base)


def zero_bordered(x: torch.Tensor, padding: int | tuple[int, int]) -> torch.Tensor:
    """A copy of x [N, C, H, W] inside a fresh zero-bordered map (border `padding` wide): its
    interior view, what the bordered convs read (``bordered_map`` gives the whole map)."""
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    N, C, H, W = x.shape
    full = torch.zeros((N, H + 2 * ph, W + 2 * pw, C), device=x.device, dtype=x.dtype).permute(0, 3, 1, 2)
    inner = full[:, :, ph:ph + H, pw:pw + W]
    inner.copy_(x)
    return inner


def launch_conv_bordered(x, w, b, g, relu: bool, residual, out, config: Config, workspace, counters, y) -> None:
    """Launch `_conv_bordered_kernel` for the checked conv geometry `g` (kernels/conv.py checks
    the tensors); raises ValueError where `config` cannot run this conv on x."""
    if config.variant not in BORDERED_VARIANTS:
        raise ValueError(f"config {config.name}: the bordered conv's variants are {', '.join(BORDERED_VARIANTS)}")
    if (g.SH, g.SW) != (1, 1):
        raise ValueError(f"config {config.name}: a bordered conv needs stride 1, got stride {(g.SH, g.SW)}")
    if config.SPLIT_K > 1 and not config.splits:
        raise ValueError(f"config {config.name}: a warp-specialized or persistent conv cannot split its K loop")
    if g.q.in_inv is not None:
        raise ValueError(f"config {config.name}: a bordered conv reads its input in w's dtype ({w.dtype}), got x "
                         f"{x.dtype} of shape {tuple(x.shape)} to quantize (in_inv): use variant tma or tma_w")
    check_tma_weights(config, g, w)
    swo = w.stride(0)
    quant = g.q.kernel_args
    xp = bordered_map(x, (g.PH, g.PW))
    check_tma_rows("x", xp, g.C)
    hp, wp = g.H + 2 * g.PH, g.W + 2 * g.PW
    mt = bordered_rows(g.N, hp, wp, g.OH, g.OW)
    r = residual if residual is not None else y
    tiles = triton.cdiv(mt, config.BLOCK_M) * triton.cdiv(g.CO, config.BLOCK_N)
    if config.variant == "tma_b_p":
        programs = persistent_programs(tiles, x.device)
        ensure_tma_allocator()
        launch(_conv_bordered_persistent_kernel, (programs,),
            xp, w, b, r, y,
            mt, g.N * hp * wp, g.C, hp, wp, g.OH, g.OW, g.CO, g.DH, g.DW, programs,
            g.C, swo,
            *nhwc_strides(r), *nhwc_strides(y),
            KH=g.KH, KW=g.KW, HAS_RESIDUAL=residual is not None, RELU=bool(relu), INPUT_PRECISION=g.precision,
            **config.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"), **quant,
        )
        return
    splits, iters, _ = conv_split(config, M=g.M, C=g.C, CO=g.CO, KH=g.KH, KW=g.KW)
    ws, sws = split_workspace(workspace, splits, g.M, g.CO, b, partials=partials_dtype(w), x=x, w=w, b=b,
                              residual=residual, out=out, scale=g.q.scale)
    cnt = split_counters(counters, tiles, b) if splits > 1 else b
    ensure_tma_allocator()
    launch(_conv_bordered_kernel, (tiles, splits),
        xp, w, b, r, y, ws, cnt,
        mt, g.N * hp * wp, g.C, hp, wp, g.OH, g.OW, g.CO, g.DH, g.DW, iters,
        g.C, swo,
        *nhwc_strides(r), *nhwc_strides(y), sws,
        KH=g.KH, KW=g.KW, HAS_RESIDUAL=residual is not None, RELU=bool(relu),
        INPUT_PRECISION=g.precision, SPLIT=splits > 1, WARP_SPECIALIZE=config.variant == "tma_b_ws",
        **config.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"), **quant,
    )
