"""`fastres predict`: JSON lines on stdout (CSV with --out), in input order, a line naming the
cause for every file that cannot be classified and exit 1; every usage mistake one line on
stderr and exit 2 before anything runs; never a traceback."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastres import cli
from fastres.predict.output import read_output
from helpers import ON_GPU
from predict_helpers import GOOD, bad_files, make_images
from test_build import calibrated

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--resize", "40", "--crop", "32", "--dtype", "float32", "--batch", "4", "--topk", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    good = make_images(root / "photos" / "a", {n: GOOD[n] for n in ("rgb.jpg", "gray.jpg", "rgba.png", "wide.webp")})
    bad = {name: words for name, (_, words) in bad_files(root / "photos" / "b").items()}
    weights = root / "r18.pth"
    torch.save(calibrated("resnet18").state_dict(), weights)
    (root / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    return root, good, bad, weights


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_jsonl_on_stdout_with_failures_in_order(setup):
    """A fresh process: one JSON line per file in sorted order, failures naming their cause,
    exit 1, the summary (and no traceback) on stderr."""
    root, good, bad, weights = setup
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               FASTRES_PROGRESS_INTERVAL="0")  # stderr is a pipe: a progress line per image
    env.pop("TRITON_INTERPRET", None)  # the command chooses the interpreter itself without a GPU
    proc = subprocess.run([sys.executable, "-m", "fastres", "predict", "photos", "--weights", str(weights),
                           "--labels", "labels.txt", *SMALL], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    files = sorted(p.relative_to(root).as_posix() for p in (root / "photos").rglob("*") if p.is_file())
    assert [line["path"] for line in lines] == files
    for line in lines:
        name = Path(line["path"]).name
        if name in bad:
            assert set(line) == {"path", "error"} and bad[name] in line["error"], line
        else:
            assert set(line) == {"path", "top"} and len(line["top"]) == 3
            assert all(t["label"] == f"class {t['index']}" for t in line["top"])
            assert line["top"][0]["prob"] >= line["top"][1]["prob"] >= line["top"][2]["prob"] > 0
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{len(files)} images ({len(bad)} failed)" in summary and "img/s" in summary
    # progress without a terminal: plain lines (images done, rate), no bar
    progress = [line for line in proc.stderr.splitlines() if line.startswith("classifying: ")]
    assert progress and progress[-1].startswith(f"classifying: {len(files)}/{len(files)} img, "), proc.stderr
    assert all(re.fullmatch(r"classifying: \d+/\d+ img, [\d.]+ img/s, \d+ s", line) for line in progress), progress
    assert "\r" not in proc.stderr
    assert all(w in summary for w in ("decode", "preprocess", "model"))
    (root / "run.jsonl").write_text(proc.stdout)


def test_csv_out_and_exit_0(setup, capsys):
    """--out x.csv: the same results as CSV rows; all files classified: exit 0, stdout empty."""
    root, good, bad, weights = setup
    out = root / "r.csv"
    rc, stdout, err = run_cli(capsys, *good, "--weights", weights, "--labels", root / "labels.txt", "--out", out,
                              "--no-progress", *SMALL)
    assert rc == 0 and stdout == "" and "Traceback" not in err
    rows = read_output(out.read_text(), "csv")
    assert [r["path"] for r in rows] == [str(p) for p in good]
    jsonl = root / "run.jsonl"
    if jsonl.exists():  # the same files, the same batch, the same numbers as the JSON lines
        earlier = {Path(r["path"]).name: r for r in read_output(jsonl.read_text(), "jsonl")}
        assert all(r["top"] == earlier[Path(r["path"]).name]["top"] for r in rows)


@pytest.mark.parametrize("case,words", [
    ("missing", "photos/missing.jpg: no such file or directory"),
    ("empty-dir", "no image files in this directory"),
    ("out-suffix", "--out r.txt: name a .csv file"),
    ("weights", "nope.pth: no such file"),
    ("topk", "topk must be between 1 and the model's 10 classes, got 11"),
    ("labels", "has 3 labels but the model has 10 classes"),
    ("batch", "--batch must be >= 1, got 0"),
    ("bf16", "bfloat16 needs a GPU"),
    ("device", "--device cuda: no CUDA device here"),
])
def test_usage_mistakes_are_one_line_and_exit_2(setup, capsys, case, words):
    root, good, bad, weights = setup
    if case in ("bf16", "device") and ON_GPU:
        pytest.skip("a CPU-only mistake")
    (root / "empty").mkdir(exist_ok=True)
    (root / "three.txt").write_text("a\nb\nc\n")
    argv = {
        "missing": [root / "photos", root / "photos" / "missing.jpg", "--weights", weights],
        "empty-dir": [root / "empty", "--weights", weights],
        "out-suffix": [root / "photos", "--weights", weights, "--out", "r.txt"],
        "weights": [root / "photos", "--weights", root / "nope.pth"],
        "topk": [root / "photos", "--weights", weights, "--topk", "11"],
        "labels": [root / "photos", "--weights", weights, "--labels", root / "three.txt"],
        "batch": [root / "photos", "--weights", weights, "--batch", "0"],
        "bf16": [root / "photos", "--weights", weights, "--dtype", "bfloat16"],
        "device": [root / "photos", "--weights", weights, "--device", "cuda"],
    }[case]
    rc, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("fastres predict: error: ") and words in lines[0], lines[0]


@pytest.mark.parametrize("exc", [ValueError(), ValueError("bad weights\nmore detail")])
def test_a_predictor_error_is_one_line_even_when_empty(monkeypatch, tmp_path, exc):
    """An error building the Predictor is one UserError line: its message's first line, or its
    type's name where the message is empty."""
    import fastres.predict.predictor as predictor
    from fastres.cli import UserError
    from fastres.predict import cli as predict_cli

    def refuses(*args, **kwargs):
        raise exc

    monkeypatch.setattr(predictor, "Predictor", refuses)
    args = cli.build_parser().parse_args(["predict", str(tmp_path), "--weights", "w.safetensors", "--device", "cpu",
                                          "--dtype", "float32"])
    with pytest.raises(UserError) as raised:
        predict_cli._predictor(args, 1000)
    assert str(raised.value) == (str(exc).splitlines()[0] if str(exc) else "ValueError")
