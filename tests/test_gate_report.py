"""fastres.gate.report: the table, the failing-config lines and the summary line, from rows made
by hand (no compilation)."""
from __future__ import annotations

import dataclasses

from fastres.gate.report import failing_configs, format_table, summary_line
from fastres.gate.target import GFX942, SM80, SM90


def _row(variant: str, **kw) -> dict:
    row = {"kernel": "conv1x1", "config": "64x64x32_w4_s3", "dtype": "float32", "variant": variant, "target": "sm_90",
           "ok": True, "registers": 96, "stack": 0, "spills": False, "shared": 49152, "tensor_core": True, "gemm": True,
           "tensor_core_required": True, "error": None, "cached": False}
    row.update(kw)
    return row


def test_table_and_failing_configs():
    rows = [
        _row("1x1/s1/relu/tf32 [conv1]"),
        _row("1x1/s1/relu/ieee [conv1]", tensor_core=False, tensor_core_required=False, cached=True),
        _row("1x1/s1/relu/res/tf32 [conv3]", ok=False, stack=88, spills=True, error="spills (STACK 88 B, 4 LDL/STL)"),
        _row("1x1/s2/tf32 [downsample]", ok=False, shared=300000, error="shared memory 300000 B > 232448 B"),
    ]
    table = format_table(rows).splitlines()
    header = ["target", "kernel", "config", "dtype", "variant", "regs", "stack", "shared", "mma", "ok"]
    assert table[0].split() == header
    assert len(table) == 2 + len(rows) and set(table[1]) == {"-", " "}
    assert table[2].split()[-2:] == ["yes", "ok"] and table[3].split()[-4:] == ["no", "(fp32", "fma)", "ok"]
    assert table[4].endswith("FAIL: spills (STACK 88 B, 4 LDL/STL)")
    assert failing_configs(rows) == [
        "sm_90 conv1x1 64x64x32_w4_s3 float32: spills (STACK up to 88 B); shared memory 300000 B > 232448 B "
        "in 2/4 variants (1x1/s1/relu/res/tf32, 1x1/s2/tf32)"
    ]
    line = summary_line(rows, SM90, 1.25)
    assert line.startswith("fastres check: 2/4 rows ok, 2 failed, from 1 config (kernel, tile, dtype) for sm_90 "
                           "with triton ")
    assert line.endswith(" in 1.2 s (1 of 4 read from the cache)")
    ok = summary_line([r for r in rows if r["ok"]], SM90, 0.5)
    assert ok.startswith("fastres check: 2/2 rows ok, none failed for sm_90 with triton ") and "configs" not in ok
    assert " for sm_80 " in summary_line(rows, dataclasses.replace(SM90, name="sm_80"), 1.0)


def test_rows_of_several_targets():
    """Failures are told apart per target, and the summary counts each target's rows."""
    rows = [_row("1x1/s1/relu/tf32 [conv1]"),
            _row("1x1/s1/relu/tf32 [conv1]", target="sm_80", tensor_core=False, ok=False, error="GEMM without HMMA"),
            _row("1x1/s1/relu/tf32 [conv1]", target="gfx942", ok=False, shared=98304,
                 error="shared memory 98304 B > 65536 B")]
    table = format_table(rows).splitlines()
    assert [ln.split()[0] for ln in table[2:]] == ["sm_90", "sm_80", "gfx942"]
    assert table[3].split()[-5:] == ["no", "FAIL:", "GEMM", "without", "HMMA"]
    assert failing_configs(rows) == [
        "sm_80 conv1x1 64x64x32_w4_s3 float32: GEMM without HMMA in 1/1 variants (1x1/s1/relu/tf32)",
        "gfx942 conv1x1 64x64x32_w4_s3 float32: shared memory 98304 B > 65536 B in 1/1 variants (1x1/s1/relu/tf32)",
    ]
    line = summary_line(rows, (SM90, SM80, GFX942), 2.0)
    assert " for sm_90, sm_80, gfx942 with triton " in line and "1/3 rows ok, 2 failed, from 2 configs (kernel, tile, dtype)" in line
    assert line.endswith("; ok per target: sm_90 1/1, sm_80 0/1, gfx942 0/1")
