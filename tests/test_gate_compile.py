"""fastres.gate.compile: arguments specialized by the JIT's rules, and the verdict on a compiled
row (known-bad tiles fail; compiled in a subprocess without TRITON_INTERPRET)."""
from __future__ import annotations

import json

import torch

from fastres.gate.compile import arg_names, kernel_fn, specialize
from fastres.gate.target import SM90
from fastres.gate.rows import variants
from fastres.kernels.config import Config
from gate_helpers import run_python

_BAD_CONFIGS = r"""
import json
from fastres.gate.run import check_one
from fastres.kernels.config import Config
rows = [
    # A 256x128 fp32 accumulator over 4 warps is 256 registers per thread before anything
    # else: more than the 255 a thread has, so it must spill.
    check_one("conv1x1", Config(256, 128, 32, num_warps=4, num_stages=3), "float16", "1x1/s1/relu/ieee"),
    # 8 stages of 64x256 + 256x64 fp16 operand tiles: 512 KB of shared memory.
    check_one("conv1x1", Config(64, 64, 256, num_warps=8, num_stages=8), "float16", "1x1/s1/relu/ieee"),
]
print(json.dumps(rows))
"""


def test_gate_rejects_known_bad_configs():
    proc = run_python(["-c", _BAD_CONFIGS])
    assert proc.returncode == 0, proc.stderr[-4000:]
    spill, big = json.loads(proc.stdout)
    assert not spill["ok"] and spill["spills"] and spill["stack"] > 0, spill
    assert spill["registers"] == 255 and spill["wgmma"] and spill["tensor_core"], spill
    assert spill["target"] == "sm_90" and spill["shared_limit"] == SM90.max_shared, spill
    assert "spill" in spill["error"], spill
    assert not big["ok"] and big["shared"] > SM90.max_shared and not big["spills"], big
    assert "shared memory" in big["error"], big


_OTHER_TARGETS = r"""
import json
from fastres.gate.run import check_one
from fastres.gate.target import TARGETS
from fastres.kernels.config import Config
cfg = Config(64, 64, 32, num_warps=4, num_stages=3)
rows = [check_one("conv1x1", cfg, dtype, f"1x1/s1/relu/{prec}", target=TARGETS[t], use_cache=False)
        for t, dtype, prec in (("sm_80", "float16", "ieee"), ("sm_80", "float32", "ieee"),
                               ("sm_100", "bfloat16", "ieee"), ("gfx942", "float16", "ieee"),
                               ("gfx942", "float32", "ieee"))]
print(json.dumps(rows))
"""


def test_gate_compiles_rows_for_other_targets():
    """One small GEMM tile, really compiled for Ampere, Blackwell and MI300: each uses its
    target's tensor-core instruction (exact float32 products only on MI300) and fits."""
    proc = run_python(["-c", _OTHER_TARGETS])
    assert proc.returncode == 0, proc.stderr[-4000:]
    ampere, ampere_fp32, blackwell, mi300, mi300_fp32 = json.loads(proc.stdout)
    for row in (ampere, ampere_fp32, blackwell, mi300, mi300_fp32):
        assert row["ok"] and not row["spills"] and row["stack"] == 0 and row["error"] is None, row
        assert 0 < row["shared"] <= row["shared_limit"] and row["registers"] > 0, row
        assert "wgmma" not in row and "hgmma_insts" not in row, row  # Hopper's names stay on sm_90 rows
    assert ampere["target"] == "sm_80" and ampere["shared_limit"] == 166912 and ampere["tensor_core_op"] == "HMMA"
    assert ampere["tensor_core"] and ampere["tensor_core_required"] and ampere["tensor_core_insts"] > 0, ampere
    # no fp32 HMMA: exact float32 products are FMAs there, which passes
    assert not ampere_fp32["tensor_core"] and not ampere_fp32["tensor_core_required"], ampere_fp32
    assert blackwell["target"] == "sm_100" and blackwell["tensor_core_op"] == "UTCHMMA" and blackwell["tensor_core"]
    assert mi300["target"] == "gfx942" and mi300["shared_limit"] == 65536 and mi300["tensor_core_op"] == "v_mfma"
    assert mi300["tensor_core"] and mi300["sgprs"] > 0, mi300
    # MI300 multiplies float32 on its matrix cores (v_mfma_f32_32x32x2_f32): required there
    assert mi300_fp32["tensor_core"] and mi300_fp32["tensor_core_required"], mi300_fp32


