"""Triton Inference Server's Prometheus metrics for `fastres serve`, without Ray: what a replica
counts (`ReplicaMetrics`), the sum over replicas (`merge`, `MetricsStore`) and its text for
``GET /metrics`` (`exposition`, `CONTENT_TYPE`).

Names, HELP texts, types and labels are Triton's (triton-inference-server/core, src/metrics.cc
and src/metric_model_reporter.cc), so that a dashboard or alert written for Triton reads fastres
unchanged. Their meaning, as Triton's core records them (src/infer_stats.cc):

- a request that succeeds adds 1 to ``nv_inference_request_success``, its images to
  ``nv_inference_count``, and its own durations, truncated to whole microseconds, to the five
  ``*_duration_us`` counters: request (arrival to answer), queue (arrival in the queue to the
  start of its batch), compute input / infer / output (its batch's preprocessing, engine run
  and postprocessing: every request of a batch adds the batch's whole durations, as Triton's
  backends report the batch's timestamps for each of its requests);
- a request that fails adds 1 to ``nv_inference_request_failure{reason=...}`` and nothing else;
- each batch the engine runs adds 1 to ``nv_inference_exec_count``;
- ``nv_inference_pending_request_count`` is the number of requests waiting in the queue (Triton
  counts a request from its enqueue to the start of its execution);
- ``nv_gpu_memory_used_bytes`` / ``nv_gpu_memory_total_bytes``, labelled ``gpu_uuid`` (DCGM's
  "GPU-..." UUID, as Triton), for each GPU a replica sees; none without a GPU.

Failure reasons. Triton (src/infer_stats.h, ``enum class FailureReason``) has four, given where
a request already queued is answered with an error: REJECTED when the dynamic batcher's queue
policy times it out ("Request timeout expired", src/dynamic_batch_scheduler.cc), CANCELED when
its client cancels it, BACKEND when the model's execution fails it (src/backend_model_instance.cc,
src/infer_request.cc ``ReportStatistics``), OTHER for the rest (pre-execution checks, ensembles).
A request refused before it is queued (a full queue, "Exceeds maximum queue size" in
src/scheduler_utils.cc; a server not ready; an input that fails validation) is answered from
``TRITONSERVER_ServerInferAsync`` itself and counted in no metric. fastres's answers, likewise:

- REJECTED: 504, the deadline passed while the request waited or ran; 503 for a request still
  queued when a drain ends;
- CANCELED: the caller went away while its request waited or ran;
- BACKEND: an error answer from the batch's run (500 from the engine, 400 from the decoder);
- OTHER: any other error of a queued request;
- not counted: the answers given before the request takes a place in the queue (503 queue full
  or draining, 400 / 408 / 413 on its body or header, 404 / 405, a 504 whose deadline had
  passed on arrival).

Why prometheus_client and not Ray's metrics API (``ray.util.metrics``): Ray exports its metrics
through each node's metrics agent, on that agent's own port, with its own name prefix
(``ray_``) and its own labels (node, worker, deployment...), so ``GET /metrics`` on the serving
port could not answer Triton's names from it. prometheus_client writes the text format itself
(escaping, HELP and TYPE lines) from plain numbers: each replica counts in plain Python, a store
keeps the last count of each, and the scraped replica answers their sum.
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any, Callable, Iterable

REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
STALE_S = 30.0  # a replica's gauges count in the sum while its last snapshot is this recent

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
COUNT = "nv_inference_count"
EXEC_COUNT = "nv_inference_exec_count"
REQUEST_US = "nv_inference_request_duration_us"
QUEUE_US = "nv_inference_queue_duration_us"
INPUT_US = "nv_inference_compute_input_duration_us"
INFER_US = "nv_inference_compute_infer_duration_us"
OUTPUT_US = "nv_inference_compute_output_duration_us"
PENDING = "nv_inference_pending_request_count"
GPU_USED = "nv_gpu_memory_used_bytes"
GPU_TOTAL = "nv_gpu_memory_total_bytes"

# Triton's HELP texts, word for word (src/metrics.cc), in its order.
HELP = {
    SUCCESS: "Number of successful inference requests, all batch sizes",
    FAILURE: "Number of failed inference requests, all batch sizes",
    COUNT: "Number of inferences performed (does not include cached requests)",
    EXEC_COUNT: "Number of model executions performed (does not include cached requests)",
    REQUEST_US: "Cumulative inference request duration in microseconds (includes cached requests)",
    QUEUE_US: "Cumulative inference queuing duration in microseconds (includes cached requests)",
    INPUT_US: "Cumulative compute input duration in microseconds (does not include cached requests)",
    INFER_US: "Cumulative compute inference duration in microseconds (does not include cached requests)",
    OUTPUT_US: "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    PENDING: "Instantaneous number of pending requests awaiting execution per-model.",
    GPU_TOTAL: "GPU total memory, in bytes",
    GPU_USED: "GPU used memory, in bytes",
}
# The counters a snapshot carries (the failures are apart, one per reason).
COUNTERS = (SUCCESS, COUNT, EXEC_COUNT, REQUEST_US, QUEUE_US, INPUT_US, INFER_US, OUTPUT_US)


def gpu_memory() -> list[dict[str, Any]]:
    """``[{"uuid": "GPU-...", "used": bytes, "total": bytes}]`` for each CUDA device this
    process sees (device-wide, as DCGM and nvidia-smi count it: every process's memory); ``[]``
    without CUDA (torch is imported here, not with this module)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        uid = str(torch.cuda.get_device_properties(i).uuid)
        out.append({"uuid": uid if uid.startswith("GPU-") else f"GPU-{uid}", "used": total - free, "total": total})
    return out


class ReplicaMetrics:
    """One replica's counts: cumulative, thread-safe (recorded from the event loop and from the
    engine thread alike). `replica` names it in snapshots; each instance also draws a random
    `instance` id, so that a process that restarts under the same name adds to the sums rather
    than replacing its predecessor's counts."""

    def __init__(self, replica: str, *, clock: Callable[[], float] = time.monotonic,
                 gpus: Callable[[], list[dict[str, Any]]] = gpu_memory):
        self.replica = replica
        self.instance = uuid.uuid4().hex
        self.clock = clock
        self.gpus = gpus
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._failures = dict.fromkeys(REASONS, 0)
        self._pending = 0
        self._seq = 0

    def success(self, images: int, *, request_us: float, queue_us: float, compute_input_us: float,
                compute_infer_us: float, compute_output_us: float) -> None:
        """One request answered with success: it held `images` inferences (>= 1); its durations
        in microseconds (>= 0), each added truncated to a whole microsecond, as Triton."""
        if images < 1:
            raise ValueError(f"a request holds at least 1 image, got {images}")
        durations = {REQUEST_US: request_us, QUEUE_US: queue_us, INPUT_US: compute_input_us,
                     INFER_US: compute_infer_us, OUTPUT_US: compute_output_us}
        bad = {k: v for k, v in durations.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"durations must be finite and >= 0 microseconds, got {bad}")
        with self._lock:
            self._counters[SUCCESS] += 1
            self._counters[COUNT] += int(images)
            for name, us in durations.items():
                self._counters[name] += int(us)

    def failure(self, reason: str) -> None:
        """One request answered with an error, for Triton's `reason` (one of REASONS; the
        module's docstring says which of fastres's answers is which)."""
        if reason not in self._failures:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        with self._lock:
            self._failures[reason] += 1

    def execution(self) -> None:
        """One batch the engine ran, whatever its size."""
        with self._lock:
            self._counters[EXEC_COUNT] += 1

    @property
    def pending(self) -> int:
        """Requests waiting in the replica's queue, not yet in a running batch."""
        return self._pending

    @pending.setter
    def pending(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"pending requests must be >= 0, got {n}")
        self._pending = int(n)

    def snapshot(self) -> dict[str, Any]:
        """The counts so far, JSON-able: ``{"replica", "instance", "seq" (grows with each
        snapshot), "time" (this process's monotonic clock, seconds), "counters" {name: int},
        "failures" {reason: int}, "pending", "gpus" (`gpu_memory`'s list)}``."""
        gpus = self.gpus()  # outside the lock: a CUDA query may take a while
        with self._lock:
            self._seq += 1
            return {"replica": self.replica, "instance": self.instance, "seq": self._seq, "time": self.clock(),
                    "counters": dict(self._counters), "failures": dict(self._failures),
                    "pending": self._pending, "gpus": [dict(g) for g in gpus]}


def merge(snapshots: Iterable[dict[str, Any]], *, now: float | None = None,
          max_age_s: float = STALE_S) -> dict[str, Any]:
    """The sum over replicas of their snapshots, which the exposition shows under one set of
    labels (model, version), as one Triton server would. Counters: summed over every instance
    (the latest snapshot of each, by its seq), those of replicas that died included, so a sum
    never goes down. Gauges (pending, GPU memory): only from snapshots at most `max_age_s`
    old at `now` (seconds, on the clock the snapshots' "time" reads; default
    ``time.monotonic()``); GPU memory once per GPU uuid, from its most recent snapshot.
    Returns ``{"counters", "failures", "pending", "gpus", "replicas", "fresh"}``."""
    now = time.monotonic() if now is None else now
    latest: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        held = latest.get(snap["instance"])
        if held is None or snap["seq"] > held["seq"]:
            latest[snap["instance"]] = snap
    counters = dict.fromkeys(COUNTERS, 0)
    failures = dict.fromkeys(REASONS, 0)
    pending, fresh = 0, 0
    gpus: dict[str, tuple[float, dict[str, Any]]] = {}
    for snap in latest.values():
        for name in COUNTERS:
            counters[name] += snap["counters"].get(name, 0)
        for reason in REASONS:
            failures[reason] += snap["failures"].get(reason, 0)
        if now - snap["time"] > max_age_s:
            continue
        fresh += 1
        pending += snap["pending"]
        for gpu in snap.get("gpus", ()):
            if gpu["uuid"] not in gpus or snap["time"] > gpus[gpu["uuid"]][0]:
                gpus[gpu["uuid"]] = (snap["time"], gpu)
    return {"counters": counters, "failures": failures, "pending": pending,
            "gpus": [g for _, g in sorted(gpus.values(), key=lambda tg: tg[1]["uuid"])],
            "replicas": len(latest), "fresh": fresh}


class MetricsStore:
    """The latest snapshot of each replica instance, for the replica that answers a scrape. A
    plain class: Ray Serve can host it as a deployment of one replica. Each snapshot's age is
    taken from its arrival here (this store's clock), since replicas' monotonic clocks, on other
    machines, do not compare with it."""

    def __init__(self, *, max_age_s: float = STALE_S, clock: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, tuple[float, dict[str, Any]]] = {}  # instance -> (arrival, snapshot)

    def push(self, snapshot: dict[str, Any]) -> None:
        """Keep `snapshot` as its instance's latest, unless a later one (by seq) is held already
        (pushes may arrive out of order)."""
        with self._lock:
            held = self._held.get(snapshot["instance"])
            if held is None or snapshot["seq"] > held[1]["seq"]:
                self._held[snapshot["instance"]] = (self.clock(), snapshot)

    def merged(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """`merge` of the held snapshots, the caller's `own` live snapshot pushed first, so the
        scraped replica's counts are exact and the others' as of their last push."""
        if own is not None:
            self.push(own)
        with self._lock:
            held = [dict(snap, time=arrival) for arrival, snap in self._held.values()]
        return merge(held, now=self.clock(), max_age_s=self.max_age_s)


def exposition(merged: dict[str, Any], model: str, version: str = "1",
               gpus: Iterable[dict[str, Any]] | None = None) -> bytes:
    """Prometheus text (format 0.0.4, `CONTENT_TYPE`) of `merge`'s result, labelled
    ``model``/``version`` (and ``reason`` on failures, ``gpu_uuid`` on GPU memory), as Triton
    writes it: counters under their own names, with no ``_total`` suffix. `gpus` (the shape of
    `gpu_memory`'s list) replaces the merged ones when given."""
    from prometheus_client import generate_latest
    from prometheus_client.core import Metric

    model_labels = {"model": model, "version": str(version)}
    families = []

    def family(name: str, typ: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        metric = Metric(name, HELP[name], typ)
        for labels, value in samples:
            metric.add_sample(name, labels, value)
        families.append(metric)

    counters, failures = merged["counters"], merged["failures"]
    family(SUCCESS, "counter", [(model_labels, counters[SUCCESS])])
    family(FAILURE, "counter", [({**model_labels, "reason": r}, failures[r]) for r in REASONS])
    for name in COUNTERS[1:]:
        family(name, "counter", [(model_labels, counters[name])])
    family(PENDING, "gauge", [(model_labels, merged["pending"])])
    devices = list(merged["gpus"] if gpus is None else gpus)
    if devices:  # labelled by device alone, as Triton's
        family(GPU_TOTAL, "gauge", [({"gpu_uuid": g["uuid"]}, g["total"]) for g in devices])
        family(GPU_USED, "gauge", [({"gpu_uuid": g["uuid"]}, g["used"]) for g in devices])

    # generate_latest names a counter's HELP and TYPE lines name_total (the OpenMetrics sample
    # name, kept in the 0.0.4 format); Triton's header lines, like its samples, have no suffix.
    text = []
    for metric in families:
        lines = generate_latest(_Collected(metric)).decode()
        if metric.type == "counter":
            lines = lines.replace(f"{metric.name}_total ", f"{metric.name} ", 2)
        text.append(lines)
    return "".join(text).encode()


class _Collected:
    """What generate_latest reads a registry as: one family."""

    def __init__(self, metric):
        self.metric = metric

    def collect(self):
        return [self.metric]


# Triton's content type: the 0.0.4 text format, which `exposition` writes (prometheus_client's
# CONTENT_TYPE_LATEST names format 1.0.0 from version 0.23 on).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
