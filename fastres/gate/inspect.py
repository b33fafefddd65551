"""Reading a compiled kernel's resources and tensor-core opcodes, for NVIDIA and AMD targets.

NVIDIA (a cubin, read with triton's bundled ``cuobjdump`` and ``nvdisasm``):

- ``cuobjdump --dump-resource-usage``: REG, STACK, the static SHARED and LOCAL
  (``parse_resource_usage``);
- the SASS listing (``disassemble``): how many tensor-core instructions (the target's, e.g.
  HGMMA for sm_90's wgmma) and how many LDL / STL (local memory: register spills) the code has
  (``scan_sass``). nvdisasm spends about 0.3 CPU-seconds setting itself up on every run, more
  than listing a whole conv kernel, and reads one file per run; so the machine code of many
  cubins of one architecture is listed in one run (``inspect_kernels``), as one raw image.

AMD (gfx942; triton's ``asm["amdgcn"]`` text, no tool needed; ``parse_amdgcn``): the kernel
descriptor's metadata (``.vgpr_count`` with the AGPRs, ``.sgpr_count``, ``.vgpr_spill_count``,
``.sgpr_spill_count``, ``.private_segment_fixed_size``: scratch bytes per lane, i.e. the
stack) and the number of ``v_mfma`` instructions and scratch loads / stores in the code.

``inspect_kernels`` reads compiled kernels for their targets (``inspect_kernel`` one). Nothing here compiles or judges a
row; shared memory is not read here (the caller takes triton's ``metadata.shared``, what the
launch asks for, on every target).
"""
from __future__ import annotations

import dataclasses
import os
import re
import struct
import subprocess
import tempfile
from typing import Any, Sequence

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
    return _nvidia_tool("cuobjdump")


def find_nvdisasm() -> str:
    """The path of triton's bundled nvdisasm."""
    return _nvidia_tool("nvdisasm")


def _nvidia_tool(name: str) -> str:
    try:
        import triton.knobs

        path = getattr(triton.knobs.nvidia, name).path
        if path and os.path.isfile(path):
            return path
    except Exception:  # pragma: no cover - older / newer knob layouts
        pass
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.isfile(path):
        raise RuntimeError(f"triton's {name} is missing (looked for {path})")
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

    def count(literal: str, pattern: str) -> int:
        # A conv's listing is ~200 KB: skip a regex whose opcode is not in it at all (most are
        # absent: no spills, no TMA), which a substring search finds out ~20x faster.
        return len(re.findall(pattern, sass)) if literal in sass else 0

    # SASS prints most opcodes with a shape suffix (HGMMA.64x64x16.F32, HMMA.16816.F32) but
    # sm_100's UTCHMMA without one; \b keeps HMMA from matching inside HGMMA or UTCHMMA.
    return {op.lower(): count(op, rf"\b{re.escape(op)}(?:\.|\s)"),
            "local_insts": len(_SPILL_RE.findall(sass)) if "LDL" in sass or "STL" in sass else 0,
            "tma_insts": count("UTMA", r"\bUTMA(?:LDG|STG)\b"),
            "setmaxnreg_insts": count("USETMAXREG", r"\bUSETMAXREG\b"),
            # (wgmma's own operand forms, its 8-bit opcodes IGMMA / QGMMA alike: other targets'
            # MMAs always read registers)
            "register_a_insts": count(op, rf"\b{op}\.\S+\s+R\d+,\s*R\d+,") if op in _WGMMA_OPS else 0}


def cubin_text(cubin: bytes) -> bytes:
    """The machine code of a cubin (an ELF64 file): its ``.text.*`` sections, in file order.
    ValueError when it is not such a file, or the code is not whole 16-byte instructions."""
    if cubin[:5] != b"\x7fELF\x02" or cubin[5] != 1:
        raise ValueError("not a little-endian ELF64 cubin")
    (shoff,) = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    code = b""
    for name, _type, _flags, _addr, offset, size in headers:
        start = names_at + name
        if cubin[start:cubin.index(b"\0", start)].startswith(b".text."):
            code += cubin[offset:offset + size]
    # Every SASS instruction since Volta is 16 bytes: anything else would shift the listing.
    if not code or len(code) % 16:
        raise ValueError(f"a cubin's code is {len(code)} bytes, not whole 16-byte instructions")
    return code


