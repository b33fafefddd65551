"""fastres.scale.serve.ImageClassifier without Ray: the replica's HTTP handling driven through
ASGI, its engine replaced by a stand-in of fixed cost per batch (a real Predictor is built,
then its Feed's decode and run swapped). Bodies are read (408 past their timeout) before a request
queues, and a stalled body does not hold valid traffic; a full queue is a 503 with
Retry-After at once; a deadline is a 504; a drain answers every request in flight, and
reports its 503s once however often it is asked; every answer is JSON. The order of events
comes from the stand-in's gate and the batcher's state (`until`), not from sleeps."""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import threading
import time

import pytest
import torch

from fastres.predict.output import Prediction, Top
from fastres.predict.pipeline import Item
from fastres.scale.feed import BatchTimes
from predict_helpers import pixels
import scale_helpers  # noqa: F401 - Ray's test environment, set before ray is imported
from test_build import calibrated
from wait_helpers import until

MAX_BATCH = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'fastres[ray]'")
    path = tmp_path_factory.mktemp("replica") / "r18.pth"
    torch.save(calibrated("resnet18").state_dict(), path)
    return path


class StandIn:
    """The replica's Feed.run and Feed.decode, of fixed cost (`cost` s per batch, whatever
    its size): each body is "decoded" at once into its length, which answers as the class
    index; `gate`, when cleared, holds every batch."""

    def __init__(self, cost: float = 0.05):
        self.cost, self.sizes = cost, []
        self.gate = threading.Event()
        self.gate.set()

    def decode(self, body):
        done = concurrent.futures.Future()
        done.set_result(Item(0, None, crop=torch.tensor(len(body))))
        return done

    def __call__(self, items, rows):
        self.sizes.append(len(items))
        self.gate.wait(30)
        time.sleep(self.cost)
        preds = [Prediction(None, top=(Top(int(it.crop), f"class {int(it.crop)}", 1.0),)) for it in items]
        return preds, BatchTimes(0.0, self.cost, 0.0)


def replica(weights, **options):
    from fastres.scale.serve import ImageClassifier

    clf = ImageClassifier(str(weights), max_batch=MAX_BATCH, resize=40, crop=32, topk=1, workers=1, **options)
    clf.engine = StandIn()
    clf.feed.run, clf.feed.decode = clf.engine, clf.engine.decode
    return clf


def png(i: int = 0) -> bytes:
    buf = io.BytesIO()
    pixels((12 + i, 10), "RGB", i).save(buf, "PNG")
    return buf.getvalue()


async def call(clf, body: bytes | None, *, method="POST", path="/predict", stall_after: int | None = None,
               headers: dict | None = None, stalled: list | None = None) -> tuple[int, dict, dict]:
    """One request through ASGI: (status, JSON body, headers). stall_after: send that many
    bytes of the body, then nothing more (a slow client); stalled: a list this call appends
    to when the replica asks for more of its body and gets nothing."""
    from starlette.requests import Request

    body = body or b""
    hdrs = {"host": "test", "content-length": str(len(body)), **(headers or {})}
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()], "scheme": "http",
             "server": ("test", 80), "root_path": "", "http_version": "1.1"}
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            if stalled is not None:
                stalled.append(path)
            await asyncio.sleep(3600)
        sent = True
        if stall_after is not None:
            return {"type": "http.request", "body": body[:stall_after], "more_body": True}
        return {"type": "http.request", "body": body, "more_body": False}

    response = await clf(Request(scope, receive))
    return response.status_code, json.loads(response.body), dict(response.headers)


def test_a_stalled_body_gets_408_and_holds_no_one_up(weights):
    clf = replica(weights, body_timeout_s=1.0)

    async def main():
        stalled = []
        slow = [asyncio.ensure_future(call(clf, png(i), stall_after=10, stalled=stalled)) for i in range(16)]
        await until(lambda: len(stalled) == 16, what="16 bodies stalled")
        ok = await call(clf, png(20))
        pending = sum(not s.done() for s in slow)  # answered while the 16 slow clients still stall
        return ok, pending, await asyncio.gather(*slow)

    (status, body, headers), pending, slow = asyncio.run(main())
    assert status == 200 and body["top"][0]["index"] == len(png(20)) and headers["x-fastres-batch"] == "1"
    assert pending == 16
    for status, body, headers in slow:
        assert status == 408 and "did not arrive within 1 s" in body["error"], (status, body)
    assert clf.engine.sizes == [1]  # no slow request ever reached the queue


