"""Reading a compiled kernel's resources and tensor-core opcodes, for NVIDIA and AMD targets.

NVIDIA (a cubin, read with triton's bundled ``cuobjdump``):

- ``--dump-resource-usage``: REG, STACK, the static SHARED and LOCAL (``parse_resource_usage``);
- ``--dump-sass``: how many tensor-core instructions (the target's, e.g. HGMMA for sm_90's
  wgmma) and how many LDL / STL (local memory: register spills) the code has (``scan_sass``).

AMD (gfx942; triton's ``asm["amdgcn"]`` text, no tool needed; ``parse_amdgcn``): the kernel
descriptor's metadata (``.vgpr_count`` with the AGPRs, ``.sgpr_count``, ``.vgpr_spill_count``,
``.sgpr_spill_count``, ``.private_segment_fixed_size``: scratch bytes per lane, i.e. the
stack) and the number of ``v_mfma`` instructions and scratch loads / stores in the code.

``inspect_kernel`` reads one compiled kernel for its target. Nothing here compiles or judges a
row; shared memory is not read here (the caller takes triton's ``metadata.shared``, what the
launch asks for, on every target).
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from typing import Any

from .target import DEFAULT_TARGET, Target

_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")
_SPILL_RE = re.compile(r"\b(LDL|STL)(\.|\s)")
# amdgcn: "    .vgpr_count:     62" in the kernel's metadata (YAML between .amdgpu_metadata and
# .end_amdgpu_metadata); one kernel per module, so the first of each is the kernel's.
_AMD_META_RE = re.compile(
    r"^\s*-?\s*\.(vgpr_count|agpr_count|sgpr_count|vgpr_spill_count|sgpr_spill_count|"
    r"private_segment_fixed_size|group_segment_fixed_size|uses_dynamic_stack):\s*(\w+)",
    re.MULTILINE,
)
# Spill code reads and writes scratch (private) memory; gfx942 addresses it with the flat
# scratch_load / scratch_store instructions (triton's own global accesses are global_ or buffer_).
_AMD_SCRATCH_RE = re.compile(r"^\s+scratch_(?:load|store)_\w+", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class KernelReport:
    """What one compiled kernel's binary says about its resources (NVIDIA or AMD)."""

    registers: int  # per thread; on AMD the VGPRs of a lane, AGPRs included
    stack: int  # bytes of stack frame (AMD: private segment per lane): > 0 means spilled registers
    static_shared: int | None  # NVIDIA's static SHARED (AMD: the group segment's fixed size)
    local: int  # bytes of local memory
    local_insts: int  # LDL / STL instructions (AMD: scratch loads / stores)
    tensor_core_insts: int  # the target's tensor-core instruction (HGMMA on sm_90, v_mfma on gfx942)
    sgprs: int | None = None  # AMD only: scalar registers
    spill_count: int = 0  # AMD only: VGPRs + SGPRs the compiler says it spilled
    tma_insts: int = 0  # NVIDIA: UTMALDG / UTMASTG (the TMA unit's bulk tensor loads and stores)
    setmaxnreg_insts: int = 0  # NVIDIA: USETMAXREG (warp specialization rebalancing registers)
    # sm_90: wgmmas whose A operand comes from registers (``HGMMA.. Rd, Ra, gdesc[..]``; IGMMA,
    # QGMMA alike) rather than shared memory (``HGMMA.. Rd, gdesc[..]``: both operands' descriptors)
    register_a_insts: int = 0

    @property
    def spills(self) -> bool:
        return self.stack > 0 or self.local > 0 or self.local_insts > 0 or self.spill_count > 0


def find_cuobjdump() -> str:
    """The path of triton's bundled cuobjdump."""
    try:
        import triton.knobs

        path = triton.knobs.nvidia.cuobjdump.path
        if path and os.path.isfile(path):
            return path
    except Exception:  # pragma: no cover - older / newer knob layouts
        pass
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.isfile(path):
        raise RuntimeError(f"triton's cuobjdump is missing (looked for {path})")
    return path


def parse_resource_usage(text: str) -> dict[str, int]:
    """``cuobjdump --dump-resource-usage`` -> {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}."""
    found: dict[str, int] = {}
    for key, val in _RESOURCE_RE.findall(text):
        found[key] = max(found.get(key, 0), int(val))  # one function per cubin; max if several
    if "REG" not in found or "STACK" not in found:
        raise RuntimeError(f"could not read REG/STACK from cuobjdump's resource usage: {text.strip()[:300]!r}")
    return found


# sm_90's wgmma opcodes: float16 / bfloat16 / tf32 (HGMMA), int8 (IGMMA), e4m3 (QGMMA).
_WGMMA_OPS = ("HGMMA", "IGMMA", "QGMMA")


