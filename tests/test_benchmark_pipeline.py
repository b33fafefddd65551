"""fastres.benchmark.pipeline (`fastres bench predict`): the generated JPEGs, the records, the
report's table and summary lines, and a smoke run through the interpreter."""
from __future__ import annotations

import json

import pytest
from benchmark_helpers import synthetic_results

from fastres import cli
from fastres.benchmark.pipeline import _ceiling_share, generate_jpegs, photo_like_jpeg
from fastres.benchmark.names import SMOKE_LABEL
from fastres.benchmark.report import markdown_predict_table, summary_text
from fastres.benchmark.results import add_record, validate_results
from fastres.predict.images import image_size, sniff

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


def test_generated_jpegs_look_like_imagenet(tmp_path):
    data = photo_like_jpeg(500, 375, seed=1)
    assert sniff(data) == "JPEG" and image_size(data, "JPEG") == (500, 375)
    assert 40_000 < len(data) < 250_000  # ImageNet's are ~110 KB
    files = generate_jpegs(tmp_path, 5, sizes=((40, 30),), distinct=2)
    assert len(files) == 5 and len(set(files)) == 2 and files[2] == files[0]


def _rec(system, rate, **kw):
    r = {"kind": "predict", "model": "resnet50", "batch": 64, "dtype": "float16", "system": system, "size": 224,
         "median_ms": 64 / rate * 1e3, "images_per_s": rate, "status": "ok"}
    r.update(kw)
    return r


def test_report_table_and_summary():
    res = synthetic_results()
    add_record(res, _rec("engine-only", 8000.0))
    add_record(res, _rec("predict-cpu", 2000.0, workers=16,
                         stage_share={"decode": 0.5, "preprocess": 0.3, "model": 0.2}))
    add_record(res, _rec("predict-nvjpeg", 6000.0, status="error", reason="boom", median_ms=None, images_per_s=None))
    _ceiling_share(res, dict(model="resnet50", dtype="float16", batch=64, size=224))
    assert res["records"][-2]["of_engine_only"] == pytest.approx(0.25)
    table = markdown_predict_table(res)
    assert "| resnet50 | float16 | 64 | predict-cpu | 2,000 | 25% | 50% / 30% / 20% | 16 |" in table
    assert "| predict-nvjpeg | error |" in table
    text = summary_text(res)
    assert "predict resnet50 float16 b64 predict-cpu: 2,000 img/s, 25% of engine-only" in text
    assert "ERROR: predict resnet50" in text and validate_results(res) == []


def test_bench_predict_smoke(tmp_path, capsys):
    """`fastres bench predict --smoke`: the engine alone and the CPU pipeline timed, nvjpeg
    skipped without CUDA, the records valid, the table in the report."""
    rc = cli.main(["bench", "predict", "--smoke", "--images", "2", "--out", str(tmp_path), "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    (path,) = tmp_path.glob("smoke-*.json")
    res = json.loads(path.read_text())
    assert res["label"] == SMOKE_LABEL and validate_results(res) == []
    recs = {r["system"]: r for r in res["records"] if r["kind"] == "predict"}
    assert recs["engine-only"]["status"] == "ok" and recs["engine-only"]["images_per_s"] > 0
    cpu = recs["predict-cpu"]
    assert cpu["status"] == "ok" and cpu["images"] == 2 and cpu["images_per_s"] > 0
    assert set(cpu["stage_s"]) == {"decode", "preprocess", "model", "waited"} and cpu["stage_s"]["model"] > 0
    assert recs["predict-nvjpeg"]["status"] == "skipped" and "CUDA" in recs["predict-nvjpeg"]["reason"]
    assert "| resnet18 | float16 | 2 | predict-cpu |" in path.with_suffix(".md").read_text()
