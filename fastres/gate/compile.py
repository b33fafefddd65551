"""Compiling one gate row for a target: the @triton.jit function, specialized as the JIT does.

Specialization. At run time triton's JIT compiles one binary per *specialization* of the
arguments: an integer equal to 1 becomes the constant 1 (a ``constexpr``), an integer or pointer
divisible by 16 gets the ``tt.divisibility = 16`` attribute, other integers are plain ``i32``.
``specialize`` applies those rules to a variant's launch arguments (``fastres.gate.variants``),
so ``compile_row`` compiles, with ``triton.compile(ASTSource(...))`` and no GPU, exactly the
binary the engine would run for that layer, then judges it from its binary
(``fastres.gate.inspect``: the cubin on NVIDIA, the amdgcn listing on AMD). ``compile_rows``
does that for many rows at once: rows whose binaries are the same (``binary_key``: the same
jit function, specialization, options and target) are compiled once and each judged, and
the cubins of one architecture are listed by one nvdisasm run (``inspect_kernels``).

A row fails on a compile error, a spill (NVIDIA: STACK > 0 or any LDL/STL; AMD: scratch or a
spilled VGPR / SGPR), shared memory (triton's ``metadata.shared``, what the launch asks for)
over the target's per-block limit (sm_90: 227 KB = 232448 bytes), or a GEMM-type kernel
without the target's tensor-core instruction where it has one for the operands
(``tensor_core_required``): NVIDIA's tensor cores take no exact float32 products, so float32
rows with input_precision="ieee" compile to FMA there and pass without them; MI300's MFMA
does multiply float32, so there every GEMM row needs it.

Row keys: kernel, config, dtype, variant, target, ok, error, registers, stack, spills, shared,
shared_limit, gemm, tensor_core (the target's instruction is in the binary),
tensor_core_required, tensor_core_op, tensor_core_insts, sgprs (AMD), local_insts,
static_shared, num_warps, num_stages, family (``row_family``), tma (UTMALDG / UTMASTG in the binary), tma_required,
warp_specialized (USETMAXREG: triton split the warps into producer and consumers),
warp_specialized_required, shared_a (every HGMMA reads A from shared memory, as both
operands; None off sm_90), shared_a_required, seconds. A TMA config (``Config.variant``) fails
without TMA instructions on sm_90, a warp-specialized one (``tma_ws``, ``tma_b_ws``) without
warp specialization, a bordered one (``tma_b``, ``tma_b_ws``) where wgmma takes A from registers. sm_90 rows keep Hopper's names too: wgmma
(= tensor_core), wgmma_required and hgmma_insts.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import time
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import first_line
from .inspect import KernelReport, inspect_kernels
from .keys import unaligned, unspecialized
from .target import DEFAULT_TARGET, Target, for_dtype
from .selection import tensor_core_required
from .variants import TRITON_TYPE, Variant, dtype_name

if TYPE_CHECKING:
    from ..kernels.config import Config

# kernel name (config.KERNELS) -> (module under fastres.kernels, @triton.jit function); a
# config's TMA variants run a kernel of their own (TMA_KERNEL_FN).
KERNEL_FN = {
    "conv": ("conv", "_conv_kernel"),
    "conv_stem": ("conv", "_conv_stem_kernel"),
    "conv_grouped": ("conv", "_conv_kernel"),
    "conv1x1": ("gemm1x1", "_gemm1x1_kernel"),
    "avgpool": ("head", "_avgpool_kernel"),
    "max_pool2d": ("pool", "_max_pool_kernel"),
    "add_relu": ("elementwise", "_add_relu_kernel"),
    "splitk_reduce": ("splitk", "_splitk_reduce_kernel"),
}
TMA_KERNEL_FN = {
    "conv": ("conv_tma", "_conv_tma_kernel"),
    "conv1x1": ("gemm_tma", "_gemm_tma_kernel"),
}
# Config fields that are constexpr meta-parameters of the kernels (the rest are launch options).
CONFIG_META = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")


def kernel_fn(kernel: str, variant: str = "ptr") -> Any:
    """The @triton.jit function of `kernel` that a config of `variant` (``Config.variant``) runs."""
    from ..kernels.config import TMA_VARIANTS

    from ..kernels.config import BORDERED_VARIANTS

    if kernel == "conv" and variant in BORDERED_VARIANTS:
        return getattr(importlib.import_module("fastres.kernels.conv_bordered"), "_conv_bordered_kernel")
    try:
        module, attr = (TMA_KERNEL_FN if variant in TMA_VARIANTS else KERNEL_FN)[kernel]
    except KeyError:
        raise ValueError(
            f"the gate does not know kernel {kernel!r}: add it to KERNEL_FN in fastres/gate/compile.py"
        ) from None
    return getattr(importlib.import_module(f"fastres.kernels.{module}"), attr)


def launched_fn(kernel: str, config: Config, variant: Variant) -> Any:
    """The @triton.jit object a row compiles: the variant's own where it names one (the
    classifier's), else `kernel_fn`."""
    if variant.jit is not None:
        module, attr = variant.jit
        return getattr(importlib.import_module(f"fastres.kernels.{module}"), attr)
    return kernel_fn(kernel, config.variant)


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
    aligns every buffer far beyond 16 bytes). An argument the kernel marks ``do_not_specialize``
    -> plain ``i32`` whatever its value; ``do_not_specialize_on_alignment`` -> never
    ``tt.divisibility``; a float -> ``fp32``; an argument that defaults to None and that the
    variant leaves out -> the constexpr None (as a launch leaves it out: a float GEMM's 8-bit
    arguments). Keys: signature by name, constexprs and attrs by argument path
    ``(index,)``: the format both versions' ``ASTSource`` take.
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
    plain, no_align = unspecialized(fn), unaligned(fn)
    defaults = arg_defaults(fn)
    for i, name in enumerate(arg_names(fn)):
        if name in pointers:
            ty = pointers[name]
            signature[name] = "*" + (TRITON_TYPE[dt] if ty == "x" else ty)
            attrs[(i,)] = divisible
        elif name in values and isinstance(values[name], float):
            signature[name] = "fp32"  # a float scalar (an 8-bit GEMM's scales): never specialized
        elif name in values and name in plain:
            v = int(values[name])
            signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
        elif name in values:
            v = int(values[name])
            if v == 1:
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
                if v % 16 == 0 and name not in no_align:
                    attrs[(i,)] = divisible
        elif name in meta:
            signature[name] = "constexpr"
            constexprs[(i,)] = meta[name]
        elif name in defaults and defaults[name] is None:
            # left out, as a launch leaves it (a float GEMM's 8-bit arguments): the JIT's None
            signature[name] = "constexpr"
            constexprs[(i,)] = None
        else:
            raise ValueError(f"variant {variant.name!r} gives no value for argument {name!r} of {fn_name(fn)}")
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return signature, constexprs, attrs, options


