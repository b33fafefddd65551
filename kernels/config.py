"""Tile configurations: the one mechanism that picks block sizes for every kernel.

The launchers, the engine and the compile gate (``fastres check --target T``) all read the
config space of each target from here. A config the gate rejects on a target (compile error,
spill, shared memory over the target's limit, a GEMM without its tensor cores) is left out of
that target's space (``_EXCLUDED``) or removed from this file, never tolerated.

Rules that shape the space:
- GEMM tiles have BLOCK_M >= 64 so that Hopper's wgmma (one warpgroup = 64 rows) is used.
- Non-1x1 convolutions keep num_warps <= 4: triton miscompiled conv kernels at num_warps=8
  (pytorch issue 173068).
- BLOCK_K for ``conv`` runs over input channels inside one (kh, kw) tap, so thin inputs (the
  stem's Cin = 3) get BLOCK_K = 16, the smallest K that ``tl.dot`` takes.
- ``Config.variant`` names the kernel of a family a config runs (VARIANTS): the pointer
  kernels, fused split-K, or Hopper's TMA kernels. Only the pointer kernels are chosen by the
  untuned heuristic; the others are tuning candidates where they apply (``applies``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading

import torch

from ._checks import QUANT_DTYPES, interpreting
from .quant import FP8_TARGETS, MIN_BLOCK_K_8BIT, check_fp8_target
from .targets import DEFAULT_TARGET, TARGETS


@dataclasses.dataclass(frozen=True)
class Config:
    """Block sizes and launch parameters of one kernel launch.

    For GEMM-type kernels BLOCK_M x BLOCK_N is the output tile (pixels x output channels)
    and BLOCK_K the reduction step; element-wise kernels use BLOCK_M (elements or pixels)
    and BLOCK_N (channels).
    """

    BLOCK_M: int
    BLOCK_N: int = 1
    BLOCK_K: int = 1
    num_warps: int = 4
    num_stages: int = 3
    GROUP_M: int = 8
    # GEMM-type convs: split the K loop this many ways (kernels/splitk.py); 1 = no split.
    SPLIT_K: int = 1
    # Which kernel of the family runs (VARIANTS): pointer loads, or TMA (kernels/gemm_tma.py,
    # kernels/conv_tma.py); "fused_k" sums a split K loop in the split kernel itself.
    variant: str = "ptr"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown config variant {self.variant!r}; known: {', '.join(VARIANTS)}")

    @property
    def name(self) -> str:
        split = f"_k{self.SPLIT_K}" if self.SPLIT_K > 1 else ""
        variant = "" if self.variant == "ptr" else f"_{self.variant}"
        return f"{self.BLOCK_M}x{self.BLOCK_N}x{self.BLOCK_K}_w{self.num_warps}_s{self.num_stages}{split}{variant}"

    @property
    def tma(self) -> bool:
        return self.variant in TMA_VARIANTS

    @property
    def bordered(self) -> bool:
        """Whether it reads its input as the interior of a zero-bordered map (kernels/conv_bordered.py)."""
        return self.variant in BORDERED_VARIANTS

    @property
    def warp_specialized(self) -> bool:
        """A warp-specialized K loop: never split (an atomic makes triton drop the specialization)."""
        return self.variant in WS_VARIANTS

    @property
    def splits(self) -> bool:
        """Whether its K loop may be split (not warp-specialized, not persistent)."""
        return not self.warp_specialized and self.variant != "tma_b_p"

    @property
    def fused_split(self) -> bool:
        """A split K loop summed by its own last program (no reduce launch)."""
        return self.SPLIT_K > 1 and (self.variant == "fused_k" or self.tma)

    def launch_kwargs(self, *fields: str) -> dict:
        kw = {f: getattr(self, f) for f in fields}
        kw.update(num_warps=self.num_warps, num_stages=self.num_stages)
        return kw


# ptr: pointer loads (cp.async on Hopper), a split K loop summed by a second launch.
# fused_k: the same kernel, the split summed by the last program of each tile (split configs only).
# tma: operands loaded by the TMA unit (1x1 stride-1 convs and the classifier: both; a 3x3
#   stride-1 conv: both, one output row segment per tile; other convs: the weights).
# tma_w: a conv's weights by TMA, its activations by pointer loads (any stride).
# tma_ws: tma with warp specialization (a producer warp, two consumer warpgroups); never split:
#   an atomic in the kernel makes triton drop the specialization silently (measured).
# tma_b: a stride-1 conv over a zero-bordered input (kernels/conv_bordered.py): every tap one
#   2-D TMA box of the flattened bordered map; the schedule gives its input a bordered slot.
# tma_b_ws: tma_b with a warp-specialized K loop; never split (as tma_ws).
# tma_b_p: tma_b persistent (one program per SM looping over tiles); never split.
VARIANTS = ("ptr", "fused_k", "tma", "tma_w", "tma_ws", "tma_b", "tma_b_ws", "tma_b_p")
TMA_VARIANTS = ("tma", "tma_w", "tma_ws", "tma_b", "tma_b_ws", "tma_b_p")
BORDERED_VARIANTS = ("tma_b", "tma_b_ws", "tma_b_p")
WS_VARIANTS = ("tma_ws", "tma_b_ws")
C = Config
# Every config below compiles for sm_90 with wgmma and without spilling on triton 3.6 and 3.8
# (`fastres check`). Removed by the gate: 128x128 tiles on 4 warps (the fused residual epilogue
# spills next to a 128-register accumulator), and for the flat-K stem anything wider than
# 128x64x16 / 64x64x32 (its 2-D index math spills).
_SPACE: dict[str, dict[torch.dtype, tuple[Config, ...]]] = {}
_16 = (torch.float16, torch.bfloat16)
# 8-bit GEMMs (int8: int32 accumulator; float8_e4m3fn: float32): pointer kernels only so far,
# K steps of at least 32 (tl.dot's smallest for 8-bit operands: MIN_BLOCK_K_8BIT).
_8 = QUANT_DTYPES
# conv: implicit GEMM over (kh, kw, cin-block); num_warps <= 4 (see above).
_SPACE["conv"] = {
    **{dt: (C(128, 128, 64, 4, 4), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4), C(64, 128, 32, 4, 4),
            C(64, 64, 32, 4, 4))
       for dt in _16},
    torch.float32: (C(64, 64, 32, 4, 3), C(64, 64, 16, 4, 3)),
    # (K steps of 64 only: ResNets' convs reduce over at least 64 channels)
    **{dt: (C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4)) for dt in _8},
}
# Tiles whose fused residual epilogue spills (the gate: 128x128x64 on 4 warps, 88 B of stack)
# while the plain epilogue does not: dispatched only to convs without a residual, which are
# all of ResNet-50's 3x3s (config_space(..., residual=True) leaves them out).
_NO_RESIDUAL: dict[str, tuple[Config, ...]] = {"conv": (C(128, 128, 64, 4, 4),)}
# Configs the gate rejected on a target other than sm_90 (`fastres check --target T`): a spill,
# shared memory over the target's limit, or no tensor-core instruction. Left out of that
# target's space, never dispatched there.
# Measured with triton 3.6 and 3.8 (the union of both: small spills come and go between them).
_CONSUMER = {  # sm_86 / sm_89: 99 KB of shared memory, mma.sync
    "conv": (C(128, 128, 64, 4, 4), C(128, 64, 64, 4, 4), C(64, 64, 64, 4, 4), C(64, 64, 16, 4, 3)),
    "conv1x1": (C(128, 64, 64, 4, 4),),  # the head's variant needs 122,880 B
}
_EXCLUDED: dict[str, dict[str, tuple[Config, ...]]] = {
    "sm_80": {"conv": (C(128, 128, 64, 4, 4),), "conv_stem": (C(64, 64, 32, 4, 3),)},
    "sm_86": _CONSUMER,
    "sm_89": _CONSUMER,
    "sm_100": {"conv1x1": (C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4), C(128, 64, 64, 4, 4), C(128, 64, 32, 4, 3))},
    "sm_120": {
        "conv": (C(128, 128, 64, 4, 4), C(128, 64, 64, 4, 4), C(64, 64, 16, 4, 3)),
        "conv_stem": (C(64, 64, 16, 4, 3),),
        "conv1x1": (C(128, 64, 64, 4, 4), C(64, 64, 64, 4, 4), C(64, 64, 32, 4, 3)),
    },
    # 64 KB of LDS: every tile whose pipeline needs more.
    "gfx942": {
        "conv": (C(128, 128, 64, 4, 4), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4)),
        "conv1x1": (C(128, 128, 64, 8, 3), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4)),
    },
}
# 8-bit configs a target's gate rejected (the float tables above are measured on float rows
# and do not apply): spills, every one.
_EXCLUDED_8BIT: dict[str, dict[str, tuple[Config, ...]]] = {
    # a float16 input quantized as it is loaded, with a float16 residual and output: 16-24 B
    "sm_100": {"conv": (C(128, 64, 64, 4, 4),)},
    # the stem's quantized float32 / uint8 pixel loads: 8-80 B of stack
    "sm_120": {"conv_stem": (C(64, 64, 32, 4, 4),)},
    # uint8 pixels: 73 registers spilled
    "gfx942": {"conv_stem": (C(64, 32, 32, 4, 4),)},
}
# conv_stem: the same kernel on its flat-K path (Cin < 16: the stem's 7x7 over 3 channels).
_SPACE["conv_stem"] = {
    **{dt: (C(128, 64, 16, 4, 4), C(64, 64, 32, 4, 4)) for dt in _16},
    torch.float32: (C(64, 64, 32, 4, 3), C(64, 64, 16, 4, 3)),
    **{dt: (C(64, 64, 32, 4, 4), C(64, 32, 32, 4, 4)) for dt in _8},
}
# conv_grouped: the conv kernel on grouped convs (ResNeXt's 3x3s). BLOCK_N = BLOCK_K, so that
# select_config's BLOCK_K (the widest the per-group reduction Cin/groups fills) also sizes the
# tile to the group: with 4 or 8 channels per group a 16-wide tile spans 4 or 2 groups and
# its block-diagonal weight tile wastes 3/4 or 1/2 of the MMA; with 16 or more, a tile stays
# inside one group (bench/NOTES.md, grouped convs).
_SPACE["conv_grouped"] = {
    **{dt: (C(64, 16, 16, 4, 4), C(128, 16, 16, 4, 4), C(64, 32, 32, 4, 4), C(64, 64, 64, 4, 4)) for dt in _16},
    # float32: 64x32x32 spills 8 B (the gate: on 3 stages on sm_90, on 2 with tf32 on sm_80/86/89)
    torch.float32: (C(64, 16, 16, 4, 3),),
    **{dt: (C(64, 32, 32, 4, 4), C(64, 64, 64, 4, 4)) for dt in _8},
}
# conv1x1: a plain GEMM, so 8 warps are allowed and carry the 128x128 tile.
_SPACE["conv1x1"] = {
    **{dt: (C(128, 128, 64, 8, 3), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4), C(64, 64, 32, 4, 4))
       for dt in _16},
    torch.float32: (C(128, 64, 32, 4, 3), C(64, 64, 32, 4, 3)),
    **{dt: (C(128, 128, 64, 8, 3), C(128, 64, 64, 4, 4), C(64, 128, 64, 4, 4), C(64, 64, 64, 4, 4)) for dt in _8},
}
# Hopper's TMA variants (sm_90 only: the gate clears them there; other targets keep the
# pointer kernels), and fused split-K: in float16 only, the dtype the performance targets are
# stated in (bfloat16 and float32 keep the pointer kernels, and CI's gate its budget, until a
# GPU run shows which variants pay). Offered to the tuner, never chosen by the untuned
# heuristic, until a GPU run ranks them (bench/NOTES.md, version 8).
# The bordered convs (tma_b, tma_b_ws, tma_b_p): stride-1 3x3s over zero-bordered inputs.
_BORDERED = (C(128, 64, 64, 4, 4, variant="tma_b"), C(64, 128, 64, 4, 4, variant="tma_b"),
             C(64, 64, 64, 4, 4, variant="tma_b"),
             C(128, 128, 64, 4, 3, variant="tma_b_ws"), C(128, 64, 64, 4, 4, variant="tma_b_ws"),
             # (persistent 128x128x64 on 4 warps spilled: 56-352 B of stack, triton 3.6 and 3.8)
             C(128, 64, 64, 4, 4, variant="tma_b_p"), C(64, 128, 64, 4, 4, variant="tma_b_p"))
_GEMM_TMA = (C(128, 128, 64, 8, 3, variant="tma"), C(128, 64, 64, 4, 4, variant="tma"),
             C(64, 128, 64, 4, 4, variant="tma"), C(64, 64, 64, 4, 4, variant="tma"),
             C(128, 128, 64, 4, 3, variant="tma_ws"), C(128, 64, 64, 4, 4, variant="tma_ws"),
             C(64, 64, 64, 4, 4, variant="tma_ws"))
_CONV_TMA = (C(128, 64, 64, 4, 4, variant="tma"), C(64, 128, 64, 4, 4, variant="tma"),
             C(64, 64, 64, 4, 4, variant="tma"),
             C(128, 64, 64, 4, 4, variant="tma_w"), C(64, 64, 64, 4, 4, variant="tma_w"))
_HOPPER: dict[str, dict[torch.dtype, tuple[Config, ...]]] = {
    # 8-bit: float16's tiles (the gate clears them with IGMMA / QGMMA), tuned unsplit only
    # (HOPPER_DTYPES: fused splits stay float16's).
    "conv1x1": {dt: _GEMM_TMA for dt in (torch.float16, *_8)},
    "conv": {dt: (*_CONV_TMA, *_BORDERED) for dt in (torch.float16, *_8)},
}
HOPPER_TARGETS = ("sm_90",)
HOPPER_DTYPES = (torch.float16,)
# Fused split-K (and so any split TMA tile) only for tiles of at most 64 rows: with 128 rows the
# classifier's fused sum spills (the gate: 80-384 B of stack, pointer and TMA alike), as does
# the 128x128 conv's; a grid worth splitting has few rows anyway.
FUSED_MAX_BLOCK_M = 64
# avgpool (the head's pool; its linear layer runs on conv1x1 configs): BLOCK_M = pixels per
# load (a 7x7 map in one), BLOCK_N = channels.
_SPACE["avgpool"] = {dt: (C(64, 128, 1, 4, 1),) for dt in (*_16, torch.float32)}
# max_pool2d: BLOCK_M = output pixels, BLOCK_N = channels.
_SPACE["max_pool2d"] = {dt: (C(32, 64, 1, 4, 1),) for dt in (*_16, torch.float32)}
# add_relu: BLOCK_M = elements.
_SPACE["add_relu"] = {dt: (C(2048, 1, 1, 4, 1),) for dt in (*_16, torch.float32)}
# splitk_reduce: BLOCK_M = output pixels, BLOCK_N = channels (128 contiguous fp32 = 512 B rows).
_SPACE["splitk_reduce"] = {
    **{dt: (C(16, 128, 1, 4, 1),) for dt in (*_16, torch.float32)},
    # (int32 partials: 16x128 on 4 warps spilled 8 B on sm_90)
    **{dt: (C(16, 128, 1, 8, 1),) for dt in _8},
}

# Under the CPU interpreter every program and loop step costs milliseconds of Python while
# numpy on a tile is cheap: big tiles (clamped to the problem in select_config) run fastest.
_INTERPRETER = {
    "conv": C(512, 256, 256, 4, 1),
    "conv_stem": C(512, 256, 256, 4, 1),
    "conv_grouped": C(512, 64, 64, 4, 1),  # a wider tile spans more groups: mostly zeros
    "conv1x1": C(512, 256, 256, 4, 1),
    "avgpool": C(64, 256, 1, 4, 1),
    "max_pool2d": C(64, 64, 1, 4, 1),
    "add_relu": C(4096, 1, 1, 4, 1),
    "splitk_reduce": C(64, 256, 1, 4, 1),
}

KERNELS = tuple(_SPACE)
GEMM_KERNELS = ("conv", "conv_stem", "conv_grouped", "conv1x1")
# The convs whose K loop may be split (kernels/splitk.py).
SPLIT_KERNELS = ("conv", "conv_stem", "conv_grouped", "conv1x1")
NUM_SMS_DEFAULT = 132  # H100 SXM / H200
# Split-K heuristic: split only grids that leave at least half the SMs idle, and give every
# split at least this many K-loop iterations (each split writes a float32 partial tile that
# the reduce launch reads back: with 4 iterations that is 1/4 of what the split loaded).
MIN_ITERS_PER_SPLIT = 4
# ... and only where the longest program gets this many iterations shorter: the reduce launch
# costs about one launch gap in a CUDA graph (~2 us), the time of several 64x64x64 steps of
# one SM. A prediction (bench/NOTES.md) that `fastres bench layers` measures layer by layer.
MIN_SAVED_ITERS = 8

_local = threading.local()


def config_space(
    kernel: str, dtype: torch.dtype, *, residual: bool = False, target: str = DEFAULT_TARGET,
    max_shared: int | None = None,
) -> tuple[Config, ...]:
    """Every config the engine may dispatch for `kernel` at `dtype` on `target` (what the gate
    compiles and clears for it); residual=True: only those whose fused residual epilogue does
    not spill; max_shared: a device's own shared-memory limit per block, where it is below its
    target's (configs that could need more are left out)."""
    try:
        space = _SPACE[kernel][dtype]
    except KeyError:
        raise ValueError(f"no config space for kernel {kernel!r} at dtype {dtype}") from None
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    if dtype == torch.float8_e4m3fn:
        check_fp8_target(target)
    if target in HOPPER_TARGETS:
        space = space + _HOPPER.get(kernel, {}).get(dtype, ())
    excluded = (_EXCLUDED_8BIT if dtype in QUANT_DTYPES else _EXCLUDED).get(target, {}).get(kernel, ())
    space = tuple(c for c in space if c not in excluded)
    if max_shared is not None and max_shared < TARGETS[target].max_shared:
        space = tuple(c for c in space if shared_bound(kernel, c, dtype) <= max_shared)
    if residual:
        space = tuple(c for c in space if not residual_unsafe(kernel, c))
    if not space:
        raise ValueError(f"no config of {kernel!r} at {dtype} fits {target}"
                         + (f" with {max_shared} bytes of shared memory per block" if max_shared is not None else ""))
    return space


