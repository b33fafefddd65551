"""fastres.scale.batcher, without Ray, with a stand-in engine of fixed cost per batch (an
asyncio sleep): under closed-loop load batches are full and throughput grows with them;
requests that arrive while a batch runs form the next one; the queue's bound, the deadline
and the drain answer at once."""
from __future__ import annotations

import asyncio
import time

import pytest

from fastres.scale.batcher import Batcher, DeadlineExceeded, Draining, QueueFull

MAX_BATCH = 8
COST_1, COST_8 = 0.040, 0.056  # s per batch of 1 and of 8: a batch of 8 costs 1.4x a batch of 1


class Engine:
    """A batch of n costs COST_1 + (n - 1) (COST_8 - COST_1) / 7 seconds, whatever else runs;
    it answers each item with (item, n). `gate`, when set, holds every batch until opened."""

    def __init__(self, gate: asyncio.Event | None = None):
        self.sizes: list[int] = []
        self.gate = gate

    async def __call__(self, items: list) -> list:
        self.sizes.append(len(items))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(COST_1 + (len(items) - 1) * (COST_8 - COST_1) / (MAX_BATCH - 1))
        return [(item, len(items)) for item in items]


async def closed_loop(batcher: Batcher, clients: int, seconds: float) -> tuple[int, float]:
    """`clients` callers, each sending its next request as soon as the last is answered, for
    `seconds`: (requests answered, requests per second)."""
    done = 0
    stop = time.monotonic() + seconds

    async def client(c: int):
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            assert (await batcher.submit((c, i)))[0] == (c, i)
            done += 1
            i += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return done, done / (time.monotonic() - t0)


