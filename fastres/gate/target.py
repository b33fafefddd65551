"""What the gate compiles for: the GPU targets and the limits their rows are judged by.

A ``Target`` names the triton ``GPUTarget`` (backend, architecture, warp size) the kernels are
compiled for, the most dynamic shared memory (LDS on AMD) a block may use there, and the
opcode of the tensor-core instruction a GEMM-type kernel must use on it. ``TARGETS`` holds
every NVIDIA GPU since Ampere and AMD's MI300; ``resolve_targets`` reads a ``--target`` list.
Every row, cache key and summary line is for one target; ``DEFAULT_TARGET`` (Hopper, sm_90)
is what a plain ``fastres check`` gates.

The opcodes, as triton 3.6 and 3.8 compile a float16 / bfloat16 / tf32 ``tl.dot``:

- sm_80, sm_86, sm_89, sm_120: ``HMMA`` (HMMA.16816.F32, .F32.BF16; HMMA.1688.F32.TF32);
- sm_90: ``HGMMA`` (wgmma: HGMMA.64x64x16.F32, HGMMA.64x64x8.F32.TF32);
- sm_100: ``UTCHMMA`` (tcgen05.mma for f16, bf16 and tf32; printed without a shape suffix);
- gfx942: ``v_mfma`` (v_mfma_f32_32x32x8_f16 / _bf16, v_mfma_f32_32x32x4_xf32 for tf32 and
  v_mfma_f32_32x32x2_f32 for exact float32 products, which only this target has).

8-bit GEMMs have opcodes of their own (``for_dtype``): int8 ``IMMA`` (IMMA.16832.S8.S8.SAT) on
sm_80, sm_86, sm_89 and sm_120, ``IGMMA`` (IGMMA.64x64x32.S8.S8) on sm_90, ``UTCIMMA`` on
sm_100, ``v_mfma`` (v_mfma_i32_*_i8) on gfx942; float8 e4m3 ``QMMA`` (QMMA.16832.F32.E4M3.E4M3)
on sm_89 and sm_120, ``QGMMA`` (QGMMA.64x64x32.F32.E4M3.E4M3) on sm_90, ``UTCQMMA`` on sm_100,
and none elsewhere (``kernels.config`` has no e4m3 space there).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # triton is imported only when something is compiled
    from triton.backends.compiler import GPUTarget


@dataclasses.dataclass(frozen=True)
class Target:
    """A compile target of the gate (frozen and picklable: it travels to worker processes)."""

    name: str  # as the summary line and --target say it, e.g. "sm_90"
    backend: str  # triton's backend: "cuda" or "hip"
    arch: int | str  # compute capability for cuda (90), the gfx name for hip ("gfx942")
    warp_size: int
    max_shared: int  # bytes of dynamic shared memory one block may use (opt-in maximum)
    tensor_core_op: str  # the opcode (SASS, or amdgcn prefix) of the tensor-core instruction
    # Whether exact float32 products (input_precision="ieee") get the tensor cores too: only
    # MI300's MFMA multiplies fp32 operands; NVIDIA's tensor cores take fp16 / bf16 / tf32.
    fp32_tensor_core: bool = False
    gpus: str = ""  # which cards it is, for people

    def gpu_target(self) -> "GPUTarget":
        """The ``GPUTarget`` handed to ``triton.compile``."""
        from triton.backends.compiler import GPUTarget

        return GPUTarget(self.backend, self.arch, self.warp_size)

    @property
    def binary(self) -> str:
        """The key of the compiled binary in triton's ``asm``: a cubin, or AMD's hsaco."""
        return "hsaco" if self.backend == "hip" else "cubin"


_AMPERE_SHARED = 166912  # 163 KB (A100)
_CONSUMER_SHARED = 101376  # 99 KB (GA10x, AD10x, GB20x)
_HOPPER_SHARED = 232448  # 227 KB (H100, H200, B200)

SM80 = Target("sm_80", "cuda", 80, 32, _AMPERE_SHARED, "HMMA", gpus="A100")
SM86 = Target("sm_86", "cuda", 86, 32, _CONSUMER_SHARED, "HMMA", gpus="A10, A40, RTX 30")
SM89 = Target("sm_89", "cuda", 89, 32, _CONSUMER_SHARED, "HMMA", gpus="L4, L40S, RTX 40")
SM90 = Target("sm_90", "cuda", 90, 32, _HOPPER_SHARED, "HGMMA", gpus="H100, H200")
SM100 = Target("sm_100", "cuda", 100, 32, _HOPPER_SHARED, "UTCHMMA", gpus="B200")
SM120 = Target("sm_120", "cuda", 120, 32, _CONSUMER_SHARED, "HMMA", gpus="RTX 50")
# MI300X: 64 KB of LDS per workgroup, 64-wide wavefronts.
GFX942 = Target("gfx942", "hip", "gfx942", 64, 65536, "v_mfma", fp32_tensor_core=True, gpus="MI300X")

TARGETS: dict[str, Target] = {t.name: t for t in (SM80, SM86, SM89, SM90, SM100, SM120, GFX942)}
DEFAULT_TARGET = SM90


# The tensor-core opcode of an 8-bit tl.dot per target (see the module docstring).
QUANT_TENSOR_CORE_OPS: dict[str, dict[str, str]] = {
    "int8": {"sm_80": "IMMA", "sm_86": "IMMA", "sm_89": "IMMA", "sm_90": "IGMMA", "sm_100": "UTCIMMA",
             "sm_120": "IMMA", "gfx942": "v_mfma"},
    "float8_e4m3fn": {"sm_89": "QMMA", "sm_90": "QGMMA", "sm_100": "UTCQMMA", "sm_120": "QMMA"},
}


def for_dtype(target: Target, dtype: str) -> Target:
    """`target` as a row of `dtype` (a ``variants.DTYPES`` name) is judged: with the opcode of
    that dtype's tensor-core instruction (``QUANT_TENSOR_CORE_OPS``); float dtypes: as it is."""
    ops = QUANT_TENSOR_CORE_OPS.get(dtype)
    if ops is None:
        return target
    if target.name not in ops:
        raise ValueError(f"{dtype} has no tensor-core instruction on {target.name}")
    return dataclasses.replace(target, tensor_core_op=ops[target.name])


def resolve_targets(spec: str | Iterable[str] | None) -> tuple[Target, ...]:
    """The targets a ``--target`` list names: comma-separated names (and/or several strings),
    ``all`` for every one of ``TARGETS``; None or empty: ``DEFAULT_TARGET``. In the order
    given, each once; ValueError (one line) on a name not in ``TARGETS``."""
    parts = [spec] if isinstance(spec, str) else list(spec or ())
    names = [n.strip().lower() for p in parts for n in p.split(",") if n.strip()]
    if not names:
        return (DEFAULT_TARGET,)
    out: list[Target] = []
    for name in names:
        chosen = list(TARGETS.values()) if name == "all" else [TARGETS.get(name)]
        if chosen[0] is None:
            raise ValueError(f"unknown target {name!r}: choose from {', '.join(TARGETS)} or all")
        out.extend(t for t in chosen if t not in out)
    return tuple(out)