def arg_defaults(fn: Any) -> dict[str, Any]:
    """The parameters of a @triton.jit function (or a plain one) that have a default, with it."""
    import inspect

    return {name: p.default for name, p in inspect.signature(getattr(fn, "fn", fn)).parameters.items()
            if p.default is not inspect.Parameter.empty}


def fn_name(fn: Any) -> str:
    """The name of a @triton.jit function (or a plain one)."""
    return getattr(getattr(fn, "fn", fn), "__name__", str(fn))


def blank_row(kernel: str, config: Config, dtype: str, variant: Variant, target: Target) -> dict[str, Any]:
    """A row with every key and nothing measured yet (``ok`` False)."""
    from ..kernels.config import GEMM_KERNELS

    target = for_dtype(target, dtype_name(dtype))
    row: dict[str, Any] = {
        "kernel": kernel, "config": config.name, "dtype": dtype, "variant": variant.name, "target": target.name,
        "ok": False, "registers": None, "stack": None, "spills": None, "shared": None,
        "shared_limit": target.max_shared, "gemm": kernel in GEMM_KERNELS, "tensor_core": None,
        "tensor_core_required": tensor_core_required(kernel, dtype, variant.precision, target),
        "tensor_core_op": target.tensor_core_op, "tensor_core_insts": None, "sgprs": None,
        "num_warps": config.num_warps, "num_stages": config.num_stages,
        "local_insts": None, "static_shared": None, "error": None,
        "family": row_family(config, variant),
        "tma": None, "tma_required": config.tma and target.name in _TMA_TARGETS,
        "warp_specialized": None, "warp_specialized_required": config.warp_specialized,
        "shared_a": None, "shared_a_required": config.bordered and target.name in _TMA_TARGETS,
    }
    return with_hopper_keys(row)


FAMILIES = ("ptr", "fused_k", "tma", "tma_w", "tma_ws", "tma_b", "tma_b_ws", "tma_b_p")


def row_family(config: Config, variant: Variant) -> str:
    """Which variant family a row is (``fastres check --family``): a TMA config's variant,
    "fused_k" for a pointer config compiled as a fused split, else "ptr"."""
    if config.tma:
        return config.variant
    return "fused_k" if dict(variant.meta).get("FUSED") else "ptr"


# Where a TMA config must show the TMA unit's instructions in its binary.
_TMA_TARGETS = ("sm_90",)


