"""fastres.gate.run: the whole gate, ``fastres check --target all``, over every dispatchable row.

The suite runs under TRITON_INTERPRET=1 (conftest), where ``triton.compile`` cannot compile
``@triton.jit`` functions, so the gate runs in a subprocess without the variable. Its results
are cached (``$FASTRES_CACHE_DIR/check``, default ``~/.cache/fastres/check``): the first run
compiles every row (sm_90's every variant, each other target's configs at their heaviest
variants: several minutes on 2 cores), later ones read the cache.

Every row the engine can dispatch must pass, on every target. Which configs that is per
target is ``kernels.config``'s business (``config_space(..., target=T)``): the configs a
target's gate rejected are left out of its space, so the gate compiles exactly those.
"""
from __future__ import annotations

import json

import pytest

from fastres.gate.run import tasks
from fastres.gate.target import DEFAULT_TARGET, SM90, TARGETS
from fastres.gate.selection import engine_space, has_engine_space
from fastres.kernels.config import GEMM_KERNELS, KERNELS
from gate_helpers import DTYPE_NAMES, background_result

GATE_TIMEOUT_S = 2400  # a cold run of every target on 2 cores takes several minutes


@pytest.fixture(scope="module")
def all_rows() -> list[dict]:
    """The whole gate, run once for this module: ``python -m fastres check --target all --json``
    (started in the background when the session collected this module: tests/conftest.py)."""
    proc = background_result("gate_all", timeout=GATE_TIMEOUT_S)
    assert proc.returncode in (0, 1), f"the gate crashed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"--json did not print JSON:\n{proc.stdout[:2000]}\nstderr:\n{proc.stderr[-2000:]}")
    failed = [r for r in rows if not r["ok"]]
    assert proc.returncode == (1 if failed else 0), f"exit code {proc.returncode} with {len(failed)} failed rows"
    return rows


@pytest.fixture(scope="module")
def gate_rows(all_rows) -> list[dict]:
    """The sm_90 rows (every variant of every config)."""
    return [r for r in all_rows if r["target"] == SM90.name]


def _describe(rows: list[dict]) -> str:
    return "\n".join(f"  {r['target']} {r['kernel']} {r['config']} {r['dtype']} {r.get('variant')}: {r.get('error')} "
                     f"(shared {r.get('shared')} B, {r.get('registers')} registers, stack {r.get('stack')} B)"
                     for r in rows)


def test_gate_rows_have_the_documented_keys(all_rows):
    keys = {"kernel", "config", "dtype", "variant", "target", "ok", "error", "registers", "stack", "spills", "shared",
            "shared_limit", "gemm", "tensor_core", "tensor_core_required", "tensor_core_op", "tensor_core_insts"}
    hopper = {"wgmma", "wgmma_required", "hgmma_insts"}
    for r in all_rows:
        assert keys <= set(r), f"row lacks {keys - set(r)}: {r}"
        assert r["shared_limit"] == TARGETS[r["target"]].max_shared, r
        if r["target"] == SM90.name:  # Hopper's own names, as before there were other targets
            assert hopper <= set(r) and r["wgmma"] == r["tensor_core"] and r["hgmma_insts"] == r["tensor_core_insts"], r
        else:
            assert not hopper & set(r), r


def test_gate_covers_every_target(all_rows):
    assert {r["target"] for r in all_rows} == set(TARGETS)
    want = sorted((t.target.name, t.kernel, t.config.name, t.dtype, t.variant.name)
                  for t in tasks(target=TARGETS.values()))
    got = sorted((r["target"], r["kernel"], r["config"], r["dtype"], r["variant"]) for r in all_rows)
    assert got == want
    for target in TARGETS.values():
        expected = {(k, cfg.name, DTYPE_NAMES[dt]) for k in KERNELS for dt in DTYPE_NAMES
                    if has_engine_space(k, dt, target) for cfg in engine_space(k, dt, target)}
        seen = {(r["kernel"], r["config"], r["dtype"]) for r in all_rows if r["target"] == target.name}
        assert seen == expected, (target.name, sorted(expected - seen), sorted(seen - expected))


def test_gate_covers_every_kernel_config_and_dtype(gate_rows):
    expected = {
        (k, cfg.name, DTYPE_NAMES[dt]) for k in KERNELS for dt in DTYPE_NAMES if has_engine_space(k, dt, SM90)
        for cfg in engine_space(k, dt, SM90)
    }
    seen = {(r["kernel"], r["config"], r["dtype"]) for r in gate_rows}
    assert seen == expected, f"missing: {sorted(expected - seen)}; unexpected: {sorted(seen - expected)}"
    # and every dispatchable variant of each, once
    want = sorted((t.kernel, t.config.name, t.dtype, t.variant.name) for t in tasks())
    got = sorted((r["kernel"], r["config"], r["dtype"], r["variant"]) for r in gate_rows)
    assert got == want


