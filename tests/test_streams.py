"""Streams: fastres captures and times only on streams of its own, and one arena per shape
serves callers on any stream (GPU only: the CPU interpreter has no streams)."""
from __future__ import annotations

import threading

import pytest
import torch

import fastres
from helpers import DEVICE, ON_GPU
from test_build import calibrated

pytestmark = pytest.mark.skipif(not ON_GPU, reason="CUDA streams and graphs need a GPU")


def test_owned_stream_is_not_a_pooled_one():
    from fastres.streams import owned_stream

    pooled = {torch.cuda.Stream(DEVICE).cuda_stream for _ in range(64)}  # every pooled stream, twice over
    with owned_stream(DEVICE) as s:
        assert s.cuda_stream not in pooled
        assert s.cuda_stream != torch.cuda.current_stream(DEVICE).cuda_stream
        y = torch.ones(1024, device=DEVICE)
        with torch.cuda.stream(s):
            y.mul_(3)
    assert torch.equal(y, torch.full((1024,), 3.0, device=DEVICE))  # the caller waited for it


def _loop_forwards(fast, x, expected, stop: threading.Event, counts: list[int], errors: list):
    """A caller at a built shape, each forward on a pooled stream (as servers do)."""
    try:
        while not stop.is_set():
            s = torch.cuda.Stream(DEVICE)
            s.wait_stream(torch.cuda.current_stream(DEVICE))
            with torch.cuda.stream(s):
                y = fast(x)
            s.synchronize()
            if not torch.equal(y, expected):
                errors.append(f"forward {counts[0]}: max |diff| {(y.float() - expected.float()).abs().max().item()}")
            counts[0] += 1
    except BaseException as exc:  # reported in the main thread
        errors.append(exc)


@pytest.mark.parametrize("work", ["build 40 shapes", "tune"])
def test_builds_and_tuning_never_capture_a_callers_work(work, tmp_path):
    """While one thread loops forwards on pooled streams, another builds 40 new shapes (or
    tunes one): the first thread's logits stay bit-identical. A capture on a pooled stream
    would record the caller's copy, replay and clone instead of running them."""
    model = calibrated("resnet18")
    fast = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    x = torch.randn(2, 3, 32, 32, device=DEVICE, dtype=torch.float16)
    expected = fast(x).clone()
    torch.cuda.synchronize()
    stop, counts, errors = threading.Event(), [0], []
    caller = threading.Thread(target=_loop_forwards, args=(fast, x, expected, stop, counts, errors))
    caller.start()
    try:
        if work == "tune":
            from fastres.tuning import Tuner, TuningCache

            tuned = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE,
                                             tune=Tuner(TuningCache(tmp_path / "tuning.json")))
            tuned(torch.randn(1, 3, 48, 48, device=DEVICE, dtype=torch.float16))
        else:
            other = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
            for i in range(40):
                other(torch.randn(1, 3, 16 + i, 24, device=DEVICE, dtype=torch.float16))
                fast(torch.randn(1, 3, 20, 16 + i, device=DEVICE, dtype=torch.float16))  # evicts too
        torch.cuda.synchronize()
    finally:
        stop.set()
        caller.join()
    assert not errors, errors[:5]
    assert counts[0] > 0


def test_one_arena_per_shape_across_streams(monkeypatch):
    """A server taking a fresh pooled stream per request cycles through 32 streams: every one
    reuses the shape's arena (no rebuild, no recapture), and the answers stay exact."""
    from fastres.engine import ResNet

    builds = []
    real_build = ResNet._build
    monkeypatch.setattr(ResNet, "_build", lambda self, x: builds.append(tuple(x.shape)) or real_build(self, x))
    fast = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float16, device=DEVICE)
    xs = [torch.randn(2, 3, 32, 32, device=DEVICE, dtype=torch.float16) for _ in range(4)]
    expected = [fast(x).clone() for x in xs]
    for i in range(80):
        s = torch.cuda.Stream(DEVICE)
        with torch.cuda.stream(s):
            y = fast(xs[i % 4])
        torch.cuda.current_stream(DEVICE).wait_stream(s)
        assert torch.equal(y, expected[i % 4]), i
    assert builds == [(2, 3, 32, 32)] and len(fast._arenas) == 1

    # Threads on streams of their own, at once, on one arena: each gets its own input's logits.
    errors: list = []

    def worker(k: int):
        try:
            s = torch.cuda.Stream(DEVICE)
            for j in range(20):
                with torch.cuda.stream(s):
                    y = fast(xs[(k + j) % 4])
                s.synchronize()
                if not torch.equal(y, expected[(k + j) % 4]):
                    errors.append((k, j))
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(builds) == 1
