"""fastres.benchmark.environment: the card slug of GPU names and the baseline flags, restored
even on an error."""
from __future__ import annotations

import pytest
import torch

from fastres.benchmark.environment import baseline_flags, card_slug


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200-nvl"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("Tesla T4", "t4"),
    ("", "unknown"),
])
def test_card_slug(name, slug):
    assert card_slug(name) == slug


def test_baseline_flags_restore():
    b = torch.backends
    before = (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    with pytest.raises(RuntimeError):
        with baseline_flags():
            assert b.cudnn.benchmark is True and b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False
            raise RuntimeError("restored even on error")
    assert (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == before
