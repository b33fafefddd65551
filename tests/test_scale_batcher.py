"""fastres.scale.batcher, without Ray, with a stand-in engine of fixed cost per batch (an
asyncio sleep): under closed-loop load batches are full and throughput grows with them;
requests that arrive while a batch runs form the next one; the queue's bound, the deadline
and the drain answer at once; a batch's close time follows the queue's head; a cancelled run
answers its requests; a shutdown counts its 503s once. Where an order of events matters, the
test waits for the state it needs (`until`), not for a time."""
from __future__ import annotations

import asyncio
import time

import pytest

from fastres.scale.batcher import DeadlineExceeded, Draining, QueueFull, RequestBatcher
from wait_helpers import until

MAX_BATCH = 8
COST_1, COST_8 = 0.040, 0.056  # s per batch of 1 and of 8: a batch of 8 costs 1.4x a batch of 1


class Engine:
    """A batch of n costs COST_1 + (n - 1) (COST_8 - COST_1) / 7 seconds, whatever else runs;
    it answers each item with (item, n). `gate`, when set, holds every batch until opened."""

    def __init__(self, gate: asyncio.Event | None = None):
        self.sizes: list[int] = []
        self.gate = gate

    async def __call__(self, items: list) -> list:
        self.sizes.append(len(items))  # the batch has started: what `until` may wait for
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(COST_1 + (len(items) - 1) * (COST_8 - COST_1) / (MAX_BATCH - 1))
        return [(item, len(items)) for item in items]


async def closed_loop(batcher: RequestBatcher, clients: int, seconds: float) -> tuple[int, float]:
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
        one = RequestBatcher(Engine(), max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
        _, rate_1 = await closed_loop(one, 1, 0.6)
        engine = Engine()
        many = RequestBatcher(engine, max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
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
        b = RequestBatcher(engine, max_batch=MAX_BATCH, wait_s=0.005, max_queue=32)
        first = asyncio.ensure_future(b.submit("first"))
        await until(lambda: engine.sizes == [1])  # the first batch runs, held by the gate
        later = []
        for i in range(5):
            later.append(asyncio.ensure_future(b.submit(i)))
            await asyncio.sleep(0.02)  # the input: arrivals farther apart than the wait
        gate.set()
        return await first, await asyncio.gather(*later), engine.sizes

    first, later, sizes = asyncio.run(main())
    assert sizes == [1, 5] and first == ("first", 1) and later == [(i, 5) for i in range(5)]


def test_a_lone_request_waits_for_the_wait_and_a_full_batch_does_not():
    async def main():
        lone = RequestBatcher(Engine(), max_batch=MAX_BATCH, wait_s=0.3, max_queue=32)
        t0 = time.monotonic()
        assert await lone.submit("a") == ("a", 1)
        waited = time.monotonic() - t0
        full = RequestBatcher(Engine(), max_batch=MAX_BATCH, wait_s=30.0, max_queue=32)
        t0 = time.monotonic()
        answers = await asyncio.gather(*(full.submit(i) for i in range(MAX_BATCH)))
        return waited, time.monotonic() - t0, answers

    waited, full_took, answers = asyncio.run(main())
    assert 0.3 <= waited < 0.3 + COST_1 + 0.5, waited
    assert answers == [(i, MAX_BATCH) for i in range(MAX_BATCH)] and full_took < 5, full_took


def test_a_full_queue_refuses_at_once_with_retry_after():
    async def main():
        gate = asyncio.Event()
        b = RequestBatcher(Engine(gate), max_batch=2, wait_s=0.0, max_queue=3)  # the running 2, then 3 may wait
        running = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        await until(lambda: b.running == 2)  # the first batch (2) runs, held by the gate
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(2, 5)]
        await until(lambda: len(b.queue) == 3)
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

        b = RequestBatcher(run, max_batch=2, wait_s=0.0, max_queue=3, clock=lambda: now[0])
        await b.submit("first")  # one batch of 3 s
        running = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        await until(lambda: b.running == 2)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(2, 5)]
        await until(lambda: len(b.queue) == 3)
        with pytest.raises(QueueFull) as info:
            await b.submit("one too many")
        gate.set()
        await asyncio.gather(*running, *queued)
        return info.value

    assert asyncio.run(main()).headers == {"Retry-After": "9"}


