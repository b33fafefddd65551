"""The Hopper compile gate, ``fastres check`` (DESIGN.md section 5, tier 2).

The suite runs under TRITON_INTERPRET=1 (conftest), where ``triton.compile`` cannot compile
``@triton.jit`` functions, so the gate runs in a subprocess without the variable. Its results
are cached (``$FASTRES_CACHE_DIR/check``, default ``~/.cache/fastres/check``): the first run
compiles every config (a few minutes on 2 cores), later ones read the cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastres import check
from fastres.kernels.config import GEMM_KERNELS, KERNELS, Config, config_space

ROOT = Path(__file__).resolve().parent.parent
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
GATE_TIMEOUT_S = 1200  # a cold run on 2 cores takes a few minutes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _run(args: list[str], *, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def gate_rows() -> list[dict]:
    """The whole gate, run once for this module: ``python -m fastres check --json``."""
    proc = _run(["-m", "fastres", "check", "--json", "--no-progress"], timeout=GATE_TIMEOUT_S)
    assert proc.returncode in (0, 1), f"the gate crashed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"--json did not print JSON:\n{proc.stdout[:2000]}\nstderr:\n{proc.stderr[-2000:]}")
    failed = [r for r in rows if not r["ok"]]
    assert proc.returncode == (1 if failed else 0), f"exit code {proc.returncode} with {len(failed)} failed rows"
    return rows


def _describe(rows: list[dict]) -> str:
    return "\n".join(f"  {r['kernel']} {r['config']} {r['dtype']} {r.get('variant')}: {r.get('error')}" for r in rows)


# ---------------------------------------------------------------------------------------------
# The gate itself
# ---------------------------------------------------------------------------------------------


def test_gate_rows_have_the_documented_keys(gate_rows):
    keys = {"kernel", "config", "dtype", "ok", "registers", "stack", "spills", "shared", "wgmma", "gemm"}
    for r in gate_rows:
        assert keys <= set(r), f"row lacks {keys - set(r)}: {r}"


def test_gate_covers_every_kernel_config_and_dtype(gate_rows):
    expected = {
        (k, cfg.name, DTYPE_NAMES[dt]) for k in KERNELS for dt in DTYPE_NAMES for cfg in config_space(k, dt)
    }
    seen = {(r["kernel"], r["config"], r["dtype"]) for r in gate_rows}
    assert seen == expected, f"missing: {sorted(expected - seen)}; unexpected: {sorted(seen - expected)}"
    # and every dispatchable variant of each, once
    want = sorted((t.kernel, t.config.name, t.dtype, t.variant.name) for t in check.tasks())
    got = sorted((r["kernel"], r["config"], r["dtype"], r["variant"]) for r in gate_rows)
    assert got == want


def test_gate_every_row_compiles(gate_rows):
    bad = [r for r in gate_rows if r["registers"] is None]
    assert not bad, "rows that did not compile:\n" + _describe(bad)


def test_gate_no_spills(gate_rows):
    bad = [r for r in gate_rows if r["spills"] or r["stack"]]
    assert not bad, "rows that spill (remove the config from kernels/config.py):\n" + _describe(bad)


def test_gate_shared_memory_fits_sm90(gate_rows):
    bad = [r for r in gate_rows if r["shared"] is not None and r["shared"] > check.SM90_MAX_SHARED]
    assert not bad, "rows over the sm_90 shared memory limit:\n" + _describe(bad)


def test_gate_gemm_rows_use_wgmma(gate_rows):
    for r in gate_rows:
        assert r["gemm"] == (r["kernel"] in GEMM_KERNELS), r
        # Only exact fp32 products (input_precision "ieee") are exempt: sm_90 has no fp32 wgmma.
        assert r["wgmma_required"] == (r["gemm"] and not (r["dtype"] == "float32" and "/ieee" in r["variant"])), r
    bad = [r for r in gate_rows if r["wgmma_required"] and r["registers"] is not None and not r["wgmma"]]
    assert not bad, "GEMM rows without HGMMA:\n" + _describe(bad)


def test_gate_every_row_ok(gate_rows):
    bad = [r for r in gate_rows if not r["ok"]]
    assert not bad, f"{len(bad)} of {len(gate_rows)} rows fail the gate:\n" + _describe(bad)


# ---------------------------------------------------------------------------------------------
# The gate catches what it is for
# ---------------------------------------------------------------------------------------------

_BAD_CONFIGS = r"""
import json
from fastres.check import check_one
from fastres.kernels.config import Config
rows = [
    # A 256x128 fp32 accumulator over 4 warps is 256 registers per thread before anything
    # else: more than the 255 a thread has, so it must spill.
    check_one("conv1x1", Config(256, 128, 32, num_warps=4, num_stages=3), "float16", "1x1/s1/relu/ieee"),
    # 8 stages of 64x256 + 256x64 fp16 operand tiles: 512 KB of shared memory.
    check_one("conv1x1", Config(64, 64, 256, num_warps=4, num_stages=8), "float16", "1x1/s1/relu/ieee"),
]
print(json.dumps(rows))
"""


def test_gate_rejects_known_bad_configs():
    proc = _run(["-c", _BAD_CONFIGS])
    assert proc.returncode == 0, proc.stderr[-4000:]
    spill, big = json.loads(proc.stdout)
    assert not spill["ok"] and spill["spills"] and spill["stack"] > 0, spill
    assert spill["registers"] == 255 and spill["wgmma"], spill
    assert "spill" in spill["error"], spill
    assert not big["ok"] and big["shared"] > check.SM90_MAX_SHARED and not big["spills"], big
    assert "shared memory" in big["error"], big


def test_gate_refuses_the_interpreter():
    proc = _run(["-m", "fastres.check", "--kernel", "add_relu"], timeout=300, TRITON_INTERPRET="1")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TRITON_INTERPRET" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_gate_rejects_unknown_kernel_in_one_line():
    proc = _run(["-m", "fastres.check", "--kernel", "nope"], timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "unknown kernel 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_has_check_subcommand():
    proc = _run(["-m", "fastres", "check", "--help"], timeout=300)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr and "fastres.check" not in proc.stderr:
        pytest.skip(f"another fastres subcommand is not importable yet: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--json" in proc.stdout and "--jobs" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Pieces, in process (no compilation)
# ---------------------------------------------------------------------------------------------


def test_tasks_cover_the_config_space():
    got = {(t.kernel, t.config, t.dtype) for t in check.tasks()}
    expected = {(k, cfg, DTYPE_NAMES[dt]) for k in KERNELS for dt in DTYPE_NAMES for cfg in config_space(k, dt)}
    assert got == expected
    assert {t.kernel for t in check.tasks(kernels=["conv"], dtypes=["bf16"])} == {"conv"}
    with pytest.raises(ValueError, match="unknown kernel"):
        check.tasks(kernels=["nope"])


def test_dispatchable_drops_k_steps_wider_than_the_layer():
    import dataclasses

    body = next(v for v in check.variants("conv", "float16") if v.name.startswith("3x3"))
    thin = dataclasses.replace(body, gemm_k=3)  # a layer reducing over 3 channels only
    assert check.dispatchable("conv", Config(64, 64, 16, 4, 4), thin)
    assert not check.dispatchable("conv", Config(64, 64, 32, 4, 4), thin)
    assert check.dispatchable("conv", Config(64, 64, 64, 4, 4), body)
    # the stem's flat K (7*7*3 = 147) takes every K step
    stem = next(v for v in check.variants("conv_stem", "float16") if v.name.startswith("7x7"))
    assert stem.gemm_k == 147 and check.dispatchable("conv_stem", Config(128, 128, 64, 4, 3), stem)
    # every config of the space is compiled for some variant
    for dt in DTYPE_NAMES.values():
        for k in KERNELS:
            for cfg in config_space(k, check.DTYPES[dt]):
                assert any(check.dispatchable(k, cfg, v) for v in check.variants(k, dt)), (k, cfg, dt)


def test_specialization_mirrors_the_jit():
    fn = check.kernel_fn("conv")
    names = check._arg_names(fn)
    cfg = Config(64, 64, 32, 4, 3)
    v = next(v for v in check.variants("conv", "float16") if v.name.startswith("3x3/s1/relu/res/ieee"))
    sig, consts, attrs, opts = check.specialize(fn, cfg, torch.float16, v)
    assert list(sig) == names
    idx = {n: (i,) for i, n in enumerate(names)}
    for p in ("x_ptr", "w_ptr", "r_ptr", "y_ptr"):
        assert sig[p] == "*fp16" and attrs[idx[p]] == [["tt.divisibility", 16]]
    assert sig["b_ptr"] == "*fp32"
    # unit strides and stride-1 / pad-1 become the constant 1, as the JIT does
    for n in ("sxc", "swc", "src", "syc", "SH", "SW", "PH", "PW"):
        assert sig[n] == "constexpr" and consts[idx[n]] == 1, n
    # 64 channels: the row strides are multiples of 16
    for n in ("C", "CO", "sxw", "sxh", "sww", "swo"):
        assert sig[n] == "i32" and idx[n] in attrs, n
    assert consts[idx["BLOCK_K"]] == 32 and consts[idx["HAS_RESIDUAL"]] is True
    assert consts[idx["INPUT_PRECISION"]] == "ieee"
    assert opts == {"num_warps": 4, "num_stages": 3}
    stem = next(v for v in check.variants("conv_stem", "bfloat16") if v.name.startswith("7x7/s2/relu/ieee"))
    sig, consts, attrs, _ = check.specialize(fn, cfg, "bfloat16", stem)
    assert sig["x_ptr"] == "*bf16"
    assert sig["C"] == "i32" and idx["C"] not in attrs  # Cin = 3
    assert sig["SH"] == "i32" and sig["PH"] == "i32"  # stride 2, pad 3
    if "FLAT_K" in names:
        assert consts[idx["FLAT_K"]] is True
    # the engine hands the stem the user's batch as it comes: contiguous NCHW, e.g. float32
    nchw = next(v for v in check.variants("conv_stem", "float16") if v.name.startswith("7x7/s2/relu/x:nchw-fp32"))
    sig, consts, attrs, _ = check.specialize(fn, cfg, "float16", nchw)
    assert sig["x_ptr"] == "*fp32" and sig["w_ptr"] == "*fp16"
    assert sig["sxw"] == "constexpr" and sig["sxc"] == "i32" and idx["sxc"] in attrs  # H*W = 50176


def test_parse_cuobjdump_output():
    usage = """
