"""The Hopper-native rows of the compile gate on triton 3.6, the triton of the GPU image.

The main gate test (tests/test_gate_run.py) compiles every row with the triton installed
here (3.8 in CI). The TMA, warp-specialized and fused split-K kernels lean on the newest
parts of triton (in-kernel tensor descriptors, ``tl.range(warp_specialize=)``, atomics with
memory semantics), where versions differ, and the GPU image runs 3.6: so those rows are
compiled by triton 3.6.0 too, installed for this test into a folder of its own that shadows
this environment's triton (``pip install --no-deps --target``; PYTHONPATH puts it first).
Each row must pass: TMA instructions, HGMMA, warp specialization where asked, no spills,
shared memory within sm_90's limit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gate_helpers import ROOT, gate_env

VERSION = "3.6.0"
FAMILIES = "fused_k,tma,tma_w,tma_ws"
INSTALL_TIMEOUT_S = 600
GATE_TIMEOUT_S = 1200


def _triton_version(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.fixture(scope="module")
def triton36_env(tmp_path_factory) -> dict:
    """An environment whose `import triton` is triton 3.6.0 (this one's, if it already is)."""
    env = gate_env()
    if _triton_version(env) == VERSION:
        return env
    target = tmp_path_factory.mktemp("triton36")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
         "--target", str(target), f"triton=={VERSION}"],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"could not install triton {VERSION} for the gate:\n{proc.stderr[-3000:]}"
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    assert _triton_version(env) == VERSION
    return env


@pytest.fixture(scope="module")
def rows(triton36_env) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "fastres", "check", "--target", "sm_90", "--family", FAMILIES, "--json", "--no-progress"],
        cwd=ROOT, env=triton36_env, capture_output=True, text=True, timeout=GATE_TIMEOUT_S,
    )
    assert proc.stdout.strip(), f"no gate output (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _describe(rows) -> str:
    return "\n".join(f"  {r['kernel']} {r['config']} {r['dtype']} {r['variant']}: {r['error']}" for r in rows)


def test_every_family_is_compiled(rows):
    assert {r["family"] for r in rows} == set(FAMILIES.split(","))
    assert {r["kernel"] for r in rows if r["family"] != "fused_k"} == {"conv", "conv1x1"}


def test_every_row_passes_on_triton36(rows):
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"{len(bad)} of {len(rows)} rows fail on triton {VERSION}:\n{_describe(bad)}"


def test_tma_hgmma_and_warp_specialization(rows):
    for r in rows:
        assert r["wgmma"], f"no HGMMA: {r['config']} {r['variant']}"
        assert r["tma"] == (r["family"] != "fused_k"), f"TMA instructions: {r['config']} {r['variant']}"
        assert r["warp_specialized"] == (r["family"] == "tma_ws"), f"warp specialization: {r['config']} {r['variant']}"
        assert not r["spills"] and r["shared"] <= r["shared_limit"]
