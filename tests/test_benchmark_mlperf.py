"""`fastres bench mlperf`: each LoadGen scenario VALID with a small model through the
interpreter at short settings (LoadGen's own summary read back), accuracy mode on a generated
validation folder whose labels are the float32 model's own answers, MLPerf's accuracy script's
arithmetic, the SUT's batching (issue only enqueues), the summary's fields, and the errors."""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fastres.benchmark.mlperf import SampleLibrary, SystemUnderTest, read_val_map
from fastres.benchmark.mlperf_results import accuracy_top1, read_summary, summary_fields
from fastres.errors import UserError
from fastres.predict.images import resize_for_crop

REPO = Path(__file__).resolve().parent.parent
SIZE = 32  # crop; resize 36 (256/224 of it, rounded down as MLPerf's reference does)
CLASSES = 10

pytest.importorskip("mlperf_loadgen", reason="MLPerf's LoadGen is the optional extra fastres[mlperf]")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A resnet18 checkpoint with 10 classes and calibrated random weights."""
    from fastres.models import random_resnet

    path = tmp_path_factory.mktemp("mlperf") / "resnet18-10.pth"
    torch.save(random_resnet("resnet18", CLASSES, seed=3).state_dict(), path)
    return path


def _run(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`fastres bench mlperf ARGS` in its own process (one LoadGen test per process), --json last."""
    if torch.cuda.is_available():
        pytest.skip("an interpreter-tier test: on a GPU, bench/device_run.sh's mlperf steps run LoadGen")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "fastres", "bench", "mlperf", *args, "--out", str(tmp_path / "out"),
                           "--log-dir", str(tmp_path / "logs"), "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), proc.stdout + proc.stderr
    return proc, json.loads(lines[-1])


SHORT = {
    # (extra arguments): few queries, and for the latency scenarios the 10th percentile judged
    # (LoadGen's early stopping needs 4 queries there, 64 at MLPerf's 90th)
    "Offline": ["--query-count", "8", "--batch", "8", "--duration-s", "0.1"],
    "Server": ["--target-qps", "2", "--target-latency-ms", "60000", "--query-count", "3", "--duration-s", "0.5",
               "--latency-percentile", "10", "--batch", "4"],
    "SingleStream": ["--query-count", "4", "--duration-s", "0.1", "--latency-percentile", "10"],
    "MultiStream": ["--query-count", "4", "--duration-s", "0.1", "--latency-percentile", "10", "--batch", "8"],
}


@pytest.mark.parametrize("scenario", list(SHORT))
def test_scenario_valid_through_the_interpreter(scenario, weights, tmp_path):
    proc, rec = _run(["--scenario", scenario, "--weights", str(weights), "--image-size", str(SIZE), *SHORT[scenario]],
                     tmp_path)
    summary = read_summary(tmp_path / "logs" / "mlperf_log_summary.txt")
    assert summary["Scenario"] == scenario and summary["Mode"] == "PerformanceOnly"
    assert summary["Result is"] == "VALID", (tmp_path / "logs" / "mlperf_log_summary.txt").read_text()
    assert proc.returncode == 0, proc.stderr
    assert rec["valid"] and rec["scenario"] == scenario and rec["system"] == "fastres" and rec["dtype"] == "float16"
    assert rec["samples_per_s"] > 0 and rec["latency_ms"]["p50"] > 0
    assert all(rec["constraints"].values())
    # every sample LoadGen issued was answered through the engine, in batches the scenario allows
    assert rec["sut_samples"] >= int(summary["min_query_count"]) * (8 if scenario == "MultiStream" else 1)
    if scenario == "SingleStream":
        assert rec["sut_batches"] == rec["sut_samples"]
    results = json.loads(next((tmp_path / "out").glob("smoke-cpu-*.json")).read_text())
    assert [r["scenario"] for r in results["records"]] == [scenario]


