"""MLPerf Inference's LoadGen around the engine (``fastres bench mlperf``): the query sample
library (QSL), the system under test (SUT) and one LoadGen test.

- Samples: MLPerf's ImageNet validation layout (the JPEGs and ``val_map.txt``: one
  ``FILE LABEL`` per line, line i is sample i), each preprocessed once, untimed, when LoadGen
  loads it (the shorter side resized to 256, or in MLPerf's proportion for other crops:
  `resize_for_crop`; torchvision's bilinear antialiased resize and centre crop 224:
  ``fastres.preprocess``'s exact mode) and held as a uint8 crop in host memory (pinned
  on CUDA). Normalization happens in the engine's stem (`ResNet.forward_pixels`).
- The SUT: ``issue_queries`` only enqueues (in the Server scenario LoadGen calls it once per
  sample, on its own thread); one worker thread takes whatever is queued, up to the largest
  batch, pads it to a power-of-two bucket (`fastres.batch_shapes`, as serving does: each
  bucket one engine shape, built and CUDA-graphed before the test) and completes each sample
  with its top-1 class index as one float32, as MLPerf's reference writes it, so its accuracy
  script reads the log unchanged.
- `Engine` (the model) or `NullEngine` (no model: the harness's own cost).

mlperf_loadgen (the optional extra ``fastres[mlperf]``) is imported only when a test runs.
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..batch_shapes import batch_sizes, padded_size
from ..errors import UserError

INSTALL_HINT = "pip install 'fastres[mlperf]'"
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")
MODES = ("performance", "accuracy")
# The MLPerf benchmark whose rules (built into LoadGen) a run follows, and the name user.conf keys use.
MLPERF_MODEL = "resnet50"
# MLPerf's quality target for ResNet-50: 99% of the reference's 76.46% top-1.
TOP1_FLOOR = 75.695
MULTISTREAM_SAMPLES = 8
# MLPerf's performance sample count for ResNet-50 (the samples held loaded during a performance run).
PERFORMANCE_SAMPLES = 1024
# The harness's cost per sample with no model, about what one core measures (bench/NOTES.md).
NULL_SECONDS_PER_SAMPLE = 1e-6


def loadgen():
    """The mlperf_loadgen module, or a UserError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise UserError(f"'fastres bench mlperf' needs MLPerf's LoadGen (mlcommons-loadgen): {INSTALL_HINT}") from None
    return mlperf_loadgen


