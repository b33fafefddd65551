"""The encoded bytes of a `fastres serve` request, counted: the body read in chunks
(`read_body`), checked (`check_image`), then `Predictor.predict_bytes` and its workers' decode
and crop, measured with tracemalloc (Python's allocations: every bytes and bytearray; the
decoders' pixels are torch's and libjpeg's, not traced) on ~4 MB files whose size is padding
(a JPEG's comment segments, a PNG's private ancillary chunk, a GIF's comment before its
frame). The peak stays within `encoded_memory` (`memory_bound`'s share for them): the body
once for a JPEG or a PNG, the body and the GIF's first frame cut out of it for a GIF."""
from __future__ import annotations

import asyncio
import io
import struct
import tracemalloc
import zlib

import pytest
import torch
import torchvision

import fastres
import fastres.predict.predictor as predictor_module
from fastres.predict.pipeline import Item, load_item
from fastres.predict.preprocess import encoded_memory, memory_bound
from fastres.scale.http import check_image, read_body
from predict_helpers import pixels

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
PAD = 4 << 20  # bytes of padding in each file
CHUNK = 64 << 10  # an ASGI server's body chunks


def padded_jpeg() -> bytes:
    buf = io.BytesIO()
    pixels((640, 480), "RGB", 1).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    block = 65533  # a COM segment's most: its length field counts itself
    com = b"".join(b"\xff\xfe" + struct.pack(">H", block + 2) + bytes([i % 251]) * block
                   for i in range(PAD // block))
    return data[:2] + com + data[2:]  # after SOI, before the frame header: libjpeg skips them


def padded_png() -> bytes:
    buf = io.BytesIO()
    pixels((640, 480), "RGB", 2).save(buf, "PNG")
    data = buf.getvalue()
    body = bytes(range(256)) * (PAD // 256)
    chunk = struct.pack(">I", len(body)) + b"fsPd" + body + struct.pack(">I", zlib.crc32(b"fsPd" + body))
    return data[:33] + chunk + data[33:]  # after IHDR (8 + 25 bytes), before IDAT: an unknown ancillary chunk


def padded_gif() -> bytes:
    buf = io.BytesIO()
    pixels((640, 480), "P", 3).save(buf, "GIF")
    data = buf.getvalue()
    start = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)  # after the global color table
    comment = b"\x21\xfe" + (b"\xff" + bytes(255)) * (PAD // 256) + b"\x00"
    return data[:start] + comment + data[start:]  # the first frame's cut holds it whole


class Chunks:
    """An ASGI-like body: the file in `CHUNK`-byte pieces, made before the measure starts."""

    def __init__(self, data: bytes):
        self.pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.pieces:
            raise StopAsyncIteration
        return self.pieces.pop(0)


@pytest.fixture(scope="module")
def predictor():
    engine = fastres.from_torchvision(torchvision.models.resnet18().eval(), dtype=torch.float32, device="cpu")
    return fastres.Predictor(engine, resize=40, crop=32, batch_size=1, workers=1, decode="cpu")


def read(chunks: Chunks) -> bytearray:
    """`read_body` run as the replica awaits it: within a coroutine (asyncio.run would turn
    the result into text when the task ends, as long as four times the body, by its own cost)."""
    got = []

    async def handler():
        got.append(await read_body({}, chunks, 20_000_000, None))

    asyncio.run(handler())
    return got[0]


def serve_peak(predictor, monkeypatch, data: bytes, mode: str) -> tuple[int, torch.Tensor]:
    """(the traced peak over the baseline, from the first chunk read to the crop, the crop) for
    one request: the replica's steps in order; the engine is left out (its job returns the
    crop as an error-free Item that the test takes, and no batch runs)."""
    crops = []

    def job(*args, **kwargs):
        item = load_item(*args, **kwargs)
        assert item.error is None, item.error
        crops.append(item.crop)
        return Item(item.index, item.path, error="measured")  # nothing for the engine to run

    monkeypatch.setattr(predictor_module, "load_item", job)
    monkeypatch.setattr(predictor, "preprocess", mode)
    chunks = Chunks(data)
    del data
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        body = read(chunks)
        check_image(body, predictor.max_pixels)
        preds = predictor.predict_bytes([body], pad_to=1)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert [p.error for p in preds] == ["measured"]
    return peak, crops[0]


# (file, mode, the copies of the body's size allowed besides the body): a GIF's first frame
# cut out (the padding is before the frame: the whole file); fast mode's JPEG decoder (PIL)
# keeps a JPEG's comment and APPn segments; nothing else of the body's size in any of them
CASES = [("jpeg", "exact", 0), ("jpeg", "fast", 1), ("png", "exact", 0), ("png", "fast", 0), ("gif", "exact", 1)]


@pytest.mark.parametrize("kind,mode,copies", CASES)
def test_one_copy_of_the_body_at_most(predictor, monkeypatch, kind, mode, copies):
    data = {"jpeg": padded_jpeg, "png": padded_png, "gif": padded_gif}[kind]()
    size = len(data)
    want = fastres.preprocess(data, resize=40, crop=32, mode=mode)  # the padding changes nothing
    peak, crop = serve_peak(predictor, monkeypatch, data, mode)
    assert torch.equal(crop, want)
    assert peak <= encoded_memory(size), f"{kind}, {mode}: peak {peak / size:.2f} x the body"
    # the body (grown by an eighth at most), the copies; each other copy would be another 1.0
    assert peak <= (1.125 + copies) * size + (256 << 10), f"{kind}, {mode}: peak {peak / size:.2f} x the body"
    assert memory_bound(encoded_bytes=size) - memory_bound(encoded_bytes=0) == encoded_memory(size) - encoded_memory(0)
