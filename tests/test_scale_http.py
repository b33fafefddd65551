"""fastres.scale.http, without Ray: routes, the body limit (refused before reading where the
header says so, as soon as it is passed otherwise), image checks, the answers' JSON."""
from __future__ import annotations

import asyncio
import io

import pytest

from fastres.predict.output import Prediction, Top
from fastres.scale.http import HttpError, check_image, predict_answer, read_body, route
from predict_helpers import pixels


def raises(status: int, words: str, fn, *args):
    with pytest.raises(HttpError) as info:
        result = fn(*args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert info.value.status == status and words in info.value.message, (info.value.status, info.value.message)
    return info.value


def test_routes():
    assert route("POST", "/predict") == "/predict" and route("post", "/predict/") == "/predict"
    assert route("GET", "/healthz") == "/healthz" and route("HEAD", "/healthz") == "/healthz"
    assert raises(405, "GET /predict: use POST /predict with an image file's bytes", route, "GET", "/predict").headers \
        == {"Allow": "POST"}
    assert raises(405, "use GET /healthz", route, "POST", "/healthz").headers == {"Allow": "GET"}
    raises(404, "no route GET /: this server answers POST /predict, GET /healthz", route, "GET", "/")
    raises(404, "no route PUT /v1/predict", route, "PUT", "/v1/predict")


class Stream:
    """An ASGI-like body: chunks, counting how many were read."""

    def __init__(self, *chunks: bytes):
        self.chunks, self.read = list(chunks), 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.read == len(self.chunks):
            raise StopAsyncIteration
        self.read += 1
        return self.chunks[self.read - 1]


def test_body_limits():
    assert asyncio.run(read_body({}, Stream(b"ab", b"cd"), 4)) == b"abcd"
    assert asyncio.run(read_body({"content-length": "4"}, Stream(b"abcd"), 4)) == b"abcd"
    s = Stream(b"x" * 10)
    raises(413, "body of 10 bytes is over the limit of 4 bytes", read_body, {"content-length": "10"}, s, 4)
    assert s.read == 0  # refused on the header alone
    s = Stream(b"xx", b"xxx", b"never read")
    raises(413, "body over the limit of 4 bytes", read_body, {}, s, 4)
    assert s.read == 2  # stopped as soon as it went past
    raises(400, "empty body: POST the bytes of an image file", read_body, {}, Stream(), 4)
    raises(400, "empty body", read_body, {"content-length": "0"}, Stream(b""), 4)
    raises(400, "Content-Length 'ten' is not a number", read_body, {"content-length": "ten"}, Stream(b"x"), 4)


def test_image_checks():
    png = io.BytesIO()
    pixels((8, 8), "RGB", 0).save(png, "PNG")
    check_image(png.getvalue(), None)
    raises(400, "not an image: unrecognized file contents", check_image, b"plain text", None)
    bmp = io.BytesIO()
    pixels((8, 8), "RGB", 0).save(bmp, "BMP")
    raises(400, "unsupported image format BMP", check_image, bmp.getvalue(), None)
    raises(400, "8x8 pixels (0.0 Mpx) is over the limit", check_image, png.getvalue(), 63)


def test_answers_have_the_predict_line_schema():
    ok = Prediction(None, top=(Top(2, "cat", 0.91234567), Top(0, "dog", 0.05)))
    assert predict_answer(ok) == (200, {"top": [{"index": 2, "label": "cat", "prob": 0.912346},
                                                {"index": 0, "label": "dog", "prob": 0.05}]})
    assert predict_answer(Prediction(None, error="cannot decode JPEG: truncated")) == \
        (400, {"error": "cannot decode JPEG: truncated"})