def read_val_map(data_dir: Path) -> tuple[list[Path], np.ndarray]:
    """(image paths, int64 labels) of MLPerf's ImageNet layout: ``val_map.txt`` in `data_dir`,
    one ``FILE LABEL`` per line, FILE relative to `data_dir`. A UserError names a bad line."""
    val_map = Path(data_dir) / "val_map.txt"
    if not val_map.is_file():
        raise UserError(f"--data {data_dir}: no val_map.txt (MLPerf's ImageNet layout: the JPEGs and a val_map.txt of "
                        "'FILE LABEL' lines)")
    paths, labels = [], []
    for n, line in enumerate(val_map.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 2 or not cols[1].lstrip("-").isdigit():
            raise UserError(f"{val_map}:{n}: expected 'FILE LABEL', got {line!r}")
        path = Path(data_dir) / cols[0]
        if not path.is_file():
            raise UserError(f"{val_map}:{n}: no such image {path}")
        paths.append(path)
        labels.append(int(cols[1]))
    if not paths:
        raise UserError(f"{val_map} lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


class SampleLibrary:
    """The QSL's samples: uint8 crops [3, size, size] of the loaded sample indices, preprocessed
    when LoadGen loads them (untimed). `paths` None: generated crops (seeded noise), one per index."""

    def __init__(self, paths: Sequence[Path] | None, count: int, size: int, *, pin: bool = False, workers: int | None = None):
        self.paths, self.count, self.size, self.pin = paths, int(count), int(size), pin
        self.workers = workers or min(32, os.cpu_count() or 1)
        self.crops = torch.empty((0, 3, size, size), dtype=torch.uint8)
        # sample index -> row of self.crops (-1: not loaded)
        self.rows = np.full(self.count, -1, dtype=np.int64)

    def load(self, indices: Sequence[int]) -> None:
        """Preprocess `indices` into host memory (LoadGen calls this before it starts timing)."""
        indices = list(indices)
        crops = torch.empty((len(indices), 3, self.size, self.size), dtype=torch.uint8, pin_memory=self.pin)
        if self.paths is None:
            g = torch.Generator().manual_seed(0)
            crops.copy_(torch.randint(0, 256, crops.shape, dtype=torch.uint8, generator=g))
        else:
            from ..predict.images import read_bytes, resize_for_crop
            from ..predict.preprocess import preprocess

            resize = resize_for_crop(self.size)

            def one(j: int) -> None:
                crops[j] = preprocess(read_bytes(self.paths[indices[j]]), resize=resize, crop=self.size,
                                      mode="exact", interpolation="bilinear")

            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(one, range(len(indices))))
        self.crops = crops
        self.rows[:] = -1
        self.rows[indices] = np.arange(len(indices))

    def unload(self, indices: Sequence[int]) -> None:
        self.rows[list(indices)] = -1


class Engine:
    """Top-1 class indices of uint8 crops with a fastres engine: the batch is gathered into a
    (pinned) staging buffer, crosses to the device, is normalized in the stem, and only the
    argmax comes back."""

    name = "fastres"

    def __init__(self, model, samples: SampleLibrary, max_batch: int):
        self.model, self.samples = model, samples
        self.device = model.device
        pin = self.device.type == "cuda"
        self.staging = torch.empty((max_batch, 3, samples.size, samples.size), dtype=torch.uint8, pin_memory=pin)

    def __call__(self, indices: np.ndarray, bucket: int) -> np.ndarray:
        n = len(indices)
        rows = torch.from_numpy(self.samples.rows[indices])
        torch.index_select(self.samples.crops, 0, rows, out=self.staging[:n])
        x = self.staging[:bucket].to(self.device, non_blocking=True)
        with torch.inference_mode():
            top1 = self.model.forward_pixels(x)[:n].argmax(dim=1)
        return top1.to(torch.float32).cpu().numpy()

    def warm(self, buckets: Sequence[int]) -> float:
        """Build (and on CUDA capture) every bucket's shape before the test; returns the seconds
        per sample of the largest bucket, timed once it is built. In the interpreter nothing is
        compiled: only the largest bucket runs, once, timed."""
        b = max(buckets)
        zeros = np.zeros(b, dtype=np.int64)
        if self.device.type != "cuda":
            t = time.perf_counter()
            self(zeros, b)
            return (time.perf_counter() - t) / b
        for k in buckets:
            self(zeros[:k], k)
        torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        self(zeros, b)
        return (time.perf_counter() - t) / b


class NullEngine:
    """No model: every sample's answer is class 0. What is left is the harness's own cost."""

    name = "null"

    def __call__(self, indices: np.ndarray, bucket: int) -> np.ndarray:
        return np.zeros(len(indices), dtype=np.float32)

    def warm(self, buckets: Sequence[int]) -> float:
        # nothing to build: the nominal cost per sample of the harness alone (measured on one
        # core: bench/NOTES.md), for the defaults of LoadGen's expected rates
        return NULL_SECONDS_PER_SAMPLE


class SystemUnderTest:
    """LoadGen's SUT: `issue` enqueues, one worker batches and completes (see the module docstring)."""

    def __init__(self, lg, engine, max_batch: int):
        self.lg, self.engine, self.max_batch = lg, engine, int(max_batch)
        self.buckets = batch_sizes(self.max_batch)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.batches = 0
        self.samples = 0
        self.worker = threading.Thread(target=self._work, name="fastres-mlperf-sut", daemon=True)
        self.worker.start()

    def issue(self, query_samples) -> None:
        # LoadGen's thread: enqueue only (the Server scenario calls this once per sample)
        self.queue.put(query_samples)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        self.queue.put(None)
        self.worker.join()

    def _work(self) -> None:
        lg, q, max_batch = self.lg, self.queue, self.max_batch
        pending: list = []  # samples issued, not yet run: pending[start:]
        start = 0
        while True:
            if start == len(pending):
                item = q.get()
                if item is None:
                    return
                pending, start = item, 0
            # whatever else is queued joins this batch (LoadGen's thread keeps adding)
            if len(pending) - start < max_batch and q.qsize():
                pending = pending[start:]
                start = 0
                while len(pending) < max_batch and q.qsize():
                    item = q.get()
                    if item is None:
                        q.put(None)
                        break
                    pending.extend(item)
            batch = pending[start:start + max_batch]
            start += len(batch)
            self._run(lg, batch)

    def _run(self, lg, batch: list) -> None:
        ids = [s.id for s in batch]
        indices = np.fromiter((s.index for s in batch), dtype=np.int64, count=len(batch))
        try:
            answers = self.engine(indices, padded_size(len(batch), self.buckets))
        except BaseException as exc:  # noqa: BLE001 - reported after the test; LoadGen must not hang
            self.error = self.error or exc
            answers = np.full(len(batch), -1.0, dtype=np.float32)
        answers = np.ascontiguousarray(answers, dtype=np.float32)
        base = answers.ctypes.data
        Response = lg.QuerySampleResponse
        # LoadGen copies the data (accuracy mode) before QuerySamplesComplete returns
        lg.QuerySamplesComplete([Response(i, base + 4 * k, 4) for k, i in enumerate(ids)])
        self.batches += 1
        self.samples += len(batch)


@dataclass
class Overrides:
    """Short-run overrides of MLPerf's rules (None: the rules' or the user.conf's value)."""

    duration_s: float | None = None
    target_qps: float | None = None
    target_latency_ms: float | None = None
    query_count: int | None = None
    latency_percentile: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in vars(self).values())