def test_a_full_queue_is_503_with_retry_after_at_once(weights):
    clf = replica(weights, max_queue=MAX_BATCH)
    clf.engine.gate.clear()

    async def main():
        held = [asyncio.ensure_future(call(clf, png(i))) for i in range(MAX_BATCH)]  # a batch, held running
        await until(lambda: clf.batcher.running == MAX_BATCH, what="a batch running")
        held += [asyncio.ensure_future(call(clf, png(i))) for i in range(MAX_BATCH)]  # a full queue
        await until(lambda: len(clf.batcher.queue) == MAX_BATCH, what="a full queue")
        health = await call(clf, None, method="GET", path="/healthz")
        t0 = time.monotonic()
        refused = await call(clf, png(9))
        took = time.monotonic() - t0
        clf.engine.gate.set()
        return refused, took, await asyncio.gather(*held), health

    (status, body, headers), took, held, health = asyncio.run(main())
    assert health[:2] == (200, {"status": "ok", "queued": MAX_BATCH, "running": MAX_BATCH}), health
    assert status == 503 and f"{MAX_BATCH} requests wait already" in body["error"]
    assert int(headers["retry-after"]) >= 1 and took < 0.5, (headers, took)  # at once, not after the batch
    assert [s for s, _, _ in held] == [200] * (2 * MAX_BATCH)
    assert clf.engine.sizes == [MAX_BATCH, MAX_BATCH]


def test_past_its_deadline_a_request_is_504(weights):
    clf = replica(weights, timeout_s=0.3)
    clf.engine.gate.clear()

    async def main():
        late = await call(clf, png(1))
        clf.engine.gate.set()
        return late

    status, body, _ = asyncio.run(main())
    assert status == 504 and "deadline" in body["error"]


def test_drain_answers_the_16_in_flight_and_refuses_new_ones(weights):
    clf = replica(weights)
    clf.engine.gate.clear()

    async def main():
        flying = [asyncio.ensure_future(call(clf, png(i))) for i in range(16)]
        await until(lambda: clf.batcher.running == MAX_BATCH and len(clf.batcher.queue) == 16 - MAX_BATCH,
                    what="one batch running, the rest queued")
        drained = asyncio.ensure_future(clf.drain(10.0))
        await until(lambda: clf.batcher.draining, what="the drain begun")
        new = await call(clf, png(30))
        health = await call(clf, None, method="GET", path="/healthz")
        clf.engine.gate.set()
        return await asyncio.gather(*flying), new, health, await drained

    flying, new, health, (me, batches, aborted) = asyncio.run(main())
    assert [s for s, _, _ in flying] == [200] * 16 and aborted == 0 and batches == 16 // MAX_BATCH
    assert new[0] == 503 and "shutting down" in new[1]["error"]
    assert health[0] == 503


def test_a_drain_past_its_time_answers_503(weights):
    clf = replica(weights)
    clf.engine.gate.clear()

    async def main():
        flying = [asyncio.ensure_future(call(clf, png(i))) for i in range(6)]
        await until(lambda: clf.batcher.running == MAX_BATCH and len(clf.batcher.queue) == 6 - MAX_BATCH,
                    what="one batch running, the rest queued")
        # Asked twice at once (a handle call each, routed to this replica), then once more:
        # one drain, whose count each call reports.
        both = await asyncio.gather(clf.drain(0.2), clf.drain(0.2))
        again = await clf.drain(0.2)
        clf.engine.gate.set()
        return await asyncio.gather(*flying), [r[2] for r in (*both, again)]

    flying, aborted = asyncio.run(main())
    assert aborted == [6, 6, 6], aborted
    assert all(s == 503 and "drain time (0.2 s)" in b["error"] for s, b, _ in flying), flying


def test_every_answer_is_json(weights):
    clf = replica(weights)

    def broken(items, rows):
        raise RuntimeError("engine exploded")

    async def main():
        answers = {"route": await call(clf, png(0), path="/nope"), "method": await call(clf, None, method="GET"),
                   "empty": await call(clf, b""), "text": await call(clf, b"not an image at all"),
                   "content-length": await call(clf, png(0), headers={"content-length": "ten"})}
        clf.feed.run = broken
        answers["engine"] = await call(clf, png(0))
        return answers

    answers = asyncio.run(main())
    want = {"route": 404, "method": 405, "empty": 400, "text": 400, "content-length": 400, "engine": 500}
    for name, (status, body, headers) in answers.items():
        assert status == want[name] and set(body) == {"error"}, (name, status, body)
        assert headers["content-type"] == "application/json"
    assert "engine exploded" in answers["engine"][1]["error"]


def test_a_request_of_more_images_than_a_batch_goes_in_parts(weights):
    """8 images at max_batch 4 and a queue of 4: two parts of 4, each a batch of its own, both
    admitted at once (the second is not refused because the first filled the queue); the
    predictions come back in the request's order."""
    clf = replica(weights, max_queue=MAX_BATCH)
    bodies = [bytearray(png(i)) for i in range(2 * MAX_BATCH)]

    preds, requests = asyncio.run(clf.infer(time.monotonic(), images=bodies))
    assert [p.top[0].index for p in preds] == [len(b) for b in bodies]
    assert clf.engine.sizes == [MAX_BATCH, MAX_BATCH] and requests == 1
