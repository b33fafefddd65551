"""bench/device_run.sh, dry: every step runs in order against a stand-in python, the GPU test
step lists every test file once (the most informative first, the CPU-only ones left out), and
OUTDIR gets only the flat files the script promises."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "device_run.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_device_run_dry(tmp_path):
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    # Records each invocation's arguments (one line) and swallows a script given on stdin.
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\n[ "$1" = "-" ] && cat > /dev/null\nexit 0\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(stub), TOTAL_S="120", FASTRES_COMMIT="abc123",
               PATH=f"{tmp_path}:{os.environ['PATH']}")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = calls.read_text().splitlines()
    steps = [l.split()[:3] for l in lines]
    assert steps[0][:2] == ["-m", "pip"] and steps[1] == ["-"]
    pytest_line = next(l for l in lines if l.startswith("-m pytest"))
    files = [a for a in pytest_line.split() if a.startswith("tests/") and "::" not in a]
    on_disk = sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py"))
    assert files[:3] == ["tests/test_streams.py", "tests/test_config.py", "tests/test_splitk.py"]
    gate = [f for f in on_disk if f.startswith("tests/test_gate_")]
    assert len(files) == len(set(files)) and "tests/test_packaging.py" not in files and not set(gate) & set(files)
    assert gate and sorted(files + ["tests/test_packaging.py", *gate]) == on_disk
    assert any(l.startswith("-m fastres check") for l in lines)
    assert any(l.startswith("-m fastres bench layers") for l in lines)
    assert any(l.startswith("-m fastres bench e2e") for l in lines)
    predict = next(l for l in lines if l.startswith("-m fastres bench predict"))
    assert "--images" in predict and "--budget-s" in predict and f"--out {out}" in predict
    produced = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(produced) <= 8, produced
    assert {"env.txt", "tests.log", "check.log", "bench.log"} <= set(produced)
    assert "steps (name, outcome, seconds, cap)" in proc.stdout