Resource usage:
 Common:
  GLOBAL:0
 Function _conv_kernel:
  REG:255 STACK:88 SHARED:1024 LOCAL:0 CONSTANT[0]:664 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert check.parse_resource_usage(usage) == {"REG": 255, "STACK": 88, "SHARED": 1024, "LOCAL": 0}
    with pytest.raises(RuntimeError):
        check.parse_resource_usage("nothing here")
    sass = """
        /*53b0*/                   HGMMA.64x64x16.F32 R56, R88, gdesc[UR36], RZ, !UPT ;
        /*5510*/                   STL.64 [R1+0x8], R56 ;
        /*5520*/                   LDL R3, [R1+0x10] ;
        /*5530*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
"""
    assert check.scan_sass(sass) == {"hgmma": 1, "local_insts": 2}


def test_wgmma_required():
    assert check.wgmma_required("conv", torch.float16, "ieee")
    assert check.wgmma_required("conv1x1", "float32", "tf32")
    assert not check.wgmma_required("avgpool", "float16", None)
    assert not check.wgmma_required("max_pool2d", "float16", None)


def test_cache_key_tracks_config_dtype_and_variant():
    cfg = Config(64, 64, 32, 4, 3)
    v1, v2 = check.variants("conv1x1", "float16")[:2]
    k = check.row_key("conv1x1", cfg, "float16", v1, sources="s")
    assert k == check.row_key("conv1x1", cfg, "float16", v1, sources="s")
    assert k != check.row_key("conv1x1", cfg, "float16", v2, sources="s")
    assert k != check.row_key("conv1x1", cfg, "bfloat16", v1, sources="s")
    assert k != check.row_key("conv1x1", Config(64, 64, 32, 4, 4), "float16", v1, sources="s")
    assert k != check.row_key("conv1x1", cfg, "float16", v1, sources="t")


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTRES_CACHE_DIR", str(tmp_path))
    assert check.cache_file() == tmp_path / "check" / "results.json"


