"""What a replica's batcher carries: a `Work` (one request's images, decoding or decoded) in,
an `Answer` (its predictions, its batch's times) out."""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses

from ..predict.output import Prediction
from ..predict.pipeline import Item
from .feed import BatchTimes


class Work:
    """One request's images: Items, or Futures of Items still decoding on the replica's pool.
    `queued`, `started`: when it was queued and when its batch began (time.monotonic)."""

    def __init__(self, items: list[Item | concurrent.futures.Future]):
        self._pending = items
        self.items: list[Item] = []
        self.queued = self.started = 0.0

    @property
    def rows(self) -> int:
        return len(self._pending) if not self.items else len(self.items)

    async def ready(self) -> None:
        """Wait for the images still decoding (the others decoded while earlier batches ran)."""
        self.items = [await asyncio.wrap_future(it) if isinstance(it, concurrent.futures.Future) else it
                      for it in self._pending]

    def cancel(self) -> None:
        """The request left before its batch: decodes not started yet are dropped."""
        for it in self._pending:
            if isinstance(it, concurrent.futures.Future):
                it.cancel()


@dataclasses.dataclass
class Answer:
    """One request's outcome: its predictions (in its images' order) or the error of its whole
    batch, with `requests` (requests in that batch), `times` (the batch's compute stages) and
    `wait_s` (how long the batch waited for this request's decoding)."""

    requests: int
    preds: list[Prediction] = dataclasses.field(default_factory=list)
    times: BatchTimes | None = None
    wait_s: float = 0.0
    error: str | None = None
