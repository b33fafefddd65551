"""Online serving on Ray Serve: `ImageClassifier`, a deployment with dynamic batching
(`fastres.scale.batcher`), and `app`, which binds it with its options for ``serve.run``.

HTTP: ``POST /predict`` with an image file's bytes as the body answers 200 and
``{"top": [{"index", "label", "prob"}, ...]}`` (a ``fastres predict`` line without its
path); ``GET /healthz`` answers 200 ``{"status": "ok", "queued": q, "running": r}`` from a
replica that is up (its engine built and, on a GPU, its batch sizes compiled and captured):
q requests wait in its queue, r are in the batch that runs. Bad requests: see
`fastres.scale.http`. Every answer to /predict carries ``x-fastres-batch``: how many
requests its batch held.

Batching (`fastres.scale.batcher`, not ``@serve.batch``: its module says why): while one batch
runs, the next gathers, and closes at `max_batch` requests or `batch_wait_ms` after its first
request queued, whichever comes first (at once when the replica drains); a batch of n runs at
the smallest captured size >= n (the powers of two below max_batch, and max_batch), padded,
so on a GPU each size's CUDA graph, captured at start-up, is reused.

Limits, each answered at once with a JSON error: the body is read (``body_timeout_s``, else
408) before the request takes a place in the queue; a full queue (`max_queue` waiting
requests) is a 503 with Retry-After; a request not answered within `timeout_s` of its arrival
is a 504; a draining replica (`drain`) answers 503. Serve's ``max_ongoing_requests`` is set
above what the queue and a batch hold (`ongoing_limit`), so that the replica itself, not
Serve's router, sees every request and answers it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from typing import Any

from ..batch_shapes import MAX_BATCH_LIMIT, batch_sizes, padded_size
from ..predict.images import DEFAULT_MAX_PIXELS
from ..errors import first_line
from .batcher import BODY_TIMEOUT_S, DRAIN_S, TIMEOUT_S, Draining, Refused, RequestBatcher
from .cluster import Placement, cluster_placement, for_workers, import_serve
from .http import MAX_BODY, HttpError, check_image, predict_answer, read_body, route

serve = import_serve()
logger = logging.getLogger("ray.serve")

APP_NAME = "fastres"
READ_SLOTS = 64  # requests a replica may hold while their bodies arrive, over its queue and batch


def default_queue(max_batch: int) -> int:
    """The default bound of a replica's queue: 4 batches wait behind the running one."""
    return 4 * max_batch


def ongoing_limit(max_batch: int, max_queue: int) -> int:
    """Serve's max_ongoing_requests for a replica: its batch, its queue, READ_SLOTS requests
    whose bodies are still arriving (each for at most body_timeout_s) and room to refuse
    more with 503 (Serve's own queue in front of a full replica has no bound, and answers
    in plain text)."""
    return max_batch + max_queue + READ_SLOTS + max_batch


