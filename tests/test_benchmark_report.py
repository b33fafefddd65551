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


def test_eight_bit_tables_stand_beside_float16():
    """An 8-bit point's fastres record beside the float16 records of the same point: per layer
    (times, speedups, the bytes saved, the total over uses) and end to end."""
    from benchmark_helpers import e2e_record

    from fastres.benchmark.report import summary_text

    res = synthetic_results()
    layer = "3x3/1 64->64 @56x56 relu"
    add = lambda **kw: res["records"].append({"kind": "layer", "model": "resnet50", "layer": layer, "batch": 1,
                                              "size": 224, "uses": ["layer1.0.conv2", "layer1.1.conv2"], **kw})
    add(dtype="int8", system="fastres", median_ms=0.005, images_per_s=None, tflops=46.2, pct_peak=2.0, status="ok",
        bytes=1_000_000, bytes_float16=1_800_000)
    add(dtype="int8", system="cudnn-eager", median_ms=None, images_per_s=None, tflops=None, status="skipped")
    res["records"].append(e2e_record("fastres", 1, 0.5, dtype="int8", quantize_s=3.0))
    layers = markdown_layer_table(res)
    assert "#### resnet50, int8, batch 1 (beside float16" in layers
    assert f"| {layer} | 2 | 0.005 | 46.2 | 2% | 0.010 | 0.012 | 2.00x | 2.40x | 0.80 |" in layers
    assert "| **all convs, x uses** | | **0.010** | | | 0.020 | 0.024 | **2.00x** | **2.40x** | |" in layers
    md = render_markdown(res)
    assert "8 bits beside float16" in md
    assert "| resnet50 | 224 | 1 | 1,000 img/s, 1.000 ms | 500 img/s, 2.000 ms (cudnn-eager) | " \
           "2,000 img/s, 0.500 ms (2.00x fastres float16, 4.00x cuDNN) | - |" in md
    text = summary_text(res)
    assert "8-bit e2e resnet50 int8 b1: 0.500 ms: 2.00x fastres float16, 4.00x cudnn-eager float16" in text
    assert "fastres 0.010, fastres float16 0.020 (fastres 2.00x), cudnn-eager float16 0.024 (fastres 2.40x)" in text
