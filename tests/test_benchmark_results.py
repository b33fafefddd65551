"""fastres.benchmark.results: the schema's complaints, a record replacing one with its key,
results files merging by day, device and smoke flag, and a save cut short leaving no
temporary file."""
from __future__ import annotations

import json
import os

import pytest
from benchmark_helpers import e2e_record, fake_env, synthetic_results

from fastres.benchmark.results import (
    TOP_LEVEL_KEYS, add_record, load_results, new_results, open_results, results_path, save_results, validate_results,
)


def test_result_schema():
    res = synthetic_results()
    assert validate_results(res) == []
    for key in TOP_LEVEL_KEYS:
        assert key in res
    broken = json.loads(json.dumps(res))
    del broken["commit"]
    del broken["records"][0]["images_per_s"]
    broken["records"][-1].pop("tflops")
    problems = validate_results(broken)
    assert any("commit" in p for p in problems)
    assert any("images_per_s" in p for p in problems)
    assert any("tflops" in p for p in problems)


def test_add_record_replaces_same_key_and_files_merge(tmp_path):
    res = new_results(fake_env())
    add_record(res, e2e_record("fastres", 1, 1.0))
    add_record(res, e2e_record("fastres", 1, 0.9))
    add_record(res, e2e_record("fastres", 8, 2.0))
    assert [r["median_ms"] for r in res["records"]] == [0.9, 2.0]
    path = results_path(tmp_path, fake_env())
    assert path.name == "h100-sxm-2026-01-02.json"
    assert results_path(tmp_path, fake_env(smoke=True)).name == "smoke-h100-sxm-2026-01-02.json"
    res["peaks"] = {"matmul_tflops": {"float16": 700.0}}
    save_results(path, res)
    again = open_results(path, fake_env())  # a later run of the same day keeps earlier records
    assert len(again["records"]) == 2 and again["peaks"]["matmul_tflops"]["float16"] == 700.0
    other = open_results(path, fake_env(device="NVIDIA H200"))
    assert other["records"] == []
    assert load_results(path)["records"] == res["records"]


def test_interrupted_save_leaves_the_last_file_and_no_temporary(tmp_path, monkeypatch):
    """A save cut short between writing its temporary file and putting it in place (an error,
    Ctrl-C) leaves the previous complete file and nothing else in the folder."""
    path = results_path(tmp_path, fake_env())
    first = synthetic_results()
    save_results(path, first)

    def cut_short(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", cut_short)
    with pytest.raises(KeyboardInterrupt):
        save_results(path, new_results(fake_env()))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_results(path)["records"] == first["records"]
