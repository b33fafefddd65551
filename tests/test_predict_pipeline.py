"""fastres.predict.pipeline with a stand-in engine (no kernels): input order with failures
interleaved, fixed batch shapes, results streamed as batches finish, the float32 batch of a
16-bit image, the nvjpeg routing, the stage times."""
from __future__ import annotations

import pytest
import torch

from fastres.predict.images import Transform, decode, jpeg_components, read_bytes
from fastres.predict.pipeline import (
    ImageBatcher, Item, StageTimes, load_item, nvjpeg_can_take, run_pipeline,
)
from predict_helpers import DEEP, GOOD, bad_files, make_images, torchvision_reference

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
T = Transform(resize=20, crop=16)


class StubEngine:
    """Logits from the normalized image's channel means; records every call's kind and shape."""

    def __init__(self, num_classes: int = 5):
        self.device, self.num_classes, self.calls = torch.device("cpu"), num_classes, []

    def forward_pixels(self, x, mean, std):
        self.calls.append(("pixels", tuple(x.shape)))
        m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
        return self._logits((x.float() / 255 - m) / s)

    def __call__(self, x):
        self.calls.append(("float", tuple(x.shape)))
        return self._logits(x)

    def _logits(self, x):
        m = x.mean(dim=(2, 3))
        return torch.cat([m, -m], 1)[:, : self.num_classes]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    good = make_images(folder / "good", GOOD)
    bad = [p for p, _ in bad_files(folder / "bad").values()]
    # good and bad interleaved: g g b g b b g g g b g ...
    order, gi, bi = [], iter(good), iter(bad)
    for pattern in "ggbgbbgggbgggbgbg":
        nxt = next(gi if pattern == "g" else bi, None)
        if nxt is not None:
            order.append(nxt)
    return order, set(bad)


def run(files, engine, batch_size, transform=T, gpu=False, workers=2):
    stages = StageTimes(workers=workers)
    batcher = ImageBatcher(engine, transform, [f"c{i}" for i in range(engine.num_classes)], batch_size=batch_size, topk=3,
                      stages=stages)
    jobs = (lambda i=i, f=f: load_item(i, str(f), transform, None, stages, gpu) for i, f in enumerate(files))
    return run_pipeline(jobs, batcher, workers=workers, lookahead=4), stages