def test_closed_loop_load_fills_batches_and_multiplies_throughput():
    """Default flags (max batch 8, 5 ms wait), concurrency 16 = 2 x max batch: mean batch >= 80%
    of 8 and >= 4x the throughput of one client (measured here: about 8 and 6x)."""
    async def main():
        one = Batcher(Engine(), max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
        _, rate_1 = await closed_loop(one, 1, 0.6)
        engine = Engine()
        many = Batcher(engine, max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
        n, rate_16 = await closed_loop(many, 2 * MAX_BATCH, 1.2)
        return one.mean_batch, rate_1, many.mean_batch, rate_16, n, engine.sizes

    mean_1, rate_1, mean_16, rate_16, n, sizes = asyncio.run(main())
    assert mean_1 == 1.0
    assert n == sum(sizes) and max(sizes) == MAX_BATCH
    assert mean_16 >= 0.8 * MAX_BATCH, sizes
    assert rate_16 >= 4 * rate_1, (rate_1, rate_16, sizes)


def test_requests_that_arrive_while_a_batch_runs_form_the_next_batch():
    """The behaviour @serve.batch lacks: 5 requests arriving one by one, 20 ms apart, while a
    batch runs for 150 ms, with a 5 ms wait, run as ONE next batch, not as five of one."""
    async def main():
        gate = asyncio.Event()
        engine = Engine(gate)
        b = Batcher(engine, max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
        first = asyncio.ensure_future(b.submit("first"))
        await asyncio.sleep(0.02)
        later = []
        for i in range(5):
            later.append(asyncio.ensure_future(b.submit(i)))
            await asyncio.sleep(0.02)
        gate.set()
        return await first, await asyncio.gather(*later), engine.sizes

    first, later, sizes = asyncio.run(main())
    assert sizes == [1, 5] and first == ("first", 1) and later == [(i, 5) for i in range(5)]


def test_a_lone_request_waits_for_the_wait_and_a_full_batch_does_not():
    async def main():
        lone = Batcher(Engine(), max_batch=MAX_BATCH, wait_s=0.3, max_queue=32)
        t0 = time.monotonic()
        assert await lone.submit("a") == ("a", 1)
        waited = time.monotonic() - t0
        full = Batcher(Engine(), max_batch=MAX_BATCH, wait_s=30.0, max_queue=32)
        t0 = time.monotonic()
        answers = await asyncio.gather(*(full.submit(i) for i in range(MAX_BATCH)))
        return waited, time.monotonic() - t0, answers

    waited, full_took, answers = asyncio.run(main())
    assert 0.3 <= waited < 0.3 + COST_1 + 0.5, waited
    assert answers == [(i, MAX_BATCH) for i in range(MAX_BATCH)] and full_took < 5, full_took


def test_a_full_queue_refuses_at_once_with_retry_after():
    async def main():
        gate = asyncio.Event()
        b = Batcher(Engine(gate), max_batch=2, wait_s=0.0, max_queue=3)  # the running 2, then 3 may wait
        running = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        await asyncio.sleep(0.01)  # the first batch (2) runs, held by the gate
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(2, 5)]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(QueueFull) as info:
            await b.submit("one too many")
        refused_in = time.monotonic() - t0
        gate.set()
        return info.value, refused_in, await asyncio.gather(*running, *queued)

    exc, refused_in, answers = asyncio.run(main())
    assert exc.status == 503 and "3 requests wait already" in exc.message and refused_in < 0.05
    assert exc.headers == {"Retry-After": "1"}
    assert [a[0] for a in answers] == [0, 1, 2, 3, 4]


def test_retry_after_is_the_queues_run_time_at_the_measured_batch_time():
    """Once a batch has taken 3 s (on the batcher's clock), a refusal behind one running batch
    and 3 queued (2 batches of max 2) says Retry-After: 9."""
    now = [0.0]

    async def main():
        gate = asyncio.Event()

        async def run(items):
            if now[0]:  # every batch after the first waits for the gate
                await gate.wait()
            now[0] += 3.0
            return items

        b = Batcher(run, max_batch=2, wait_s=0.0, max_queue=3, clock=lambda: now[0])
        await b.submit("first")  # one batch of 3 s
        running = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(2, 5)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await b.submit("one too many")
        gate.set()
        await asyncio.gather(*running, *queued)
        return info.value

    assert asyncio.run(main()).headers == {"Retry-After": "9"}


def test_deadlines_answer_504_whether_queued_or_running():
    async def main():
        gate = asyncio.Event()
        b = Batcher(Engine(gate), max_batch=1, wait_s=0.0, max_queue=8)
        now = time.monotonic()
        running = asyncio.ensure_future(b.submit("runs", deadline=now + 0.1))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(b.submit("waits", deadline=now + 0.1))
        kept = asyncio.ensure_future(b.submit("kept"))
        await asyncio.sleep(0.01)
        assert len(b.queue) == 2
        results = await asyncio.gather(running, queued, return_exceptions=True)
        left = len(b.queue)  # the expired one left the queue at its deadline
        gate.set()
        return results, left, await kept, b

    (running, queued), left, kept, b = asyncio.run(main())
    assert isinstance(running, DeadlineExceeded) and running.status == 504
    assert isinstance(queued, DeadlineExceeded) and "deadline" in queued.message
    assert left == 1 and kept == ("kept", 1)
    assert b.batches == [1, 1]  # "waits" never ran


def test_drain_refuses_new_requests_and_finishes_the_queued():
    async def main():
        gate = asyncio.Event()
        b = Batcher(Engine(gate), max_batch=2, wait_s=0.0, max_queue=8)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        b.drain()
        with pytest.raises(Draining) as info:
            await b.submit("late")
        gate.set()
        await asyncio.wait_for(b.drained(), 5)
        return info.value, [q.result() for q in queued], b.batches

    exc, answers, batches = asyncio.run(main())
    assert exc.status == 503 and "shutting down" in exc.message
    assert [a[0] for a in answers] == list(range(5)) and batches == [2, 2, 1]


def test_a_failing_batch_fails_its_requests_only():
    calls = []

    async def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("engine failed")
        return [i * 2 for i in items]

    async def main():
        b = Batcher(run, max_batch=2, wait_s=0.0, max_queue=8)
        first = await asyncio.gather(b.submit("bad"), b.submit("x"), return_exceptions=True)
        return first, await b.submit(3)

    (bad, other), after = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and isinstance(other, RuntimeError) and after == 6


def test_bad_limits_are_refused():
    for kwargs, words in [({"max_batch": 0}, "max_batch must be >= 1"), ({"wait_s": -1}, "wait_s must be >= 0"),
                          ({"max_queue": 7}, r"max_queue must be >= max_batch \(8\), got 7")]:
        with pytest.raises(ValueError, match=words):
            Batcher(Engine(), **{"max_batch": 8, "wait_s": 0.005, "max_queue": 8, **kwargs})
