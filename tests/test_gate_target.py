"""fastres.gate.target: the registry of compile targets, their limits, and reading a --target list."""
from __future__ import annotations

import pytest

from fastres.gate.target import DEFAULT_TARGET, GFX942, SM80, SM86, SM89, SM90, SM100, SM120, TARGETS, resolve_targets


def test_registry_holds_every_nvidia_gpu_since_ampere_and_mi300():
    assert list(TARGETS) == ["sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120", "gfx942"]
    assert all(TARGETS[t.name] is t for t in TARGETS.values())
    assert DEFAULT_TARGET is SM90
    shared = {t.name: t.max_shared for t in TARGETS.values()}
    assert shared == {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448, "sm_100": 232448,
                      "sm_120": 101376, "gfx942": 65536}
    ops = {t.name: t.tensor_core_op for t in TARGETS.values()}
    assert ops == {"sm_80": "HMMA", "sm_86": "HMMA", "sm_89": "HMMA", "sm_90": "HGMMA", "sm_100": "UTCHMMA",
                   "sm_120": "HMMA", "gfx942": "v_mfma"}
    # only MI300's matrix cores multiply exact float32 operands
    assert [t.name for t in TARGETS.values() if t.fp32_tensor_core] == ["gfx942"]


def test_gpu_target_is_what_triton_compiles_for():
    from triton.backends.compiler import GPUTarget

    assert SM80.gpu_target() == GPUTarget("cuda", 80, 32) and SM80.binary == "cubin"
    assert SM100.gpu_target() == GPUTarget("cuda", 100, 32)
    assert GFX942.gpu_target() == GPUTarget("hip", "gfx942", 64) and GFX942.binary == "hsaco"


def test_resolve_targets():
    assert resolve_targets(None) == resolve_targets("") == resolve_targets([]) == (SM90,)
    assert resolve_targets("sm_80,sm_90") == (SM80, SM90)
    # repeated options and comma lists combine, in the order given, each target once
    assert resolve_targets(["sm_89", "sm_86,sm_89", " SM_120 "]) == (SM89, SM86, SM120)
    assert resolve_targets("all") == tuple(TARGETS.values())
    assert resolve_targets(["gfx942", "all"]) == (GFX942, SM80, SM86, SM89, SM90, SM100, SM120)


def test_unknown_target_is_one_line():
    with pytest.raises(ValueError) as err:
        resolve_targets("sm_80,sm_75")
    msg = str(err.value)
    assert "\n" not in msg and "unknown target 'sm_75'" in msg and "gfx942" in msg and "all" in msg


def test_8bit_rows_are_judged_by_their_own_tensor_core_opcode():
    from fastres.gate.target import for_dtype

    assert for_dtype(SM90, "float16") is SM90
    ops = {(t.name, dt): for_dtype(t, dt).tensor_core_op for t in TARGETS.values()
           for dt in ("int8", "float8_e4m3fn") if dt == "int8" or t.name in ("sm_89", "sm_90", "sm_100", "sm_120")}
    assert ops == {("sm_80", "int8"): "IMMA", ("sm_86", "int8"): "IMMA", ("sm_89", "int8"): "IMMA",
                   ("sm_90", "int8"): "IGMMA", ("sm_100", "int8"): "UTCIMMA", ("sm_120", "int8"): "IMMA",
                   ("gfx942", "int8"): "v_mfma", ("sm_89", "float8_e4m3fn"): "QMMA",
                   ("sm_90", "float8_e4m3fn"): "QGMMA", ("sm_100", "float8_e4m3fn"): "UTCQMMA",
                   ("sm_120", "float8_e4m3fn"): "QMMA"}
    assert for_dtype(SM90, "int8").max_shared == SM90.max_shared and for_dtype(SM90, "int8").name == "sm_90"
    with pytest.raises(ValueError, match="float8_e4m3fn has no tensor-core instruction on sm_80"):
        for_dtype(SM80, "float8_e4m3fn")
