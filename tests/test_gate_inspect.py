"""fastres.gate.inspect: reading cuobjdump's resource usage, counting SASS opcodes, and reading
an AMD kernel's amdgcn listing."""
from __future__ import annotations

import dataclasses

import pytest

from fastres.gate.inspect import cubin_text, inspect_amdgcn, parse_amdgcn, parse_resource_usage, sass_arch, scan_sass
from fastres.gate.target import GFX942, SM80, SM86, SM90, SM100, SM120

_SASS = """
        /*53b0*/                   HGMMA.64x64x16.F32 R56, R88, gdesc[UR36], RZ, !UPT ;
        /*5510*/                   STL.64 [R1+0x8], R56 ;
        /*5520*/                   LDL R3, [R1+0x10] ;
        /*5530*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
"""


def test_parse_cuobjdump_output():
    usage = """
Resource usage:
 Common:
  GLOBAL:0
 Function _conv_kernel:
  REG:255 STACK:88 SHARED:1024 LOCAL:0 CONSTANT[0]:664 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert parse_resource_usage(usage) == {"REG": 255, "STACK": 88, "SHARED": 1024, "LOCAL": 0}
    with pytest.raises(RuntimeError):
        parse_resource_usage("nothing here")
    assert scan_sass(_SASS) == {"hgmma": 1, "local_insts": 2, "tma_insts": 0, "setmaxnreg_insts": 0,
                                "register_a_insts": 1}


def test_scan_sass_tells_where_wgmma_reads_a():
    """HGMMA with A in registers names a register before the descriptor; from shared memory it
    names only the descriptor of both operands."""
    shared = "        /*40f0*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24 ;\n"
    assert scan_sass(shared)["register_a_insts"] == 0 and scan_sass(shared)["hgmma"] == 1
    assert scan_sass(_SASS + shared)["register_a_insts"] == 1
    # the 8-bit wgmmas (as sm_90's int8 / e4m3 rows see them), as ptxas prints them
    for op, ab in (("IGMMA", "S8.S8"), ("QGMMA", "F32.E4M3.E4M3")):
        target = dataclasses.replace(SM90, tensor_core_op=op)
        shared8 = f"        /*2000*/                   {op}.64x64x32.{ab} R24, gdesc[UR20], R24 ;\n"
        regs8 = f"        /*2f90*/                   {op}.64x64x32.{ab} R24, R60, gdesc[UR4], R24 ;\n"
        assert scan_sass(shared8, target=target)["register_a_insts"] == 0
        assert scan_sass(shared8 + regs8, target=target) == {op.lower(): 2, "local_insts": 0, "tma_insts": 0,
                                                             "setmaxnreg_insts": 0, "register_a_insts": 1}


def test_scan_sass_counts_the_targets_tensor_core_instruction():
    assert scan_sass(_SASS, target=SM90) == scan_sass(_SASS)
    ampere_like = dataclasses.replace(SM90, name="mma", tensor_core_op="HMMA")
    sass = _SASS + "        /*5540*/                   HMMA.16816.F32 R8, R12, R16, R8 ;\n"
    assert scan_sass(sass, target=ampere_like) == {"hmma": 1, "local_insts": 2, "tma_insts": 0, "setmaxnreg_insts": 0,
                                                   "register_a_insts": 0}


def test_scan_sass_counts_tma_and_warp_specialization():
    """TMA: the bulk tensor loads and stores (not its cache-control or flush instructions);
    warp specialization: setmaxnreg, which only a specialized kernel issues."""
    sass = """
        /*0400*/                   UTMALDG.2D [UR8], [UR4] ;
        /*0410*/                   UTMALDG.4D [UR16], [UR12] ;
        /*0420*/                   UTMACCTL.IV [UR6] ;
        /*0430*/                   UTMACMDFLUSH ;
        /*0440*/                   UTMASTG.2D [UR4], [UR8] ;
        /*0450*/                   USETMAXREG.DEALLOC.CTAPOOL 0x18 ;
        /*0460*/                   USETMAXREG.TRY_ALLOC.CTAPOOL P0, 0xf0 ;
