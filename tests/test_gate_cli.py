"""fastres.gate.cli: ``fastres check`` / ``python -m fastres.gate`` as a command (in a subprocess:
the suite runs under TRITON_INTERPRET, which the gate refuses)."""
from __future__ import annotations

import pytest

from gate_helpers import run_python


def test_gate_refuses_the_interpreter():
    proc = run_python(["-m", "fastres.gate", "--kernel", "add_relu"], timeout=300, TRITON_INTERPRET="1")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TRITON_INTERPRET" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_gate_rejects_unknown_kernel_in_one_line():
    proc = run_python(["-m", "fastres.gate", "--kernel", "nope"], timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "unknown kernel 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_has_check_subcommand():
    proc = run_python(["-m", "fastres", "check", "--help"], timeout=300)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr and "fastres.gate" not in proc.stderr:
        pytest.skip(f"another fastres subcommand is not importable yet: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--json" in proc.stdout and "--jobs" in proc.stdout
