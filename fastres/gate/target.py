"""What the gate compiles for: one GPU target and the limits its rows are judged by.

A ``Target`` names the triton ``GPUTarget`` (backend, architecture, warp size) the kernels are
compiled for, the most dynamic shared memory a block may use there, and the SASS opcode of the
tensor-core instruction a GEMM-type kernel must use on it. Every row, cache key and summary
line is for one target; ``DEFAULT_TARGET`` (Hopper, sm_90) is what ``fastres check`` gates.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # triton is imported only when something is compiled
    from triton.backends.compiler import GPUTarget


@dataclasses.dataclass(frozen=True)
class Target:
    """A compile target of the gate (frozen and picklable: it travels to worker processes)."""

    name: str  # as the summary line says it, e.g. "sm_90"
    backend: str  # triton's backend: "cuda"
    arch: int | str  # compute capability for cuda (90)
    warp_size: int
    max_shared: int  # bytes of dynamic shared memory one block may use (opt-in maximum)
    tensor_core_op: str  # the SASS opcode of the tensor-core instruction GEMMs must use

    def gpu_target(self) -> "GPUTarget":
        """The ``GPUTarget`` handed to ``triton.compile``."""
        from triton.backends.compiler import GPUTarget

        return GPUTarget(self.backend, self.arch, self.warp_size)


# Hopper: 227 KB of shared memory per block, wgmma (HGMMA in SASS) for fp16 / bf16 / tf32.
SM90 = Target(name="sm_90", backend="cuda", arch=90, warp_size=32, max_shared=232448, tensor_core_op="HGMMA")

DEFAULT_TARGET = SM90
