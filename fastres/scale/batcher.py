"""Dynamic batching for one replica, apart from Ray: a bounded queue of requests, drained by
one loop that runs one batch at a time, and forms the next batch from what gathered while
the last one ran.

Why not ``@serve.batch`` (Ray 2.60, ``ray/serve/batching.py``): its ``_process_batches``
loop calls ``wait_for_batch``, which closes a batch as soon as ``batch_wait_timeout_s`` has
passed since that batch's first request (or it is full), and only then hands it to a task
that waits on ``self.semaphore`` (``max_concurrent_batches``, 1 by default) for the running
batch to finish. The loop goes straight on to the next ``wait_for_batch``. So while one
batch runs, the requests that arrive are cut into batches every ``batch_wait_timeout_s``
(5 ms by default), each closed with whatever was there (under steady load, often one
request), and those small batches then run one after another behind the semaphore. No
primitive of it (``max_concurrent_batches``, ``batch_size_fn``, the setters) lets a batch
stay open until the engine is free. Here a batch is formed only when the engine is free:

- the first request queued starts the wait; the batch closes when it holds `max_batch`
  requests, or when `wait_s` has passed since that first request, whichever comes first (if
  the first request leaves the queue, its deadline passed or its caller gone, the wait is the
  next one's); once the server drains, no request can join, so a batch closes at once;
- while a batch runs, the queue keeps filling, and when the run ends, a wait that has
  already passed closes the next batch at once, with up to `max_batch` requests.

Under load, then, batches are full; alone, a request waits at most `wait_s`.

Limits, each answered at once rather than by a request left waiting:

- `max_queue`: requests waiting (not yet in a running batch); one more is refused with
  `QueueFull` (the server's 503), which says when to retry (`retry_after_s`);
- a request's deadline: past it, `DeadlineExceeded` (504), whether it still waits (it
  leaves the queue) or runs (its answer is dropped);
- `drain`: new requests are refused with `Draining` (503), the queued ones still run;
  `shut_down` drains for a given time, then answers those left with `Draining`.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

# The server's default limits (`fastres serve`'s flags; kept here, free of Ray and torch, so
# that the command line can show them without importing either).
TIMEOUT_S = 30.0  # the deadline of a request, from its arrival at the replica
BODY_TIMEOUT_S = 15.0  # the time to receive a whole body
DRAIN_S = 30.0  # the time given to the requests in flight on shutdown
# The watchdog (`fastres.scale.feed.Watchdog`): a batch running longer than WATCHDOG_FACTOR
# times its size's usual time (at least WATCHDOG_MIN_S; WATCHDOG_FIRST_S for a size's first
# batch) marks the replica unhealthy.
WATCHDOG_FACTOR = 10.0
WATCHDOG_MIN_S = 5.0
WATCHDOG_FIRST_S = 300.0

T = TypeVar("T")
R = TypeVar("R")


class Refused(Exception):
    """A request the batcher does not run: `status` is the HTTP status that answers it."""

    status = 503

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.message, self.retry_after_s = message, retry_after_s
        # Whether the request had a place in the queue (or a batch) when refused: a server's
        # metrics count those refusals as failures, not the ones at the door.
        self.queued = False

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class QueueFull(Refused):
    """The queue holds `max_queue` requests already (503, with Retry-After)."""


class Draining(Refused):
    """The server is shutting down and takes no new request (503)."""


class Unhealthy(Refused):
    """The replica is unhealthy (a batch hung): its requests are answered 503 while Serve
    replaces it."""


class DeadlineExceeded(Refused):
    """The request's deadline passed before its answer was ready (504)."""

    status = 504


@dataclasses.dataclass
class _Waiting:
    item: Any
    future: asyncio.Future
    queued_at: float
    rows: int = 1  # the batch rows the item takes (a request of several images takes several)


