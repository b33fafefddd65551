"""1x1 stride-1 convs and the classifier as a TMA GEMM: [M, Cin] x [Cout, Cin]^T on Hopper.

Both operands are loaded by the TMA unit from in-kernel tensor descriptors: a 2-D box of
BLOCK_M pixel rows x BLOCK_K channels of the NHWC activations (pixel rows must be dense,
as a channels_last tensor's are, and 16-byte aligned) and BLOCK_N x BLOCK_K of the weights,
straight into shared memory, where wgmma reads them; the TMA unit zero-fills what lies past
M or Cin, so the loop has no masks. The epilogue is the pointer kernels' (bias, residual,
ReLU, output dtype; an 8-bit GEMM's dequantization and requantization, kernels/quant.py); a
split K loop is summed by the tile's last program (kernels/splitk.py).
``variant="tma_ws"`` warp-specializes the K loop (a producer warp issues the loads, two
consumer warpgroups do the math); it never splits, because an atomic anywhere in the kernel
makes triton drop the specialization silently.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import Config
from .indexing import grouped_tile
from .launch import ensure_tma_allocator, launch
from .quant import gemm_operand, mma, partials_dtype
from .splitk import conv_split, finish_tile, split_counters, split_workspace


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (strides past them only depend on channel counts).
@triton.jit(do_not_specialize=("M", "OH", "OW", "ITERS"))
def _gemm_tma_kernel(
    # pointers (cnt_ptr: the fused split's arrival counters)
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr,
    # sizes (ITERS: K-loop iterations per split, all of them when unsplit)
    M, C, OH, OW, CO, ITERS,
    # strides (elements: x's pixel rows, the weights' output-channel rows; residual and
    # output in n, h, w, c order; the split-K workspace's plane)
    sxm, swo,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, INPUT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    # 8-bit GEMMs only (kernels/quant.py, as _gemm1x1_kernel's; None for float weights)
    s_ptr=None, in_inv=None, r_scale=None, out_inv=None,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CO, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    a_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, C], strides=[sxm, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(w_ptr, shape=[CO, C], strides=[swo, 1], block_shape=[BLOCK_N, BLOCK_K])
    it0 = pid_k * ITERS
    it1 = tl.minimum(it0 + ITERS, tl.cdiv(C, BLOCK_K))
    # int8 x int8 products sum exactly in int32; float and e4m3 ones in float32.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if w_ptr.dtype.element_ty == tl.int8 else tl.float32)
    for it in tl.range(it0, it1, warp_specialize=WARP_SPECIALIZE):
        a = a_desc.load([pid_m * BLOCK_M, it * BLOCK_K])
        b = b_desc.load([pid_n * BLOCK_N, it * BLOCK_K])
        # The cast is a no-op except in the classifier, whose pooled features are float32, and
        # in an 8-bit GEMM reading a float input (quantized here). The weight tile is K-major
        # in shared memory (rows of Cin), as wgmma takes 8-bit B operands.
        acc = mma(gemm_operand(a, b.dtype, in_inv), b.T, acc, INPUT_PRECISION)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    finish_tile(
        acc, rm, rn, rm < M, rn < CO, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k, OH, OW, CO,
        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, SPLIT, True, s_ptr, r_scale, out_inv,
    )


# The classifier's launch (kernels/head.py, _fc_kernel): OH = OW = 1 and the batch specialized.
_fc_tma_kernel = triton.jit(_gemm_tma_kernel.fn, do_not_specialize=("ITERS",))


def check_tma_rows(name: str, t: torch.Tensor, row_stride: int) -> None:
    """A TMA operand's rows (`row_stride` elements apart, columns dense) and base address must
    be 16-byte aligned: what a tensor descriptor requires."""
    elem = t.element_size()
    if (row_stride * elem) % 16 or (t.data_ptr() % 16):
        raise ValueError(
            f"the TMA variants need {name} 16-byte aligned: {name} of shape {tuple(t.shape)} has a row stride of "
            f"{row_stride * elem} bytes and address {t.data_ptr():#x} (use a pointer-load config)"
        )


def launch_gemm_tma(
    x2: torch.Tensor, sxm: int, w2: torch.Tensor, b: torch.Tensor, residual4: torch.Tensor | None, y4: torch.Tensor,
    *, M: int, C: int, CO: int, OH: int, OW: int, relu: bool, precision: str, config: Config,
    workspace: torch.Tensor | None, counters: torch.Tensor | None, fc: bool = False, quant: dict | None = None,
) -> None:
    """One TMA GEMM launch: x2 holds M pixel rows of C channels (row stride sxm, channel
    stride 1), w2 [CO, C] (row stride w2.stride(0)); y4 / residual4 NHWC-strided outputs of
    OH x OW per image; fc: the classifier's (OH = OW = 1, `_fc_tma_kernel`). The launchers
    (kernels/gemm1x1.py, kernels/head.py) check the rest. quant: an 8-bit GEMM's epilogue and
    input arguments (``Quant.kernel_args``; w2 int8 or float8_e4m3fn, x2 8-bit or a float input
    quantized as it is loaded)."""
    from ._checks import nhwc_strides

    if config.variant == "tma_ws" and config.SPLIT_K > 1:
        raise ValueError(f"config {config.name}: a warp-specialized TMA GEMM cannot split its K loop")
    check_tma_rows("x", x2, sxm)
    check_tma_rows("w", w2, w2.stride(0))
    splits, iters, _ = conv_split(config, M=M, C=C, CO=CO)
    quant = quant or {}
    ws, sws = split_workspace(workspace, splits, M, CO, b, partials=partials_dtype(w2), x=x2, w=w2, b=b,
                              residual=residual4, out=y4, scale=quant.get("s_ptr"))
    tiles = triton.cdiv(M, config.BLOCK_M) * triton.cdiv(CO, config.BLOCK_N)
    cnt = split_counters(counters, tiles, b) if splits > 1 else b
    r = residual4 if residual4 is not None else y4
    ensure_tma_allocator()
    launch(_fc_tma_kernel if fc else _gemm_tma_kernel, (tiles, splits),
        x2, w2, b, r, y4, ws, cnt,
        M, C, OH, OW, CO, iters,
        sxm, w2.stride(0),
        *nhwc_strides(r), *nhwc_strides(y4), sws,
        HAS_RESIDUAL=residual4 is not None, RELU=bool(relu), INPUT_PRECISION=precision, SPLIT=splits > 1,
        WARP_SPECIALIZE=config.variant == "tma_ws",
        **config.launch_kwargs("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"), **quant,
    )
