"""Compile keys: which binaries a set of kernel launches needs, as triton's JIT tells them apart.

The JIT compiles one binary per (kernel, specialization of its arguments, constexpr values,
launch options). ``compile_key`` computes that key for one launch with the JIT's rules
(``fastres.gate.compile.specialize`` applies the same rules to the gate's rows): a pointer by
its element type and 16-byte alignment; an int by its width and, unless the kernel marks it
``do_not_specialize``, whether it is 1 and (unless ``do_not_specialize_on_alignment``) whether
it is divisible by 16; a constexpr by value.
``recording()`` collects the launches a block of code makes (it runs them too), so

    with recording() as launches:
        model(x)
    compile_keys(launches)

is the set of binaries that forward needs; two forwards whose sets are equal compile nothing
for the second (the engine's "no recompiles per input size" check).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple

import torch

# Modules of fastres.kernels that define the kernels their launchers launch (where kernel_name looks).
LAUNCHING_MODULES = ("conv", "conv_bordered", "conv_tma", "elementwise", "gemm1x1", "gemm_tma", "head", "pool", "splitk")
OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


class Launch(NamedTuple):
    """One recorded launch: the @triton.jit function and its arguments by name (options too)."""

    fn: Any
    args: dict[str, Any]


class Param(NamedTuple):
    name: str
    constexpr: bool
    do_not_specialize: bool
    # do_not_specialize_on_alignment: 1 is still a constant, divisibility by 16 is not kept
    unaligned: bool = False


def jit_params(fn: Any) -> list[Param]:
    """The parameters of a @triton.jit function as the JIT treats them: compiled (the JIT's
    own records) or under the interpreter (from the signature and the decorator's arguments)."""
    params = getattr(fn, "params", None)
    if params is not None:
        return [Param(p.name, p.is_constexpr, bool(p.do_not_specialize), bool(p.do_not_specialize_on_alignment))
                for p in params]
    import inspect

    kwargs = getattr(fn, "kwargs", {})
    dns = set(kwargs.get("do_not_specialize") or ())
    dnsa = set(kwargs.get("do_not_specialize_on_alignment") or ())
    sig = inspect.signature(getattr(fn, "fn", fn)).parameters.values()
    return [Param(p.name, "constexpr" in str(p.annotation), p.name in dns or i in dns, p.name in dnsa or i in dnsa)
            for i, p in enumerate(sig)]


def unspecialized(fn: Any) -> frozenset[str]:
    """The arguments of `fn` marked ``do_not_specialize``: the JIT passes them as plain
    integers whatever their value (neither the constant 1 nor divisible by 16)."""
    return frozenset(p.name for p in jit_params(fn) if p.do_not_specialize)


def unaligned(fn: Any) -> frozenset[str]:
    """The arguments of `fn` marked ``do_not_specialize_on_alignment``: 1 is a constant, any
    other value a plain integer (no divisibility by 16)."""
    return frozenset(p.name for p in jit_params(fn) if p.unaligned and not p.do_not_specialize)


def jit_class(value: Any, *, specialize: bool = True, constexpr: bool = False, align: bool = True) -> tuple:
    """What the JIT keys one argument on (see the module docstring)."""
    if constexpr:
        return ("constexpr", value)
    if isinstance(value, torch.Tensor):
        return ("ptr", str(value.dtype).removeprefix("torch."), value.data_ptr() % 16 == 0)
    if isinstance(value, bool):
        return ("u1",)
    if isinstance(value, int):
        width = "i32" if -(2**31) <= value < 2**31 else ("u64" if value >= 2**63 else "i64")
        if not specialize:
            return (width,)
        if value == 1:
            return ("constexpr", 1)
        return (width, align and value % 16 == 0)
    if isinstance(value, float):
        return ("fp32",)
    if value is None:
        return ("constexpr", None)
    return ("constexpr", value)


def compile_key(launch: Launch) -> tuple:
    """(kernel name, per-argument JIT classes in order, launch options) of one launch."""
    fn, args = launch
    classes = []
    for p in jit_params(fn):
        if p.name not in args:
            continue  # a default the launcher left out: the same in every launch
        classes.append((p.name, jit_class(args[p.name], specialize=not p.do_not_specialize, constexpr=p.constexpr,
                                          align=not p.unaligned)))
    options = tuple((k, args[k]) for k in OPTIONS if k in args)
    return (kernel_name(fn), tuple(classes), options)


def kernel_name(fn: Any) -> str:
    """The module-level name of a @triton.jit kernel (two kernels may share one function, as
    the stem's and the other convs' do), else its function's name."""
    import sys

    py = getattr(fn, "fn", fn)
    own = getattr(py, "__module__", "")
    for module_name in (own, *(f"fastres.kernels.{m}" for m in LAUNCHING_MODULES)):
        for name, value in vars(sys.modules.get(module_name) or object()).items():
            if value is fn:
                return name
    return getattr(py, "__qualname__", str(fn))


def compile_keys(launches) -> set[tuple]:
    """The distinct compile keys of `launches` (``Launch`` records, e.g. from ``recording()``)."""
    return {compile_key(launch) for launch in launches}


@contextlib.contextmanager
def recording(*, run: bool = True) -> Iterator[list[Launch]]:
    """Record every kernel launch made in this block (this thread and context) into the
    yielded list, filled when the block ends, as ``Launch`` records with their arguments by
    name (``kernels.launch.recording``; run=False records without launching)."""
    from ..kernels.launch import recording as record_launches

    seen: list[Launch] = []
    try:
        with record_launches(run=run) as raw:
            yield seen
    finally:
        seen.extend(Launch(r.fn, {**dict(zip([p.name for p in jit_params(r.fn)], r.args)), **r.kwargs}) for r in raw)
