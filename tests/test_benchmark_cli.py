"""fastres.benchmark.cli: the report command, the CLI's user errors, one results file for the
steps of a run given its --date, the smoke re-run in a child interpreter, and `fastres bench
--smoke` end to end through the interpreter."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_helpers import e2e_record, synthetic_results

from fastres.benchmark import cli
from fastres.benchmark.cli import configure, main
from fastres.benchmark.names import LAYER_SYSTEMS, SMOKE_LABEL
from fastres.benchmark.results import add_record, save_results, validate_results

REPO = Path(__file__).resolve().parent.parent


def test_report_command_writes_md_and_png(tmp_path, capsys):
    res = synthetic_results()
    path = tmp_path / "h100-sxm-2026-01-02.json"
    save_results(path, res)
    parser = argparse.ArgumentParser()
    configure(parser)
    assert main(parser.parse_args(["report", str(path)])) == 0
    assert "| resnet50 | float16 | 224 | 1 |" in path.with_suffix(".md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_user_errors(tmp_path):
    from fastres.errors import UserError

    parser = argparse.ArgumentParser()
    configure(parser)
    with pytest.raises(UserError, match="needs the results JSON"):
        main(parser.parse_args(["report"]))
    with pytest.raises(UserError, match="no results file"):
        main(parser.parse_args(["report", str(tmp_path / "missing.json")]))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--smoke"):
            main(parser.parse_args(["e2e", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="unknown dtype"):
        main(parser.parse_args(["--smoke", "--dtypes", "fp4", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="float engines"):
        main(parser.parse_args(["predict", "--smoke", "--dtypes", "fp8", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="bf16"):
        main(parser.parse_args(["--smoke", "--dtypes", "bf16", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match="unknown name"):
        main(parser.parse_args(["--smoke", "--systems", "tensorrt", "--out", str(tmp_path)]))
    with pytest.raises(UserError, match=r"^--date: the date must be a day as YYYY-MM-DD.*'2026-1-2'$"):
        main(parser.parse_args(["--smoke", "--date", "2026-1-2", "--out", str(tmp_path)]))


def test_steps_of_one_date_share_a_results_file_across_midnight(tmp_path, monkeypatch):
    """Two steps, one before and one after midnight (UTC): without --date each names its file by
    its own day, with the run's --date both merge into one."""
    import datetime as dt
    import types

    import fastres.benchmark.environment as environment
    import fastres.kernels

    clock = iter(dt.datetime(2026, 1, 1, 23, 59, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=2 * i)
                 for i in range(4))
    fake_dt = types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda tz: next(clock)),
                                    timezone=dt.timezone, date=dt.date)
    monkeypatch.setattr(environment, "_dt", fake_dt)
    monkeypatch.setattr(fastres.kernels, "interpreting", lambda: True)  # the smoke in this process
    # Each step adds one record (a batch of its own) in place of measuring.
    monkeypatch.setattr(cli, "run_layers", lambda run, *a: add_record(run.results, e2e_record("cudnn-eager", 1, 1.0)))
    monkeypatch.setattr(cli, "run_e2e", lambda run, *a: add_record(run.results, e2e_record("cudnn-eager", 2, 1.0)))
    parser = argparse.ArgumentParser()
    configure(parser)
    for out, date in ((tmp_path / "own", []), (tmp_path / "given", ["--date", "2026-01-01"])):
        for action in ("layers", "e2e"):
            main(parser.parse_args([action, "--smoke", "--no-plot", "--out", str(out), *date]))
    assert sorted(p.name for p in (tmp_path / "own").glob("*.json")) == [
        "smoke-cpu-2026-01-01.json", "smoke-cpu-2026-01-02.json"]
    (given,) = (tmp_path / "given").glob("*.json")
    assert given.name == "smoke-cpu-2026-01-01.json"
    assert [r["batch"] for r in json.loads(given.read_text())["records"]] == [1, 2]


def test_smoke_reexecs_with_the_interpreter(tmp_path, monkeypatch):
    """Where triton was imported without TRITON_INTERPRET (a GPU machine), --smoke runs in a
    child process that sets it first, with the same options."""
    import fastres.kernels

    seen = {}

    def fake_run(cmd, env):
        seen.update(cmd=cmd, env=env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(fastres.kernels, "interpreting", lambda: False)
    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    parser = argparse.ArgumentParser()
    configure(parser)
    assert main(parser.parse_args(["layers", "--smoke", "--max-layers", "2", "--out", str(tmp_path)])) == 0
    assert seen["env"]["TRITON_INTERPRET"] == "1"
    assert seen["cmd"][0] == sys.executable and "_child_main" in seen["cmd"][-1]
    args = json.loads(seen["env"]["FASTRES_BENCH_ARGS"])
    assert args["action"] == "layers" and args["smoke"] is True and args["max_layers"] == 2 and args["out"] == str(tmp_path)


def test_bench_smoke_end_to_end(tmp_path):
    """`fastres bench --smoke --out DIR`: layers (one of them in int8 too), e2e and the report
    through the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the CLI must set it itself
    env["CUDA_VISIBLE_DEVICES"] = ""
    results_dir = REPO / "bench" / "results"
    before = sorted(p.name for p in results_dir.iterdir()) if results_dir.is_dir() else []
    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, "-m", "fastres", "bench", "--smoke", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert SMOKE_LABEL in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    jsons = [f for f in files if f.endswith(".json")]
    assert len(jsons) == 1 and jsons[0].startswith("smoke-cpu-"), files
    path = out / jsons[0]
    res = json.loads(path.read_text())
    assert res["smoke"] is True and res["label"] == SMOKE_LABEL
    assert validate_results(res) == []
    recs = res["records"]
    e2e = {r["system"]: r for r in recs if r["kind"] == "e2e"}
    assert e2e["fastres"]["status"] == "ok", e2e["fastres"]
    assert e2e["fastres"]["rel_err"] <= e2e["fastres"]["tol"]
    assert e2e["fastres"]["median_ms"] > 0 and e2e["fastres"]["images_per_s"] > 0
    assert e2e["cudnn-eager"]["status"] == "ok"
    for name in ("cudnn-eager-graph", "torch-compile"):
        assert e2e[name]["status"] == "skipped" and "CUDA" in e2e[name]["reason"]
    layer = [r for r in recs if r["kind"] == "layer" and r["dtype"] != "int8"]
    assert {r["system"] for r in layer} == set(LAYER_SYSTEMS)
    assert {r["dtype"] for r in layer} == {"float32", "float16"}
    assert all(r["status"] == "ok" and r["tflops"] > 0 for r in layer), [r for r in layer if r["status"] != "ok"]
    assert any(r["layer"].startswith("7x7/2 3->64") for r in layer)
    int8 = {r["system"]: r for r in recs if r["kind"] == "layer" and r["dtype"] == "int8"}
    assert int8["fastres"]["status"] == "ok" and int8["fastres"]["code_err"] == 0, int8["fastres"]
    assert "+res" in int8["fastres"]["layer"] and {int8[s]["status"] for s in LAYER_SYSTEMS[1:]} == {"skipped"}
    md = path.with_suffix(".md").read_text()
    assert SMOKE_LABEL in md and "| resnet18 | float16 | 32 | 2 |" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in proc.stdout
    else:
        assert path.with_suffix(".png").is_file()
    after = sorted(p.name for p in results_dir.iterdir()) if results_dir.is_dir() else []
    assert after == before, "the smoke run must not write into bench/results"
