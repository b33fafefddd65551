"""The HTTP side of `fastres serve`, apart from Ray: which routes exist, reading a body within
its size limit, checking that it is an image before it joins a batch, and the JSON answers.

Every bad request is a 4xx with ``{"error": "..."}`` (one line saying what is wrong), and
costs the replica nothing but the check: the batch only ever holds bodies that look like
images (a damaged one still gets its own 400 from the decoder, the others in its batch
are answered as usual).
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Mapping

from ..predict.images import ImageError, check_decodable
from .batcher import BODY_TIMEOUT_S

MAX_BODY = 20_000_000  # bytes: the default limit of one request body (20 MB)
EMPTY_IMAGE = "empty body: POST the bytes of an image file (JPEG, PNG, GIF or WEBP)"
ROUTES = {"/predict": "POST", "/healthz": "GET", "/metrics": "GET"}


class HttpError(Exception):
    """A request answered with `status` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def route(method: str, path: str) -> str:
    """The route a request asks for ("/predict", "/healthz" or "/metrics"): 404 for another path, 405
    (with Allow) for another method. HEAD is answered as GET."""
    path = path.rstrip("/") or "/"
    if path not in ROUTES:
        listed = ", ".join(f"{m} {p}" for p, m in ROUTES.items())
        raise HttpError(404, f"no route {method} {path}: this server answers {listed}, and the Open Inference "
                             "Protocol under /v2")
    allowed = ROUTES[path]
    if method.upper() != allowed and not (allowed == "GET" and method.upper() == "HEAD"):
        what = "with an image file's bytes as the body" if allowed == "POST" else "without a body"
        raise HttpError(405, f"{method} {path}: use {allowed} {path} {what}", {"Allow": allowed})
    return path


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int = MAX_BODY,
                    timeout_s: float | None = BODY_TIMEOUT_S, empty: str = EMPTY_IMAGE) -> bytearray:
    """The request body (a bytearray: the decoders read it in place), at most `limit` bytes: a Content-Length over it is refused before
    any of the body is read, and a body that grows past it (chunked, or a lying header) as
    soon as it does (413). An empty body is a 400 saying `empty`. A body not received in full within
    `timeout_s` (None: no limit) is a 408: a client that stalls does not hold the server."""
    if timeout_s is None:
        return await _read_body(headers, chunks, limit, empty)
    try:
        return await asyncio.wait_for(_read_body(headers, chunks, limit, empty), timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the body did not arrive within {timeout_s:g} s", {"Connection": "close"}) from None


async def _read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int, empty: str) -> bytearray:
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HttpError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise HttpError(413, f"body of {size} bytes is over the limit of {limit} bytes")
    # One buffer grown chunk by chunk (by an eighth at a time, bytearray's growth), never a
    # list of chunks joined at the end (twice the body at the join); writable, so the decoders
    # share it rather than copy it (torch.frombuffer). Not sized from Content-Length up front:
    # a stalled body holds only what it has sent.
    body = bytearray()
    async for chunk in chunks:
        if len(body) + len(chunk) > limit:
            raise HttpError(413, f"body over the limit of {limit} bytes")
        body += chunk
    if not body:
        raise HttpError(400, empty)
    return body


def check_image(body: bytes | bytearray, max_pixels: int | None) -> None:
    """A 400 saying why, for a body that is not an image torchvision decodes (by its header:
    not an image, an unsupported format, more pixels than max_pixels)."""
    try:
        check_decodable(body, max_pixels)
    except ImageError as exc:
        raise HttpError(400, str(exc)) from None


def predict_answer(pred) -> tuple[int, dict]:
    """(status, JSON body) for one Prediction: 200 and ``{"top": [...]}`` (a `fastres predict`
    line's schema, without the path), or 400 and ``{"error": ...}``."""
    line = pred.to_dict()
    if "error" in line:
        return 400, {"error": line["error"]}
    return 200, {"top": line["top"]}
