"""Shared by the tests of the compile gate (tests/test_gate_*.py): running python in a child
without TRITON_INTERPRET, where ``triton.compile`` can compile ``@triton.jit`` functions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def gate_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_python(args: list[str], *, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository root, without TRITON_INTERPRET unless `env` sets it."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=gate_env(**env), capture_output=True, text=True, timeout=timeout,
    )
