"""fastres.predict.output: the JSON lines and the CSV rows, one per input, read back."""
from __future__ import annotations

import io
import json

import pytest

from fastres.predict.output import CsvWriter, JsonLinesWriter, Prediction, Top, open_writer, output_format, read_output

PREDS = [
    Prediction("a.jpg", top=(Top(3, "cat", 0.71234567), Top(1, "dog, wet", 0.2))),
    Prediction("b \"odd\".png", error="cannot decode PNG: out of bound read"),
    Prediction("c.webp", top=(Top(0, "ünïcode", 1e-9), Top(2, "x", 0.0))),
]
EXPECTED = [
    {"path": "a.jpg", "top": [{"index": 3, "label": "cat", "prob": 0.712346}, {"index": 1, "label": "dog, wet", "prob": 0.2}]},
    {"path": "b \"odd\".png", "error": "cannot decode PNG: out of bound read"},
    {"path": "c.webp", "top": [{"index": 0, "label": "ünïcode", "prob": 1e-9}, {"index": 2, "label": "x", "prob": 0.0}]},
]


def test_json_lines():
    buf = io.StringIO()
    w = JsonLinesWriter(buf)
    for p in PREDS:
        w.write(p)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and [json.loads(l) for l in lines] == EXPECTED == read_output(buf.getvalue(), "jsonl")


def test_csv():
    buf = io.StringIO()
    w = CsvWriter(buf, topk=2)
    for p in PREDS:
        w.write(p)
    text = buf.getvalue()
    assert text.splitlines()[0] == "path,index_1,label_1,prob_1,index_2,label_2,prob_2,error"
    assert len(text.splitlines()) == 4 and read_output(text, "csv") == EXPECTED


def test_formats_by_suffix(tmp_path):
    assert [output_format(x) for x in (None, "r.csv", "r.CSV", "r.jsonl", "r.json", "r.ndjson")] == \
        ["jsonl", "csv", "csv", "jsonl", "jsonl", "jsonl"]
    with pytest.raises(ValueError, match=r"--out r.txt: name a .csv file"):
        output_format("r.txt")
    with open_writer(tmp_path / "r.csv", 2) as w:
        w.write(PREDS[0])
    assert read_output((tmp_path / "r.csv").read_text(), "csv") == EXPECTED[:1]
    out = io.StringIO()
    with open_writer(None, 2, stdout=out) as w:
        w.write(PREDS[1])
    assert read_output(out.getvalue(), "jsonl") == EXPECTED[1:2]


def test_parquet(tmp_path, monkeypatch):
    """One row per input in the JSON line's schema, across row groups; read back the same."""
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (the ray extra brings it)")
    import pyarrow.parquet as pq

    from fastres.predict import output

    assert output_format("r.parquet") == "parquet"
    monkeypatch.setattr(output, "PARQUET_GROUP_ROWS", 2)
    with open_writer(tmp_path / "r.parquet", 2) as w:
        for p in PREDS:
            w.write(p)
            w.flush()
    f = pq.ParquetFile(tmp_path / "r.parquet")
    assert f.metadata.num_row_groups == 2 and f.schema_arrow == output.parquet_schema()
    assert output.read_parquet(tmp_path / "r.parquet") == EXPECTED


def test_parquet_without_pyarrow_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(ValueError, match=r"--out r.parquet: Parquet needs pyarrow: pip install 'fastres\[ray\]'"):
        output_format("r.parquet")