class RequestBatcher(Generic[T, R]):
    """A replica's requests in, batches of them through `run`, one batch at a time.

    run: an async function of a list of items (holding 1 to max_batch rows in all: an item
    takes the rows it was submitted with, 1 by default) that returns one result per item, in
    order; its exception is every request's of that batch. wait_s: how long the first request
    queued waits for others (0: a batch is whatever is queued when the engine is free).
    max_queue: how many rows may wait, not counting the running batch; at least max_batch,
    since the next batch gathers there. As Triton's dynamic batcher, a batch never splits a
    request: it closes before an item that would take it past max_batch rows.
    clock: seconds, monotonic (tests may pass their own)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int, wait_s: float,
                 max_queue: int, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        if max_queue < max_batch:
            # The next batch gathers in the queue: a smaller queue would cap every batch.
            raise ValueError(f"max_queue must be >= max_batch ({max_batch}), got {max_queue}")
        self.run, self.max_batch, self.wait_s, self.max_queue = run, int(max_batch), float(wait_s), int(max_queue)
        self.clock = clock
        self.queue: collections.deque[_Waiting] = collections.deque()
        self._batch: list[_Waiting] = []  # the batch that runs now
        self.draining = False
        self.batches: collections.deque[int] = collections.deque(maxlen=1000)  # the last 1000 batches' sizes
        self.batches_run = 0
        self._batch_s = 0.0  # a moving average of a batch's run time, for Retry-After
        self._changed: asyncio.Event | None = None  # the queue changed, or a drain began: the loop looks again
        self._idle: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._shut_down: asyncio.Task | None = None

    # -- requests --------------------------------------------------------------------------

    async def submit(self, item: T, deadline: float | None = None, rows: int = 1, bound: bool = True) -> R:
        """The result of `item` (taking `rows` rows of a batch, 1 to max_batch) once its batch
        has run. Raises QueueFull or Draining at once, DeadlineExceeded when `deadline` (on
        `clock`) passes first, or what `run` raised. bound=False: the queue's bound was checked
        by the caller already (`admit`), for all the parts of one request at once, so that a
        request is never refused half queued."""
        if not 1 <= rows <= self.max_batch:
            raise ValueError(f"an item takes 1 to max_batch ({self.max_batch}) rows, got {rows}")
        if bound:
            self.admit()
        elif self.draining:
            raise Draining("the server is shutting down: it takes no new request")
        self._start()
        now = self.clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        waiting = _Waiting(item, asyncio.get_running_loop().create_future(), now, int(rows))
        self.queue.append(waiting)
        self._changed.set()
        try:
            if deadline is None:
                return await asyncio.shield(waiting.future)
            return await asyncio.wait_for(asyncio.shield(waiting.future), deadline - now)
        except asyncio.TimeoutError:
            late = DeadlineExceeded(f"no answer within the request's deadline ({deadline - now:.3g} s)")
            late.queued = True
            raise late from None
        finally:
            # Left the queue unanswered (deadline, or the caller cancelled): the batch loop skips it.
            if not waiting.future.done():
                waiting.future.cancel()
            try:
                self.queue.remove(waiting)
            except ValueError:
                pass
            else:
                self._changed.set()  # were it the first, the batch's close time is the next one's

    def admit(self) -> None:
        """Raise Draining or QueueFull now if a request would be refused (a server checks
        before it reads a body it would not use)."""
        if self.draining:
            raise Draining("the server is shutting down: it takes no new request")
        if (queued := self.queued_rows) >= self.max_queue:
            raise QueueFull(f"the server is busy: {queued} requests wait already (its queue holds "
                            f"{self.max_queue}); retry later", self._drain_estimate())

    def drain(self) -> None:
        """From now on refuse new requests (Draining); those queued still run, without waiting
        for others to join their batch."""
        self.draining = True
        if self._changed is not None:
            self._changed.set()

    async def shut_down(self, seconds: float, exc: Refused) -> int:
        """Drain, wait up to `seconds` for every request queued or running to be answered,
        then answer those left with `exc`: how many were answered so. Once: a call made while
        or after another runs waits for that one and returns its count (its `seconds` and
        `exc` are not used)."""
        if self._shut_down is None:
            self.drain()
            self._shut_down = asyncio.get_running_loop().create_task(self._drain_within(seconds, exc))
        return await asyncio.shield(self._shut_down)

    async def _drain_within(self, seconds: float, exc: Refused) -> int:
        try:
            await asyncio.wait_for(self.drained(), max(0.0, seconds))
        except asyncio.TimeoutError:
            return self.abort(exc)
        return 0

    def abort(self, exc: Refused) -> int:
        """Answer every request still queued or running with `exc` now (a running batch's
        results are dropped when it ends): how many were answered so."""
        n = 0
        exc.queued = True
        for w in [*self.queue, *self._batch]:
            if not w.future.done():
                w.future.set_exception(exc)
                n += 1
        self.queue.clear()
        return n

    async def drained(self) -> None:
        """Return once nothing waits and nothing runs."""
        self._start()
        while self.queue or self.running:
            self._idle.clear()
            await self._idle.wait()

    @property
    def running(self) -> int:
        """Rows in the batch that runs now."""
        return sum(w.rows for w in self._batch)

    @property
    def queued_rows(self) -> int:
        """Rows waiting in the queue (a request of one image is one row)."""
        return sum(w.rows for w in self.queue)

    @property
    def mean_batch(self) -> float:
        return sum(self.batches) / len(self.batches) if self.batches else 0.0

    def _drain_estimate(self) -> float:
        """Seconds until the queue, as it is, has run: what Retry-After says (rounded up, at least 1)."""
        batches = math.ceil((self.queued_rows + 1) / self.max_batch) + (1 if self.running else 0)
        return batches * self._batch_s

    # -- the batch loop --------------------------------------------------------------------

    def _start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._changed, self._idle = asyncio.Event(), asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="fastres-batcher")

    async def _loop(self) -> None:
        while True:
            batch = self._batch = await self._next_batch()
            t0 = self.clock()
            try:
                results = await self.run([w.item for w in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:  # noqa: BLE001 - every request of the batch gets it
                failure = exc
                if isinstance(exc, asyncio.CancelledError):
                    # A cancelled future is no answer: the caller would take it for its own cancellation.
                    failure = RuntimeError("the batch was cancelled before its results were ready")
                    failure.__cause__ = exc
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(failure)
                run_cancelled = isinstance(exc, asyncio.CancelledError) and not _loop_cancelled()
                if not isinstance(exc, Exception) and not run_cancelled:
                    raise  # this loop is stopped (its task cancelled, or the process exits)
            else:
                for w, r in zip(batch, results):
                    if not w.future.done():
                        w.future.set_result(r)
            finally:
                took = self.clock() - t0
                self._batch_s = took if not self._batch_s else 0.8 * self._batch_s + 0.2 * took
                self.batches.append(sum(w.rows for w in batch))
                self.batches_run += 1
                self._batch = []
                if not self.queue:
                    self._idle.set()

    async def _next_batch(self) -> list[_Waiting]:
        """Live requests holding up to max_batch rows, once max_batch rows are queued, the
        first queued has waited wait_s (already passed when it queued while the last batch
        ran), or a drain began. The first is whichever is first now: each caller that gives up
        removes its own entry, and the close time follows the queue's head."""
        while True:
            self._changed.clear()
            if not self.queue:
                self._idle.set()
                await self._changed.wait()
                continue
            left = self.queue[0].queued_at + self.wait_s - self.clock()
            if self.queued_rows >= self.max_batch or left <= 0 or self.draining:
                batch = [self.queue.popleft()]
                rows = batch[0].rows
                while self.queue and rows + self.queue[0].rows <= self.max_batch:
                    rows += self.queue[0].rows
                    batch.append(self.queue.popleft())
                return batch
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass


def _loop_cancelled() -> bool:
    """Whether the running task is being cancelled from outside, rather than having met a
    CancelledError of something it awaited (Python 3.10 cannot tell them apart: it says yes,
    so that a loop told to stop stops)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0