"""
    counts = scan_sass(sass + _SASS)
    assert counts["tma_insts"] == 3 and counts["setmaxnreg_insts"] == 2
    assert scan_sass(_SASS)["tma_insts"] == 0


def test_scan_sass_tells_the_tensor_core_opcodes_apart():
    """HMMA (Ampere..., consumer Blackwell) must not count Hopper's HGMMA or sm_100's UTCHMMA,
    which SASS prints without a shape suffix (tcgen05.mma)."""
    blackwell = """
        /*18a0*/                   UTCHMMA gdesc[UR4], gdesc[UR6], tmem[UR9], tmem[UR30], idesc[UR31], !UPT ;
        /*18b0*/                   UTCHMMA gdesc[UR28], gdesc[UR12], tmem[UR9], tmem[UR30], idesc[UR31], UPT ;
        /*18c0*/                   UTCBAR [UR8], URZ ;
"""
    ampere = "        /*0a10*/                   HMMA.16816.F32.BF16 R24, R40, R44, R24 ;\n"
    assert scan_sass(blackwell, target=SM100) == {"utchmma": 2, "local_insts": 0, "tma_insts": 0,
                                                  "setmaxnreg_insts": 0, "register_a_insts": 0}
    assert scan_sass(blackwell + _SASS, target=SM80)["hmma"] == 0
    assert scan_sass(ampere + blackwell + _SASS, target=SM80)["hmma"] == 1
    assert scan_sass(ampere + blackwell + _SASS, target=SM90)["hgmma"] == 1


def test_scan_sass_tells_the_8bit_opcodes_apart():
    """int8 and e4m3 GEMMs (fastres.gate.target.for_dtype): IMMA / QMMA must not count sm_90's
    IGMMA / QGMMA or sm_100's UTCIMMA / UTCQMMA."""
    from fastres.gate.target import for_dtype

    sass = """
        /*0a10*/                   IMMA.16832.S8.S8.SAT R24, R40, R44, R24 ;
        /*0a20*/                   QMMA.16832.F32.E4M3.E4M3 R24, R40, R44, R24 ;
        /*0a30*/                   IGMMA.64x64x32.S8.S8 R24, gdesc[UR4], R24 ;
        /*0a40*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24 ;
        /*0a50*/                   UTCIMMA gdesc[UR4], gdesc[UR6], tmem[UR9], tmem[UR30], idesc[UR31], !UPT ;
        /*0a60*/                   UTCQMMA gdesc[UR4], gdesc[UR6], tmem[UR9], tmem[UR30], idesc[UR31], !UPT ;
"""
    for target, dtype, op in ((SM80, "int8", "imma"), (SM90, "int8", "igmma"), (SM100, "int8", "utcimma"),
                              (SM90, "float8_e4m3fn", "qgmma"), (SM100, "float8_e4m3fn", "utcqmma")):
        assert scan_sass(sass, target=for_dtype(target, dtype))[op] == 1, (target.name, dtype)
    assert scan_sass(sass, target=SM80)["hmma"] == 0


# Cut from triton 3.8's asm["amdgcn"] of a conv1x1 256x256x32 tile for gfx942 (4 warps), which
# spills: a few instructions and the kernel's metadata (its .args list shortened).
_AMDGCN_SPILLING = """
	global_load_dwordx4 v[2:5], v[38:39], off
	v_accvgpr_write_b32 a52, v0
	scratch_store_dword off, v71, off offset:440 ; 4-byte Folded Spill
	v_mfma_f32_32x32x8_f16 v[18:33], v[250:251], v[16:17], 0
	v_mfma_f32_32x32x8_f16 v[18:33], v[34:35], v[84:85], v[18:33]
	scratch_load_dword v12, off, off offset:440 ; 4-byte Folded Reload
		.amdhsa_private_segment_fixed_size 1072
		.amdhsa_next_free_vgpr 512
; NumVgprs: 256
; TotalNumVgprs: 512
; ScratchSize: 1072
	.amdgpu_metadata
---
amdhsa.kernels:
  - .agpr_count:     256
    .args:
      - .address_space:  global
        .offset:         0
        .size:           8
        .value_kind:     global_buffer
    .group_segment_fixed_size: 0
    .kernarg_segment_align: 8
    .kernarg_segment_size: 136
    .max_flat_workgroup_size: 256
    .name:           _gemm1x1_kernel
    .private_segment_fixed_size: 1072
    .sgpr_count:     50
    .sgpr_spill_count: 0
    .symbol:         _gemm1x1_kernel.kd
    .uniform_work_group_size: 1
    .uses_dynamic_stack: false
    .vgpr_count:     512
    .vgpr_spill_count: 587
    .wavefront_size: 64
amdhsa.target:   amdgcn-amd-amdhsa--gfx942
...
	.end_amdgpu_metadata
"""