class ImageClassifier:
    """One replica: a `fastres.Predictor` built once, answering HTTP requests in batches."""

    def __init__(self, weights: str, *, device: str = "cpu", dtype: str | None = None, max_batch: int = 8,
                 batch_wait_ms: float = 5.0, max_queue: int | None = None, timeout_s: float = TIMEOUT_S,
                 body_timeout_s: float = BODY_TIMEOUT_S, max_body: int = MAX_BODY, topk: int = 5,
                 resize: int | None = None, crop: int | None = None, labels: Any = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None, warmup: bool | None = None,
                 preprocess: str = "exact"):
        import torch

        from ..kernels import interpreting
        from ..predict.predictor import Predictor

        if torch.device(device).type == "cpu" and not interpreting():
            raise RuntimeError("fastres: this replica has no GPU and TRITON_INTERPRET is not set: ask for num_gpus=1, "
                               "or pass TRITON_INTERPRET=1 in its runtime_env to run on the CPU")
        torch.set_num_threads(1)  # the decode pool is the parallelism
        self.sizes = batch_sizes(max_batch)
        self.max_body, self.max_pixels = int(max_body), max_pixels
        self.predictor = Predictor(weights, device=device, dtype=dtype, batch_size=max_batch, topk=topk,
                                   resize=resize, crop=crop, labels=labels, decode="auto", workers=workers,
                                   max_pixels=max_pixels, preprocess=preprocess)
        self.timeout_s, self.body_timeout_s = float(timeout_s), float(body_timeout_s)
        # One engine thread: batches run one at a time, and the event loop keeps reading
        # bodies and queueing requests, which form the next batch meanwhile.
        self.engine_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastres-engine")
        self.batcher = RequestBatcher(self.classify, max_batch=max_batch, wait_s=batch_wait_ms / 1000,
                               max_queue=max_queue or default_queue(max_batch))
        self.broken: str | None = None
        if warmup if warmup is not None else self.predictor.device.type == "cuda":
            self._warm_up()
        logger.info("fastres replica ready: %r, batch sizes %s", self.predictor, self.sizes)

    def _warm_up(self) -> None:
        """Compile and capture every batch size now, not on the first requests that need it
        (under the interpreter nothing is compiled or captured: the default skips it there)."""
        import torch

        crop = self.predictor.transform.crop
        for size in self.sizes:
            self.predictor.predict_tensors(torch.zeros((size, 3, crop, crop), dtype=torch.uint8), preprocess=False,
                                           pad_to=size)

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        arrived = time.monotonic()
        try:
            path = route(request.method, request.url.path)
            if path == "/healthz":
                if self.batcher.draining:
                    return JSONResponse({"error": "the server is shutting down"}, status_code=503)
                return JSONResponse({"status": "ok", "queued": len(self.batcher.queue),
                                     "running": self.batcher.running})
            self.batcher.admit()  # a full queue or a drain: refused before the body is read
            body = await read_body(request.headers, request.stream(), self.max_body, self.body_timeout_s)
            check_image(body, self.max_pixels)
            status, payload, n = await self.batcher.submit(body, deadline=arrived + self.timeout_s)
        except (HttpError, Refused) as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
        except Exception as exc:  # noqa: BLE001 - a bug here is still a JSON answer, not Serve's plain text
            logger.exception("fastres request failed")
            return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
        return JSONResponse(payload, status_code=status, headers={"x-fastres-batch": str(n)})

    async def classify(self, bodies: list[bytearray]) -> list[tuple[int, dict, int]]:
        """(status, JSON body, requests in the batch) for each body, in order: the batcher's
        run function, one batch at a time."""
        n = len(bodies)
        size = padded_size(n, self.sizes)
        run = functools.partial(self.predictor.predict_bytes, bodies, pad_to=size)
        try:
            preds = await asyncio.get_running_loop().run_in_executor(self.engine_thread, run)
        except Exception as exc:  # noqa: BLE001 - answered as 500; the replica decides whether it can go on
            message = first_line(exc)
            logger.exception("fastres batch of %d failed", n)
            if "CUDA" in message or "cuda" in message:
                # A CUDA error poisons the process: the health check tells Serve to replace it.
                self.broken = message
            return [(500, {"error": f"internal error: {message}"}, n)] * n
        logger.info("fastres batch of %d request(s), run at %d rows", n, size)
        return [(*predict_answer(p), n) for p in preds]

    async def drain(self, seconds: float) -> tuple[str, int, int]:
        """Take no new request (503 from now on) and return once every request queued or
        running is answered, or after `seconds`, answering those left with 503: (this
        replica's id, batches run, requests answered 503 at the end). The drain happens once:
        a call while or after another runs returns the same count."""
        left = await self.batcher.shut_down(seconds, Draining(
            f"the server is shutting down and could not answer within its drain time ({seconds:g} s)"))
        try:
            me = str(serve.get_replica_context().replica_id)
        except Exception:  # noqa: BLE001 - outside a replica (tests): the process
            me = f"pid {os.getpid()}"
        return me, self.batcher.batches_run, left

    async def check_health(self) -> None:
        """Serve calls this periodically: raising makes it replace the replica."""
        if self.broken is not None:
            raise RuntimeError(f"fastres replica unusable after {self.broken}")


