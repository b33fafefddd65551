"""fastres.benchmark.report: the markdown tables and the plot of a synthetic results file."""
from __future__ import annotations

import pytest
from benchmark_helpers import fake_env, synthetic_results

from fastres.benchmark.names import SMOKE_LABEL
from fastres.benchmark.report import markdown_e2e_table, markdown_layer_table, render_markdown, write_plot
from fastres.benchmark.results import new_results


def test_markdown_tables():
    res = synthetic_results()
    md = render_markdown(res)
    table = markdown_e2e_table(res)
    assert table in md
    lines = table.strip().splitlines()
    assert lines[0] == "| model | dtype | size | batch | fastres | cudnn-eager | cudnn-eager-graph | torch-compile |"
    assert len(lines) == 4  # header, rule, two batches
    row1 = next(l for l in lines if l.startswith("| resnet50 | float16 | 224 | 1 |"))
    assert "1,000 img/s, 1.000 ms" in row1
    assert "(fastres 2.00x)" in row1
    assert "WRONG (rel 3.1e-02)" in row1 and "skipped" in row1
    assert "abc123" in md and "790 TFLOP/s" in md
    layers = markdown_layer_table(res)
    assert "#### resnet50, float16, batch 1" in layers
    assert "| 3x3/1 64->64 @56x56 relu | 2 | 0.010 |" in layers
    assert "1.20x" in layers  # cudnn-eager / fastres
    assert "**all convs, x uses**" in layers
    assert SMOKE_LABEL not in md
    smoke_md = render_markdown(synthetic_results(smoke=True))
    assert smoke_md.count(SMOKE_LABEL) >= 3  # title and each table
    assert markdown_e2e_table(new_results(fake_env())) == "_no end-to-end records_\n"


def test_plot_writer(tmp_path):
    pytest.importorskip("matplotlib")
    res = synthetic_results()
    png = write_plot(res, tmp_path / "r.png")
    assert png == tmp_path / "r.png" and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plot(new_results(fake_env()), tmp_path / "none.png") is None