def scan_sass(sass: str, *, target: Target = DEFAULT_TARGET) -> dict[str, int]:
    """Count the target's tensor-core instructions and LDL/STL (local memory: spills) in a SASS
    dump: ``{"hgmma": .., "local_insts": ..}`` on sm_90 (the first key is the opcode, lowercase)."""
    op = target.tensor_core_op
    # SASS prints most opcodes with a shape suffix (HGMMA.64x64x16.F32, HMMA.16816.F32) but
    # sm_100's UTCHMMA without one; \b keeps HMMA from matching inside HGMMA or UTCHMMA.
    tensor_core = re.findall(rf"\b{re.escape(op)}(?:\.|\s)", sass)
    return {op.lower(): len(tensor_core), "local_insts": len(_SPILL_RE.findall(sass)),
            "tma_insts": len(re.findall(r"\bUTMA(?:LDG|STG)\b", sass)),
            "setmaxnreg_insts": len(re.findall(r"\bUSETMAXREG\b", sass)),
            # (wgmma's own operand forms, its 8-bit opcodes IGMMA / QGMMA alike: other targets'
            # MMAs always read registers)
            "register_a_insts": len(re.findall(rf"\b{op}\.\S+\s+R\d+,\s*R\d+,", sass)) if op in _WGMMA_OPS else 0}


def inspect_cubin(cubin: bytes, *, target: Target = DEFAULT_TARGET) -> KernelReport:
    """Run cuobjdump on `cubin` (resource usage and SASS) and read what the gate judges."""
    cuobjdump = find_cuobjdump()
    with tempfile.TemporaryDirectory(prefix="fastres-check-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run(
            [cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        sass = subprocess.run(
            [cuobjdump, "--dump-sass", path], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    res = parse_resource_usage(usage)
    counts = scan_sass(sass, target=target)
    return KernelReport(
        registers=res["REG"], stack=res["STACK"], static_shared=res.get("SHARED"), local=res.get("LOCAL", 0),
        local_insts=counts["local_insts"], tensor_core_insts=counts[target.tensor_core_op.lower()],
        tma_insts=counts["tma_insts"], setmaxnreg_insts=counts["setmaxnreg_insts"],
        register_a_insts=counts["register_a_insts"],
    )


def parse_amdgcn(asm: str, *, op: str = "v_mfma") -> dict[str, int]:
    """An amdgcn listing (triton's ``asm["amdgcn"]``) -> its kernel metadata and opcode counts:
    ``vgpr_count``, ``agpr_count``, ``sgpr_count``, ``vgpr_spill_count``, ``sgpr_spill_count``,
    ``private_segment_fixed_size``, ``group_segment_fixed_size``, ``uses_dynamic_stack`` (0/1),
    ``tensor_core_insts`` (instructions starting with `op`) and ``scratch_insts``."""
    found: dict[str, int] = {}
    for key, val in _AMD_META_RE.findall(asm):
        if key in found:
            continue
        if not val.isdigit() and val not in ("true", "false"):
            raise RuntimeError(f"unreadable amdgcn metadata .{key}: {val!r}")
        found[key] = int(val) if val.isdigit() else int(val == "true")
    for key in ("vgpr_count", "sgpr_count", "private_segment_fixed_size"):
        if key not in found:
            raise RuntimeError(f"no .{key} in the amdgcn metadata (is this triton's asm['amdgcn'] text?)")
    found.setdefault("agpr_count", 0)
    found.setdefault("vgpr_spill_count", 0)
    found.setdefault("sgpr_spill_count", 0)
    found.setdefault("group_segment_fixed_size", 0)
    found.setdefault("uses_dynamic_stack", 0)
    # Instruction lines only: indented mnemonics (labels and metadata never start with `op`).
    found["tensor_core_insts"] = len(re.findall(rf"^\s+{re.escape(op)}\w*\s", asm, re.MULTILINE))
    found["scratch_insts"] = len(_AMD_SCRATCH_RE.findall(asm))
    return found


def inspect_amdgcn(asm: str, *, target: Target) -> KernelReport:
    """Read an AMD kernel's resources from its amdgcn listing (``parse_amdgcn``)."""
    meta = parse_amdgcn(asm, op=target.tensor_core_op)
    # A dynamic stack has no size known at compile time: count it as stack, as a spill would be.
    stack = meta["private_segment_fixed_size"] + (1 if meta["uses_dynamic_stack"] else 0)
    return KernelReport(
        registers=meta["vgpr_count"], stack=stack, static_shared=meta["group_segment_fixed_size"], local=0,
        local_insts=meta["scratch_insts"], tensor_core_insts=meta["tensor_core_insts"], sgprs=meta["sgpr_count"],
        spill_count=meta["vgpr_spill_count"] + meta["sgpr_spill_count"],
    )


def inspect_kernel(asm: dict[str, Any], *, target: Target = DEFAULT_TARGET) -> KernelReport:
    """Read a compiled kernel (triton's ``compiled.asm``) for `target`: the cubin through
    cuobjdump on NVIDIA, the amdgcn listing on AMD."""
    if target.backend == "hip":
        return inspect_amdgcn(asm["amdgcn"], target=target)
    return inspect_cubin(asm["cubin"], target=target)
