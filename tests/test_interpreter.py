"""kernels/interpreter.py: the interpreter's int32 overflow check is turned off only where its
assertion is a no-op, so results and errors are the same with and without it."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import triton
import triton.language as tl

from fastres.kernels import interpreting
from fastres.kernels.interpreter import skip_discarded_overflow_checks

pytestmark = pytest.mark.skipif(not interpreting(), reason="about triton's CPU interpreter (TRITON_INTERPRET=1)")


@triton.jit
def _wrapping_kernel(x_ptr, y_ptr, scale, N, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    ok = i < N
    x = tl.load(x_ptr + i, mask=ok, other=0)
    tl.store(y_ptr + i, x * scale + 7, mask=ok)  # int32: overflows for big x


@pytest.fixture
def builder():
    from triton.runtime import interpreter

    b = interpreter.interpreter_builder
    saved = b.options
    yield b
    b.options = saved


def _run(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    _wrapping_kernel[(1,)](x, y, 3, x.numel(), BLOCK=16)
    return y


def test_fastres_turned_the_discarded_check_off(builder):
    assert builder.options.debug is False and builder.options.sanitize_overflow is False


def test_the_check_changed_nothing_it_is_turned_off_for(builder):
    """An int32 expression that overflows: the same wrapped values, and no error, with the
    check on (what the interpreter did before) and off."""
    x = torch.tensor([1, -5, 2**30, 2**31 - 1, -(2**31), 123456789], dtype=torch.int32)
    builder.options = dataclasses.replace(builder.options, sanitize_overflow=True)
    with_check = _run(x)
    builder.options = dataclasses.replace(builder.options, sanitize_overflow=False)
    without = _run(x)
    assert torch.equal(with_check, without)
    assert torch.equal(without, (x.long() * 3 + 7).to(torch.int32))  # wraps as int32 arithmetic does on the GPU


def test_kept_where_debug_would_use_it(builder):
    builder.options = dataclasses.replace(builder.options, debug=True, sanitize_overflow=True)
    assert skip_discarded_overflow_checks() is False
    assert builder.options.sanitize_overflow is True
    builder.options = dataclasses.replace(builder.options, debug=False)
    assert skip_discarded_overflow_checks() is True
    assert builder.options.sanitize_overflow is False
