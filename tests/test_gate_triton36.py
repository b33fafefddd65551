"""The Hopper-native rows of the compile gate on triton 3.6, the triton of the GPU image.

The main gate test (tests/test_gate_run.py) compiles every row with the triton installed
here (3.8 in CI). The TMA, warp-specialized and fused split-K kernels lean on the newest
parts of triton (in-kernel tensor descriptors, ``tl.range(warp_specialize=)``, atomics with
memory semantics), where versions differ, and the GPU image runs 3.6: so those rows are
compiled by triton 3.6.0 too, in a folder of its own that shadows this environment's triton
(``pip install --no-deps --target``; PYTHONPATH puts it first): $FASTRES_TRITON36_DIR where
the set-up installed it (.ci/run does), else installed for this test. Where pip cannot get it
(no network, no package index) these tests skip, saying so; they never fail for it.
Each row must pass: TMA instructions, HGMMA, warp specialization where asked, no spills,
shared memory within sm_90's limit.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from gate_helpers import INSTALL_FAILED, ROOT, TRITON36, TRITON36_DIR_ENV, TRITON36_FAMILIES, background_result

GATE_TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def run() -> subprocess.CompletedProcess:
    """The variant rows under triton 3.6.0 (installed for the run if this one is another;
    started in the background when the session collected this module: tests/conftest.py)."""
    proc = background_result("triton36", timeout=GATE_TIMEOUT_S)
    if proc.returncode == INSTALL_FAILED:
        pip_said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"triton {TRITON36} could not be installed (no network or no package index?), pip: {pip_said} -- "
                    f"to run these offline, install it first: `pip install --no-deps --target DIR "
                    f"triton=={TRITON36}` and set {TRITON36_DIR_ENV}=DIR (.ci/run does)")
    return proc


@pytest.fixture(scope="module")
def rows(run) -> list[dict]:
    assert run.stdout.strip(), f"no gate output (exit {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(run.stdout)


def test_the_rows_are_triton36s(run):
    assert f"with triton {TRITON36}" in run.stderr, run.stderr[-2000:]


def _describe(rows) -> str:
    return "\n".join(f"  {r['kernel']} {r['config']} {r['dtype']} {r['variant']}: {r['error']}" for r in rows)


def test_every_family_is_compiled(rows):
    assert {r["family"] for r in rows} == set(TRITON36_FAMILIES.split(","))
    assert {r["kernel"] for r in rows if r["family"] != "fused_k"} == {"conv", "conv1x1"}


def test_every_row_passes_on_triton36(rows):
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"{len(bad)} of {len(rows)} rows fail on triton {TRITON36}:\n{_describe(bad)}"


def test_tma_hgmma_and_warp_specialization(rows):
    for r in rows:
        assert r["wgmma"], f"no HGMMA: {r['config']} {r['variant']}"
        assert r["tma"] == (r["family"] != "fused_k"), f"TMA instructions: {r['config']} {r['variant']}"
        assert r["warp_specialized"] == (r["family"] in ("tma_ws", "tma_b_ws")), \
            f"warp specialization: {r['config']} {r['variant']}"
        # The bordered convs: both wgmma operands from shared memory, as the TMA boxes land.
        assert r["shared_a"] or r["family"] not in ("tma_b", "tma_b_ws", "tma_b_p"), f"A from registers: {r['config']} {r['variant']}"
        assert not r["spills"] and r["shared"] <= r["shared_limit"]


def test_offline_the_rows_skip_saying_why(tmp_path):
    """Without a network (here: pip pointed at no index), this module's tests skip with the
    reason, they do not fail. Run in a child session of pytest, this test deselected there."""
    import os
    import sys

    from gate_helpers import _triton_version, gate_env

    if _triton_version(gate_env()) == TRITON36:
        pytest.skip(f"this environment's triton is {TRITON36}: nothing to install")
    env = {k: v for k, v in os.environ.items() if k != TRITON36_DIR_ENV and not k.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="",
               PIP_CONFIG_FILE=os.devnull)
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/test_gate_triton36.py", "-q", "-rs", "-p", "no:randomly",
                        "-p", "no:cacheprovider", "-k", "not offline", "--basetemp", str(tmp_path / "t")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert re.search(r"\b4 skipped\b", out) and " passed" not in out and " failed" not in out, out[-4000:]
    assert f"triton {TRITON36} could not be installed" in out and TRITON36_DIR_ENV in out, out[-4000:]
