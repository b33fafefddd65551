"""The Open Inference Protocol's endpoints of a `fastres serve` replica, REST and gRPC, and its
``GET /metrics``: what `ImageClassifier` answers besides ``POST /predict`` and ``GET /healthz``.

The protocol itself (parsing, encoding, the status table) is `fastres.scale.oip`'s; the metrics'
names and meanings are `fastres.scale.metrics`'. Here each endpoint checks what the replica can
take, sends the images through the replica's one batcher (`ImageClassifier.infer`, the same
queue, deadline, body and memory limits as ``/predict``) and answers.

gRPC: Ray Serve's gRPC proxy (its service registered by `fastres.scale.grpc_service`) calls
the ingress deployment's method of the RPC's name with the request's bytes, and sends back the
message it returns; an error is the status code and details set on ``grpc_context``.
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np

from . import oip
from .batcher import Refused
from .grpc_service import parse
from .http import HttpError
from .metrics import CONTENT_TYPE, exposition

logger = logging.getLogger("ray.serve")


def as_oip_error(exc: Exception) -> oip.OipError:
    """The OipError answering `exc`: itself, an HttpError's or a refusal's status and message
    (with their headers: Allow, Retry-After, Connection), else a 500 naming its type."""
    if isinstance(exc, oip.OipError):
        return exc
    if isinstance(exc, (HttpError, Refused)):
        return oip.OipError(exc.status, exc.message, getattr(exc, "headers", None))
    logger.exception("fastres request failed")
    return oip.OipError(500, f"internal error: {type(exc).__name__}")


def logits_of(preds) -> np.ndarray:
    """float32 [N, C]: the predictions' logits, in order."""
    return np.stack([p.logits.numpy() for p in preds]).astype(np.float32, copy=False)


class Endpoints:
    """Mixed into `ImageClassifier`, which provides: model_info (`oip.ModelInfo`), ready
    (bool), admit(), infer(arrived, images=..., pixels=...) -> (predictions, batch requests),
    metrics (`fastres.scale.metrics.ReplicaMetrics`), metrics_snapshot(), hub (a handle of the
    application's MetricsHub, or None), max_body, body_timeout_s."""

    # -- REST ------------------------------------------------------------------------------

    async def oip_rest(self, request, arrived: float):
        """Answer a REST request under /v2."""
        from starlette.responses import Response

        from .http import read_body

        try:
            route, name, version = oip.match(request.method, request.url.path)
            if route == "live":
                return Response(status_code=200)
            if route == "ready":
                return Response(status_code=200 if self.ready else 503)
            if route == "server_metadata":
                return _json(oip.server_metadata())
            oip.check_model(self.model_info, name, version)
            if route == "model_metadata":
                return _json(oip.model_metadata(self.model_info))
            if route == "model_ready":
                return Response(status_code=200 if self.ready else 503)
            self.admit()  # a full queue, a drain or a hung engine: refused before the body is read
            body = await read_body(request.headers, request.stream(), self.max_body, self.body_timeout_s,
                                   empty="empty body: POST an inference request's JSON")
            req = oip.parse_http_infer(body, request.headers, self.model_info, self.max_body)
            del body  # the request holds its images (views, or copies where inflated)
            preds, requests = await self.infer(arrived, images=req.images, pixels=req.pixels)
            out, headers = oip.http_infer_response(req, logits_of(preds), self.model_info,
                                                   request.headers.get("accept-encoding"))
            return Response(out, headers={**headers, "x-fastres-batch": str(requests)})
        except Exception as exc:  # noqa: BLE001 - every answer is the protocol's JSON error
            status, out, headers = oip.http_error(as_oip_error(exc))
            return Response(out, status_code=status, headers=headers)

    async def metrics_text(self):
        """``GET /metrics``: Triton's metrics, summed over the application's replicas (this
        one's counts exact, the others' as of their last push)."""
        from starlette.responses import Response

        own = self.metrics_snapshot()
        merged = await self.hub.merged.remote(own) if self.hub is not None else None
        if merged is None:
            from .metrics import merge

            merged = merge([own])
        return Response(exposition(merged, self.model_info.name, self.model_info.version),
                        headers={"Content-Type": CONTENT_TYPE})

    # -- gRPC: inference.GRPCInferenceService ------------------------------------------------

    async def ServerLive(self, request, grpc_context=None):  # noqa: N802 - the RPC's own name
        from tritonclient.grpc import service_pb2

        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, grpc_context=None):  # noqa: N802
        from tritonclient.grpc import service_pb2

        return service_pb2.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request, grpc_context=None):  # noqa: N802
        from tritonclient.grpc import service_pb2

        error = self._unknown_model("ModelReady", request, grpc_context, service_pb2.ModelReadyResponse())
        return error or service_pb2.ModelReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request, grpc_context=None):  # noqa: N802
        return oip.grpc_server_metadata()

    async def ModelMetadata(self, request, grpc_context=None):  # noqa: N802
        from tritonclient.grpc import service_pb2

        error = self._unknown_model("ModelMetadata", request, grpc_context, service_pb2.ModelMetadataResponse())
        return error or oip.grpc_model_metadata(self.model_info)

    def _unknown_model(self, method: str, request, grpc_context, empty):
        """None when the request names the served model (and version), else `empty` with
        NOT_FOUND and the message on the context."""
        request = parse(method, request)
        try:
            oip.check_model(self.model_info, request.name, request.version)
        except oip.OipError as exc:
            return _grpc_error(grpc_context, exc, empty)
        return None

    async def ModelInfer(self, request, grpc_context=None):  # noqa: N802
        from tritonclient.grpc import service_pb2

        arrived = time.monotonic()
        try:
            self.admit()
            size = len(request) if isinstance(request, (bytes, bytearray)) else request.ByteSize()
            if size > self.max_body:  # Ray's gRPC proxy takes messages of up to 2 GiB
                raise oip.OipError(413, f"request of {size} bytes is over the limit of {self.max_body} bytes")
            req = oip.parse_grpc_infer(parse("ModelInfer", request), self.model_info)
            preds, _ = await self.infer(arrived, images=req.images, pixels=req.pixels)
            return oip.grpc_infer_response(req, logits_of(preds), self.model_info)
        except Exception as exc:  # noqa: BLE001 - every failure is a gRPC status with its message
            return _grpc_error(grpc_context, as_oip_error(exc), service_pb2.ModelInferResponse())


def _json(payload: dict):
    from starlette.responses import Response

    return Response(json.dumps(payload).encode(), headers={"Content-Type": "application/json"})


def _grpc_error(grpc_context, exc: oip.OipError, empty):
    """`empty` (the RPC's response type, unset) with `exc`'s status code and message on the
    context (without one, outside Serve's gRPC proxy: raised)."""
    import grpc

    if grpc_context is None:
        raise exc
    grpc_context.set_code(grpc.StatusCode[exc.grpc_code])
    grpc_context.set_details(exc.message)
    return empty
