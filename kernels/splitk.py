"""Split-K for the GEMM-type convs: small-M layers spread their reduction over more SMs.

At batch 1 ResNet-50's last stage is M = 49 output pixels: a 64x64 tile grid gives 8 programs
for 132 SMs, each running a 72-step K loop alone. With split-K the grid gets a second axis of
`splits` programs per tile, each summing one contiguous range of K-loop iterations into a
float32 partial in a workspace of `splits` planes [M, Cout] (split_plane apart); a second launch sums the partials in a fixed
order (deterministic, unlike atomics) and applies the fused epilogue (bias, residual, ReLU)
with the same `bias_residual_relu_store` as the unsplit kernels. An int8 GEMM's partials are
int32 in the same buffer (exact: the scales apply once, after the sum).

Fused split-K (a config's ``variant="fused_k"``, and every split TMA launch) drops that
second launch: each program stores its partial, then takes a ticket from its tile's arrival
counter (an int32 atomic with acquire/release semantics, after a barrier so that the whole
program's stores are released); the program that draws the last ticket sums the planes in
the same fixed order 0..splits-1 as the reduce launch (so the result is bitwise the same and
deterministic), applies the epilogue and resets the counter to zero, so the counters are
zero again for the next launch (a CUDA graph replays the same buffer).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._checks import check_device, check_no_overlap, nhwc_strides
from .config import k_iters, select_config
from .epilogue import bias_residual_relu_store
from .launch import launch
from .reduction import tile_reduction


def split_plan(iters: int, split: int) -> tuple[int, int]:
    """(splits, K-loop iterations per split) for a loop of `iters` steps asked to split `split`
    ways: at most one split per iteration and none left empty (the last may be shorter)."""
    if iters <= 0:
        return 1, 0
    split = max(1, min(int(split), int(iters)))
    per = -(-int(iters) // split)
    return -(-int(iters) // per), per


def config_splits(config, K: int, taps: int = 1) -> tuple[int, int]:
    """(splits, K-loop iterations per split) of a launch with `config` over a reduction of
    `taps` x K (K in BLOCK_K steps), as every split-capable launcher plans it."""
    return split_plan(k_iters(K, config.BLOCK_K, taps), config.SPLIT_K)


class SplitPlan(NamedTuple):
    """How a conv launch splits its K loop: `splits` programs per tile, `iters` K-loop steps
    each (all of them when unsplit), and the float32 `workspace` elements it needs (0 unsplit)."""

    splits: int
    iters: int
    workspace: int


def conv_split(config, *, M: int, C: int, CO: int, KH: int = 1, KW: int = 1, groups: int = 1) -> SplitPlan:
    """The split of a conv launch with `config` (M output pixels, C -> CO channels, a KH x KW
    kernel, `groups`), as every conv launcher runs it (pointer, TMA, bordered, 1x1 GEMM): the
    one place the engine's schedule and the benchmark size workspaces from. The K loop is the
    tile's own (`tile_reduction`): a grouped conv's tile that spans several groups loops over
    all their input channels, more than Cin/groups."""
    k, taps = tile_reduction(C, CO, KH, KW, groups, config.BLOCK_N)
    splits, iters = config_splits(config, k, taps)
    return SplitPlan(splits, iters, workspace_numel(M, CO, splits))


# Tiles of one fused split launch at most: the counters buffer the engine keeps (int32, zero).
# A split only pays for grids that leave most SMs idle (a few hundred tiles at the very most).
COUNTER_WORDS = 4096


def split_counters(counters: torch.Tensor | None, tiles: int, like: torch.Tensor) -> torch.Tensor:
    """The arrival counters of a fused split launch over `tiles` tiles: the caller's (int32,
    contiguous, at least `tiles` words, all zero before the launch as every fused launch
    leaves them) or fresh zeros."""
    if counters is None:
        return torch.zeros(max(1, tiles), device=like.device, dtype=torch.int32)
    if not isinstance(counters, torch.Tensor) or counters.dtype != torch.int32 or counters.dim() != 1 \
            or not counters.is_contiguous():
        got = f"{counters.dtype} {tuple(counters.shape)}" if isinstance(counters, torch.Tensor) else type(counters).__name__
        raise ValueError(f"counters must be a contiguous 1-D int32 tensor (zeros), got {got}")
    if counters.numel() < tiles:
        raise ValueError(f"counters has {counters.numel()} words but this fused split launch has {tiles} tiles")
    check_device(counters=counters, like=like)
    return counters


def split_plane(M: int, CO: int) -> int:
    """Elements from one split's partial plane [M, CO] to the next: M*CO rounded up to 16, so
    that every plane is 64-byte aligned and the stride's JIT class (divisible by 16) is the same
    at every batch size (the classifier's 1000 classes would otherwise make it depend on M)."""
    return -(-int(M) * int(CO) // 16) * 16


def workspace_numel(M: int, CO: int, splits: int) -> int:
    """Float32 elements of the partial-sum workspace of one split launch (0 when unsplit)."""
    return 0 if splits <= 1 else splits * split_plane(M, CO)


def check_workspace(ws: torch.Tensor | None, numel: int, **others: torch.Tensor | None) -> None:
    """A caller's workspace must be float32, contiguous, big enough, and share no memory with
    the launch's other tensors (the partials are written while those are read)."""
    if ws is None:
        return
    if not isinstance(ws, torch.Tensor):
        raise TypeError(f"workspace must be a torch.Tensor, got {type(ws).__name__}")
    if ws.dtype != torch.float32:
        raise TypeError(f"workspace must be float32 (partial sums), got {ws.dtype}")
    if ws.dim() != 1:
        raise ValueError(f"workspace must be 1-D (it is carved up by element), got shape {tuple(ws.shape)}")
    if not ws.is_contiguous():
        raise ValueError(f"workspace must be contiguous, got shape {tuple(ws.shape)} with strides {tuple(ws.stride())}")
    if ws.numel() < numel:
        raise ValueError(f"workspace has {ws.numel()} elements but this split launch needs {numel} (splits planes of M x Cout, each rounded up to 16)")
    check_device(**others, workspace=ws)
    check_no_overlap("workspace", ws[:numel], **others)


def split_workspace(
    workspace: torch.Tensor | None, splits: int, M: int, CO: int, stand_in: torch.Tensor, *,
    partials: torch.dtype = torch.float32, **others: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """(the tensor a conv launch passes as its workspace, the stride of its split planes).

    Unsplit: `stand_in` (never read) and 0. Split: the caller's workspace, checked against
    the launch's other tensors, or a fresh one; viewed as int32 for `partials` int32 (an
    int8 GEMM's: the workspace stays float32 to its callers, one buffer for every layer).
    """
    if splits <= 1:
        return stand_in, 0
    numel = workspace_numel(M, CO, splits)
    check_workspace(workspace, numel, **others)
    if workspace is None:
        workspace = torch.empty(numel, device=stand_in.device, dtype=torch.float32)
    return workspace.view(partials), split_plane(M, CO)


@triton.jit
def store_partial(acc, rm, rn, m_ok, n_ok, ws_ptr, pid_k, CO, sws):
    """One program's partial sum (float32; int32 for int8) into plane `pid_k` of the [splits, M, CO] workspace."""
    p = ws_ptr + pid_k.to(tl.int64) * sws + rm.to(tl.int64)[:, None] * CO + rn[None, :]
    tl.store(p, acc, mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def sum_if_last(
    rm, rn, m_ok, n_ok,
    b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, tile,
    OH, OW, CO,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    s_ptr=None, r_scale=None, out_inv=None,
):
    """Fused split-K: after this program's partial is stored, the last of the tile's programs
    to arrive sums all partials (fixed order) and applies the epilogue."""
    splits = tl.num_programs(1)
    # Every thread's partial stores are issued before the ticket is taken (the atomic then
    # releases them at GPU scope); acquire: the last program sees every other partial.
    tl.debug_barrier()
    ticket = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu")
    if ticket == splits - 1:
        tl.debug_barrier()
        mask = m_ok[:, None] & n_ok[None, :]
        p = ws_ptr + rm.to(tl.int64)[:, None] * CO + rn[None, :]
        acc = tl.zeros(mask.shape, dtype=ws_ptr.dtype.element_ty)
        for _ in range(0, splits):
            # .cg: from L2, where the other SMs' partials are; never a stale L1 line.
            acc += tl.load(p, mask=mask, other=0, cache_modifier=".cg")
            p += sws
        tl.store(cnt_ptr + tile, 0)
        bias_residual_relu_store(
            acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, OH, OW,
            srn, srh, srw, src, syn, syh, syw, syc, HAS_RESIDUAL, RELU, s_ptr, r_scale, out_inv,
        )


@triton.jit
def finish_tile(
    acc, rm, rn, m_ok, n_ok,
    b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, pid_k,
    OH, OW, CO,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    sws,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, SPLIT: tl.constexpr, FUSED: tl.constexpr,
    s_ptr=None, r_scale=None, out_inv=None,
):
    """The end of a conv program: its partial into the workspace when split (FUSED: and the
    sum by the last program of the tile), else the fused epilogue straight into y. An int8
    GEMM's partials are int32 (its launcher passes the float32 workspace viewed as int32):
    sums of products of 8-bit integers, exact in any order, where float32 partials would
    round past 2**24; the scales (`bias_residual_relu_store`) apply once, to the sum."""
    if SPLIT:
        store_partial(acc, rm, rn, m_ok, n_ok, ws_ptr, pid_k, CO, sws)
        if FUSED:
            sum_if_last(rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, ws_ptr, cnt_ptr, tl.program_id(0), OH, OW, CO,
                        srn, srh, srw, src, syn, syh, syw, syc, sws, HAS_RESIDUAL, RELU, s_ptr, r_scale, out_inv)
    else:
        bias_residual_relu_store(
            acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, OH, OW,
            srn, srh, srw, src, syn, syh, syw, syc, HAS_RESIDUAL, RELU, s_ptr, r_scale, out_inv,
        )


# Sizes that vary with the batch or the input's spatial size are not specialized on, so a new
# input size compiles nothing (the plane stride is padded: split_plane).
@triton.jit(do_not_specialize=("M", "OH", "OW", "SPLITS"))
def _splitk_reduce_kernel(
    # pointers
    ws_ptr, b_ptr, r_ptr, y_ptr,
    # sizes
    M, CO, OH, OW, SPLITS,
    # strides (elements; the workspace's split plane, then residual and output in n, h, w, c order)
    sws,
    srn, srh, srw, src,
    syn, syh, syw, syc,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    # quantized epilogue (kernels/epilogue.py; None: float): scale, residual scale, output inverse scale
    s_ptr=None, r_scale=None, out_inv=None,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < CO
    mask = m_ok[:, None] & n_ok[None, :]
    # The pointer advances by one plane per split: no split x plane product that could overflow.
    p = ws_ptr + rm.to(tl.int64)[:, None] * CO + rn[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ws_ptr.dtype.element_ty)
    for _ in range(0, SPLITS):
        acc += tl.load(p, mask=mask, other=0)
        p += sws
    bias_residual_relu_store(
        acc, rm, rn, m_ok, n_ok, b_ptr, r_ptr, y_ptr, OH, OW,
        srn, srh, srw, src, syn, syh, syw, syc, HAS_RESIDUAL, RELU, s_ptr, r_scale, out_inv,
    )


def reduce_partials(
    ws: torch.Tensor, splits: int, b: torch.Tensor, residual: torch.Tensor | None, y: torch.Tensor,
    *, M: int, OH: int, OW: int, relu: bool, quant: dict | None = None,
) -> None:
    """y = relu(sum of the `splits` partial planes of ws + b (+ residual)), cast to y's dtype.

    ws: float32 (int32 for an int8 GEMM's partials), `splits` planes [M, CO] split_plane(M, CO)
    apart (contiguous); y, residual: [N, CO, OH, OW] channels_last. quant: an 8-bit GEMM's
    epilogue arguments (``Quant.kernel_args``: s_ptr, r_scale, out_inv). Called by the launchers
    right after their split launch; their checks cover these tensors.
    """
    CO = y.shape[1]
    cfg = select_config("splitk_reduce", y.dtype, M=M, N=CO)
    r = residual if residual is not None else y
    grid = (triton.cdiv(M, cfg.BLOCK_M), triton.cdiv(CO, cfg.BLOCK_N))
    launch(_splitk_reduce_kernel, grid,
        ws, b, r, y,
        M, CO, OH, OW, splits,
        split_plane(M, CO), *nhwc_strides(r), *nhwc_strides(y),
        HAS_RESIDUAL=residual is not None, RELU=bool(relu),
        **cfg.launch_kwargs("BLOCK_M", "BLOCK_N"), **(quant or {}),
    )