def test_gate_every_row_compiles(gate_rows):
    bad = [r for r in gate_rows if r["registers"] is None]
    assert not bad, "rows that did not compile:\n" + _describe(bad)


def test_gate_no_spills(gate_rows):
    bad = [r for r in gate_rows if r["spills"] or r["stack"]]
    assert not bad, "rows that spill (remove the config from kernels/config.py):\n" + _describe(bad)


def test_gate_shared_memory_fits_sm90(gate_rows):
    bad = [r for r in gate_rows if r["shared"] is not None and r["shared"] > SM90.max_shared]
    assert not bad, "rows over the sm_90 shared memory limit:\n" + _describe(bad)


def test_gate_gemm_rows_use_wgmma(gate_rows):
    for r in gate_rows:
        assert r["gemm"] == (r["kernel"] in GEMM_KERNELS), r
        # Only exact fp32 products (input_precision "ieee") are exempt: sm_90 has no fp32 wgmma.
        assert r["wgmma_required"] == (r["gemm"] and not (r["dtype"] == "float32" and "/ieee" in r["variant"])), r
    bad = [r for r in gate_rows if r["wgmma_required"] and r["registers"] is not None and not r["wgmma"]]
    assert not bad, "GEMM rows without HGMMA:\n" + _describe(bad)


def test_gate_tensor_core_requirement_per_target(all_rows):
    """GEMM rows need their target's tensor cores, except exact float32 products off MI300."""
    for r in all_rows:
        exact_fp32 = r["dtype"] == "float32" and "/ieee" in r["variant"]
        assert r["tensor_core_required"] == (r["gemm"] and (r["target"] == "gfx942" or not exact_fp32)), r


@pytest.mark.parametrize("target", list(TARGETS))
def test_gate_every_dispatchable_row_ok(all_rows, target):
    """Every row the engine can dispatch on `target` passes the gate there."""
    rows = [r for r in all_rows if r["target"] == target]
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"{len(bad)} of {len(rows)} rows fail the gate on {target}:\n" + _describe(bad)


# ---------------------------------------------------------------------------------------------
# The rows, in process (no compilation)
# ---------------------------------------------------------------------------------------------


def test_tasks_cover_the_config_space():
    got = {(t.kernel, t.config, t.dtype) for t in tasks()}
    expected = {(k, cfg, DTYPE_NAMES[dt]) for k in KERNELS for dt in DTYPE_NAMES if has_engine_space(k, dt)
                for cfg in engine_space(k, dt)}
    assert got == expected
    assert {t.kernel for t in tasks(kernels=["conv"], dtypes=["bf16"])} == {"conv"}
    with pytest.raises(ValueError, match="unknown kernel"):
        tasks(kernels=["nope"])


def test_tasks_carry_their_target():
    """Each task compiles for the target it was listed for (workers get it with the task)."""
    import dataclasses

    assert DEFAULT_TARGET == SM90 and {t.target for t in tasks(kernels=["add_relu"])} == {SM90}
    other = dataclasses.replace(SM90, name="sm_89", max_shared=1024)
    listed = tasks(kernels=["add_relu"], target=other)
    assert listed and {t.target for t in listed} == {other}


def test_a_row_that_breaks_the_gate_fails_alone(monkeypatch):
    """A chunk whose compile raises (the gate's fault, not a kernel's) is retried row by row:
    the broken row is reported as a gate error (never cached), the others keep their results."""
    import fastres.gate.run as run

    chunk = tasks(kernels=["add_relu"])[:3]
    bad = chunk[1]

    def compile_rows(ts):
        if bad in ts:
            raise OSError("ptxas vanished")
        return [{"kernel": t.kernel, "variant": t.variant.name, "ok": True} for t in ts]

    monkeypatch.setattr(run, "compile_rows", compile_rows)
    rows = run._run_chunk(chunk)
    assert [r["variant"] for r in rows] == [t.variant.name for t in chunk]
    assert rows[0]["ok"] and rows[2]["ok"] and not rows[1]["ok"]
    assert rows[1]["error"].startswith("gate error: ") and "ptxas vanished" in rows[1]["error"] and rows[1]["_transient"]