def sass_arch(target: Target) -> str:
    """nvdisasm's name (``-b``) of the architecture triton compiles `target` for, e.g. SM90a
    (``sm_90a``: triton asks ptxas for the "a" architecture from sm_90 on)."""
    return f"SM{target.arch}{'a' if int(target.arch) >= 90 else ''}"


_ADDRESS_RE = re.compile(r"^\s*/\*([0-9a-f]+)\*/", re.MULTILINE | re.IGNORECASE)


def disassemble(cubins: Sequence[bytes], *, target: Target = DEFAULT_TARGET) -> list[str]:
    """The SASS listing of each of `cubins` (all compiled for `target`), from one nvdisasm run:
    their code (``cubin_text``) is concatenated into one raw image of `target`'s architecture
    and the listing's lines are given back to the cubin whose byte range holds their address.
    The listings keep the instruction lines only (``/*addr*/ OPCODE ...;``)."""
    codes = [cubin_text(c) for c in cubins]
    ends, at = [], 0
    for code in codes:
        at += len(code)
        ends.append(at)
    with tempfile.TemporaryDirectory(prefix="fastres-check-") as tmp:
        path = os.path.join(tmp, "kernels.bin")
        with open(path, "wb") as f:
            f.write(b"".join(codes))
        text = subprocess.run([find_nvdisasm(), "--binary", sass_arch(target), "--no-vliw", path],
                              capture_output=True, text=True, timeout=600, check=True).stdout
    lines: list[list[str]] = [[] for _ in codes]
    i = 0
    for line in text.splitlines():
        m = _ADDRESS_RE.match(line)
        if m is None:
            continue
        address = int(m.group(1), 16)
        while i < len(ends) and address >= ends[i]:
            i += 1
        if i == len(ends):
            raise RuntimeError(f"nvdisasm listed address {address:#x} past the code it was given ({at:#x} bytes)")
        lines[i].append(line)
    return ["\n".join(ls) + "\n" for ls in lines]


def resource_usage(cubin: bytes) -> dict[str, int]:
    """``cuobjdump --dump-resource-usage`` of one cubin, read (``parse_resource_usage``)."""
    with tempfile.TemporaryDirectory(prefix="fastres-check-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run(
            [find_cuobjdump(), "--dump-resource-usage", path], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    return parse_resource_usage(usage)


def cubin_report(usage: dict[str, int], sass: str, *, target: Target = DEFAULT_TARGET) -> KernelReport:
    """A cubin's report from its resource usage (``parse_resource_usage``) and SASS listing."""
    counts = scan_sass(sass, target=target)
    return KernelReport(
        registers=usage["REG"], stack=usage["STACK"], static_shared=usage.get("SHARED"), local=usage.get("LOCAL", 0),
        local_insts=counts["local_insts"], tensor_core_insts=counts[target.tensor_core_op.lower()],
        tma_insts=counts["tma_insts"], setmaxnreg_insts=counts["setmaxnreg_insts"],
        register_a_insts=counts["register_a_insts"],
    )


def inspect_cubin(cubin: bytes, *, target: Target = DEFAULT_TARGET) -> KernelReport:
    """Read one cubin's resource usage and SASS (``inspect_kernels`` reads many at once)."""
    return cubin_report(resource_usage(cubin), disassemble([cubin], target=target)[0], target=target)


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
    cuobjdump and nvdisasm on NVIDIA, the amdgcn listing on AMD."""
    return inspect_kernels([(asm, target)])[0]


def inspect_kernels(kernels: Sequence[tuple[dict[str, Any], Target]]) -> list[KernelReport]:
    """Read compiled kernels, each (triton's ``compiled.asm``, its target), in order: the
    cubins of each architecture listed by one nvdisasm run (``disassemble``); each kernel's
    SASS is scanned for its own target's opcodes (an 8-bit row's: ``target.for_dtype``)."""
    reports: list[KernelReport | None] = [None] * len(kernels)
    by_arch: dict[tuple[str, Any], list[int]] = {}
    for i, (asm, target) in enumerate(kernels):
        if target.backend == "hip":
            reports[i] = inspect_amdgcn(asm["amdgcn"], target=target)
        else:
            by_arch.setdefault((target.backend, target.arch), []).append(i)
    for idx in by_arch.values():
        listings = disassemble([kernels[i][0]["cubin"] for i in idx], target=kernels[idx[0]][1])
        for i, sass in zip(idx, listings):
            asm, target = kernels[i]
            reports[i] = cubin_report(resource_usage(asm["cubin"]), sass, target=target)
    return [r for r in reports if r is not None]
