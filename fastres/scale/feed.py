"""A replica's input side, kept for its lifetime, so that the GPU does not wait for decoding.

Each request's images start decoding on the replica's CPU workers when the request arrives
(`Feed.decode`), not when its batch runs: while batch n computes on the engine thread, the
requests queued behind it, which form batch n+1, are decoded meanwhile. A batch then only
waits for whatever decoding is still left of its own requests, and `Feed.run` copies its crops
into the pinned buffers, runs the engine at the padded size and reads the results back.

One decode pool, one engine thread, one `ImageBatcher` (its stream, its two pinned host
buffers and two device buffers of `max_batch` rows; a smaller padded batch uses their first
rows) per replica, built once: no batch builds a pool, a stream or a buffer.

`Watchdog` decides when a batch has hung: longer than `factor` times what a batch of its
size has taken so far (an average, at least `min_s`), or than `first_s` for a size not seen
yet (compiling and capturing a size may take that long).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Sequence

import numpy as np
import torch

from ..predict.output import Prediction
from ..predict.pipeline import ImageBatcher, Item, StageTimes, load_item
from .batcher import WATCHDOG_FACTOR, WATCHDOG_FIRST_S, WATCHDOG_MIN_S


@dataclasses.dataclass(frozen=True)
class BatchTimes:
    """Where one batch's time went, in seconds (Triton's compute stages): input, its crops
    staged and copied to the device; infer, the engine's forward (GPU time on CUDA); output,
    the results read back and turned into predictions."""

    input_s: float
    infer_s: float
    output_s: float


class Feed:
    """The decode pool and the batch buffers of one replica, for a `fastres.Predictor`.

    decode(body) starts decoding an encoded image now (a Future of its Item); pixels(array)
    makes Items of already cropped HWC uint8 images; run(items, rows) runs one batch (call it
    from one thread at a time: the replica's engine thread)."""

    def __init__(self, predictor, *, max_batch: int, workers: int):
        self.predictor = predictor
        # Apart: the pool's workers add their decode times while a batch runs, and a batch's
        # times are the differences of its own stages across the run.
        self.decoded = StageTimes(workers=workers)
        self.stages = StageTimes(workers=workers)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="fastres-decode")
        self.batcher = ImageBatcher(predictor.engine, predictor.transform, predictor.labels, batch_size=max_batch,
                                    topk=predictor.topk, stages=self.stages, gpu_decode=predictor.gpu_decode)
        self.crop = predictor.transform.crop

    def decode(self, body: bytearray) -> concurrent.futures.Future:
        """A Future of the Item for one encoded image, decoded and cropped on the pool (for
        nvjpeg: only checked there; the batch decodes it on the GPU)."""
        p = self.predictor
        return self.pool.submit(load_item, 0, None, p.transform, p.max_pixels, self.decoded, self.batcher.gpu_decode,
                                data=body, mode=p.preprocess)

    def pixels(self, images: np.ndarray) -> list[Item]:
        """Items for already cropped images, uint8 [N, crop, crop, 3] (HWC, as they come off the
        wire): views, copied once, into the pinned buffer, when their batch runs."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (self.crop, self.crop, 3):
            raise ValueError(f"pixels must be uint8 [N, {self.crop}, {self.crop}, 3], got {images.dtype} "
                             f"{list(images.shape)}")
        tensor = torch.from_numpy(images)
        return [Item(i, None, crop=tensor[i].permute(2, 0, 1)) for i in range(tensor.shape[0])]

    def run(self, items: Sequence[Item], rows: int) -> tuple[list[Prediction], BatchTimes]:
        """One batch: the Items' predictions (in order; an Item with an error gets it) and
        its times. rows: the padded size the engine runs (at least the live Items)."""
        t0 = time.perf_counter()
        before = (self.stages.preprocess, self.stages.model)
        items = [dataclasses.replace(it, index=i) for i, it in enumerate(items)]
        batch = self.batcher.submit(items, rows)
        got = dict(self.batcher.finish(batch))
        wall = time.perf_counter() - t0
        input_s = self.stages.preprocess - before[0]
        infer_s = self.stages.model - before[1]
        output_s = max(0.0, wall - input_s - infer_s)
        return [got[i] for i in range(len(items))], BatchTimes(input_s, infer_s, output_s)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.batcher.close()


class Watchdog:
    """When a batch has run too long. factor: a batch may take this many times the average
    of its size's batches so far (0: never too long); min_s: the shortest limit; first_s: the
    limit of a size's first batch."""

    def __init__(self, factor: float = WATCHDOG_FACTOR, min_s: float = WATCHDOG_MIN_S,
                 first_s: float = WATCHDOG_FIRST_S):
        if factor < 0 or min_s <= 0 or first_s <= 0:
            raise ValueError(f"the watchdog needs factor >= 0, min_s > 0 and first_s > 0, got {factor}, {min_s}, "
                             f"{first_s}")
        self.factor, self.min_s, self.first_s = float(factor), float(min_s), float(first_s)
        self.typical: dict[int, float] = {}

    def limit(self, rows: int) -> float | None:
        """Seconds a batch of `rows` may run (None: no limit)."""
        if not self.factor:
            return None
        if rows not in self.typical:
            return self.first_s
        return max(self.min_s, self.factor * self.typical[rows])

    def record(self, rows: int, seconds: float) -> None:
        """A batch of `rows` finished in `seconds`: a moving average (a size's first batch,
        which may compile, counts only until others replace it)."""
        old = self.typical.get(rows)
        self.typical[rows] = seconds if old is None else 0.8 * old + 0.2 * seconds
