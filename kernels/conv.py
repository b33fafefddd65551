"""Implicit-GEMM convolution with a fused bias (folded BN) + residual + ReLU epilogue.

GEMM view: M = N*OH*OW output pixels, N = Cout, K = KH*KW*Cin, with K ordered (kh, kw, cin)
so that both operands are contiguous in cin: activations are NHWC, weights [Cout, KH, KW, Cin]
(a channels_last [Cout, Cin, KH, KW] tensor).

The stem may read uint8 pixels and normalize them inside its loads (``stem_conv(...,
normalize=pixel_norm(mean, std))``): ((x / 255) - mean) / std per channel, with the zero
padding in normalized space. The operand it feeds the dot is bitwise the one torchvision's
``convert_image_dtype`` + ``normalize`` (float32) then the cast to the weights' dtype give:
IEEE divisions for float32 weights; for float16 / bfloat16 one multiply-add,
x * (1 / (255 std)) + (-mean / std), whose float32 result rounds to the same half value for
every one of the 256 pixel values of each ImageNet channel (checked exhaustively, with and
without FMA contraction, by tests/test_conv.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._checks import (
    FLOAT_DTYPES, QUANT_DTYPES, Quant, check_bias, check_channels_last, check_device, check_like, check_no_overlap,
    check_nhwc, check_precision, check_quant, check_same_dtype, check_tensor, nhwc_strides, out_size, pair,
)
from .config import Config, select_config
from .indexing import grouped_tile, nhwc_rows
from .reduction import conv_problem, reduction  # noqa: F401 - conv_problem, reduction: kernels.conv.*
from .splitk import conv_split, finish_tile, reduce_partials, split_counters, split_workspace
from .launch import launch
from .pixels import NORM_FMA, NORM_IEEE, NORM_NONE, check_norm, normalize_pixels
from .quant import check_block_k, check_fp8_device, gemm_operand, mma, partials_dtype

# Not specialized on: the sizes that vary with the batch or the input's spatial size (so a new
# input size compiles nothing: NHWC strides with channel counts divisible by 16 keep their
# class at every size). Dilation is: 1 is a constant to the JIT (left unspecialized, its
# multiplies spilled 8 B in float32 tiles on sm_86 / sm_89), so dilated convs have binaries of
# their own.
_SIZES = ("M", "H", "W", "OH", "OW", "ITERS")


@triton.jit(do_not_specialize=_SIZES)
def _conv_kernel(
    # pointers (n_ptr: the stem's pixel_norm table, read only when NORMALIZE; cnt_ptr: the
    # fused split's arrival counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, n_ptr, cnt_ptr,
    # sizes (ITERS: K-loop iterations per split, all of them when unsplit)
    # (CIG, COG: input and output channels per group; C and CO when not GROUPED)
    M, H, W, C, OH, OW, CO, SH, SW, PH, PW, DH, DW, CIG, COG, ITERS,
    # strides (elements, in n, h, w, c order; weights in cout, kh, kw, cin order; the
    # split-K workspace's plane)
    sxn, sxh, sxw, sxc,
    swo, swh, sww, swc,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    # meta-parameters
    KH: tl.constexpr, KW: tl.constexpr, FLAT_K: tl.constexpr, GROUPED: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    FUSED: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit GEMMs only (kernels/quant.py; None for float weights): the dequant scale [Cout]
    # (float32), the inverse scale that quantizes a float input as it is loaded, the
    # residual's scale and the output's inverse scale
    s_ptr=None, in_inv=None, r_scale=None, out_inv=None,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CO, BLOCK_M, BLOCK_N, GROUP_M)
    # Split-K: this program sums K-loop iterations [it0, it1) (program_id(1) is 0 when unsplit).
    pid_k = tl.program_id(1)
    it0 = pid_k * ITERS
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < CO
    # Per-row input origin computed once per tile; the K loop adds only scalars to it.
    x_row, ih0, iw0 = nhwc_rows(rm, OH, OW, SH, SW, PH, PW, sxn, sxh, sxw)
    w_col = rn.to(tl.int64) * swo

    # int8 x int8 products sum exactly in int32; float and e4m3 ones in float32.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
    if FLAT_K:
        # Thin inputs (the stem's Cin = 3): one K index runs over (kh, kw, cin) together, so a
        # BLOCK_K step covers several taps instead of padding 3 channels up to 16.
        K_TOTAL = KH * KW * C
        it1 = tl.minimum(it0 + ITERS, tl.cdiv(K_TOTAL, BLOCK_K))
        for it in range(it0, it1):
            kk = it * BLOCK_K + rk
            tap = kk // C
            c = kk - tap * C
            kh = tap // KW
            kw = tap - kh * KW
            # Dilation: tap (kh, kw) reads the input (kh*DH, kw*DW) away from the row's origin.
            dh = kh * DH
            dw = kw * DW
            k_ok = kk < K_TOTAL
            ih = ih0[:, None] + dh[None, :]
            iw = iw0[:, None] + dw[None, :]
            a_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(x_ptr + x_row[:, None] + (dh * sxh + dw * sxw + c * sxc)[None, :], mask=a_ok, other=0.0)
            if NORMALIZE != 0:
                a = normalize_pixels(a, c, k_ok, a_ok, n_ptr, C, NORMALIZE)
            b = tl.load(
                w_ptr + w_col[None, :] + (kh * swh + kw * sww + c * swc)[:, None],
                mask=k_ok[:, None] & n_ok[None, :], other=0.0,
            )
            acc = mma(gemm_operand(a, b.dtype, in_inv), b, acc, INPUT_PRECISION)
    else:
        # One flattened loop over (kh, kw, cin-block) with scalar index math: nested loops over
        # kh and kw unroll into copies of the body and spill at big tiles.
        c_lo = 0
        span = C
        if GROUPED:
            # The tile's columns belong to groups g_lo..g_hi, which read input channels
            # [g_lo*CIG, (g_hi+1)*CIG): the K loop runs over those only. Where a tile spans
            # several groups the weight tile is block-diagonal (zero where a channel is not of
            # its column's group), so tensor cores still run, at COG/BLOCK_N useful work.
            n0 = pid_n * BLOCK_N
            g_lo = n0 // COG
            g_hi = (tl.minimum(n0 + BLOCK_N, CO) - 1) // COG
            c_lo = g_lo * CIG
            span = (g_hi - g_lo + 1) * CIG
            col_c0 = (rn // COG) * CIG  # the first input channel of each column's group
        n_cb = tl.cdiv(span, BLOCK_K)
        it1 = tl.minimum(it0 + ITERS, KH * KW * n_cb)
        for it in range(it0, it1):
            tap = it // n_cb
            c0 = (it - tap * n_cb) * BLOCK_K
            kh = tap // KW
            kw = tap - kh * KW
            dh = kh * DH
            dw = kw * DW
            ih = ih0 + dh
            iw = iw0 + dw
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c = c0 + rk
            c_ok = c < span
            c = c_lo + c
            a = tl.load(
                x_ptr + (x_row + (dh * sxh + dw * sxw))[:, None] + c[None, :] * sxc,
                mask=row_ok[:, None] & c_ok[None, :], other=0.0,
            )
            if GROUPED:
                # w holds CIG input channels per output channel: channel c of column n is
                # w[n, c - col_c0[n]], present only inside n's group.
                cw = c[:, None] - col_c0[None, :]
                b = tl.load(
                    w_ptr + (w_col + (kh * swh + kw * sww))[None, :] + cw * swc,
                    mask=c_ok[:, None] & n_ok[None, :] & (cw >= 0) & (cw < CIG), other=0.0,
                )
            else:
                b = tl.load(
                    w_ptr + (w_col + (kh * swh + kw * sww))[None, :] + c[:, None] * swc,
                    mask=c_ok[:, None] & n_ok[None, :], other=0.0,
                )
            # The cast is a no-op except in the stem, which reads the user's input as it comes,
            # and in an 8-bit conv reading a float input (quantized here).
            acc = mma(gemm_operand(a, b.dtype, in_inv), b, acc, INPUT_PRECISION)

    finish_tile(
        acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k, OH, OW, CO,
        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, SPLIT, FUSED, s_ptr, r_scale, out_inv,
    )


# The flat-K path (the stem, thin inputs) as a kernel of its own. It reads the caller's input in
# the caller's layout, whose strides (W, H*W, 3*H*W in NCHW; 3, 3*W, 3*H*W channels_last) and
# sizes H, W it keeps off alignment (``do_not_specialize_on_alignment``): the JIT still makes
# each a constant where it is 1 (the layout: sxw = 1 in NCHW, sxc = 1 channels_last, so the
# two layouts run binaries of their own) but not "divisible by 16" (what varies with the size).
# Left wholly unspecialized (one binary for both layouts), the 64x64x32 16-bit tiles reading
# the other 16-bit type spilled 8 B on sm_120 under triton 3.6; off alignment each row measured
# compiles as fully specialized (bench/NOTES.md, "No compile per input size"). M, OH and OW it keeps
# specialized (is each 1, a multiple of 16, neither?), as the JIT does by default: left
# unspecialized, the lost constancy of the row index math spilled on sm_80 (float32 64x64x16:
# 255 registers, 104 B of stack, 2760 SASS instructions against 165 and 2344) and on sm_120
# (uint8 pixels). So a new input size compiles a new stem binary where it changes
# ``stem_specialization``: the class of OH, OW or N*OH*OW, or (a 1-pixel-wide or -high input)
# which of H, W and the input's strides are 1; inputs of 32k x 32k' pixels (the detectors'
# padded batches, 224x224) all have multiples of 16 there and share one binary per layout.
_STEM_OFF_ALIGNMENT = ("H", "W", "sxn", "sxh", "sxw", "sxc")
_conv_stem_kernel = triton.jit(_conv_kernel.fn, do_not_specialize_on_alignment=_STEM_OFF_ALIGNMENT)


def stem_specialization(shape: tuple[int, int, int, int], cout: int = 64, *, strides: tuple[int, ...] | None = None,
                        kernel_size: int = 7, stride: int = 2, padding: int = 3) -> tuple[tuple[str, tuple], ...]:
    """What of an input's size and layout the stem's binary depends on: for an input of `shape`
    [N, C, H, W] and `strides` (torch's ``x.stride()``, in N, C, H, W order; default: a
    contiguous NCHW tensor), any dtype, and `cout` output channels, the specialization that
    triton's JIT (the installed version's own rule, ``native_specialize_impl``) gives each
    argument of ``_conv_stem_kernel`` that varies with them: M = N*OH*OW, OH, OW and the
    output's NHWC strides, each ("constexpr", 1) for 1, (width, "D") for a multiple of 16,
    (width, "") otherwise; H, W and the input's strides (``_STEM_OFF_ALIGNMENT``) the same
    but never "D".

    Two inputs run one stem binary (for a given dtype and tile config) iff their
    specializations are equal: with 64 output channels the output strides are always
    multiples of 16, and only a 1-pixel-wide or -high input has an H, W or input stride of 1
    other than the layout's own unit stride (sxw in NCHW, sxc channels_last). So a new size
    compiles a new stem where it changes whether OH, OW and N*OH*OW are 1, multiples of 16 or
    neither. 224x224 and every size a multiple of 32 give ("D", "D", "D") there; 801x1203
    (OH 401, OW 602), 225x225 and 97x131 give ("", "", "") at batch 1, one binary for all
    three (per layout).
    """
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import native_specialize_impl

    n, c, h, w = shape
    sn, sc, sh, sw = strides if strides is not None else (c * h * w, h * w, w, 1)
    k, s, p = pair("kernel_size", kernel_size), pair("stride", stride), pair("padding", padding)
    oh, ow = out_size(h, k[0], s[0], p[0], 1), out_size(w, k[1], s[1], p[1], 1)
    values = {"M": n * oh * ow, "H": h, "W": w, "OH": oh, "OW": ow, "sxn": sn, "sxh": sh, "sxw": sw, "sxc": sc,
              "syn": oh * ow * cout, "syh": ow * cout, "syw": cout}
    return tuple((name, tuple(native_specialize_impl(BaseBackend, v, False, True, name not in _STEM_OFF_ALIGNMENT)[:2]))
                 for name, v in values.items())


class ConvGeometry(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    CO: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    OH: int
    OW: int
    precision: str
    # groups and dilation (height, width): 1 for a plain conv
    G: int = 1
    DH: int = 1
    DW: int = 1
    # the launch's 8-bit side and output dtype (check_quant; all None for a bare geometry)
    q: Quant = Quant()

    @property
    def M(self) -> int:
        return self.N * self.OH * self.OW

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.CO, self.OH, self.OW)


def check_conv_args(x, w, b, stride, padding, residual, out, input_precision, *, any_input=False,
                    dilation=1, groups=1, scale=None, in_inv=None, residual_scale=None, out_inv=None) -> ConvGeometry:
    """Validate a fused-conv call and return its geometry (shared by conv and conv1x1).

    any_input: x may have any float dtype and memory layout (the stem reads the user's input);
    "pixels": also uint8 (pixel values the stem normalizes). scale, in_inv, residual_scale,
    out_inv: an 8-bit conv's (`check_quant`), in the geometry's `q`.
    """
    check_tensor("x", x, rank=4, dtypes=FLOAT_DTYPES + (torch.uint8,) if any_input == "pixels" else
                 FLOAT_DTYPES + QUANT_DTYPES)
    if isinstance(w, torch.Tensor) and w.dtype == torch.uint8:
        check_quant(x, w, residual, out)  # its error: 8-bit weights are signed
    check_tensor("w", w, rank=4, dtypes=FLOAT_DTYPES + QUANT_DTYPES)
    check_device(x=x, w=w, b=b, residual=residual, out=out, scale=scale)
    q = check_quant(x, w, residual, out, scale=scale, in_inv=in_inv, residual_scale=residual_scale, out_inv=out_inv)
    check_fp8_device(x.device, x, w, residual, out)
    if not any_input:
        if w.dtype not in QUANT_DTYPES:  # (an 8-bit conv may read float: check_quant)
            check_same_dtype("x", x, w=w)
        # (or the interior of a zero-bordered map: the engine's bordered slots)
        check_nhwc("x", x)
    check_channels_last("w", w)
    N, C, H, W = x.shape
    CO, CI, KH, KW = w.shape
    G = _check_groups(groups, C, CO)
    if CI * G != C:
        per = f" per group ({G} groups)" if G > 1 else ""
        raise ValueError(f"w has {CI} input channels{per} (shape {tuple(w.shape)}) but x has {C} (shape "
                         f"{tuple(x.shape)})" + (f": w must be [{CO}, {C // G}, KH, KW]" if G > 1 else ""))
    check_bias(b, CO)
    (SH, SW), (PH, PW) = pair("stride", stride), pair("padding", padding)
    DH, DW = pair("dilation", dilation)
    if SH < 1 or SW < 1 or PH < 0 or PW < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    if DH < 1 or DW < 1:
        raise ValueError(f"dilation must be >= 1, got dilation={dilation}")
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    if OH < 1 or OW < 1:
        raise ValueError(
            f"empty output: input {H}x{W} with kernel {KH}x{KW}, stride {(SH, SW)}, padding {(PH, PW)}, "
            f"dilation {(DH, DW)} gives {OH}x{OW}"
        )
    g = ConvGeometry(N, C, H, W, CO, KH, KW, SH, SW, PH, PW, OH, OW, check_precision(input_precision, w.dtype),
                     G=G, DH=DH, DW=DW, q=q)
    check_like("residual", residual, g.out_shape, w.dtype if residual is None else residual.dtype, window=True)
    check_like("out", out, g.out_shape, q.out_dtype, window=True)
    check_no_overlap("out", out, x=x, w=w, b=b, residual=residual, scale=scale, elementwise=("residual",))
    return g


def _check_groups(groups, C: int, CO: int) -> int:
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if C % groups or CO % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({C}) and the output channels ({CO})")
    return groups


def alloc_nhwc(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype, memory_format=torch.channels_last)


def conv_config(g: ConvGeometry, dtype: torch.dtype, device: torch.device | None = None, *,
                residual: bool = False) -> Config:
    """The launcher's own config for a conv of geometry `g` (the engine fixes it per layer)."""
    space, n, k, taps = conv_problem(g.C, g.CO, g.KH, g.KW, g.G)
    return select_config(space, dtype, M=g.M, N=n, K=k, taps=taps, device=device, residual=residual)


def _launch_conv(x, w, b, g: ConvGeometry, relu, residual, out, config, workspace, counters=None,
                 norm=None) -> torch.Tensor:
    cfg = config or conv_config(g, w.dtype, x.device, residual=residual is not None)
    flat, k, _ = reduction(g.C, g.KH, g.KW)
    if cfg.tma:
        check_block_k(cfg, w)
        if g.G != 1 or ((g.DH, g.DW) != (1, 1) and not cfg.bordered):
            raise ValueError(f"config {cfg.name}: the TMA conv runs no grouped convs, and dilated ones only bordered "
                             f"(tma_b, tma_b_ws, tma_b_p), got dilation "
                             f"{(g.DH, g.DW)}, groups {g.G}: use a pointer config")
        # (an 8-bit conv's float input is quantized in its loads: in_inv)
        if flat or norm is not None or (x.dtype != w.dtype and g.q.in_inv is None):
            raise ValueError(f"config {cfg.name}: the TMA conv needs >= 16 input channels in w's dtype, got x "
                             f"{x.dtype} of shape {tuple(x.shape)}, w of shape {tuple(w.shape)}")
        from .conv_bordered import launch_conv_bordered
        from .conv_tma import launch_conv_tma

        y = out if out is not None else alloc_nhwc(g.out_shape, w, g.q.out_dtype)
        if g.M:
            (launch_conv_bordered if cfg.bordered else launch_conv_tma)(
                x, w, b, g, relu, residual, out, cfg, workspace, counters, y)
        return y
    grouped = g.G > 1
    flat = flat and not grouped  # a grouped conv steps tap by tap whatever its width
    check_block_k(cfg, w)
    splits, iters, _ = conv_split(cfg, M=g.M, C=g.C, CO=g.CO, KH=g.KH, KW=g.KW, groups=g.G)
    ws, sws = split_workspace(workspace, splits, g.M, g.CO, b, partials=partials_dtype(w), x=x, w=w, b=b,
                              residual=residual, out=out, scale=g.q.scale)
    y = out if out is not None else alloc_nhwc(g.out_shape, w, g.q.out_dtype)
    if g.M == 0:
        return y
    r = residual if residual is not None else y
    tiles = triton.cdiv(g.M, cfg.BLOCK_M) * triton.cdiv(g.CO, cfg.BLOCK_N)
    fused = splits > 1 and cfg.fused_split
    cnt = split_counters(counters, tiles, b) if fused else b
    # An 8-bit stem quantizes torchvision's own float32 normalization (its IEEE divisions).
    mode = NORM_NONE if norm is None else (NORM_IEEE if w.dtype in (torch.float32,) + QUANT_DTYPES else NORM_FMA)
    launch(_conv_stem_kernel if flat else _conv_kernel, (tiles, splits),
        x, w, b, r, y, ws, b if norm is None else norm, cnt,
        g.M, g.H, g.W, g.C, g.OH, g.OW, g.CO, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW, g.C // g.G, g.CO // g.G, iters,
        *nhwc_strides(x), *nhwc_strides(w), *nhwc_strides(r), *nhwc_strides(y), sws,
        KH=g.KH, KW=g.KW, FLAT_K=flat, GROUPED=grouped, HAS_RESIDUAL=residual is not None, RELU=bool(relu), INPUT_PRECISION=g.precision,
        SPLIT=splits > 1, FUSED=fused, NORMALIZE=mode, **cfg.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"),
        **g.q.kernel_args,
    )
    if splits > 1 and not fused:
        reduce_partials(ws, splits, b, residual, y, M=g.M, OH=g.OH, OW=g.OW, relu=relu, quant=g.q.kernel_args)
    return y


def conv_bn_relu(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
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
    """y = relu(conv2d(x, w, stride, padding, dilation) + b (+ residual)), fused (one launch, two
    if split), BN folded into w, b.

    x: [N, Cin, H, W] channels_last, float16 / bfloat16 / float32.
    w: [Cout, Cin/groups, KH, KW] channels_last (physically [Cout, KH, KW, Cin/groups]), x's dtype;
    groups must divide Cin and Cout (output channel o reads the input channels of its group,
    o // (Cout/groups)), as torch's conv2d.
    b: [Cout] float32.  residual: [N, Cout, OH, OW] channels_last, x's dtype.
    Returns y: [N, Cout, OH, OW] channels_last in x's dtype (written into `out` if given).
    Accumulates in float32; float32 inputs use exact fp32 products unless input_precision="tf32".
    A config with SPLIT_K > 1 (the default for grids that leave most SMs idle) takes two
    launches: the split K loop into float32 partials, then their sum with the epilogue; the
    partials go to `workspace` (float32, contiguous, >= splitk.workspace_numel(M, Cout, splits)
    elements: splits planes of M*Cout rounded up to 16) if given,
    else to a fresh buffer. A fused split (``config.fused_split``: variant "fused_k", or a TMA
    config) is one launch; its tiles count arrivals in `counters` (int32, contiguous, at
    least one word per output tile, all zero: every fused launch leaves them zero again),
    else in fresh zeros. TMA configs (kernels/conv_tma.py) need Cin a multiple of BLOCK_K and
    dense weights; variant "tma" also stride 1; none runs a grouped conv, and only the bordered
    ones (kernels/conv_bordered.py: "tma_b", "tma_b_ws", "tma_b_p", stride 1) a dilated one:
    they read x as the interior of a zero-bordered map `padding` wide (``zero_bordered``).
    x, residual and out may be such interior windows of bigger NHWC maps for every config
    but the 1x1 TMA GEMM's x.

    Quantized (kernels/quant.py): w int8 or float8_e4m3fn (per-output-channel symmetric) with
    `scale` [Cout] float32 = s_x * s_w[co]; the accumulator (int32 for int8, exact; float32 for
    e4m3) becomes y = acc * scale + b (+ residual * residual_scale), relu. x is of w's dtype,
    or float (float16 / bfloat16 / float32), quantized as it is loaded with `in_inv` (a python
    float: clamp(rint(x * in_inv), -128, 127), or e4m3(clamp(x * in_inv, -448, 448))). The
    output is of w's dtype, quantized with `out_inv` (python float), or float: pass `out` of
    float16 / bfloat16 / float32. A residual may be 8-bit (int8 or e4m3, with residual_scale,
    a python float), or float (residual_scale, if given, multiplies it). A float conv also takes
    an 8-bit residual with its residual_scale. The scalars are kernel arguments: a CUDA graph
    keeps the values it was captured with. 8-bit convs run the pointer configs (BLOCK_K >= 32);
    float8_e4m3fn needs sm_89 or newer.
    """
    g = check_conv_args(x, w, b, stride, padding, residual, out, input_precision, dilation=dilation, groups=groups,
                        scale=scale, in_inv=in_inv, residual_scale=residual_scale, out_inv=out_inv)
    return _launch_conv(x, w, b, g, relu, residual, out, config, workspace, counters)


def stem_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    stride: int | tuple[int, int] = 2,
    padding: int | tuple[int, int] = 3,
    relu: bool = True,
    out: torch.Tensor | None = None,
    input_precision: str = "ieee",
    config: Config | None = None,
    workspace: torch.Tensor | None = None,
    normalize: torch.Tensor | None = None,
    counters: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    in_inv: float | None = None,
    out_inv: float | None = None,
) -> torch.Tensor:
    """conv_bn_relu for the network's first layer, reading the user's input as it is.

    x: [N, Cin, H, W] float32 / float16 / bfloat16 in any memory layout (NCHW read in place);
    it is cast to w's dtype as it is loaded, so the NCHW -> NHWC pack and the input cast cost
    no extra pass. w: [Cout, Cin, KH, KW] channels_last; b: [Cout] float32.
    Or x uint8 pixels (any layout) with normalize=pixel_norm(mean, std): each loaded value
    becomes ((x / 255) - mean) / std exactly as torchvision computes it, and the padding is
    zero in normalized space, so the GPU reads one byte per pixel value and no normalized
    copy of the batch is ever written.
    Returns [N, Cout, OH, OW] channels_last in w's dtype.
    With 8-bit weights (see conv_bn_relu: scale, in_inv, out_inv) the float input, or the
    normalized pixels (torchvision's float32 normalization, IEEE divisions), are quantized
    with in_inv as they are loaded.
    """
    g = check_conv_args(x, w, b, stride, padding, None, out, input_precision, any_input="pixels", scale=scale,
                        in_inv=in_inv, out_inv=out_inv)
    check_norm(x, normalize)
    return _launch_conv(x, w, b, g, relu, None, out, config, workspace, counters, normalize)