def app(weights: str | os.PathLike, *, replicas: int = 1, max_batch: int = 8, batch_wait_ms: float = 5.0,
        max_queue: int | None = None, timeout_s: float = TIMEOUT_S, body_timeout_s: float = BODY_TIMEOUT_S,
        drain_s: float = DRAIN_S, max_body: int = MAX_BODY, cpus: float | None = None,
        placement: Placement | None = None, **options: Any):
    """The bound Serve application (for ``serve.run``): `replicas` ImageClassifier replicas,
    each on one GPU of the connected cluster (without GPUs: on 1 CPU, under the interpreter).
    max_queue: requests waiting per replica (default 4 x max_batch); timeout_s, body_timeout_s:
    see ImageClassifier; drain_s: what Serve's graceful shutdown gives a replica (call its
    `drain` first to answer the requests in flight). `options` go to ImageClassifier (dtype,
    topk, resize, crop, labels, max_pixels, workers, warmup, preprocess)."""
    batch_sizes(max_batch)  # its ValueError here, not in a replica
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if batch_wait_ms < 0:
        raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if max_body < 1:
        raise ValueError(f"max_body must be >= 1 byte, got {max_body}")
    max_queue = default_queue(max_batch) if max_queue is None else max_queue
    if max_queue < max_batch:
        raise ValueError(f"max_queue must be >= max_batch ({max_batch}): the next batch gathers in the queue, "
                         f"got {max_queue}")
    for name, value in (("timeout_s", timeout_s), ("body_timeout_s", body_timeout_s), ("drain_s", drain_s)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    placement = placement or cluster_placement(cpus=cpus)
    deployment = serve.deployment(ImageClassifier, name="ImageClassifier", num_replicas=replicas,
                                  max_ongoing_requests=ongoing_limit(max_batch, max_queue),
                                  graceful_shutdown_timeout_s=drain_s + 5, graceful_shutdown_wait_loop_s=0.5,
                                  ray_actor_options=placement.ray_options())
    options["labels"] = for_workers(options.get("labels"))
    return deployment.bind(str(for_workers(weights)), device=placement.device, max_batch=max_batch,
                           batch_wait_ms=batch_wait_ms, max_queue=max_queue, timeout_s=timeout_s,
                           body_timeout_s=body_timeout_s, max_body=max_body,
                           workers=options.pop("workers", None) or max(1, int(placement.num_cpus)), **options)


def drain_app(name: str = APP_NAME, replicas: int = 1, drain_s: float = DRAIN_S) -> tuple[int, int, list[str]]:
    """Drain a running application before ``serve.delete``: ask each of its `replicas` to drain
    (`ImageClassifier.drain`: new requests get 503, those in flight are answered within
    drain_s, or get 503) and wait for them. A handle call reaches one replica, chosen by
    Serve's router, so calls go on until each replica has answered one, or drain_s (and 10 s
    of grace for the calls) is over; a round of calls that finds no replica not drained yet is
    followed by half a second's pause, for the router to pick another. Returns (replicas
    drained, requests they answered 503 at the drain's end, each distinct first line of a
    call that failed)."""
    end = time.monotonic() + drain_s + 10
    seen: dict[str, int] = {}
    errors: list[str] = []
    try:
        handle = serve.get_app_handle(name)
    except Exception as exc:  # noqa: BLE001 - nothing to drain
        return 0, 0, [first_line(exc)]
    while len(seen) < replicas and time.monotonic() < end:
        left = max(0.0, end - 10 - time.monotonic())
        calls = [handle.drain.remote(left) for _ in range(replicas - len(seen))]
        found = False
        for call in calls:
            try:
                me, _, aborted = call.result(timeout_s=max(1.0, end - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - a replica gone or restarting has nothing to drain
                if (line := first_line(exc)) not in errors:
                    errors.append(line)
                continue
            if me not in seen:  # a replica's count once, from its first answer
                seen[me] = aborted
                found = True
        if not found and len(seen) < replicas:
            time.sleep(max(0.0, min(0.5, end - time.monotonic())))
    return len(seen), sum(seen.values()), errors