def _validation_folder(root: Path, n: int, weights: Path) -> np.ndarray:
    """n JPEGs in MLPerf's layout, labelled with the float32 torchvision model's own answers on
    the crops the harness makes (torchvision's preset arithmetic: fastres.preprocess exact)."""
    from torchvision.io import encode_jpeg

    from fastres.models import random_resnet
    from fastres.predict.preprocess import preprocess

    root.mkdir()
    g = torch.Generator().manual_seed(5)
    model = random_resnet("resnet18", CLASSES)
    model.load_state_dict(torch.load(weights))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    lines, crops = [], []
    for i in range(n):
        low = torch.rand(3, 6, 5, generator=g)  # smooth photo-like content, then noise
        img = torch.nn.functional.interpolate(low[None], size=(40 + i % 5, 48), mode="bilinear")[0]
        img = ((img + 0.1 * torch.rand(img.shape, generator=g)).clamp(0, 1) * 255).to(torch.uint8)
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        data = encode_jpeg(img, quality=90).numpy().tobytes()
        (root / name).write_bytes(data)
        crops.append(preprocess(data, resize=resize_for_crop(SIZE), crop=SIZE))
        lines.append(name)
    with torch.no_grad():
        x = (torch.stack(crops).float() / 255 - mean) / std
        labels = model(x).argmax(1).numpy()
    (root / "val_map.txt").write_text("".join(f"{f} {int(c)}\n" for f, c in zip(lines, labels)))
    return labels