def test_parse_amdgcn_reads_the_kernel_metadata_and_opcodes():
    meta = parse_amdgcn(_AMDGCN_SPILLING)
    assert meta == {
        "agpr_count": 256, "group_segment_fixed_size": 0, "private_segment_fixed_size": 1072, "sgpr_count": 50,
        "sgpr_spill_count": 0, "uses_dynamic_stack": 0, "vgpr_count": 512, "vgpr_spill_count": 587,
        "tensor_core_insts": 2, "scratch_insts": 2,
    }
    seen = inspect_amdgcn(_AMDGCN_SPILLING, target=GFX942)
    assert seen.spills and seen.stack == 1072 and seen.registers == 512 and seen.sgprs == 50
    assert seen.tensor_core_insts == 2 and seen.local_insts == 2 and seen.spill_count == 587


def test_parse_amdgcn_clean_kernel_and_garbage():
    clean = (_AMDGCN_SPILLING.replace("1072", "0").replace("587", "0").replace("256\n    .args", "0\n    .args")
             .replace("\tscratch_store_dword off, v71, off offset:440 ; 4-byte Folded Spill\n", "")
             .replace("\tscratch_load_dword v12, off, off offset:440 ; 4-byte Folded Reload\n", ""))
    seen = inspect_amdgcn(clean, target=GFX942)
    assert not seen.spills and seen.stack == 0 and seen.local_insts == 0 and seen.tensor_core_insts == 2
    # a dynamic stack has no size at compile time: it counts as stack
    assert inspect_amdgcn(clean.replace("uses_dynamic_stack: false", "uses_dynamic_stack: true"), target=GFX942).spills
    with pytest.raises(RuntimeError, match="vgpr_count"):
        parse_amdgcn("\tv_mfma_f32_32x32x8_f16 v[0:15], v[0:1], v[2:3], v[0:15]\n")


def _elf(sections: dict[str, bytes]) -> bytes:
    """A minimal little-endian ELF64 file with these sections (and its section-name table)."""
    import struct

    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    body, headers, at = b"", [struct.pack("<IIQQQQIIQQ", *[0] * 10)], 64
    for name, data in [*sections.items(), (".shstrtab", names)]:
        headers.append(struct.pack("<IIQQQQIIQQ", names.index(name.encode() + b"\0"), 1, 0, 0, at + len(body),
                                   len(data), 0, 0, 16, 0))
        body += data
    shoff = 64 + len(body)
    head = (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 2, 190, 1, 0, 0, shoff, 0, 64, 0, 0,
                                                               64, len(headers), len(headers) - 1))
    return head + body + b"".join(headers)


def test_cubin_text_is_the_code_sections_in_order():
    a, b = bytes(range(32)), bytes(range(100, 116))
    elf = _elf({".nv.info": b"info", ".text._k": a, ".nv.constant0._k": b"c" * 8, ".text._helper": b})
    assert cubin_text(elf) == a + b
    with pytest.raises(ValueError, match="16-byte"):
        cubin_text(_elf({".text._k": bytes(24)}))
    with pytest.raises(ValueError, match="16-byte"):
        cubin_text(_elf({".nv.info": b"no code"}))
    with pytest.raises(ValueError, match="ELF64"):
        cubin_text(b"not an elf at all")


def test_sass_arch_is_the_architecture_ptxas_compiles_for():
    assert [sass_arch(t) for t in (SM80, SM86, SM90, SM100, SM120)] == ["SM80", "SM86", "SM90a", "SM100a", "SM120a"]
