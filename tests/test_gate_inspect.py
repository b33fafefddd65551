"""fastres.gate.inspect: reading cuobjdump's resource usage and counting SASS opcodes."""
from __future__ import annotations

import dataclasses

import pytest

from fastres.gate.inspect import parse_resource_usage, scan_sass
from fastres.gate.target import SM90

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
    assert scan_sass(_SASS) == {"hgmma": 1, "local_insts": 2}


def test_scan_sass_counts_the_targets_tensor_core_instruction():
    assert scan_sass(_SASS, target=SM90) == scan_sass(_SASS)
    ampere_like = dataclasses.replace(SM90, name="mma", tensor_core_op="HMMA")
    sass = _SASS + "        /*5540*/                   HMMA.16816.F32 R8, R12, R16, R8 ;\n"
    assert scan_sass(sass, target=ampere_like) == {"hmma": 1, "local_insts": 2}
