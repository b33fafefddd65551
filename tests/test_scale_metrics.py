"""fastres.scale.metrics, without Ray: counts after known sequences; the text parses with
prometheus_client's parser, with Triton's names, types, HELP texts and labels (no _total);
merging replicas sums counters, drops stale gauges and never lowers a sum; records from two
threads all count."""
from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("prometheus_client", reason="prometheus_client comes with the ray extra (ray[serve])")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from fastres.scale.metrics import (  # noqa: E402
    COUNTERS, HELP, REASONS, MetricsStore, ReplicaMetrics, exposition, merge,
)

GPU = {"uuid": "GPU-5f3e2a1c-0000-4000-8000-000000000001", "used": 3 << 30, "total": 80 << 30}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def replica(name: str, clock: Clock, gpus=()) -> ReplicaMetrics:
    return ReplicaMetrics(name, clock=clock, gpus=lambda: [dict(g) for g in gpus])


def serve_batch(m: ReplicaMetrics, images: list[int], queue_us: list[float]) -> None:
    """One batch of requests (each of `images[i]` images, queued `queue_us[i]`): 100.9 us of
    input, 1000.5 of engine run and 50.2 of output, each added for every request."""
    m.execution()
    for n, q in zip(images, queue_us):
        m.success(n, request_us=q + 1151.6, queue_us=q, compute_input_us=100.9, compute_infer_us=1000.5,
                  compute_output_us=50.2)


