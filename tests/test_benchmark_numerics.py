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
