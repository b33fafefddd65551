"""The K loop of a conv: what a tile of each conv kernel reduces over, per tap and in all.

One place for the launchers, the split-K planner (kernels/splitk.py) and, through them, the
engine's schedule and the benchmark harness, so that a split planned above the kernels is
the split the kernel runs.
"""
from __future__ import annotations


def reduction(C: int, KH: int, KW: int) -> tuple[bool, int, str]:
    """(flat K?, the K a config is chosen for, the config space) of a conv with C input channels.

    Below 16 channels a (kh, kw) tap cannot fill tl.dot's K, so the kernel reduces over taps
    and channels at once (FLAT_K, configs of "conv_stem") and the config sees K = KH*KW*C;
    otherwise it steps through channels tap by tap ("conv") and the config sees K = C.
    """
    if C < 16:
        return True, KH * KW * C, "conv_stem"
    return False, C, "conv"


def conv_problem(cin: int, cout: int, kh: int, kw: int, groups: int = 1) -> tuple[str, int, int, int]:
    """(config space, N, K, taps) of a conv: the arguments `select_config(space, dtype, M=...,
    N=N, K=K, taps=taps)` and `tuning_candidates` take for it, as the launcher plans it itself.

    Plain convs as `reduction` says ("conv_stem" with K = KH*KW*Cin in one flat loop below 16
    input channels, else "conv" with K = Cin per tap). Grouped convs (groups > 1) take
    "conv_grouped" with K = Cin/groups, the reduction of one group per tap: a tile runs its K
    loop over the input channels of the groups its output channels belong to (one group when
    Cout/groups >= BLOCK_N; BLOCK_N*Cin/Cout channels when a tile spans several groups, whose
    weight tile is then block-diagonal: `group_span`). Dilation does not change the problem.
    """
    if groups > 1:
        return "conv_grouped", cout, cin // groups, kh * kw
    flat, k, space = reduction(cin, kh, kw)
    return space, cout, k, 1 if flat else kh * kw


def group_span(C: int, CO: int, groups: int, block_n: int) -> int:
    """Input channels the K loop of the widest BLOCK_N-column tile of a grouped conv runs over
    (the channels of every group its columns belong to)."""
    cig, cog = C // groups, CO // groups
    return max(((min(n0 + block_n, CO) - 1) // cog - n0 // cog + 1) * cig for n0 in range(0, CO, block_n))


def tile_reduction(C: int, CO: int, KH: int, KW: int, groups: int, block_n: int) -> tuple[int, int]:
    """(K per tap, taps) that a tile BLOCK_N output channels wide loops over, as the launchers
    run it: a grouped conv's tile over `group_span` channels per tap (more than Cin/groups when
    the tile spans several groups), a flat-K conv (Cin < 16) over all KH*KW*Cin in one, any
    other conv (1x1 GEMMs and the TMA convs included) over Cin per tap."""
    if groups > 1:
        return group_span(C, CO, groups, block_n), KH * KW
    flat, k, _ = reduction(C, KH, KW)
    return k, 1 if flat else KH * KW
