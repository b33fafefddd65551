"""fastres.benchmark.environment: the card slug of GPU names, a results file's date given for the
run, and the baseline flags, restored even on an error."""
from __future__ import annotations

import pytest
import torch

from fastres.benchmark.environment import baseline_flags, bench_date, card_slug, environment


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


def test_a_given_date_names_the_results(monkeypatch):
    assert environment(torch.device("cpu"), smoke=True, date="2026-01-02")["date"] == "2026-01-02"
    assert bench_date("2028-02-29") == "2028-02-29"
    for bad in ("2026-1-2", "2026-13-01", "2026-02-30", "today", "2026-01-02T00:00", " 2026-01-02"):
        with pytest.raises(ValueError, match=r"^the date must be a day as YYYY-MM-DD, e.g. 2026-01-02, got ") as info:
            bench_date(bad)
        assert "\n" not in str(info.value)
