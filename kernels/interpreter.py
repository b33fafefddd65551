"""Running the kernels through triton's CPU interpreter at the speed its semantics allow.

The interpreter checks every int32 add, sub and mul for overflow the way a debug build does:
it redoes the operation in int64, compares the result with int32's range, and hands the
comparison to ``device_assert``, which returns at once unless the builder's options have
``debug`` set, which the interpreter's never have (triton 3.6 and 3.8: ``InterpreterOptions``
is built once, with ``debug=False``). So the check's result is always thrown away, after its
four extra numpy operations per index expression: about half of the interpreter's time in
the engine's forwards (measured: 101 of 192 s of a tuned resnet18 run). Turning the check off
where ``debug`` is off changes no result and no error; where ``debug`` is on it stays.
"""
from __future__ import annotations

import dataclasses


def skip_discarded_overflow_checks() -> bool:
    """Turn off the interpreter's int32 overflow check where its assertion is a no-op (its
    options' ``debug`` off); True when it did. Does nothing (False) where the interpreter's
    builder is not the one this module knows, or the check's result would be used."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - a triton without the interpreter module
        return False
    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if options is None or not dataclasses.is_dataclass(options):
        return False
    fields = {f.name for f in dataclasses.fields(options)}
    if not {"debug", "sanitize_overflow"} <= fields or options.debug:
        return False
    if options.sanitize_overflow:
        builder.options = dataclasses.replace(options, sanitize_overflow=False)
    return True