def test_order_errors_and_fixed_shapes(files):
    order, bad = files
    engine = StubEngine()
    preds, stages = run(order, engine, batch_size=3)
    preds = list(preds)
    assert [p.path for p in preds] == [str(f) for f in order]
    for f, p in zip(order, preds):
        assert (p.error is not None) == (f in bad), (f, p)
        if p.ok:
            assert len(p.top) == 3 and p.top[0].prob >= p.top[1].prob >= p.top[2].prob
            assert p.top[0].label == f"c{p.top[0].index}"
            ref = engine._logits(torchvision_reference(f, 20, 16)[None])[0]
            assert torch.allclose(p.logits, ref, atol=1e-6) and p.top[0].index == int(ref.argmax())
    good = len(order) - len(bad & set(order))
    assert engine.calls == [("pixels", (3, 3, 16, 16))] * -(-good // 3)  # the last batch padded
    assert stages.images == len(order) and stages.errors == len(bad & set(order))
    assert stages.decode > 0 and stages.preprocess > 0 and stages.model > 0 and stages.wall > 0
    line = stages.summary()
    assert f"{len(order)} images ({stages.errors} failed)" in line and "decode" in line and "model" in line


def test_results_stream_before_the_end(files):
    """A batch's predictions come out once the next batch is queued, not at the end."""
    order, bad = files
    good = [f for f in order if f not in bad]
    engine = StubEngine()
    preds, _ = run(good, engine, batch_size=2)
    first = next(preds)
    assert first.path == str(good[0]) and len(engine.calls) == 2 < -(-len(good) // 2)
    assert len(list(preds)) == len(good) - 1


def test_failures_alone_never_reach_the_engine(files):
    _, bad = files
    engine = StubEngine()
    preds, stages = run(sorted(bad) * 3, engine, batch_size=2)
    preds = list(preds)
    assert len(preds) == 3 * len(bad) and all(not p.ok for p in preds) and engine.calls == []
    # nothing was classified: the summary gives no rate
    line = stages.summary()
    assert line.startswith(f"{3 * len(bad)} images ({3 * len(bad)} failed) in ") and "none classified" in line, line
    assert "img/s" not in line


def test_summary_wording():
    one = StageTimes(images=1, errors=1, wall=0.001).summary()
    assert one.startswith("1 image (1 failed) in 0.00 s, none classified;") and "img/s" not in one, one
    some = StageTimes(images=4, errors=1, wall=2.0).summary()
    assert some.startswith("4 images (1 failed) in 2.00 s, 2.0 img/s;"), some


def test_16_bit_image_batch_runs_as_float32(tmp_path):
    """A batch with a 16-bit PNG goes as torchvision's normalized float32 (each image scaled
    by its own dtype's maximum); the other batches stay uint8."""
    paths = make_images(tmp_path, {**dict(list(GOOD.items())[:3]), **DEEP})
    engine = StubEngine()
    preds, _ = run(paths, engine, batch_size=2)
    preds = list(preds)
    assert engine.calls == [("pixels", (2, 3, 16, 16)), ("float", (2, 3, 16, 16))]
    for f, p in zip(paths, preds):
        ref = engine._logits(torchvision_reference(f, 20, 16)[None])[0]
        assert torch.allclose(p.logits, ref, atol=1e-6), f.name


def test_nvjpeg_routing(tmp_path):
    """With GPU decoding on, workers hand complete 1- and 3-component JPEGs over as bytes and
    decode everything else themselves (a truncated JPEG then fails as the CPU decoder says)."""
    paths = {p.name: p for p in make_images(tmp_path, GOOD)}
    bad = bad_files(tmp_path / "bad")
    assert jpeg_components(read_bytes(paths["rgb.jpg"])) == 3
    assert jpeg_components(read_bytes(paths["gray.jpg"])) == 1
    assert jpeg_components(read_bytes(paths["cmyk.jpg"])) == 4
    assert nvjpeg_can_take(read_bytes(paths["progressive.jpg"]))
    assert not nvjpeg_can_take(read_bytes(paths["cmyk.jpg"]))
    assert not nvjpeg_can_take(read_bytes(bad["truncated.jpg"][0]))
    stages = StageTimes()
    assert load_item(0, str(paths["rgb.jpg"]), T, None, stages, True).jpeg is not None
    cmyk = load_item(1, str(paths["cmyk.jpg"]), T, None, stages, True)
    assert cmyk.jpeg is None and torch.equal(cmyk.crop, T(decode(read_bytes(paths["cmyk.jpg"]))))
    assert "cannot decode JPEG" in load_item(2, str(bad["truncated.jpg"][0]), T, None, stages, True).error
    assert load_item(3, str(paths["rgba.png"]), T, None, stages, True).crop is not None


def test_nvjpeg_takes_jpegs_with_stray_bytes_or_large_segments_before_the_frame(tmp_path):
    """The frame header is found as libjpeg finds it: past a stray byte before a marker and past
    an application segment that ends beyond the first 64 KB, so such a JPEG still goes to
    nvjpeg (and the CPU decoder reads it too: it is a valid file)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 60)).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    app = b"\xff\xe5" + (2 + 65530).to_bytes(2, "big") + bytes(65530)  # a maximal APP5 segment
    app0 = 4 + int.from_bytes(jpeg[4:6], "big")  # SOI, then APP0 (JFIF): the stray byte goes after it
    variants = {
        "stray": jpeg[:app0] + b"\x00" + jpeg[app0:],     # an extraneous byte between two segments
        "large-app": jpeg[:2] + app + app + jpeg[2:],     # the frame header past 128 KB
    }
    stages = StageTimes()
    for name, data in variants.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        assert jpeg_components(bytearray(data)) == 3, name
        assert nvjpeg_can_take(bytearray(data)), name
        assert load_item(0, str(path), T, None, stages, True).jpeg is not None, name
        assert decode(bytearray(data)).shape == (3, 16, 24), name  # a file the decoders accept


def test_items_from_tensors_keep_their_order():
    engine = StubEngine()
    imgs = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in range(5)]
    stages = StageTimes()
    batcher = ImageBatcher(engine, T, list("abcde"), batch_size=2, topk=1, stages=stages)
    jobs = (lambda i=i, img=img: Item(i, None, crop=img) for i, img in enumerate(imgs))
    preds = list(run_pipeline(jobs, batcher, workers=3, lookahead=3))
    for img, p in zip(imgs, preds):
        ref = engine.forward_pixels(img[None], T.mean, T.std)[0]
        assert p.path is None and torch.equal(p.logits, ref.float())


class _PooledStream:
    """Stands in for a pooled torch.cuda.Stream: records what is done to it."""

    def __init__(self, device):
        self.device, self.synced = device, 0

    def synchronize(self):
        self.synced += 1


def test_batcher_falls_back_to_a_pooled_stream_and_never_destroys_it(monkeypatch):
    """Where the driver library cannot make a stream (libcuda.so.1 missing), the predict batcher
    takes a pooled stream as the engine does, with one warning, and on close only waits for it:
    a pooled stream is PyTorch's, and destroying it would break every later user of it."""
    import fastres.streams as S

    def no_driver(device):
        raise S.StreamError("no CUDA/HIP driver library to create a stream with: libcuda.so.1: cannot open")

    destroyed = []
    monkeypatch.setattr(S, "create_stream", no_driver)
    monkeypatch.setattr(S, "destroy_stream", destroyed.append)
    monkeypatch.setattr(S, "_warned", False)
    monkeypatch.setattr(torch.cuda, "Stream", _PooledStream)
    engine = StubEngine()
    engine.device = torch.device("cuda", 0)
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: None)  # no CUDA buffers here
    with pytest.warns(UserWarning, match="pooled CUDA streams"):
        batcher = ImageBatcher(engine, T, list("abcde"), batch_size=2, topk=1, stages=StageTimes())
    stream = batcher.stream
    assert isinstance(stream, _PooledStream) and not batcher._owned
    batcher.close()
    assert stream.synced == 1 and destroyed == [] and batcher.stream is None


def test_batcher_destroys_the_stream_it_created(monkeypatch):
    import fastres.streams as S

    made, destroyed = [], []
    monkeypatch.setattr(S, "create_stream", lambda device: made.append(_PooledStream(device)) or made[-1])
    monkeypatch.setattr(S, "destroy_stream", destroyed.append)
    engine = StubEngine()
    engine.device = torch.device("cuda", 0)
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: None)
    batcher = ImageBatcher(engine, T, list("abcde"), batch_size=2, topk=1, stages=StageTimes())
    assert batcher._owned
    batcher.close()
    assert destroyed == made and len(made) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvjpeg decodes on a GPU")