def test_specialization_mirrors_the_jit():
    fn = kernel_fn("conv")
    names = arg_names(fn)
    cfg = Config(64, 64, 32, 4, 3)
    v = next(v for v in variants("conv", "float16") if v.name.startswith("3x3/s1/relu/res/ieee"))
    sig, consts, attrs, opts = specialize(fn, cfg, torch.float16, v)
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
    stem = next(v for v in variants("conv_stem", "bfloat16") if v.name.startswith("7x7/s2/relu/ieee"))
    sig, consts, attrs, _ = specialize(fn, cfg, "bfloat16", stem)
    assert sig["x_ptr"] == "*bf16"
    assert sig["C"] == "i32" and idx["C"] not in attrs  # Cin = 3
    assert sig["SH"] == "i32" and sig["PH"] == "i32"  # stride 2, pad 3
    if "FLAT_K" in names:
        assert consts[idx["FLAT_K"]] is True
    # the engine hands the stem the user's batch as it comes: contiguous NCHW, e.g. float32
    nchw = next(v for v in variants("conv_stem", "float16") if v.name.startswith("7x7/s2/relu/x:nchw-fp32"))
    sig, consts, attrs, _ = specialize(fn, cfg, "float16", nchw)
    assert sig["x_ptr"] == "*fp32" and sig["w_ptr"] == "*fp16"
    assert sig["sxw"] == "constexpr" and sig["sxc"] == "i32" and idx["sxc"] in attrs  # H*W = 50176


_BATCH = r"""
import json, os, re, subprocess, tempfile
import triton
from triton.compiler import ASTSource
from fastres.gate.compile import binary_key, compile_rows, launched_fn, specialize
from fastres.gate.inspect import disassemble, find_cuobjdump
from fastres.gate.run import chunks, tasks
from fastres.gate.target import SM80, SM90

def opcodes(sass):
    return [m.group(1) for m in re.finditer(r"/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)]

# one nvdisasm run over two kernels' code lists each as cuobjdump lists its cubin alone
cubins = []
for t in (tasks(kernels=["conv1x1"], dtypes=["float16"])[0], tasks(kernels=["add_relu"], dtypes=["float16"])[0]):
    fn = launched_fn(t.kernel, t.config, t.variant)
    sig, consts, attrs, opts = specialize(fn, t.config, t.dtype, t.variant)
    cubins.append(triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                                 target=SM90.gpu_target(), options=opts).asm["cubin"])
together = [opcodes(s) for s in disassemble(cubins, target=SM90)]
alone = []
for cubin in cubins:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        open(path, "wb").write(cubin)
        alone.append(opcodes(subprocess.run([find_cuobjdump(), "--dump-sass", path], capture_output=True, text=True,
                                            check=True).stdout))

# rows of one binary: the split-K sum at each float dtype (its code does not depend on it)
same = [t for t in tasks(kernels=["splitk_reduce"], target=SM80) if t.dtype in ("float16", "bfloat16", "float32")]
by_key = {}
for t in same:
    by_key.setdefault(binary_key(t), []).append(t)
shared_rows = next(ts for ts in by_key.values() if len(ts) == 3)
calls = []
real = triton.compile
triton.compile = lambda *a, **k: calls.append(1) or real(*a, **k)
rows = compile_rows(shared_rows)
todo = same + tasks(kernels=["add_relu"], target=SM90)[:3] + same[:1]
parts = chunks(todo, list(range(len(todo))), size=2)
print(json.dumps({"together": together, "alone": alone, "rows": rows, "compiles": len(calls), "n": len(todo),
                  "chunks": parts, "keys": [len({binary_key(todo[i]) for i in c}) for c in parts],
                  "targets": [len({todo[i].target for i in c}) for c in parts]}))
"""


def test_gate_lists_many_kernels_at_once_and_compiles_each_binary_once():
    """One nvdisasm run over several kernels' code gives each the listing cuobjdump gives its
    cubin alone (opcode for opcode); rows of one binary are compiled once, judged each, and
    share a chunk of the pool's work."""
    proc = run_python(["-c", _BATCH])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert out["together"] == out["alone"] and all(out["alone"]), out["alone"]
    wgmma = [sum(op.startswith("HGMMA.") for op in ops) for ops in out["together"]]
    assert wgmma[0] > 0 and wgmma[1] == 0, wgmma  # the GEMM's wgmma stays in the GEMM's listing
    rows = out["rows"]
    assert out["compiles"] == 1 and [r["dtype"] for r in rows] == ["float16", "bfloat16", "float32"]
    assert all(r["ok"] and r["target"] == "sm_80" for r in rows), rows
    measured = ("registers", "stack", "shared", "local_insts", "tensor_core_insts")
    assert len({tuple(r[k] for k in measured) for r in rows}) == 1, rows
    # chunks: each of one target and at most `size` distinct binaries, a binary's rows together
    assert sorted(i for c in out["chunks"] for i in c) == list(range(out["n"]))
    assert set(out["keys"]) <= {1, 2} and 2 in out["keys"] and set(out["targets"]) == {1}, out
    assert any({0, out["n"] - 1} <= set(c) for c in out["chunks"]), out  # a repeated row sits with its binary's first