# -- the gate compiles what the launchers launch ---------------------------------------------

def _recorded_launches(monkeypatch, call) -> list[tuple]:
    """(kernel, {argument: value}) of every launch `call` makes, with the GPU heuristic's
    configs; nothing runs."""
    import fastres.kernels.config as config_mod
    from fastres.kernels import conv, gemm1x1, head, splitk

    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    seen = []

    def record(kernel, grid, *args, **kwargs):
        names = check._arg_names(kernel)
        seen.append((kernel, {**dict(zip(names, args)), **kwargs}))

    for module in (conv, gemm1x1, head, splitk):
        monkeypatch.setattr(module, "launch", record)
    call()
    return seen


def _jit_class(v):
    """What the JIT specializes an argument on: a pointer's dtype, an int's == 1 and % 16."""
    if isinstance(v, torch.Tensor):
        return ("ptr", {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[v.dtype])
    if isinstance(v, bool) or not isinstance(v, int):
        return ("const", v)
    return ("int", v == 1, v % 16 == 0)


def _gate_class(kernel_name: str, variant_name: str, config, fn) -> dict:
    v = next(v for v in check.variants(kernel_name, "float16") if v.name == variant_name)
    signature, constexprs, attrs, _ = check.specialize(fn, config, "float16", v)
    names = check._arg_names(fn)
    out = {}
    for i, name in enumerate(names):
        ty = signature[name]
        if ty.startswith("*"):
            out[name] = ("ptr", ty[1:])
        elif ty == "constexpr":
            value = constexprs[(i,)]
            out[name] = ("int", True, False) if value == 1 and not isinstance(value, bool) else ("const", value)
        else:
            out[name] = ("int", False, (i,) in attrs)
    return out


@pytest.mark.parametrize("case", ["3x3 split", "3x3 residual split", "1x1 split", "head"])
def test_gate_variants_are_the_launches(case, monkeypatch):
    """The gate's variant rows specialize exactly as the launchers' own launches at those
    layers do (pointer types, which ints are 1 and which divisible by 16, constexprs)."""
    from fastres import kernels as K

    def nhwc(*shape, dtype=torch.float16):
        return torch.zeros(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)

    b512, b1000 = torch.zeros(512), torch.zeros(1000)
    if case == "3x3 split":
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1)  # noqa: E731
        expect = [("conv", "3x3/s1/relu/splitk/ieee [layer4]"), ("splitk_reduce", "sum/relu [layer4 b1]")]
    elif case == "3x3 residual split":
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1,  # noqa: E731
                                      residual=nhwc(1, 512, 7, 7))
        expect = [("conv", "3x3/s1/relu/res/splitk/ieee [resnet18 layer4]"), ("splitk_reduce", "sum/relu/res [layer4 b1]")]
    elif case == "1x1 split":
        call = lambda: K.conv1x1(nhwc(1, 2048, 7, 7), nhwc(512, 2048, 1, 1), b512)  # noqa: E731
        expect = [("conv1x1", "1x1/s1/relu/splitk/ieee [layer4 conv1]"), ("splitk_reduce", "sum/relu [layer4 b1]")]
    else:
        out = torch.zeros(1, 1000, dtype=torch.float16)
        call = lambda: K.avgpool_fc(nhwc(1, 2048, 7, 7), torch.zeros(1000, 2048, dtype=torch.float16), b1000,  # noqa: E731
                                    out=out)
        expect = [("avgpool", "7x7 [head pool]"), ("conv1x1", "fc/N1/splitk/ieee [head]"),
                  ("splitk_reduce", "sum/y:fp16 [head N1]")]
    launches = _recorded_launches(monkeypatch, call)
    assert len(launches) == len(expect)
    for (fn, args), (kernel_name, variant_name) in zip(launches, expect):
        meta = {k: args.pop(k) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M") if k in args}
        config = Config(meta["BLOCK_M"], meta.get("BLOCK_N", 1), meta.get("BLOCK_K", 1), args.pop("num_warps"),
                        args.pop("num_stages"), meta.get("GROUP_M", 8))
        gate = _gate_class(kernel_name, variant_name, config, fn)
        # Constexpr arguments (per the kernel) compare by value, the others by JIT class.
        got = {name: ("const", v) if gate.get(name, ("",))[0] == "const" else _jit_class(v) for name, v in args.items()}
        for name in check._CONFIG_META:
            gate.pop(name, None)
        mismatched = {n: (got.get(n), gate.get(n)) for n in set(got) | set(gate) if got.get(n) != gate.get(n)}
        assert not mismatched, f"{kernel_name} {variant_name}: launch vs gate {mismatched}"
