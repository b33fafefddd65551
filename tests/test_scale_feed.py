"""fastres.scale.feed: a replica's decode pool and batch buffers, kept for its lifetime, and its
watchdog. Feed.run gives the predictions Predictor.predict_bytes gives (same kernels, same
padded rows); a replica decodes the next batch while one computes (a stand-in decode and engine
of known cost: throughput within 10% of the slower stage's rate, where decoding inside the
batch would give about their harmonic sum); a batch that hangs past the watchdog's limit marks
the replica unhealthy and every request it holds is answered 503 at once."""
from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np
import pytest
import torch

from fastres.predict.pipeline import Item
from fastres.scale.feed import BatchTimes, Watchdog
from fastres.predict.output import Prediction, Top
import scale_helpers  # noqa: F401 - Ray's test environment, set before ray is imported
from test_scale_replica import call, png, weights  # noqa: F401 - the module fixture
from wait_helpers import until


def classifier(weights, **options):
    from fastres.scale.serve import ImageClassifier

    return ImageClassifier(str(weights), resize=40, crop=32, topk=3, **options)


def test_feed_runs_what_predict_bytes_runs(weights):
    clf = classifier(weights, max_batch=2, workers=2)
    bodies = [bytearray(png(i)) for i in range(2)]
    items = [clf.feed.decode(b).result() for b in bodies]
    preds, times = clf.feed.run(items, 2)
    want = clf.predictor.predict_bytes(bodies, pad_to=2)
    assert [p.top for p in preds] == [p.top for p in want]
    for got, ref in zip(preds, want):
        torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)  # same kernels, same rows
    assert times.infer_s > 0 and times.input_s >= 0 and times.output_s >= 0
    # Already cropped HWC pixels: the crops above, laid out as they come off the wire.
    hwc = np.stack([it.crop.permute(1, 2, 0).numpy() for it in items])
    again, _ = clf.feed.run(clf.feed.pixels(hwc), 2)
    for got, ref in zip(again, want):
        torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\], got uint8 \[1, 32, 31, 3\]"):
        clf.feed.pixels(np.zeros((1, 32, 31, 3), np.uint8))
    clf.feed.close()


DECODE_S = 0.04  # per image, on each of WORKERS threads
WORKERS = 2
BATCH = 4


@pytest.mark.parametrize("batch_s", [0.04, 0.16], ids=["decode-bound", "engine-bound"])
def test_the_next_batch_decodes_while_one_runs(weights, monkeypatch, batch_s):
    """Closed loop, 24 clients, 96 requests: images/s within 10% of the slower stage's rate
    (decoding: WORKERS / DECODE_S = 50/s; the engine: BATCH / batch_s = 100/s or 25/s). Decoding
    inside each batch would give 1 / (DECODE_S / WORKERS + batch_s / BATCH) = 33/s or 20/s."""
    import fastres.scale.feed as feed

    def slow_decode(index, path, transform, max_pixels, stages, jpeg_to_gpu, data, mode):
        time.sleep(DECODE_S)
        return Item(index, path, crop=torch.tensor(len(data)))

    def engine(items, rows):
        time.sleep(batch_s)
        return [Prediction(None, top=(Top(int(it.crop), "x", 1.0),)) for it in items], BatchTimes(0, batch_s, 0)

    monkeypatch.setattr(feed, "load_item", slow_decode)
    clf = classifier(weights, max_batch=BATCH, workers=WORKERS, batch_wait_ms=1, max_queue=32)
    clf.feed.run = engine
    body = png(0)

    async def client(n):
        return [(await call(clf, body))[0] for _ in range(n)]

    async def main():
        await call(clf, body)  # the loop and the pool started
        t0 = time.perf_counter()
        statuses = await asyncio.gather(*(client(4) for _ in range(24)))
        return time.perf_counter() - t0, statuses

    took, statuses = asyncio.run(main())
    assert all(s == 200 for ss in statuses for s in ss), statuses
    rate, slower = 96 / took, min(WORKERS / DECODE_S, BATCH / batch_s)
    assert rate >= 0.9 * slower, f"{rate:.1f} images/s, the slower stage runs {slower:.1f}/s"
    clf.feed.close()


def test_watchdog_limits():
    dog = Watchdog(factor=10, min_s=0.5, first_s=60)
    assert dog.limit(4) == 60  # a size not seen yet: it may compile
    dog.record(4, 0.01)
    assert dog.limit(4) == 0.5  # 10 x 0.01 s, but never under min_s
    dog.record(4, 1.0)
    assert dog.limit(4) == pytest.approx(10 * (0.8 * 0.01 + 0.2 * 1.0))
    assert dog.limit(8) == 60
    assert Watchdog(factor=0).limit(4) is None
    with pytest.raises(ValueError, match="factor >= 0"):
        Watchdog(factor=-1)


def test_a_hung_batch_marks_the_replica_unhealthy_and_answers_503(weights):
    clf = classifier(weights, max_batch=2, workers=1, watchdog_factor=5, watchdog_min_s=0.3, watchdog_first_s=0.3)
    release = concurrent.futures.Future()

    def engine(items, rows):
        if release.done():
            return [Prediction(None, top=(Top(0, "x", 1.0),)) for _ in items], BatchTimes(0, 0, 0)
        release.result(30)  # hangs until the test lets it go
        return [Prediction(None, top=(Top(0, "x", 1.0),)) for _ in items], BatchTimes(0, 0, 0)

    clf.feed.run = engine

    async def main():
        held = [asyncio.ensure_future(call(clf, png(i))) for i in range(5)]  # a batch of 2, 3 queued
        await until(lambda: clf.batcher.running == 2, what="a batch running")
        t0 = time.monotonic()
        answers = await asyncio.gather(*held)
        took = time.monotonic() - t0
        later = await call(clf, png(9))
        health = await call(clf, None, method="GET", path="/healthz")
        try:
            await clf.check_health()
        except RuntimeError as exc:
            unhealthy = str(exc)
        else:
            unhealthy = None
        release.set_result(None)
        return answers, took, later, health, unhealthy

    answers, took, later, health, unhealthy = asyncio.run(main())
    assert [s for s, _, _ in answers] == [503] * 5 and took < 5, (answers, took)
    assert all("unhealthy" in b["error"] for _, b, _ in answers), answers
    assert later[0] == 503 and "being replaced" in later[1]["error"]
    assert health[0] == 503
    assert unhealthy is not None and "ran past 0.3 s" in unhealthy, unhealthy
    clf.feed.close()