def test_deadlines_answer_504_whether_queued_or_running():
    async def main():
        gate = asyncio.Event()
        b = RequestBatcher(Engine(gate), max_batch=1, wait_s=0.0, max_queue=8)
        now = time.monotonic()
        running = asyncio.ensure_future(b.submit("runs", deadline=now + 0.1))
        await until(lambda: b.running == 1)
        queued = asyncio.ensure_future(b.submit("waits", deadline=now + 0.1))
        kept = asyncio.ensure_future(b.submit("kept"))
        await until(lambda: len(b.queue) == 2)
        results = await asyncio.gather(running, queued, return_exceptions=True)
        left = len(b.queue)  # the expired one left the queue at its deadline
        gate.set()
        return results, left, await kept, b

    (running, queued), left, kept, b = asyncio.run(main())
    assert isinstance(running, DeadlineExceeded) and running.status == 504
    assert isinstance(queued, DeadlineExceeded) and "deadline" in queued.message
    assert left == 1 and kept == ("kept", 1)
    assert list(b.batches) == [1, 1]  # "waits" never ran


def test_drain_refuses_new_requests_and_finishes_the_queued():
    async def main():
        gate = asyncio.Event()
        b = RequestBatcher(Engine(gate), max_batch=2, wait_s=0.0, max_queue=8)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await until(lambda: b.running == 2 and len(b.queue) == 3)
        b.drain()
        with pytest.raises(Draining) as info:
            await b.submit("late")
        gate.set()
        await asyncio.wait_for(b.drained(), 5)
        return info.value, [q.result() for q in queued], list(b.batches)

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
        b = RequestBatcher(run, max_batch=2, wait_s=0.0, max_queue=8)
        first = await asyncio.gather(b.submit("bad"), b.submit("x"), return_exceptions=True)
        return first, await b.submit(3)

    (bad, other), after = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and isinstance(other, RuntimeError) and after == 6


def test_bad_limits_are_refused():
    for kwargs, words in [({"max_batch": 0}, "max_batch must be >= 1"), ({"wait_s": -1}, "wait_s must be >= 0"),
                          ({"max_queue": 7}, r"max_queue must be >= max_batch \(8\), got 7")]:
        with pytest.raises(ValueError, match=words):
            RequestBatcher(Engine(), **{"max_batch": 8, "wait_s": 0.005, "max_queue": 8, **kwargs})


def test_a_cancelled_run_answers_its_requests_and_the_loop_goes_on():
    """A CancelledError out of the engine's run (not the loop's own cancellation) is no
    exception of Exception's: its batch's callers still get an answer (no deadline would end
    their wait), and the next request runs."""
    runs = []

    async def run(items):
        runs.append(list(items))
        if len(runs) == 1:
            raise asyncio.CancelledError()
        return items

    async def main():
        b = RequestBatcher(run, max_batch=2, wait_s=0.0, max_queue=8)
        first = await asyncio.wait_for(asyncio.gather(b.submit("a"), b.submit("b"), return_exceptions=True), 5)
        return first, await asyncio.wait_for(b.submit("c"), 5)

    first, after = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and "cancelled" in str(e) for e in first), first
    assert after == "c" and runs == [["a", "b"], ["c"]]