def parsed(text: bytes) -> dict:
    """{family name: (type, documentation, [(labels, value)])} of the text, by prometheus_client's parser."""
    return {f.name: (f.type, f.documentation, [(s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text.decode())}


def test_counts_follow_triton():
    clock = Clock()
    m = replica("r0", clock)
    # Triton's docs: a batch-1 and a batch-8 request batched: 2 requests, 9 inferences, 1 execution.
    serve_batch(m, [1, 8], [10.5, 20.5])
    serve_batch(m, [1], [0.0])
    for reason in ("REJECTED", "REJECTED", "BACKEND", "CANCELED"):
        m.failure(reason)
    m.pending = 5
    snap = m.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    c = snap["counters"]
    assert (c["nv_inference_request_success"], c["nv_inference_count"], c["nv_inference_exec_count"]) == (3, 10, 2)
    # Each request's durations are truncated to whole microseconds before they are summed.
    assert c["nv_inference_queue_duration_us"] == 10 + 20 + 0
    assert c["nv_inference_request_duration_us"] == int(10.5 + 1151.6) + int(20.5 + 1151.6) + int(1151.6)
    assert (c["nv_inference_compute_input_duration_us"], c["nv_inference_compute_infer_duration_us"],
            c["nv_inference_compute_output_duration_us"]) == (300, 3000, 150)
    assert snap["failures"] == {"REJECTED": 2, "CANCELED": 1, "BACKEND": 1, "OTHER": 0}
    assert (snap["pending"], snap["replica"], snap["time"]) == (5, "r0", 100.0)
    assert m.snapshot()["seq"] == snap["seq"] + 1
    with pytest.raises(ValueError, match="reason must be one of"):
        m.failure("TIMEOUT")
    with pytest.raises(ValueError, match="at least 1 image"):
        m.success(0, request_us=1, queue_us=0, compute_input_us=0, compute_infer_us=0, compute_output_us=0)
    with pytest.raises(ValueError, match="queue_duration"):
        m.success(1, request_us=1, queue_us=-1, compute_input_us=0, compute_infer_us=0, compute_output_us=0)


def test_exposition_is_tritons_text():
    m = replica("r0", Clock(), gpus=[GPU])
    serve_batch(m, [2, 1], [7.0, 3.0])
    m.failure("OTHER")
    m.pending = 2
    text = exposition(merge([m.snapshot()], now=100.0), 'resnet"50\\', "3")
    families = parsed(text)
    counters = [*COUNTERS[:1], "nv_inference_request_failure", *COUNTERS[1:]]
    gauges = ["nv_inference_pending_request_count", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes"]
    assert sorted(families) == sorted(counters + gauges)
    for name in counters + gauges:
        typ, doc, _ = families[name]
        assert (typ, doc) == ("counter" if name in counters else "gauge", HELP[name])
        assert f"# TYPE {name} {typ}\n" in text.decode() and f"# HELP {name} {doc}\n" in text.decode()
    # Triton's counters carry no _total suffix, in their header lines or samples.
    lines = text.decode().splitlines()
    named = {ln.split()[2] for ln in lines if ln.startswith("#")} | {ln.split("{")[0] for ln in lines if ln[0] != "#"}
    assert named == set(counters + gauges)
    model = {"model": 'resnet"50\\', "version": "3"}  # label values escaped, and read back
    assert families["nv_inference_count"][2] == [(model, 3.0)]
    assert families["nv_inference_exec_count"][2] == [(model, 1.0)]
    assert families["nv_inference_queue_duration_us"][2] == [(model, 10.0)]
    assert families["nv_inference_pending_request_count"][2] == [(model, 2.0)]
    assert sorted((s["reason"], v) for s, v in families["nv_inference_request_failure"][2]) == \
        sorted((r, 1.0 if r == "OTHER" else 0.0) for r in REASONS)
    assert families["nv_gpu_memory_used_bytes"][2] == [({"gpu_uuid": GPU["uuid"]}, float(GPU["used"]))]
    assert families["nv_gpu_memory_total_bytes"][2] == [({"gpu_uuid": GPU["uuid"]}, float(GPU["total"]))]
    # No GPU: no GPU family at all.
    bare = parsed(exposition(merge([replica("r1", Clock()).snapshot()], now=100.0), "m"))
    assert not any(name.startswith("nv_gpu_") for name in bare)


def test_merge_sums_and_drops_stale_gauges():
    clock_a, clock_b = Clock(100.0), Clock(140.0)
    a, b = replica("a", clock_a, gpus=[GPU]), replica("b", clock_b, gpus=[dict(GPU, used=1)])
    serve_batch(a, [1, 1], [1.0, 1.0])
    serve_batch(b, [4], [2.0])
    a.pending, b.pending = 3, 4
    a.failure("BACKEND")
    snaps = [a.snapshot(), b.snapshot()]
    both = merge(snaps, now=140.0, max_age_s=60.0)
    assert both["counters"]["nv_inference_count"] == 6 and both["counters"]["nv_inference_exec_count"] == 2
    assert both["failures"]["BACKEND"] == 1
    assert (both["pending"], both["replicas"], both["fresh"]) == (7, 2, 2)
    assert both["gpus"] == [dict(GPU, used=1)]  # one GPU seen by both: its most recent reading
    stale_a = merge(snaps, now=140.0, max_age_s=30.0)  # a's snapshot is 40 s old
    assert stale_a["counters"] == both["counters"] and stale_a["failures"] == both["failures"]
    assert (stale_a["pending"], stale_a["fresh"]) == (4, 1)
    # An earlier snapshot of the same instance, given too, counts nothing twice.
    old = a.snapshot()
    serve_batch(a, [1], [0.0])
    assert merge([old, a.snapshot(), old], now=100.0)["counters"]["nv_inference_count"] == 3


def test_store_keeps_sums_monotonic_across_replacement():
    clock = Clock(0.0)
    store = MetricsStore(max_age_s=10.0, clock=clock)
    first, scraper = replica("r1", Clock(5.0)), replica("r0", Clock(9.0))
    serve_batch(first, [2], [0.0])
    first.pending = 6
    early = first.snapshot()
    serve_batch(first, [3], [0.0])
    store.push(first.snapshot())
    store.push(early)  # arrives late: the later one stays
    serve_batch(scraper, [1], [0.0])
    seen = store.merged(scraper.snapshot())
    assert seen["counters"]["nv_inference_count"] == 6 and seen["pending"] == 6
    # r1 dies; a replacement under the same name starts from zero; 20 s pass without r1's pushes.
    clock.t = 20.0
    second = replica("r1", Clock(0.0))
    serve_batch(second, [1], [0.0])
    store.push(second.snapshot())
    serve_batch(scraper, [1], [0.0])  # the scraper's own live counts replace its pushed ones
    later = store.merged(scraper.snapshot())
    assert later["counters"]["nv_inference_count"] == 6 + 1 + 1
    assert all(later["counters"][k] >= seen["counters"][k] for k in COUNTERS)
    assert (later["pending"], later["replicas"], later["fresh"]) == (0, 3, 2)  # the dead r1's gauge is gone


def test_records_from_two_threads_all_count():
    m = replica("r0", Clock())
    per_thread = 10_000

    def record() -> None:
        for _ in range(per_thread):
            m.success(2, request_us=3, queue_us=1, compute_input_us=0, compute_infer_us=1, compute_output_us=0)
            m.execution()

    threads = [threading.Thread(target=record) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = m.snapshot()["counters"]
    assert c["nv_inference_request_success"] == c["nv_inference_exec_count"] == 2 * per_thread
    assert c["nv_inference_count"] == 4 * per_thread and c["nv_inference_request_duration_us"] == 6 * per_thread


def test_gpu_memory_reads_this_process_devices():
    import torch

    from fastres.scale.metrics import gpu_memory

    gpus = gpu_memory()
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for g in gpus:
        assert g["uuid"].startswith("GPU-") and len(g["uuid"]) == len("GPU-") + 36
        assert 0 < g["used"] <= g["total"]