def has_space(kernel: str, dtype: torch.dtype, target: str = DEFAULT_TARGET) -> bool:
    """Whether `kernel` has configs at `dtype` on `target` at all (8-bit: the GEMM-type convs
    and the split-K sum; float8_e4m3fn only where tensor cores multiply e4m3: FP8_TARGETS)."""
    return dtype in _SPACE.get(kernel, {}) and (dtype != torch.float8_e4m3fn or target in FP8_TARGETS)


def shared_bound(kernel: str, config: Config, dtype: torch.dtype) -> int:
    """An upper bound of the shared memory a launch with `config` asks for: the software
    pipeline's A and B tiles (GEMM-type kernels), plus a float32 tile for the epilogue's layout
    change. The gate measures the real figure per target; this serves devices whose limit is
    below their target's."""
    elem = torch.empty((), dtype=dtype).element_size()
    pipeline = config.num_stages * (config.BLOCK_M + config.BLOCK_N) * config.BLOCK_K * elem if kernel in GEMM_KERNELS else 0
    return pipeline + config.BLOCK_M * config.BLOCK_N * 4


def residual_unsafe(kernel: str, config: Config) -> bool:
    """Whether `config` spills with the fused residual (never dispatched to one). A split
    config is safe: its residual is added by the reduce launch, not in the GEMM's epilogue."""
    return config.SPLIT_K <= 1 and config in _NO_RESIDUAL.get(kernel, ())


