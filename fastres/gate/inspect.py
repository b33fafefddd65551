"""Reading a compiled cubin with triton's bundled ``cuobjdump``: resources and SASS opcodes.

- ``--dump-resource-usage``: REG, STACK, the static SHARED and LOCAL (``parse_resource_usage``);
- ``--dump-sass``: how many tensor-core instructions (the target's, e.g. HGMMA for sm_90's
  wgmma) and how many LDL / STL (local memory: register spills) the code has (``scan_sass``).

``inspect_cubin`` runs both on one cubin. Nothing here compiles or judges a row.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile

from .target import DEFAULT_TARGET, Target

_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")
_SPILL_RE = re.compile(r"\b(LDL|STL)(\.|\s)")


@dataclasses.dataclass(frozen=True)
class CubinReport:
    """What cuobjdump says about one kernel's cubin."""

    registers: int
    stack: int  # bytes of stack frame: > 0 means spilled registers
    static_shared: int | None
    local: int  # bytes of local memory
    local_insts: int  # LDL / STL instructions
    tensor_core_insts: int  # the target's tensor-core instruction (HGMMA on sm_90)

    @property
    def spills(self) -> bool:
        return self.stack > 0 or self.local > 0 or self.local_insts > 0


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


def scan_sass(sass: str, *, target: Target = DEFAULT_TARGET) -> dict[str, int]:
    """Count the target's tensor-core instructions and LDL/STL (local memory: spills) in a SASS
    dump: ``{"hgmma": .., "local_insts": ..}`` on sm_90 (the first key is the opcode, lowercase)."""
    op = target.tensor_core_op
    # SASS prints the opcode with its shape suffix (HGMMA.64x64x16.F32 ...).
    tensor_core = re.findall(rf"\b{re.escape(op)}\.", sass)
    return {op.lower(): len(tensor_core), "local_insts": len(_SPILL_RE.findall(sass))}


def inspect_cubin(cubin: bytes, *, target: Target = DEFAULT_TARGET) -> CubinReport:
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
    return CubinReport(
        registers=res["REG"], stack=res["STACK"], static_shared=res.get("SHARED"), local=res.get("LOCAL", 0),
        local_insts=counts["local_insts"], tensor_core_insts=counts[target.tensor_core_op.lower()],
    )
