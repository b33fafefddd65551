"""Compiling one gate row for a target: the @triton.jit function, specialized as the JIT does.

Specialization. At run time triton's JIT compiles one binary per *specialization* of the
arguments: an integer equal to 1 becomes the constant 1 (a ``constexpr``), an integer or pointer
divisible by 16 gets the ``tt.divisibility = 16`` attribute, other integers are plain ``i32``.
``specialize`` applies those rules to a variant's launch arguments (``fastres.gate.variants``),
so ``compile_row`` compiles, with ``triton.compile(ASTSource(...))`` and no GPU, exactly the
binary the engine would run for that layer, then judges it from its cubin
(``fastres.gate.inspect``).

A row fails on a compile error, a spill (STACK > 0 or any LDL/STL), dynamic shared memory over
the target's per-block limit (sm_90: 227 KB = 232448 bytes), or a GEMM-type kernel without the
target's tensor-core instruction (sm_90: HGMMA, i.e. wgmma) where it has one for the operands:
float32 with input_precision="ieee" has none (sm_90 has no fp32 wgmma; triton uses FMA), so
those rows report wgmma "no" without failing (``wgmma_required``).
"""
from __future__ import annotations

import importlib
import subprocess
import time
from typing import TYPE_CHECKING, Any

import torch

from .inspect import inspect_cubin
from .target import DEFAULT_TARGET, Target
from .variants import TRITON_TYPE, Variant, dtype_name, wgmma_required

if TYPE_CHECKING:
    from ..kernels.config import Config

# kernel name (config.KERNELS) -> (module under fastres.kernels, @triton.jit function)
KERNEL_FN = {
    "conv": ("conv", "_conv_kernel"),
    "conv_stem": ("conv", "_conv_kernel"),
    "conv1x1": ("gemm1x1", "_gemm1x1_kernel"),
    "avgpool": ("head", "_avgpool_kernel"),
    "max_pool2d": ("pool", "_max_pool_kernel"),
    "add_relu": ("elementwise", "_add_relu_kernel"),
    "splitk_reduce": ("splitk", "_splitk_reduce_kernel"),
}
# Config fields that are constexpr meta-parameters of the kernels (the rest are launch options).
CONFIG_META = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")


def kernel_fn(kernel: str) -> Any:
    """The @triton.jit function of `kernel`."""
    try:
        module, attr = KERNEL_FN[kernel]
    except KeyError:
        raise ValueError(
            f"the gate does not know kernel {kernel!r}: add it to KERNEL_FN in fastres/gate/compile.py"
        ) from None
    return getattr(importlib.import_module(f"fastres.kernels.{module}"), attr)


def arg_names(fn: Any) -> list[str]:
    """The parameter names of a @triton.jit function (or a plain one), in order."""
    import inspect  # the standard library's, not fastres.gate.inspect

    return list(inspect.signature(getattr(fn, "fn", fn)).parameters)


def specialize(
    fn: Any, config: Config, dtype: str | torch.dtype, variant: Variant
) -> tuple[dict[str, str], dict[tuple[int, ...], Any], dict[tuple[int, ...], list], dict[str, int]]:
    """(signature, constexprs, attrs, options) for ``triton.compile(ASTSource(...))``.

    Mirrors the JIT (triton 3.6 and 3.8 agree: ``BaseBackend.get_int_specialization`` /
    ``get_tensor_specialization`` and ``parse_attr``): an int equal to 1 -> constexpr 1; an int
    divisible by 16 -> ``i32`` with ``tt.divisibility`` 16; any other int -> ``i32`` (``i64``
    beyond 32 bits); a pointer -> ``*<type>`` with ``tt.divisibility`` 16 (torch's allocator
    aligns every buffer far beyond 16 bytes). Keys: signature by name, constexprs and attrs
    by argument path ``(index,)``: the format both versions' ``ASTSource`` take.
    """
    dt = dtype_name(dtype)
    meta = dict(variant.meta)
    for f in CONFIG_META:
        meta.setdefault(f, getattr(config, f))
    values, pointers = dict(variant.values), dict(variant.pointers)
    if variant.k_loop is not None:
        from ..kernels.config import k_iters
        from ..kernels.splitk import split_plan

        k, taps, request = variant.k_loop
        values["ITERS"] = split_plan(k_iters(k, config.BLOCK_K, taps), request)[1]
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    divisible = [["tt.divisibility", 16]]
    for i, name in enumerate(arg_names(fn)):
        if name in pointers:
            ty = pointers[name]
            signature[name] = "*" + (TRITON_TYPE[dt] if ty == "x" else ty)
            attrs[(i,)] = divisible
        elif name in values:
            v = int(values[name])
            if v == 1:
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
                if v % 16 == 0:
                    attrs[(i,)] = divisible
        elif name in meta:
            signature[name] = "constexpr"
            constexprs[(i,)] = meta[name]
        else:
            raise ValueError(f"variant {variant.name!r} gives no value for argument {name!r} of {fn_name(fn)}")
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return signature, constexprs, attrs, options


def fn_name(fn: Any) -> str:
    """The name of a @triton.jit function (or a plain one)."""
    return getattr(getattr(fn, "fn", fn), "__name__", str(fn))


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the last line of its message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # triton's CompilationError puts the source excerpt first and the reason last.
    msg = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {msg}"[:400]


def compile_row(kernel: str, config: Config, dtype: str, variant: Variant, *,
                target: Target = DEFAULT_TARGET) -> dict[str, Any]:
    """Compile one row for `target` and judge it from its cubin (no cache)."""
    import triton
    from triton.compiler import ASTSource

    from ..kernels.config import GEMM_KERNELS

    row: dict[str, Any] = {
        "kernel": kernel, "config": config.name, "dtype": dtype, "variant": variant.name,
        "ok": False, "registers": None, "stack": None, "spills": None, "shared": None,
        "wgmma": None, "gemm": kernel in GEMM_KERNELS,
        "wgmma_required": wgmma_required(kernel, dtype, variant.precision),
        "num_warps": config.num_warps, "num_stages": config.num_stages,
        "local_insts": None, "hgmma_insts": None, "static_shared": None, "error": None,
    }
    t0 = time.perf_counter()
    fn = kernel_fn(kernel)
    signature, constexprs, attrs, options = specialize(fn, config, dtype, variant)
    try:
        compiled = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
            target=target.gpu_target(), options=options,
        )
    except (OSError, subprocess.SubprocessError, MemoryError):
        raise  # the toolchain could not run (missing ptxas, no memory...): not the kernel's fault
    except Exception as exc:  # a compile error is a result, not a crash of the gate
        row["error"] = "compile error: " + first_line(exc)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row

    seen = inspect_cubin(compiled.asm["cubin"], target=target)
    shared = int(compiled.metadata.shared)
    # The row keys keep Hopper's names (wgmma, hgmma_insts) whatever the target's instruction.
    row.update(
        registers=seen.registers, stack=seen.stack, static_shared=seen.static_shared, shared=shared,
        local_insts=seen.local_insts, hgmma_insts=seen.tensor_core_insts,
        spills=seen.spills, wgmma=seen.tensor_core_insts > 0,
    )
    problems = []
    if row["spills"]:
        problems.append(f"spills (STACK {seen.stack} B, {seen.local_insts} LDL/STL)")
    if shared > target.max_shared:
        problems.append(f"shared memory {shared} B > {target.max_shared} B")
    if row["wgmma_required"] and not row["wgmma"]:
        problems.append(f"GEMM without {target.tensor_core_op}")
    row["ok"] = not problems
    row["error"] = "; ".join(problems) or None
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row