def test_accuracy_mode_on_a_generated_folder(weights, tmp_path):
    labels = _validation_folder(tmp_path / "val", 12, weights)
    proc, rec = _run(["--mode", "accuracy", "--data", str(tmp_path / "val"), "--weights", str(weights), "--dtype",
                      "float16", "--image-size", str(SIZE), "--batch", "16"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    # LoadGen's accuracy log, decoded here as MLPerf's accuracy-imagenet.py does
    log = json.loads((tmp_path / "logs" / "mlperf_log_accuracy.json").read_text())
    found = {e["qsl_idx"]: int(np.frombuffer(bytes.fromhex(e["data"]), np.float32)[0]) for e in log}
    assert sorted(found) == list(range(12))
    top1 = 100 * np.mean([found[i] == labels[i] for i in range(12)])
    assert top1 >= 95 and rec["accuracy"]["top1"] == pytest.approx(top1) and rec["accuracy"]["total"] == 12
    assert f"accuracy={top1:.3f}%, good={round(top1 * 12 / 100)}, total=12" in proc.stdout
    assert "MLPerf's floor of 75.695%" in proc.stdout


def test_accuracy_top1_is_the_reference_scripts(tmp_path):
    # float32 class indices; a sample logged twice counts once (the first time), as the script does
    entries = [{"seq_id": k, "qsl_idx": idx, "data": np.array([c], np.float32).tobytes().hex()}
               for k, (idx, c) in enumerate([(0, 3), (1, 7), (1, 2), (2, 5)])]
    path = tmp_path / "mlperf_log_accuracy.json"
    path.write_text(json.dumps(entries))
    assert accuracy_top1(path, np.array([3, 7, 4])) == {"top1": pytest.approx(200 / 3), "good": 2, "total": 3}


class _FakeLoadGen:
    """What the SUT calls of mlperf_loadgen: responses kept as (id, the float32 answer)."""

    def __init__(self):
        self.done: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def QuerySampleResponse(self, qid, ptr, size):  # noqa: N802 - LoadGen's name
        assert size == 4
        return qid, ctypes.c_float.from_address(ptr).value

    def QuerySamplesComplete(self, responses):  # noqa: N802
        with self.lock:
            self.done.extend(responses)


class _Sample:
    def __init__(self, qid, index):
        self.id, self.index = qid, index


def test_sut_issue_only_enqueues_and_batches_what_is_queued():
    lg, entered, gate, seen = _FakeLoadGen(), threading.Event(), threading.Event(), []

    class Blocked:
        def __call__(self, indices, bucket):
            entered.set()
            gate.wait(10)
            seen.append((len(indices), bucket))
            return indices.astype(np.float32) + 0.5  # answers the index, as float32

    sut = SystemUnderTest(lg, Blocked(), max_batch=4)
    sut.issue([_Sample(100, 0)])  # the worker takes this one and blocks in the engine
    assert entered.wait(10)
    for k in range(1, 7):
        sut.issue([_Sample(100 + k, k)])  # returns at once: nothing runs on the caller's thread
    assert lg.done == []
    gate.set()
    sut.stop()
    # the first sample alone, then what queued meanwhile in batches of at most 4, each padded to a bucket
    assert seen == [(1, 1), (4, 4), (2, 2)]
    sut = SystemUnderTest(lg, Blocked(), max_batch=4)
    sut.issue([_Sample(200 + k, k) for k in range(7)])  # an Offline-like query: split, the rest padded
    sut.stop()
    assert seen[3:] == [(4, 4), (3, 4)]
    assert sorted(lg.done)[7:] == [(200 + k, k + 0.5) for k in range(7)]
    assert sorted(lg.done)[:7] == [(100 + k, k + 0.5) for k in range(7)]


SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 50101.29
Result is : INVALID
  Performance constraints satisfied : NO
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: Yes
Scheduled samples per second : 50103.31
Mean latency (ns)               : 589941
50.00 percentile latency (ns)   : 87396
99.00 percentile latency (ns)   : 16238654
target_qps : 50000
target_latency (ns): 15000000
min_duration (ms): 2000
"""


def test_summary_fields(tmp_path):
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(SUMMARY)
    f = summary_fields(read_summary(path), "Server", 8)
    assert f["result"] == "INVALID" and not f["valid"] and f["samples_per_s"] == 50101.29
    assert f["latency_ms"] == {"p50": pytest.approx(0.087396), "p99": pytest.approx(16.238654)}
    assert f["constraints"] == {"performance_constraints": False, "min_duration": True, "min_queries": True,
                                "early_stopping": True}
    assert f["target_latency_ms"] == 15.0 and f["target_qps"] == 50000


def test_val_map_and_generated_samples(tmp_path):
    with pytest.raises(UserError, match="no val_map.txt"):
        read_val_map(tmp_path)
    (tmp_path / "val_map.txt").write_text("a.JPEG 1\n")
    with pytest.raises(UserError, match="no such image"):
        read_val_map(tmp_path)
    (tmp_path / "a.JPEG").write_bytes(b"")
    (tmp_path / "val_map.txt").write_text("a.JPEG one\n")
    with pytest.raises(UserError, match=r"val_map.txt:1: expected 'FILE LABEL'"):
        read_val_map(tmp_path)
    lib = SampleLibrary(None, 10, 32)
    lib.load([7, 2])
    assert lib.crops.shape == (2, 3, 32, 32) and lib.rows[[7, 2]].tolist() == [0, 1] and lib.rows[0] == -1


def test_missing_loadgen_names_the_extra(monkeypatch):
    from fastres.benchmark.mlperf import loadgen

    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    with pytest.raises(UserError, match=r"pip install 'fastres\[mlperf\]'"):
        loadgen()


def test_user_errors():
    import argparse

    from fastres.benchmark.mlperf_cli import configure, main

    parser = argparse.ArgumentParser()
    configure(parser)
    for args, msg in ((["--mode", "accuracy"], "needs --data"), (["--engine", "null", "--arch", "resnet18"], "no model"),
                      (["--image-size", "16"], ">= 32"), (["--latency-percentile", "100"], "in (0, 100)"),
                      (["--user-conf", "/nonexistent/user.conf"], "no such file")):
        with pytest.raises(UserError, match=re.escape(msg)):
            main(parser.parse_args(args))
