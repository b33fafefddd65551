"""fastres.gate.cli: ``fastres check`` / ``python -m fastres.gate`` as a command (in a subprocess:
the suite runs under TRITON_INTERPRET, which the gate refuses)."""
from __future__ import annotations

import argparse

import pytest

from fastres.gate.cli import configure
from fastres.gate.target import DEFAULT_TARGET, GFX942, SM80, SM86, SM89, TARGETS, resolve_targets
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


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(argv))


def test_target_option_is_repeatable_and_takes_lists():
    assert _parse().target is None and resolve_targets(_parse().target) == (DEFAULT_TARGET,)
    args = _parse("--target", "sm_80", "--target", "sm_86,sm_89", "--target", "sm_80")
    assert resolve_targets(args.target) == (SM80, SM86, SM89)
    assert resolve_targets(_parse("--target", "all").target) == tuple(TARGETS.values())
    assert resolve_targets(_parse("--target", "gfx942").target) == (GFX942,)
    assert not _parse().all_variants and _parse("--all-variants").all_variants


def test_gate_rejects_unknown_target_in_one_line():
    proc = run_python(["-m", "fastres", "check", "--target", "sm_80,sm_75", "--kernel", "add_relu"], timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown target 'sm_75'" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
