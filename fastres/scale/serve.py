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
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..batch_shapes import MAX_BATCH_LIMIT, batch_sizes, padded_size
from ..predict.images import DEFAULT_MAX_PIXELS
from ..errors import first_line
from .batcher import (BODY_TIMEOUT_S, DRAIN_S, TIMEOUT_S, WATCHDOG_FACTOR, WATCHDOG_FIRST_S, WATCHDOG_MIN_S, Draining,
                      Refused, RequestBatcher, Unhealthy)
from .feed import Feed, Watchdog
from .endpoints import Endpoints
from .metrics import ReplicaMetrics
from .oip import ModelInfo
from .work import Answer, Work
from .cluster import Placement, cluster_placement, for_workers, import_serve
from .http import MAX_BODY, HttpError, check_image, predict_answer, read_body, route

if TYPE_CHECKING:
    import numpy as np

    from ..predict.output import Prediction

serve = import_serve()
logger = logging.getLogger("ray.serve")

APP_NAME = "fastres"
HEALTH_CHECK_S = 2.0  # how often Serve asks a replica whether it is healthy (a hung batch: see _hung)
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


class MetricsHub:
    """The application's metrics store (`fastres.scale.metrics.MetricsStore`), a deployment of
    one replica beside the classifiers: each classifier pushes its counts at every health
    check, and the one a scrape reaches answers the sum."""

    def __init__(self):
        from .metrics import MetricsStore

        self.store = MetricsStore()

    def push(self, snapshot: dict) -> None:
        self.store.push(snapshot)

    def merged(self, own: dict | None = None) -> dict:
        return self.store.merged(own)