def test_a_batch_closes_wait_s_after_the_head_that_is_left():
    """On the batcher's clock (the test's), wait_s = 10: A queues at 0, B at 6, then A gives
    up. The batch's close time becomes B's 16, not A's 10: C at 12 joins B, and D at 16
    closes the batch of three (with A's close time, B and C would have run at 12 as a batch
    of two, and D alone at 26)."""
    now = [0.0]

    async def main():
        engine = Engine()
        b = RequestBatcher(engine, max_batch=MAX_BATCH, wait_s=10.0, max_queue=32, clock=lambda: now[0])
        a = asyncio.ensure_future(b.submit("A"))
        await until(lambda: len(b.queue) == 1)
        now[0] = 6.0
        rest = [asyncio.ensure_future(b.submit("B"))]
        await until(lambda: len(b.queue) == 2)
        a.cancel()
        await until(lambda: len(b.queue) == 1)
        now[0] = 12.0
        rest.append(asyncio.ensure_future(b.submit("C")))
        await until(lambda: len(b.queue) == 2 or bool(engine.sizes))
        now[0] = 16.0
        rest.append(asyncio.ensure_future(b.submit("D")))
        return await asyncio.wait_for(asyncio.gather(*rest), 5), engine.sizes

    answers, sizes = asyncio.run(main())
    assert sizes == [3] and answers == [("B", 3), ("C", 3), ("D", 3)], (sizes, answers)


def test_a_drain_closes_a_waiting_batch_at_once():
    """Once draining, no request can join: a batch waiting for others (wait_s = 60 s) runs now."""
    async def main():
        engine = Engine()
        b = RequestBatcher(engine, max_batch=MAX_BATCH, wait_s=60.0, max_queue=32)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await until(lambda: len(b.queue) == 3)
        b.drain()
        return await asyncio.wait_for(asyncio.gather(*queued), 5), engine.sizes

    answers, sizes = asyncio.run(main())
    assert answers == [(i, 3) for i in range(3)] and sizes == [3]


def test_shut_down_counts_its_503s_once_for_concurrent_and_repeated_calls():
    """Two shutdowns at once, and a third after: one drain, whose count (5 requests answered
    503: 2 running, 3 queued) each call returns; the 5 callers get the first call's error."""
    async def main():
        gate = asyncio.Event()
        b = RequestBatcher(Engine(gate), max_batch=2, wait_s=0.0, max_queue=8)
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await until(lambda: b.running == 2 and len(b.queue) == 3)
        both = await asyncio.wait_for(asyncio.gather(b.shut_down(0.05, Draining("first")),
                                                     b.shut_down(0.05, Draining("second"))), 5)
        again = await asyncio.wait_for(b.shut_down(0.05, Draining("third")), 5)
        gate.set()
        return both, again, await asyncio.gather(*queued, return_exceptions=True)

    both, again, answers = asyncio.run(main())
    assert list(both) == [5, 5] and again == 5, (both, again)
    assert all(isinstance(a, Draining) and a.message == "first" for a in answers), answers



def test_a_request_of_several_rows_is_never_split():
    """Items of 3, 3, 2 and 1 rows at max_batch 8, all queued while a batch runs: the next
    batch takes 3 + 3 + 2 = 8 rows, the 1-row item waits for the one after (as Triton's
    dynamic batcher, a batch closes before a request that would take it past max_batch); an
    item of more rows than max_batch is refused."""
    async def main():
        gate = asyncio.Event()
        engine = Engine(gate)
        batcher = RequestBatcher(engine, max_batch=MAX_BATCH, wait_s=0.0, max_queue=32)
        first = asyncio.ensure_future(batcher.submit("first"))
        await until(lambda: engine.sizes == [1], what="the first batch running")
        rest = [asyncio.ensure_future(batcher.submit(name, rows=rows))
                for name, rows in (("a", 3), ("b", 3), ("c", 2), ("d", 1))]
        await until(lambda: batcher.queued_rows == 9, what="9 rows queued")
        with pytest.raises(ValueError, match="1 to max_batch"):
            await batcher.submit("huge", rows=MAX_BATCH + 1)
        gate.set()
        return await first, await asyncio.gather(*rest), engine.sizes

    first, rest, sizes = asyncio.run(main())
    assert sizes == [1, 3, 1], sizes  # items per batch: the rows were 1, 8 and 1
    assert [r[1] for r in rest] == [3, 3, 3, 1]