@contextlib.contextmanager
def use_config(kernel: str, config: Config):
    """Force `config` for every launch of `kernel` in this thread (tests, tuning)."""
    stack = _local.__dict__.setdefault("overrides", {})
    old = stack.get(kernel)
    stack[kernel] = config
    try:
        yield config
    finally:
        if old is None:
            stack.pop(kernel, None)
        else:
            stack[kernel] = old


def _device(device: torch.device | None, sms: int | None, target: str | None,
            max_shared: int | None) -> tuple[int, str, int | None]:
    """(SM count, target, shared-memory limit) to choose for: what is given, the rest from a
    CUDA `device` (read once per device), else an H100's."""
    if device is not None and device.type == "cuda" and None in (sms, target):
        from .targets import device_facts

        facts = device_facts(device)
        sms = facts.sms if sms is None else sms
        target = facts.target if target is None else target
        max_shared = facts.max_shared if max_shared is None else max_shared
    return (NUM_SMS_DEFAULT if sms is None else int(sms)), (target or DEFAULT_TARGET), max_shared


def _pow2_at_least(v: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, int(v) - 1).bit_length())


def k_iters(K: int, block_k: int, taps: int = 1) -> int:
    """K-loop iterations of a GEMM-type conv: `taps` (kh, kw) positions x ceil(K / BLOCK_K)."""
    return int(taps) * -(-int(K) // int(block_k))


def choose_split(programs: int, iters: int, sms: int) -> int:
    """How many ways to split the K loop of a grid of `programs` tiles (1 = not at all).

    Only a grid that leaves at least half the SMs idle is split, by enough to fill them but
    never below MIN_ITERS_PER_SPLIT iterations per split, and only if that makes the longest
    program at least MIN_SAVED_ITERS iterations shorter.
    """
    if programs <= 0 or iters <= 0 or 2 * programs > sms:  # an empty problem: nothing to split
        return 1
    split = min(-(-sms // programs), iters // MIN_ITERS_PER_SPLIT)
    if split < 2 or iters - -(-iters // split) < MIN_SAVED_ITERS:
        return 1
    return split


def tile_of(config: Config) -> Config:
    """`config` unsplit: its tile (block sizes, warps, stages, kernel variant), what a layer
    compiles once for every input size (a split's count is no compile key; "fused_k" unsplit
    is the pointer kernel)."""
    return dataclasses.replace(config, SPLIT_K=1, variant="ptr" if config.variant == "fused_k" else config.variant)


def with_split(kernel: str, config: Config, split: int, *, residual: bool = False) -> Config:
    """`config`'s tile split `split` ways (1: unsplit), as select_config and tuning_candidates
    split a tile: a pointer tile keeps its reduce launch or fused sum, a TMA tile fuses it; a
    tile that cannot split (warp-specialized, persistent, a TMA tile over FUSED_MAX_BLOCK_M
    rows) stays unsplit. A split tile whose unsplit epilogue cannot take the residual
    (`residual_unsafe`) keeps its own split: unsplit, it would not be dispatched there."""
    if kernel not in SPLIT_KERNELS:
        return config
    tile = tile_of(config)
    if not config.splits or (config.tma and config.BLOCK_M > FUSED_MAX_BLOCK_M):
        return tile
    if split > 1:
        return dataclasses.replace(config, SPLIT_K=int(split))
    if residual and config.SPLIT_K > 1 and residual_unsafe(kernel, tile):
        return config
    return tile


def bordered_rows(N: int, HP: int, WP: int, OH: int, OW: int) -> int:
    """Rows of a bordered conv's tile grid (kernels/conv_bordered.py): positions of the
    flattened [N*HP*WP] bordered map up to the window corner of the last output pixel."""
    return (int(N) - 1) * int(HP) * int(WP) + (int(OH) - 1) * int(WP) + int(OW)


def m_tiles(config: Config, M: int, segments: tuple[int, int] | None = None, bordered: int | None = None) -> int:
    """Tiles along the M axis of `config`'s grid for M output pixels: ceil(M / BLOCK_M), except
    for the ``tma`` conv, which tiles each output row on its own (a TMA box cannot wrap to the
    next row): `segments` = (N*OH output rows, OW pixels each) gives N*OH*ceil(OW / BLOCK_M);
    and the bordered convs, which tile the rows of the bordered map: `bordered` =
    ``bordered_rows(...)`` gives ceil(bordered / BLOCK_M)."""
    if config.variant == "tma" and segments is not None:
        rows, width = segments
        return int(rows) * -(-int(width) // config.BLOCK_M)
    if config.bordered and bordered is not None:
        return -(-int(bordered) // config.BLOCK_M)
    return -(-int(M) // config.BLOCK_M)


def applies(kernel: str, config: Config, *, K: int, stride: int = 1, dilation: int = 1,
            dtype: torch.dtype = torch.float16) -> bool:
    """Whether `config`'s variant can run a conv reducing over K channels per tap at `stride`
    (what the TMA launchers require: 16-byte aligned rows of `dtype`, whole BLOCK_K steps inside a tap,
    for TMA activations stride 1, and no dilation except for the bordered convs; grouped
    convs have no TMA configs)."""
    if not config.tma:
        return True
    if config.bordered:
        # Any dilation: a dilated tap is another constant row offset of the bordered map.
        return kernel == "conv" and stride == 1 and K % config.BLOCK_K == 0
    if dilation != 1:
        return False
    if kernel == "conv1x1":
        # rows of K elements of `dtype`: 16-byte aligned for a TMA box
        return stride == 1 and K * torch.empty((), dtype=dtype).element_size() % 16 == 0
    if kernel == "conv":
        whole = K % config.BLOCK_K == 0
        return whole and (stride == 1 or config.variant == "tma_w")
    return False


def tuning_candidates(
    kernel: str, dtype: torch.dtype, *, M: int, N: int, K: int, device: torch.device | None = None, taps: int = 1,
    residual: bool = False, sms: int | None = None, target: str | None = None, max_shared: int | None = None,
    stride: int = 1, dilation: int = 1, segments: tuple[int, int] | None = None, bordered: int | None = None,
) -> tuple[Config, ...]:
    """What per-layer tuning measures for one conv: every config of the space that applies to
    it (`applies`; for a conv with a residual, those that take one), and every tile split by
    `choose_split` where that splits it (the heuristic's own choice is among them): pointer
    tiles both with the reduce launch and, on Hopper, fused ("fused_k"); TMA tiles fused; warp
    specialized tiles never split; for ``conv_grouped``, tiles whose K step Cin/groups (K) fills.
    `sms`, `target`, `max_shared`: the device planned for (default: `device`'s, else an H100's:
    132 SMs, sm_90); `stride`, `dilation`: the conv's (TMA variants apply to neither dilation).
    `segments`: (N*OH, OW) of a conv's output, which the ``tma`` conv's grid is made of
    (`m_tiles`); a conv that offers ``tma`` tiles must give it, or their splits would be
    planned for a grid they do not launch. `bordered`: the same for the bordered convs
    (``bordered_rows`` of the conv's bordered input); without it they are not offered."""
    sms, target, max_shared = _device(device, sms, target, max_shared)

    def ok(c: Config) -> bool:
        # A grouped conv's tile is as wide as its K step (conv_grouped): no wider than a group fills.
        if kernel == "conv_grouped" and c.BLOCK_K > _pow2_at_least(K):
            return False
        if c.bordered and bordered is None:
            return False
        return applies(kernel, c, K=K, stride=stride, dilation=dilation, dtype=dtype)

    space = tuple(c for c in config_space(kernel, dtype, residual=residual, target=target, max_shared=max_shared) if ok(c))
    if kernel not in SPLIT_KERNELS:
        return space
    out = list(space)
    for c in config_space(kernel, dtype, target=target, max_shared=max_shared):
        if not ok(c) or not c.splits or (c.tma and (c.BLOCK_M > FUSED_MAX_BLOCK_M or dtype not in HOPPER_DTYPES)):
            continue
        rows = segments if kernel == "conv" else None  # the 1x1 TMA GEMM tiles M = N*OH*OW flat
        if kernel == "conv" and c.variant == "tma" and rows is None and M > 0:
            raise ValueError("tuning_candidates('conv'): the tma conv tiles output rows, pass segments=(N*OH, OW)")
        split = choose_split(m_tiles(c, M, rows, bordered) * -(-N // c.BLOCK_N), k_iters(K, c.BLOCK_K, taps), sms)
        if split > 1:
            out.append(dataclasses.replace(c, SPLIT_K=split))
            if (c.variant == "ptr" and target in HOPPER_TARGETS and dtype in HOPPER_DTYPES and kernel != "conv_stem"
                    and c.BLOCK_M <= FUSED_MAX_BLOCK_M):
                out.append(dataclasses.replace(c, SPLIT_K=split, variant="fused_k"))
    return tuple(out)


def select_config(
    kernel: str, dtype: torch.dtype, *, M: int = 1, N: int = 1, K: int = 1, device: torch.device | None = None,
    taps: int = 1, residual: bool = False, sms: int | None = None, interpreter: bool | None = None,
    target: str | None = None, max_shared: int | None = None,
) -> Config:
    """The config for one launch: a thread's override, else the interpreter's, else a heuristic.

    For the convs, K is what one (kh, kw) tap reduces over and `taps` the number of taps
    (KH*KW for ``conv``; 1 for ``conv1x1`` and the flat-K ``conv_stem``, whose K is all of it);
    `residual`: the launch fuses a residual add (some tiles cannot).
    The heuristic, for GEMM-type kernels: the widest BLOCK_K the reduction fills, tiles no
    wider than the output channels need, then the biggest tile that still gives every SM a
    program, else the smallest tile; a grid that leaves most SMs idle then gets a split K loop
    (`choose_split`). `sms`, `target`, `max_shared` and `interpreter` describe the device planned
    for (default: `device`'s facts, else an H100's, and whether triton's interpreter is on), so
    a schedule can be planned for a GPU without one.
    """
    override = getattr(_local, "overrides", {}).get(kernel)
    if override is not None:
        return override
    if interpreting() if interpreter is None else interpreter:
        cfg = _INTERPRETER[kernel]
        if kernel in GEMM_KERNELS:
            k_floor = MIN_BLOCK_K_8BIT if dtype in QUANT_DTYPES else 16
            cfg = dataclasses.replace(
                cfg, BLOCK_M=min(cfg.BLOCK_M, _pow2_at_least(M)), BLOCK_N=min(cfg.BLOCK_N, _pow2_at_least(N)),
                BLOCK_K=min(cfg.BLOCK_K, _pow2_at_least(K, k_floor)),
            )
        return cfg
    sms, target, max_shared = _device(device, sms, target, max_shared)
    # The untuned heuristic keeps the pointer kernels (the TMA variants wait for a GPU run).
    space = tuple(c for c in config_space(kernel, dtype, residual=residual, target=target, max_shared=max_shared)
                  if c.variant == "ptr")
    if kernel not in GEMM_KERNELS:
        return space[0]
    kmax = _pow2_at_least(K)
    widest = max(c.BLOCK_K for c in space if c.BLOCK_K <= kmax) if any(c.BLOCK_K <= kmax for c in space) else min(c.BLOCK_K for c in space)
    cands = [c for c in space if c.BLOCK_K == widest]
    # A tile wider than the output channels computes zeros (64 channels in a 128-wide tile).
    narrow = [c for c in cands if c.BLOCK_N <= _pow2_at_least(N)]
    cands = narrow or [c for c in cands if c.BLOCK_N == min(d.BLOCK_N for d in cands)]

    def programs(c: Config) -> int:
        return -(-M // c.BLOCK_M) * -(-N // c.BLOCK_N)

    full = [c for c in cands if programs(c) >= sms]
    if full:
        return max(full, key=lambda c: (c.BLOCK_M * c.BLOCK_N, c.BLOCK_M))
    cfg = min(cands, key=lambda c: (c.BLOCK_M * c.BLOCK_N, -c.BLOCK_M))
    split = choose_split(programs(cfg), k_iters(K, cfg.BLOCK_K, taps), sms)
    return dataclasses.replace(cfg, SPLIT_K=split) if split > 1 else cfg
