"""Online serving on Ray Serve: `ImageClassifier`, a deployment with dynamic batching
(``@serve.batch``), and `app`, which binds it with its options for ``serve.run``.

HTTP: ``POST /predict`` with an image file's bytes as the body answers 200 and
``{"top": [{"index", "label", "prob"}, ...]}`` (a ``fastres predict`` line without its
path); ``GET /healthz`` answers 200 ``{"status": "ok"}`` from a replica that is up (its
engine built and, on a GPU, its batch sizes compiled and captured). Bad requests: see
`fastres.scale.http`. Every answer to /predict carries ``x-fastres-batch``: how many
requests its batch held.

Batching: requests wait up to `batch_wait_ms` for up to `max_batch` others; a batch of n
runs at the smallest captured size >= n (the powers of two below max_batch, and max_batch),
padded, so on a GPU each size's CUDA graph, captured at start-up, is reused.
``max_ongoing_requests`` is twice max_batch: Serve's default (5) would cap every batch at 5,
and the second max_batch lets the next batch gather while one runs.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any

from ..predict.images import DEFAULT_MAX_PIXELS
from .cluster import Placement, cluster_placement, for_workers, import_serve
from .http import MAX_BODY, HttpError, check_image, predict_answer, read_body, route

serve = import_serve()
logger = logging.getLogger("ray.serve")

APP_NAME = "fastres"
MAX_BATCH_LIMIT = 1024


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The captured batch sizes: powers of two below max_batch, then max_batch (8: 1, 2, 4, 8;
    12: 1, 2, 4, 8, 12): at most twice the rows a batch needs, and few CUDA graphs."""
    if not 1 <= max_batch <= MAX_BATCH_LIMIT:
        raise ValueError(f"max_batch must be between 1 and {MAX_BATCH_LIMIT}, got {max_batch}")
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return (*sizes, max_batch)


def padded_size(n: int, sizes: tuple[int, ...]) -> int:
    """The smallest captured size that holds n requests."""
    return next(s for s in sizes if s >= n)


class ImageClassifier:
    """One replica: a `fastres.Predictor` built once, answering HTTP requests in batches."""

    def __init__(self, weights: str, *, device: str = "cpu", dtype: str | None = None, max_batch: int = 8,
                 batch_wait_ms: float = 5.0, max_body: int = MAX_BODY, topk: int = 5, resize: int | None = None,
                 crop: int | None = None, labels: Any = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 workers: int | None = None, warmup: bool | None = None, preprocess: str = "exact"):
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
        self.classify.set_max_batch_size(max_batch)
        self.classify.set_batch_wait_timeout_s(batch_wait_ms / 1000)
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

        try:
            path = route(request.method, request.url.path)
            if path == "/healthz":
                return JSONResponse({"status": "ok"})
            body = await read_body(request.headers, request.stream(), self.max_body)
            check_image(body, self.max_pixels)
        except HttpError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
        status, payload, n = await self.classify(body)
        return JSONResponse(payload, status_code=status, headers={"x-fastres-batch": str(n)})

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)  # both set per replica in __init__
    async def classify(self, bodies: list[bytes]) -> list[tuple[int, dict, int]]:
        """(status, JSON body, requests in the batch) for each body, in order."""
        n = len(bodies)
        size = padded_size(n, self.sizes)
        run = functools.partial(self.predictor.predict_bytes, bodies, pad_to=size)
        try:
            # In a thread: the event loop keeps taking requests, which gather into the next batch.
            preds = await asyncio.get_running_loop().run_in_executor(None, run)
        except Exception as exc:  # noqa: BLE001 - answered as 500; the replica decides whether it can go on
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            logger.exception("fastres batch of %d failed", n)
            if "CUDA" in message or "cuda" in message:
                # A CUDA error poisons the process: the health check tells Serve to replace it.
                self.broken = message
            return [(500, {"error": f"internal error: {message}"}, n)] * n
        logger.info("fastres batch of %d request(s), run at %d rows", n, size)
        return [(*predict_answer(p), n) for p in preds]

    async def check_health(self) -> None:
        """Serve calls this periodically: raising makes it replace the replica."""
        if self.broken is not None:
            raise RuntimeError(f"fastres replica unusable after {self.broken}")


def app(weights: str | os.PathLike, *, replicas: int = 1, max_batch: int = 8, batch_wait_ms: float = 5.0,
        max_body: int = MAX_BODY, cpus: float | None = None, placement: Placement | None = None, **options: Any):
    """The bound Serve application (for ``serve.run``): `replicas` ImageClassifier replicas,
    each on one GPU of the connected cluster (without GPUs: on 1 CPU, under the interpreter).
    `options` go to ImageClassifier (dtype, topk, resize, crop, labels, max_pixels, workers,
    warmup, preprocess)."""
    batch_sizes(max_batch)  # its ValueError here, not in a replica
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if batch_wait_ms < 0:
        raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if max_body < 1:
        raise ValueError(f"max_body must be >= 1 byte, got {max_body}")
    placement = placement or cluster_placement(cpus=cpus)
    deployment = serve.deployment(ImageClassifier, name="ImageClassifier", num_replicas=replicas,
                                  max_ongoing_requests=2 * max_batch, ray_actor_options=placement.ray_options())
    options["labels"] = for_workers(options.get("labels"))
    return deployment.bind(str(for_workers(weights)), device=placement.device, max_batch=max_batch,
                           batch_wait_ms=batch_wait_ms, max_body=max_body,
                           workers=options.pop("workers", None) or max(1, int(placement.num_cpus)), **options)