def with_hopper_keys(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with sm_90's own names for its tensor-core keys (wgmma, wgmma_required,
    hgmma_insts), as the gate has always reported them; rows of other targets have none."""
    if row["target"] == "sm_90":
        row.update(wgmma=row["tensor_core"], wgmma_required=row["tensor_core_required"],
                   hgmma_insts=row["tensor_core_insts"])
    return row


@dataclasses.dataclass(frozen=True)
class Task:
    """One row to compile (picklable: it is what a worker process receives)."""

    kernel: str
    config: Config
    dtype: str
    variant: Variant
    target: Target


def binary_key(task: Task) -> str:
    """What the binary of `task` depends on, as triton's JIT and ``triton.compile`` see it: the
    jit function (name and source key), the specialization (``specialize``), the launch
    options and the target (with its dtype's tensor-core opcode, which the reading counts).
    Rows of equal keys compile to the same binary (e.g. the split-K sum's, whose code does not
    depend on the engine's dtype)."""
    fn = launched_fn(task.kernel, task.config, task.variant)
    signature, constexprs, attrs, options = specialize(fn, task.config, task.dtype, task.variant)
    target = for_dtype(task.target, dtype_name(task.dtype))
    return json.dumps([fn_name(fn), fn.cache_key, signature, sorted(constexprs.items()), sorted(attrs.items()), options,
                       dataclasses.astuple(target)], default=str)


def compile_row(kernel: str, config: Config, dtype: str, variant: Variant, *,
                target: Target = DEFAULT_TARGET) -> dict[str, Any]:
    """Compile one row for `target` and judge it from its binary (no cache)."""
    return compile_rows([Task(kernel, config, dtype, variant, target)])[0]


def compile_rows(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Compile and judge `tasks` (no cache), one row each, in order: each distinct binary
    (``binary_key``) compiled once, the binaries read together (``inspect_kernels``). A row's
    ``seconds``: its binary's compile time and its share of the reading."""
    import triton
    from triton.compiler import ASTSource

    keys = [binary_key(t) for t in tasks]
    # key -> (the compiled kernel, or the compile error's text; seconds; target)
    built: dict[str, tuple[Any, float, Target]] = {}
    for t, key in zip(tasks, keys):
        if key in built:
            continue
        target = for_dtype(t.target, dtype_name(t.dtype))  # (an 8-bit GEMM's own tensor-core opcode)
        t0 = time.perf_counter()
        fn = launched_fn(t.kernel, t.config, t.variant)
        signature, constexprs, attrs, options = specialize(fn, t.config, t.dtype, t.variant)
        try:
            compiled: Any = triton.compile(
                ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                target=target.gpu_target(), options=options,
            )
        except (OSError, subprocess.SubprocessError, MemoryError):
            raise  # the toolchain could not run (missing ptxas, no memory...): not the kernel's fault
        except Exception as exc:  # a compile error is a result, not a crash of the gate
            # triton's CompilationError puts the source excerpt first and the reason last.
            compiled = "compile error: " + first_line(exc, last=True, limit=400)
        built[key] = (compiled, time.perf_counter() - t0, target)

    ok = [key for key, (compiled, _, _) in built.items() if not isinstance(compiled, str)]
    t0 = time.perf_counter()
    seen = dict(zip(ok, inspect_kernels([(built[key][0].asm, built[key][2]) for key in ok])))
    share = (time.perf_counter() - t0) / max(1, len(ok))
    rows = []
    for t, key in zip(tasks, keys):
        compiled, seconds, _ = built[key]
        if isinstance(compiled, str):
            rows.append(dict(blank_row(t.kernel, t.config, t.dtype, t.variant, t.target), error=compiled,
                             seconds=round(seconds, 2)))
        else:
            rows.append(judge(t, seen[key], int(compiled.metadata.shared), round(seconds + share, 2)))
    return rows


def judge(task: Task, seen: KernelReport, shared: int, seconds: float) -> dict[str, Any]:
    """The row of `task` whose binary reads as `seen` and asks for `shared` bytes of shared
    memory at launch (triton's ``metadata.shared``): ``ok`` and ``error`` say what fails."""
    target = for_dtype(task.target, dtype_name(task.dtype))
    row = blank_row(task.kernel, task.config, task.dtype, task.variant, target)
    row.update(
        registers=seen.registers, stack=seen.stack, static_shared=seen.static_shared, shared=shared,
        local_insts=seen.local_insts, tensor_core_insts=seen.tensor_core_insts, sgprs=seen.sgprs,
        spills=seen.spills, tensor_core=seen.tensor_core_insts > 0,
        tma=seen.tma_insts > 0, warp_specialized=seen.setmaxnreg_insts > 0,
        shared_a=(seen.register_a_insts == 0) if target.name == "sm_90" else None,
    )
    problems = []
    if row["spills"]:
        what = f"{seen.local_insts} scratch loads/stores" if target.backend == "hip" else f"{seen.local_insts} LDL/STL"
        problems.append(f"spills (STACK {seen.stack} B, {what}" + (
            f", {seen.spill_count} registers spilled)" if seen.spill_count else ")"))
    if shared > target.max_shared:
        problems.append(f"shared memory {shared} B > {target.max_shared} B")
    if row["tensor_core_required"] and not row["tensor_core"]:
        problems.append(f"GEMM without {target.tensor_core_op}")
    if row["tma_required"] and not row["tma"]:
        problems.append("TMA variant without UTMALDG")
    if row["shared_a_required"] and not row["shared_a"]:
        problems.append(f"wgmma reads A from registers ({seen.register_a_insts} HGMMA), not shared memory")
    if row["warp_specialized_required"] and not row["warp_specialized"]:
        problems.append("warp-specialized variant without USETMAXREG (triton dropped the specialization)")
    row["ok"] = not problems
    row["error"] = "; ".join(problems) or None
    row["seconds"] = seconds
    return with_hopper_keys(row)
