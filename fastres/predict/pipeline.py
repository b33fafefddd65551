"""The input pipeline: images decoded and cropped off the critical path, fed to the engine in
fixed-shape batches, results handed back in input order as soon as their batch is done.

- Decoding and cropping: `fastres.preprocess`'s steps in its mode (exact: torchvision's pixels;
  fast: scaled JPEG decodes), every limit checked on the file's header first, on a thread
  pool on the CPU (torchvision.io and torch release the GIL), or on a CUDA device
  nvjpeg (``torchvision.io.decode_jpeg(..., device="cuda")``, batched) for the JPEGs it
  decodes in hardware; the pool then only reads files and checks their headers. Files nvjpeg
  might take silently where the CPU decoder refuses them (no end-of-image marker: truncated),
  or cannot take (CMYK, 16-bit), and any batch it fails on, go to the CPU decoder.
- Batches have one shape (the last one padded), so the engine's CUDA graph is reused: uint8
  pixels, normalized inside the stem (`ResNet.forward_pixels`); a batch holding a 16-bit
  image goes as float32, normalized as torchvision does.
- On CUDA: two pinned host buffers and two device buffers; copies to the device and GPU
  preprocessing run on a stream of their own, ordered against the forwards by events, so
  batch k+1 crosses (and is decoded and resized) while batch k computes; batch k's results
  are read back only after batch k+1 is queued.

`StageTimes` records where the time went: decode, preprocess, model.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import torch

from ..errors import first_line
from .images import ImageError, Transform, decode, jpeg_components, read_bytes, writable
from .preprocess import check_input, decode_input, resize_crop
from .output import Prediction, Top


def default_workers() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(32, n))


@dataclasses.dataclass
class StageTimes:
    """Seconds spent per stage. decode and preprocess add up every CPU worker's time (and,
    where nvjpeg decodes, the GPU's); model is the engine's time (GPU time on CUDA); waited
    is the time the batching loop waited for the pool; wall is the whole run."""

    images: int = 0
    errors: int = 0
    decode: float = 0.0
    preprocess: float = 0.0
    model: float = 0.0
    waited: float = 0.0
    wall: float = 0.0
    workers: int = 0
    gpu_decoded: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **seconds: float) -> None:
        with self._lock:
            for k, v in seconds.items():
                setattr(self, k, getattr(self, k) + v)

    def summary(self) -> str:
        """The one line `fastres predict` ends with."""
        busy = self.decode + self.preprocess + self.model
        share = (lambda v: f"{100 * v / busy:.0f}%") if busy > 0 else (lambda v: "-")
        where = f"{self.workers} CPU workers" + (f", nvjpeg for {self.gpu_decoded}" if self.gpu_decoded else "")
        errors = f" ({self.errors} failed)" if self.errors else ""
        if self.errors >= self.images:  # nothing classified: no rate to give
            rate = "none classified"
        else:
            rate = f"{self.images / self.wall:.1f} img/s" if self.wall > 0 else "- img/s"
        noun = "image" if self.images == 1 else "images"
        return (f"{self.images} {noun}{errors} in {self.wall:.2f} s, {rate}; time: decode "
                f"{share(self.decode)} ({self.decode:.2f} s, {where}), preprocess {share(self.preprocess)} "
                f"({self.preprocess:.2f} s), model {share(self.model)} ({self.model:.2f} s); "
                f"waited {self.waited:.2f} s for input")


@dataclasses.dataclass
class Item:
    """One input on its way: a crop [3, C, C] (CPU, or on the device), or a JPEG's bytes for
    nvjpeg, or the error that stops it."""

    index: int
    path: str | None
    crop: torch.Tensor | None = None
    jpeg: bytearray | None = None
    error: str | None = None


def nvjpeg_can_take(data: bytearray) -> bool:
    """Whether nvjpeg gets this JPEG: complete (ends with the end-of-image marker, so a
    truncated file meets the CPU decoder's error) with 1 or 3 components (not CMYK)."""
    return bytes(data[-2:]) == b"\xff\xd9" and jpeg_components(data) in (1, 3)


def load_item(index: int, path: str | None, transform: Transform, max_pixels: int | None, stages: StageTimes,
              jpeg_to_gpu: bool, data: bytes | bytearray | memoryview | None = None, mode: str = "exact") -> Item:
    """A worker's job: read, decode and crop one file (for nvjpeg: read and check it only),
    through `fastres.preprocess`'s steps in `mode` ("exact" or "fast"). With `data` (an
    encoded file's bytes) nothing is read: `path` only names it; a bytearray is read in place,
    other bytes copied once at most (see `decode_checked`)."""
    t0 = time.perf_counter()
    try:
        if data is None:
            data = read_bytes(path)
        if jpeg_to_gpu and check_input(data, max_pixels)[0] == "JPEG":
            data = writable(data)  # nvjpeg's input, and the CPU decoder's where it refuses the file
            if nvjpeg_can_take(data):
                stages.add(decode=time.perf_counter() - t0)
                return Item(index, path, jpeg=data)
        img, size = decode_input(data, transform.resize, mode, max_pixels)
    except ImageError as exc:
        stages.add(decode=time.perf_counter() - t0)
        return Item(index, path, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one image's failure (a MemoryError, say) must not stop the others
        stages.add(decode=time.perf_counter() - t0)
        return Item(index, path, error=f"cannot decode: {first_line(exc)}")
    t1 = time.perf_counter()
    stages.add(decode=t1 - t0)
    try:
        crop = resize_crop(img, transform.resize, transform.crop, mode=mode, interpolation=transform.interpolation,
                           size=size)
    except ImageError as exc:
        return Item(index, path, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the others
        return Item(index, path, error=f"cannot resize: {first_line(exc)}")
    finally:
        stages.add(preprocess=time.perf_counter() - t1)
    return Item(index, path, crop=crop)



class _Batch:
    """One submitted batch: its items, its slot, and (until read back) its device results."""

    def __init__(self, items: list[Item], slot: int, rows: int):
        self.items, self.slot, self.rows = items, slot, rows
        self.values = self.indices = self.logits = None
        self.events: dict[str, torch.cuda.Event] = {}
        self.cpu_model_s = 0.0
        # nvjpeg's decoded images, alive until the batch finishes (see ImageBatcher._decode_on_gpu)
        self.keep: list[torch.Tensor] = []


class ImageBatcher:
    """Images (decoded crops, or JPEGs for nvjpeg) in fixed-shape batches through `engine`, results in
    input order."""

    def __init__(self, engine, transform: Transform, labels: Sequence[str], *, batch_size: int, topk: int,
                 stages: StageTimes, gpu_decode: bool = False, hw: tuple[int, int] | None = None):
        self.engine, self.transform, self.labels = engine, transform, list(labels)
        self.batch_size, self.topk, self.stages = int(batch_size), int(topk), stages
        self.device = engine.device
        self.cuda = self.device.type == "cuda"
        self.gpu_decode = gpu_decode and self.cuda
        self.hw = (transform.crop, transform.crop) if hw is None else (int(hw[0]), int(hw[1]))
        shape = (self.batch_size, 3, *self.hw)
        with torch.inference_mode(False):
            self.host = [torch.zeros(shape, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(2)]
            self.dev = [torch.zeros(shape, dtype=torch.uint8, device=self.device) for _ in range(2)] if self.cuda else self.host
        self.stream, self._owned = None, False
        if self.cuda:
            from ..streams import acquire_stream

            # Copies and GPU preprocessing: a stream of fastres' own (never one a caller
            # shares), or a pooled one where the driver cannot make one, as for the engine.
            self.stream, self._owned = acquire_stream(self.device)
            self.copied = [None, None]     # host buffer s may be refilled once its copy is done
            self.consumed = [None, None]   # device buffer s may be rewritten once its forward has read it
        self._slot = 0

    def on_device(self, fn: Callable, *args):
        """fn(*args) for tensors on the engine's device, on the batcher's stream (where the
        batch is assembled: no further ordering needed); callable from worker threads."""
        if not self.cuda:
            return fn(*args)
        with torch.cuda.stream(self.stream):
            return fn(*args)

    def after_caller(self) -> None:
        """Order the batcher's stream after the caller's work so far (its input tensors)."""
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def close(self) -> None:
        if self.stream is not None:
            from ..streams import release_stream

            release_stream(self.stream, self._owned)  # a pooled stream is PyTorch's: never destroyed
            self.stream = None

    # -- one batch in -------------------------------------------------------------------------
    def submit(self, items: list[Item], rows: int | None = None) -> _Batch:
        """Queue one batch: its items' crops (or nvjpeg's JPEGs) into a buffer slot, to the
        device, through the engine. rows: the rows the engine runs (default the batch size;
        at least the live items), the first ones of the buffers: a server pads each batch to
        the smallest of its captured sizes, through one set of buffers."""
        rows = self.batch_size if rows is None else int(rows)
        if not 1 <= rows <= self.batch_size:
            raise ValueError(f"rows must be between 1 and the batch size {self.batch_size}, got {rows}")
        batch = _Batch(items, self._slot, rows)
        self._slot ^= 1
        if any(it.jpeg is not None for it in items):
            self._decode_on_gpu(batch)
        live = [it for it in items if it.error is None]
        batch.items = items
        if not live:
            return batch
        if len(live) > rows:
            raise ValueError(f"{len(live)} images for a batch of {rows} rows")
        if any(it.crop.dtype != torch.uint8 for it in live):
            x = self._float_batch(live, rows)
            return self._forward(batch, x, pixels=False)
        return self._forward(batch, self._pixel_batch(batch, live), pixels=True)

    def _decode_on_gpu(self, batch: _Batch) -> None:
        """nvjpeg for the batch's JPEGs (batched), then the crops on the device; a JPEG it
        fails on goes to the CPU decoder, which says what is wrong with it."""
        from torchvision.io import ImageReadMode, decode_jpeg

        jpegs = [it for it in batch.items if it.jpeg is not None]
        with torch.cuda.stream(self.stream):
            start = torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            datas = [torch.frombuffer(it.jpeg, dtype=torch.uint8) for it in jpegs]
            try:
                images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            except Exception:  # noqa: BLE001 - one bad file fails the whole call: go one by one
                images = []
                for d in datas:
                    try:
                        images.append(decode_jpeg([d], mode=ImageReadMode.RGB, device=self.device)[0])
                    except Exception:  # noqa: BLE001
                        images.append(None)
            decoded = torch.cuda.Event(enable_timing=True)
            decoded.record(self.stream)
            # nvjpeg writes the images on a stream of its own and the crops below read them in
            # kernels still queued when this returns: the batch holds them until it finishes.
            batch.keep = [img for img in images if img is not None]
            for it, img in zip(jpegs, images):
                data, it.jpeg = it.jpeg, None
                if img is None:
                    self._cpu_fallback(it, data)
                    continue
                try:
                    it.crop = self.transform(img)
                    self.stages.gpu_decoded += 1
                except Exception:  # noqa: BLE001
                    self._cpu_fallback(it, data)
            kept = torch.cuda.Event()
            kept.record(self.stream)  # after the last kernel reading the decoded images
            batch.events.update(gpu_start=start, gpu_decoded=decoded, gpu_kept=kept)  # GPU time: read back in finish

    def _cpu_fallback(self, it: Item, data: bytearray) -> None:
        t0 = time.perf_counter()
        try:
            img = decode(data, None)  # its header was held to the limits by the worker
            t1 = time.perf_counter()
            t = self.transform
            it.crop = resize_crop(img, t.resize, t.crop, interpolation=t.interpolation)
            self.stages.add(decode=t1 - t0, preprocess=time.perf_counter() - t1)
        except ImageError as exc:
            it.error = str(exc)
            self.stages.add(decode=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001
            it.error = f"cannot decode: {first_line(exc)}"

    def _pixel_batch(self, batch: _Batch, live: list[Item]) -> torch.Tensor:
        """The uint8 batch on the engine's device: CPU crops through the pinned buffer, device
        crops copied in place; rows past the live items keep old pixels (their results are dropped)."""
        s = batch.slot
        t0 = time.perf_counter()
        host, dev = self.host[s][:batch.rows], self.dev[s][:batch.rows]
        if not self.cuda:
            for row, it in enumerate(live):
                host[row].copy_(it.crop)
            self.stages.add(preprocess=time.perf_counter() - t0)
            return host
        if self.copied[s] is not None:
            self.copied[s].synchronize()  # the pinned buffer's previous copy has left
        on_host = [(row, it) for row, it in enumerate(live) if it.crop.device.type == "cpu"]
        for row, it in on_host:
            host[row].copy_(it.crop)
        with torch.cuda.stream(self.stream):
            if self.consumed[s] is not None:
                self.stream.wait_event(self.consumed[s])  # the last forward has read dev[s]
            if on_host:
                dev.copy_(host, non_blocking=True)
            for row, it in enumerate(live):
                if it.crop.device.type == "cuda":
                    dev[row].copy_(it.crop)
            ready = torch.cuda.Event(enable_timing=True)
            ready.record(self.stream)
        self.copied[s] = ready
        batch.events["ready"] = ready
        self.stages.add(preprocess=time.perf_counter() - t0)
        return dev

    def _float_batch(self, live: list[Item], rows: int) -> torch.Tensor:
        """A batch holding 16-bit images: float32, normalized as torchvision does (each image
        scaled by its own dtype's maximum), padded to `rows`."""
        t0 = time.perf_counter()
        if self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)  # device crops were made there
            for it in live:
                if it.crop.device.type == "cuda":
                    it.crop.record_stream(current)
        x = torch.zeros((rows, 3, *self.hw), device=self.device)
        for row, it in enumerate(live):
            x[row] = self.transform.normalize(it.crop.to(self.device))
        self.stages.add(preprocess=time.perf_counter() - t0)
        return x

    def _forward(self, batch: _Batch, x: torch.Tensor, *, pixels: bool) -> _Batch:
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self.cuda:
                current = torch.cuda.current_stream(self.device)
                if "ready" in batch.events:
                    current.wait_event(batch.events["ready"])
                else:
                    current.wait_stream(self.stream)
                start = torch.cuda.Event(enable_timing=True)
                start.record(current)
            logits = (self.engine.forward_pixels(x, self.transform.mean, self.transform.std) if pixels
                      else self.engine(x)).float()
            values, indices = torch.softmax(logits, dim=1).topk(self.topk, dim=1)
            if self.cuda:
                # Read back into pinned memory behind the forward: `finish` waits for this
                # batch's event only, not for the batches queued after it.
                values, indices, logits = (t.to("cpu", non_blocking=True) for t in (values, indices, logits))
                done = torch.cuda.Event(enable_timing=True)
                done.record(current)
                batch.events.update(model_start=start, model_done=done)
                if pixels:
                    self.consumed[batch.slot] = done
            batch.values, batch.indices, batch.logits = values, indices, logits
        batch.cpu_model_s = time.perf_counter() - t0
        return batch

    # -- one batch out ------------------------------------------------------------------------
    def finish(self, batch: _Batch) -> list[tuple[int, Prediction]]:
        """(input index, prediction) of each of the batch's items (waits for its results)."""
        live = [it for it in batch.items if it.error is None]
        values = indices = logits = None
        if live:
            ev = batch.events
            if self.cuda:
                ev["model_done"].synchronize()
                self.stages.add(model=ev["model_start"].elapsed_time(ev["model_done"]) / 1e3)
                if "gpu_start" in ev:
                    self.stages.add(decode=ev["gpu_start"].elapsed_time(ev["gpu_decoded"]) / 1e3)
                    if "ready" in ev:
                        self.stages.add(preprocess=ev["gpu_decoded"].elapsed_time(ev["ready"]) / 1e3)
            else:
                self.stages.add(model=batch.cpu_model_s)
            values, indices, logits = batch.values, batch.indices, batch.logits
        if batch.keep:
            batch.events["gpu_kept"].synchronize()  # no kernel reads them any more
            batch.keep = []
        out, row = [], 0
        for it in batch.items:
            if it.error is not None:
                out.append((it.index, Prediction(it.path, error=it.error)))
                continue
            top = tuple(Top(int(i), self.labels[int(i)], float(p)) for p, i in zip(values[row], indices[row]))
            out.append((it.index, Prediction(it.path, top=top, logits=logits[row].clone())))
            row += 1
        return out


def run_pipeline(sources: Iterable[Callable[[], Item]], batcher: ImageBatcher, *, workers: int,
                 lookahead: int) -> Iterator[Prediction]:
    """Run every source (a worker's job returning an Item) on a pool of `workers` threads, at
    most `lookahead` ahead of the batching loop; yield one Prediction per source, in order,
    each batch's as soon as it is read back (the next batch is queued first)."""
    stages = batcher.stages
    t_start = time.perf_counter()
    pending: collections.deque = collections.deque()
    in_flight: collections.deque[_Batch] = collections.deque()
    ready: dict[int, Prediction] = {}
    next_out = 0
    items: list[Item] = []
    it_sources = iter(sources)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="fastres-decode") as pool:

        def top_up():
            while len(pending) < lookahead:
                job = next(it_sources, None)
                if job is None:
                    return
                pending.append(pool.submit(job))

        def drain(keep: int):
            nonlocal next_out
            while len(in_flight) > keep:
                ready.update(batcher.finish(in_flight.popleft()))
            while next_out in ready:
                pred = ready.pop(next_out)
                stages.add(images=1, errors=0 if pred.ok else 1)
                next_out += 1
                yield pred

        top_up()
        live = 0
        try:
            while pending:
                t0 = time.perf_counter()
                item = pending.popleft().result()
                stages.add(waited=time.perf_counter() - t0)
                top_up()
                items.append(item)
                live += item.error is None
                if live == batcher.batch_size:
                    in_flight.append(batcher.submit(items))
                    items, live = [], 0
                    yield from drain(keep=1)
                elif live == 0 and len(items) >= batcher.batch_size:
                    ready.update((it.index, Prediction(it.path, error=it.error)) for it in items)
                    items = []  # a run of failures: said now, not held for a batch
                    yield from drain(keep=len(in_flight))
            if items:
                in_flight.append(batcher.submit(items))
            yield from drain(keep=0)
        finally:
            for f in pending:
                f.cancel()
            stages.wall += time.perf_counter() - t_start


__all__ = ["ImageBatcher", "Item", "StageTimes", "default_workers", "load_item", "run_pipeline"]