class ImageClassifier(Endpoints):
    """One replica: a `fastres.Predictor` built once, answering HTTP and gRPC requests in
    batches (``POST /predict``, the Open Inference Protocol: `fastres.scale.endpoints`)."""

    def __init__(self, weights: str, *, device: str = "cpu", dtype: str | None = None, max_batch: int = 8,
                 batch_wait_ms: float = 5.0, max_queue: int | None = None, timeout_s: float = TIMEOUT_S,
                 body_timeout_s: float = BODY_TIMEOUT_S, max_body: int = MAX_BODY, topk: int = 5,
                 resize: int | None = None, crop: int | None = None, labels: Any = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int | None = None, warmup: bool | None = None,
                 preprocess: str = "exact", watchdog_factor: float = WATCHDOG_FACTOR,
                 watchdog_min_s: float = WATCHDOG_MIN_S, watchdog_first_s: float = WATCHDOG_FIRST_S,
                 model_name: str | None = None, hub=None):
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
        # bodies and queueing requests, which form the next batch meanwhile; the Feed's pool
        # decodes each request as it arrives, so the next batch is decoded while this one runs.
        self.engine_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastres-engine")
        self.feed = Feed(self.predictor, max_batch=max_batch, workers=self.predictor.workers)
        self.watchdog = Watchdog(watchdog_factor, watchdog_min_s, watchdog_first_s)
        self.batcher = RequestBatcher(self.classify, max_batch=max_batch, wait_s=batch_wait_ms / 1000,
                               max_queue=max_queue or default_queue(max_batch))
        self.broken: str | None = None
        self.max_batch = int(max_batch)
        engine = self.predictor.engine
        self.model_info = ModelInfo(model_name or engine.arch, engine.num_classes, self.predictor.transform.crop,
                                    labels=self.predictor.labels if self.predictor.has_labels else None)
        self.metrics = ReplicaMetrics(_replica_id())
        self.hub, self._pushed = hub, None
        if warmup if warmup is not None else self.predictor.device.type == "cuda":
            self._warm_up()
        logger.info("fastres replica ready: %r, batch sizes %s", self.predictor, self.sizes)

    def _warm_up(self) -> None:
        """Compile and capture every batch size now, through the replica's own buffers, not on
        the first requests that need it (under the interpreter nothing is compiled or
        captured: the default skips it there)."""
        import numpy as np

        crop = self.predictor.transform.crop
        for size in self.sizes:
            self.feed.run(self.feed.pixels(np.zeros((size, crop, crop, 3), dtype=np.uint8)), size)

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        arrived = time.monotonic()
        if request.url.path.startswith("/v2"):
            return await self.oip_rest(request, arrived)
        try:
            path = route(request.method, request.url.path)
            if path == "/metrics":
                return await self.metrics_text()
            if path == "/healthz":
                if self.broken is not None:
                    return JSONResponse({"error": f"this replica is unhealthy ({self.broken})"}, status_code=503)
                if self.batcher.draining:
                    return JSONResponse({"error": "the server is shutting down"}, status_code=503)
                return JSONResponse({"status": "ok", "queued": self.batcher.queued_rows,
                                     "running": self.batcher.running})
            self.admit()  # a full queue, a drain or a hung engine: refused before the body is read
            body = await read_body(request.headers, request.stream(), self.max_body, self.body_timeout_s)
            preds, n = await self.infer(arrived, images=[body])
            status, payload = predict_answer(preds[0])
        except (HttpError, Refused) as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
        except Exception as exc:  # noqa: BLE001 - a bug here is still a JSON answer, not Serve's plain text
            logger.exception("fastres request failed")
            return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
        return JSONResponse(payload, status_code=status, headers={"x-fastres-batch": str(n)})

    @property
    def ready(self) -> bool:
        """Whether this replica takes requests: not draining, not marked unhealthy."""
        return self.broken is None and not self.batcher.draining

    async def infer(self, arrived: float, *, images: list[bytearray] | None = None,
                    pixels: np.ndarray | None = None) -> tuple[list[Prediction], int]:
        """The predictions for one request's images, through the batcher: `images` (encoded
        files, each checked by its header first: 400) or `pixels` (uint8 [N, crop, crop, 3]);
        with the number of requests in (the first of) their batch(es). A request of more than
        max_batch images goes as several batch items of max_batch at most, none split
        further. Records the request in the metrics (Triton's rules: `fastres.scale.metrics`).
        Raises HttpError (400: an image that does not decode; 500: the engine failed) or a
        refusal (503, 504)."""
        self.admit()  # once for all its parts, before any decodes (its body may have taken a while)
        if images is not None:
            for i, body in enumerate(images):
                try:
                    check_image(body, self.max_pixels)
                except HttpError as exc:
                    raise HttpError(400, exc.message if len(images) == 1 else f"IMAGE[{i}]: {exc.message}") from None
            items = [self.feed.decode(body) for body in images]
        else:
            items = self.feed.pixels(pixels)
        works = [Work(items[i:i + self.max_batch]) for i in range(0, len(items), self.max_batch)]
        deadline = arrived + self.timeout_s
        try:
            answers = await asyncio.gather(*(self._submit(work, deadline) for work in works))
        except Refused as exc:
            if exc.queued:  # refused before it was queued, a request counts in no metric (as Triton's)
                self.metrics.failure("BACKEND" if isinstance(exc, Unhealthy) else "REJECTED")
            raise
        except asyncio.CancelledError:
            self.metrics.failure("CANCELED")
            raise
        except Exception:
            self.metrics.failure("OTHER")
            raise
        finally:
            for work in works:
                work.cancel()  # left before its batch (deadline, drain): a decode not begun is dropped
        failed = next((a.error for a in answers if a.error is not None), None)
        preds = [p for a in answers for p in a.preds]
        bad = [(i, p.error) for i, p in enumerate(preds) if p.error is not None]
        if failed is not None or bad:
            self.metrics.failure("BACKEND")
            if failed is not None:
                raise HttpError(500, failed)
            i, error = bad[0]
            raise HttpError(400, error if len(preds) == 1 else f"IMAGE[{i}]: {error}")
        self.metrics.success(
            len(preds), request_us=1e6 * (time.monotonic() - arrived),
            queue_us=1e6 * max(w.started - w.queued for w in works),
            compute_input_us=1e6 * sum(a.wait_s + a.times.input_s for a in answers),
            compute_infer_us=1e6 * sum(a.times.infer_s for a in answers),
            compute_output_us=1e6 * sum(a.times.output_s for a in answers))
        return preds, answers[0].requests

    async def _submit(self, work: Work, deadline: float) -> Answer:
        work.queued = time.monotonic()
        return await self.batcher.submit(work, deadline=deadline, rows=work.rows, bound=False)

    def metrics_snapshot(self) -> dict:
        """This replica's metrics now (`ReplicaMetrics.snapshot`), its queue as pending."""
        self.metrics.pending = len(self.batcher.queue)
        return self.metrics.snapshot()

    def admit(self) -> None:
        """Refuse a request now (503) when this replica cannot take it: a hung batch marked it
        unhealthy, it drains, or its queue is full."""
        if self.broken is not None:
            raise Unhealthy(f"this replica is unhealthy ({self.broken}); it is being replaced, retry")
        self.batcher.admit()

    async def classify(self, works: list[Work]) -> list[Answer]:
        """One Answer per Work, in order: the batcher's run function, one batch at a time.
        Waits for what is left of the batch's decoding, runs the engine on the engine thread
        at the batch's padded size, under the watchdog."""
        t0 = time.monotonic()
        for work in works:
            work.started = t0
            await work.ready()
        decoded = time.monotonic()
        items = [it for work in works for it in work.items]
        live = sum(it.error is None for it in items)
        size = padded_size(max(1, live), self.sizes)
        run = self.engine_thread.submit(self.feed.run, items, size)
        limit = self.watchdog.limit(size)
        try:
            preds, times = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(run)), limit)
        except asyncio.TimeoutError:
            self._hung(size, limit)
            raise Unhealthy(f"the batch ran over {limit:.3g} s, {self.watchdog.factor:g} times its usual time: "
                            "this replica is marked unhealthy and will be replaced") from None
        except Exception as exc:  # noqa: BLE001 - answered as 500; the replica decides whether it can go on
            message = first_line(exc)
            logger.exception("fastres batch of %d failed", len(items))
            if "CUDA" in message or "cuda" in message:
                # A CUDA error poisons the process: the health check tells Serve to replace it.
                self.broken = message
            return [Answer(len(works), error=f"internal error: {message}") for _ in works]
        self.watchdog.record(size, time.monotonic() - decoded)
        self.metrics.execution()
        logger.info("fastres batch of %d request(s), %d image(s), run at %d rows", len(works), len(items), size)
        out, start = [], 0
        for work in works:
            n = len(work.items)
            out.append(Answer(len(works), preds[start:start + n], times, decoded - work.started))
            start += n
        return out

    def _hung(self, size: int, limit: float) -> None:
        """A batch ran past the watchdog's limit: mark the replica unhealthy (its health
        check fails, so Serve replaces it), refuse new requests, and answer every request it
        holds with 503 now, rather than leave them waiting on an engine that may never return."""
        self.broken = f"a batch of {size} rows ran past {limit:.3g} s"
        logger.error("fastres replica unhealthy: %s", self.broken)
        self.batcher.drain()
        self.batcher.abort(Unhealthy(f"this replica is unhealthy ({self.broken}); it is being replaced, retry"))

    async def drain(self, seconds: float) -> tuple[str, int, int]:
        """Take no new request (503 from now on) and return once every request queued or
        running is answered, or after `seconds`, answering those left with 503: (this
        replica's id, batches run, requests answered 503 at the end). The drain happens once:
        a call while or after another runs returns the same count."""
        left = await self.batcher.shut_down(seconds, Draining(
            f"the server is shutting down and could not answer within its drain time ({seconds:g} s)"))
        return _replica_id(), self.batcher.batches_run, left

    async def check_health(self) -> None:
        """Serve calls this periodically (every HEALTH_CHECK_S): raising makes it replace the
        replica. Also pushes this replica's metrics to the application's hub, when they
        changed, so that a scrape answered by another replica counts them."""
        if self.hub is not None:
            await self._push_metrics()
        if self.broken is not None:
            raise RuntimeError(f"fastres replica unusable after {self.broken}")

    async def _push_metrics(self) -> None:
        snap = self.metrics_snapshot()
        key = (snap["counters"], snap["failures"], snap["pending"])
        if key == self._pushed:
            return
        try:
            await self.hub.push.remote(snap)
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a health check
            logger.warning("fastres: could not push metrics: %s", first_line(exc))
            return
        self._pushed = key