def test_settings(lg, scenario: str, mode: str, user_conf: Path | None, overrides: Overrides, *,
                  sample_count: int, seconds_per_sample: float, max_batch: int):
    """LoadGen's TestSettings: MLPerf's rules for ResNet-50 (built into LoadGen), the user.conf,
    then the overrides. Where neither gives an expected rate, the warm-up's measured rate sets
    Offline's expected QPS (x1.25: too low a value ends the run early, INVALID) and the
    SingleStream / MultiStream expected latencies; Server's target QPS then defaults to half
    the measured rate."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.FromConfig("", MLPERF_MODEL, scenario, 0)  # the built-in mlperf.conf: first load in the process
    defaults = (settings.offline_expected_qps, settings.server_target_qps)
    if user_conf is not None:
        if settings.FromConfig(str(user_conf), MLPERF_MODEL, scenario, 1) != 0:
            raise UserError(f"--user-conf {user_conf}: LoadGen could not read it (see its log)")
    settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    rate = 1.0 / seconds_per_sample if seconds_per_sample > 0 else None
    if rate is not None:
        if settings.offline_expected_qps == defaults[0]:
            settings.offline_expected_qps = 1.25 * rate
        if settings.server_target_qps == defaults[1]:
            settings.server_target_qps = 0.5 * rate
        settings.single_stream_expected_latency_ns = int(1e9 * seconds_per_sample)
        settings.multi_stream_expected_latency_ns = int(1e9 * seconds_per_sample * MULTISTREAM_SAMPLES)
    o = overrides
    if o.duration_s is not None:
        settings.min_duration_ms = int(o.duration_s * 1000)
    if o.query_count is not None:
        settings.min_query_count = o.query_count
    if o.target_qps is not None:
        settings.server_target_qps = settings.offline_expected_qps = float(o.target_qps)
    if o.target_latency_ms is not None:
        settings.server_target_latency_ns = int(o.target_latency_ms * 1e6)
    if o.latency_percentile is not None:
        p = o.latency_percentile / 100
        settings.single_stream_target_latency_percentile = settings.multi_stream_target_latency_percentile = p
        settings.server_target_latency_percentile = p
    settings.multi_stream_samples_per_query = MULTISTREAM_SAMPLES
    settings.performance_sample_count_override = min(sample_count, settings.performance_sample_count_override
                                                     or PERFORMANCE_SAMPLES)
    return settings


def run_loadgen(lg, sut: SystemUnderTest, samples: SampleLibrary, settings, log_dir: Path) -> None:
    """One LoadGen test; its files (mlperf_log_summary.txt, _detail.txt, _accuracy.json) land in
    `log_dir` as LoadGen writes them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = True  # LoadGen's own summary in the run's output too
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl = lg.ConstructQSL(samples.count, settings.performance_sample_count_override, samples.load, samples.unload)
    try:
        lg.StartTestWithLogSettings(handle, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(handle)
    if sut.error is not None:
        raise RuntimeError(f"the engine failed during the test: {sut.error}") from sut.error


def warm_engine(engine, scenario: str, max_batch: int) -> float:
    """Build the shapes `scenario` runs; seconds per sample at the largest of them."""
    buckets = batch_sizes(max_batch)
    if scenario == "SingleStream":
        buckets = (1,)
    elif scenario == "MultiStream":
        # queries of 8 samples: batches of min(8, max_batch), and the remainder's bucket
        top = min(MULTISTREAM_SAMPLES, max_batch)
        rest = MULTISTREAM_SAMPLES % top
        buckets = tuple(sorted({padded_size(top, buckets)} | ({padded_size(rest, buckets)} if rest else set())))
    return engine.warm(buckets)
