"""fastres.benchmark.numerics: the relative error and the end-to-end tolerances."""
from __future__ import annotations

import math

import pytest
import torch

from fastres.benchmark.numerics import e2e_tolerance, rel_error


def test_rel_error_and_tolerances():
    ref = torch.tensor([3.0, 4.0])
    assert rel_error(ref, ref) == 0.0
    assert rel_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert rel_error(torch.tensor([float("nan"), 4.0]), ref) == math.inf
    assert e2e_tolerance("float16", 1e-3, system="fastres") == 5e-3
    assert e2e_tolerance("float16", 4e-3, system="fastres") == pytest.approx(8e-3)
    assert e2e_tolerance("float16", 0.5, system="fastres") == 2e-2  # never above the cap
    assert e2e_tolerance("float16", 1e-3, system="cudnn-eager") == 2e-2
    assert e2e_tolerance("bfloat16", 1e-2, system="torch-compile") == pytest.approx(2e-2)


def test_code_distance_counts_steps_of_the_8bit_grid():
    from fastres.benchmark.numerics import code_distance

    i8 = torch.tensor([-128, 0, 127], dtype=torch.int8)
    assert code_distance(i8, i8) == 0.0
    assert code_distance(torch.tensor([-127, 0, 125], dtype=torch.int8), i8) == 2.0
    e4 = torch.tensor([0.0, 448.0, -2.0, 0.0], dtype=torch.float8_e4m3fn)
    # one step each: 416 -> 448 at the top, -2.25 -> -2 (the sign-magnitude bits), -0 -> the
    # smallest subnormal (+0 and -0 are the same code)
    near = torch.tensor([-0.0, 416.0, -2.25, 2.0 ** -9], dtype=torch.float8_e4m3fn)
    assert code_distance(near, e4) == 1.0
    assert code_distance(torch.tensor([-2.0 ** -9], dtype=torch.float8_e4m3fn),
                         torch.tensor([2.0 ** -9], dtype=torch.float8_e4m3fn)) == 2.0  # across zero
    nan = torch.tensor([float("nan"), 448.0, -2.0, 0.0]).to(torch.float8_e4m3fn)
    assert code_distance(nan, e4) == math.inf and code_distance(nan, nan) == 0.0
    with pytest.raises(ValueError, match="int8"):
        code_distance(i8, e4[:3])