def test_nvjpeg_images_live_until_their_batch_finishes(tmp_path):
    """nvjpeg writes the decoded images on a stream of its own and the crops read them in
    kernels still queued when submit returns: the batch holds them until finish."""
    paths = [p for p in make_images(tmp_path, GOOD) if p.suffix == ".jpg" and "cmyk" not in p.name]
    engine = StubEngine()
    engine.device = torch.device("cuda", torch.cuda.current_device())
    stages = StageTimes()
    batcher = ImageBatcher(engine, T, list("abcde"), batch_size=len(paths), topk=1, stages=stages, gpu_decode=True)
    items = [load_item(i, str(p), T, None, stages, True) for i, p in enumerate(paths)]
    assert all(it.jpeg is not None for it in items)
    batch = batcher.submit(items)
    assert len(batch.keep) == len(paths) and all(t.is_cuda for t in batch.keep)
    preds = batcher.finish(batch)
    assert batch.keep == [] and all(p.error is None for _, p in preds)
    batcher.close()


@pytest.mark.parametrize("where", ["decode_input", "resize_crop"])
def test_an_empty_message_failure_is_one_error_line(files, monkeypatch, where):
    """A bare MemoryError() (no message) in one image's decode or resize: that image gets one
    error line naming the type, and the others are still classified."""
    import fastres.predict.pipeline as pipeline

    order, bad = files
    good = [f for f in order if f not in bad][:4]
    real = getattr(pipeline, where)
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, where, fails_once)
    preds, stages = run(good, StubEngine(), batch_size=2, workers=1)
    preds = list(preds)
    assert [p.path for p in preds] == [str(f) for f in good]
    failed = [p for p in preds if not p.ok]
    assert len(failed) == 1 and failed[0].error == f"cannot {where.split('_')[0]}: MemoryError", failed
    assert sum(p.ok for p in preds) == len(good) - 1 and stages.errors == 1


def test_cpu_fallback_reports_an_empty_message_failure(monkeypatch):
    """The GPU decoder's CPU fallback: a bare RuntimeError() becomes the image's error line."""
    import fastres.predict.pipeline as pipeline

    def fails(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(pipeline, "decode", fails)
    batcher = ImageBatcher(StubEngine(), T, ["c0"], batch_size=1, topk=1, stages=StageTimes())
    item = Item(0, "x.jpg")
    batcher._cpu_fallback(item, bytearray(b"\xff\xd8\xff"))
    assert item.error == "cannot decode: RuntimeError" and item.crop is None