def _replica_id() -> str:
    """This replica's id (outside a replica, in tests: the process)."""
    try:
        return str(serve.get_replica_context().replica_id)
    except Exception:  # noqa: BLE001
        return f"pid {os.getpid()}"


def app(weights: str | os.PathLike, *, replicas: int = 1, max_batch: int = 8, batch_wait_ms: float = 5.0,
        max_queue: int | None = None, timeout_s: float = TIMEOUT_S, body_timeout_s: float = BODY_TIMEOUT_S,
        drain_s: float = DRAIN_S, max_body: int = MAX_BODY, cpus: float | None = None,
        placement: Placement | None = None, **options: Any):
    """The bound Serve application (for ``serve.run``): `replicas` ImageClassifier replicas,
    each on one GPU of the connected cluster (without GPUs: on 1 CPU, under the interpreter).
    max_queue: requests waiting per replica (default 4 x max_batch); timeout_s, body_timeout_s:
    see ImageClassifier; drain_s: what Serve's graceful shutdown gives a replica (call its
    `drain` first to answer the requests in flight). `options` go to ImageClassifier (dtype,
    topk, resize, crop, labels, max_pixels, workers, warmup, preprocess, model_name,
    watchdog_factor, watchdog_min_s, watchdog_first_s). The application holds a second
    deployment, MetricsHub (one replica, no CPU), whose handle each ImageClassifier gets.
    gRPC: start Serve with `grpc_options()`."""
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
                                  health_check_period_s=HEALTH_CHECK_S,
                                  ray_actor_options=placement.ray_options())
    # The metrics' store: no CPU of its own (it only sums small dicts), so it never takes a
    # place an engine replica needs.
    hub = serve.deployment(MetricsHub, name="MetricsHub", num_replicas=1,
                           ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": dict(placement.env)}})
    options["labels"] = for_workers(options.get("labels"))
    return deployment.bind(str(for_workers(weights)), device=placement.device, max_batch=max_batch,
                           batch_wait_ms=batch_wait_ms, max_queue=max_queue, timeout_s=timeout_s,
                           body_timeout_s=body_timeout_s, max_body=max_body,
                           workers=options.pop("workers", None) or max(1, int(placement.num_cpus)), hub=hub.bind(),
                           **options)


GRPC_SERVICER = "fastres.scale.grpc_service.add_inference_service"


def grpc_options(port: int):
    """Serve's gRPC options for the Open Inference Protocol's service on `port` (Serve's gRPC
    proxy imports `fastres.scale.grpc_service`; the replicas parse the messages with
    tritonclient's classes: tritonclient[grpc] must be installed where they run)."""
    from ray.serve.config import gRPCOptions

    return gRPCOptions(port=port, grpc_servicer_functions=[GRPC_SERVICER])


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
