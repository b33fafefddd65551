"""fastres.Predictor against torchvision's own pipeline (decode_image + the weights'
transforms + the torchvision model) on generated files: identical top-k in float32, logits
within the numerics bound in float16; the API over paths and over tensors; the transforms
and labels a converted file's torchvision weights bring. GPU-only paths (nvjpeg, pinned
buffers, streams) are checked on CUDA."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision

import fastres
from fastres.predict.images import NoImagesError, Transform, decode, read_bytes
from helpers import DEVICE, ON_GPU, assert_close, rel_error
from predict_helpers import DEEP, GOOD, bad_files, make_images, torchvision_reference
from test_build import calibrated

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
RESIZE, CROP, BATCH = 40, 32, 4
# 7 ordinary images, then a 16-bit PNG (its batch runs as float32), then damaged files
NAMES = ["rgb.jpg", "tall.jpg", "gray.jpg", "cmyk.jpg", "rgba.png", "palette.png", "wide.webp"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    make_images(root / "a", {n: GOOD[n] for n in NAMES})
    make_images(root / "b", DEEP)
    bad_files(root / "c")
    return root


@pytest.fixture(scope="module")
def model():
    return calibrated("resnet18")


@pytest.fixture(scope="module")
def engine32(model):
    return fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)


def reference_logits(model, paths, dtype=torch.float32):
    x = torch.stack([torchvision_reference(p, RESIZE, CROP) for p in paths])
    with torch.inference_mode():
        return copy.deepcopy(model).to(dtype)(x.to(dtype)).float(), x


@pytest.fixture(scope="module")
def folder_run(folder, engine32):
    """The folder through a float32 Predictor: (predictor, results)."""
    pred = fastres.Predictor(engine32, resize=RESIZE, crop=CROP, batch_size=BATCH, topk=5)
    return pred, list(pred.predict_paths(folder))


def test_paths_match_torchvision_float32(folder, model, folder_run):
    pred, results = folder_run
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert [r.path for r in results] == [str(f) for f in files]
    good = [(f, r) for f, r in zip(files, results) if r.ok]
    assert [f.parent.name for f, _ in good] == ["a"] * 7 + ["b"] and all(not r.ok for f, r in zip(files, results)
                                                                        if f.parent.name == "c")
    ref, x = reference_logits(model, [f for f, _ in good])
    ref64 = copy.deepcopy(model).double()(x.double())
    for (f, r), want in zip(good, ref):
        assert [t.index for t in r.top] == want.topk(5).indices.tolist(), f.name
        assert r.top[0].label == str(r.top[0].index)
        probs = torch.softmax(want.double(), 0)
        assert r.top[0].prob == pytest.approx(probs.max().item(), rel=1e-4)
    assert_close(torch.stack([r.logits for _, r in good]), ref64, 1e-4, what="predict_paths logits, float32")
    assert pred.stats.images == len(files) and pred.stats.errors == len(files) - 8


def test_float16_within_the_numerics_bound(folder, model):
    engine = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    paths = sorted((folder / "a").iterdir())[:BATCH]
    results = fastres.Predictor(engine, resize=RESIZE, crop=CROP, batch_size=BATCH).predict_paths(paths)
    logits = torch.stack([r.logits for r in results])
    _, x = reference_logits(model, paths)
    ref = copy.deepcopy(model).double()(x.double())
    theirs = copy.deepcopy(model).to(DEVICE, torch.float16)(x.to(DEVICE, torch.float16))
    bound = min(max(5e-3, 2 * rel_error(theirs, ref)), 2e-2)
    assert_close(logits, ref, bound, what="predict_paths logits, float16")


def test_tensors_are_paths(folder, folder_run):
    """predict_tensors on the decoded images gives bitwise the file results (same engine, same
    batches: the folder's first four files); preprocess=False takes crops as they are."""
    pred, results = folder_run
    paths = sorted((folder / "a").iterdir())[:BATCH]
    from_files = results[:BATCH]
    assert [r.path for r in from_files] == [str(p) for p in paths]
    images = [decode(read_bytes(p)) for p in paths]
    from_tensors = pred.predict_tensors(images)
    assert [r.path for r in from_tensors] == [None] * BATCH
    assert [r.top for r in from_tensors] == [r.top for r in from_files]
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(from_tensors, from_files))
    crops = torch.stack([pred.transform(img) for img in images])
    again = pred.predict_tensors(crops, preprocess=False)
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(again, from_files))
    assert pred.predict_tensors([]) == []
    with pytest.raises(ValueError, match="preprocess=False needs images of one shape"):
        pred.predict_tensors(images, preprocess=False)
    with pytest.raises(TypeError, match="images must be tensors: for files, use predict_paths"):
        pred.predict_tensors("a.jpg")
    with pytest.raises(TypeError, match=r"images\[0\] must be uint8 pixels"):
        pred.predict_tensors([images[0].float()])


def test_bytes_and_files_are_paths(folder, folder_run):
    """predict_bytes and predict_files, padded to the folder run's batch shape, give bitwise its
    results; a bad body or a missing file is an error Prediction, the others still classified."""
    pred, results = folder_run
    paths = sorted((folder / "a").iterdir())[:3]
    datas = [p.read_bytes() for p in paths] + [b"just text"]
    got = pred.predict_bytes(datas, paths=["x", "y", "z", "bad"], pad_to=BATCH)
    assert [r.path for r in got] == ["x", "y", "z", "bad"]
    assert [r.top for r in got[:3]] == [r.top for r in results[:3]]
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(got, results[:3]))
    assert not got[3].ok and "not an image" in got[3].error
    missing = folder / "a" / "gone.jpg"
    files = list(pred.predict_files([paths[0], missing], pad_to=BATCH))
    assert files[0].path == str(paths[0]) and torch.equal(files[0].logits, results[0].logits)
    assert files[1].path == str(missing) and "cannot read the file" in files[1].error
    assert pred.predict_bytes([]) == [] and pred.predict_bytes([b""])[0].error == "empty file"
    with pytest.raises(ValueError, match="pad_to must be a positive int, got 0"):
        pred.predict_files(paths, pad_to=0)
    with pytest.raises(ValueError, match="2 paths for 1 images"):
        pred.predict_bytes(datas[:1], paths=["a", "b"])


def test_converted_torchvision_weights_bring_transforms_and_names(tmp_path):
    """A file converted from torchvision's resnet18 download (by its name) preprocesses as
    ResNet18_Weights.IMAGENET1K_V1 does and names ImageNet's classes; options override."""
    name = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / name)
    out = fastres.convert(tmp_path / name, tmp_path / "r18.safetensors", dtype=torch.float32)
    pred = fastres.Predictor(out, device=DEVICE)
    t = pred.transform
    assert (t.resize, t.crop, t.source) == (256, 224, "ResNet18_Weights.IMAGENET1K_V1")
    assert pred.labels[0] == "tench" and len(pred.labels) == 1000
    assert "resize 256, crop 224 (those of ResNet18_Weights.IMAGENET1K_V1)" in repr(pred)
    cropped = fastres.Predictor(out, device=DEVICE, crop=64)
    assert (cropped.transform.crop, pred.weights_name) == (64, t.source)
    assert "resize 256, crop 64 (crop as given, resize from ResNet18_Weights.IMAGENET1K_V1)" in repr(cropped)
    # the .pth itself, folded in memory: the same
    direct = fastres.Predictor(tmp_path / name, device=DEVICE, dtype="float32")
    assert direct.transform == t and direct.engine.dtype == torch.float32
    assert "resnet18, 1000 classes" in repr(direct)


def test_predictor_checks(folder, engine32, model, tmp_path):
    with pytest.raises(ValueError, match="topk must be between 1 and the model's 10 classes"):
        fastres.Predictor(engine32, topk=11)
    with pytest.raises(ValueError, match="decode must be one of auto, cpu, cuda"):
        fastres.Predictor(engine32, decode="gpu")
    if not ON_GPU:
        with pytest.raises(ValueError, match="decode='cuda' needs the engine on a CUDA device"):
            fastres.Predictor(engine32, decode="cuda")
    with pytest.raises(TypeError, match="model must be a weights file"):
        fastres.Predictor(42)
    with pytest.raises(ValueError, match="the engine runs torch.float32, not torch.float16"):
        fastres.Predictor(engine32, dtype=torch.float16)
    pred = fastres.Predictor(engine32)
    assert pred.transform == Transform() and pred.labels == [str(i) for i in range(10)]
    # where the sizes came from, in words that cannot be misread
    assert ("resize 256, crop 224 (the defaults: no torchvision weights entry or checkpoint config to take them from)"
            in repr(pred))
    assert "resize 72, crop 64 (both as given)" in repr(fastres.Predictor(engine32, resize=72, crop=64))
    assert "resize 72, crop 224 (resize as given, crop the default)" in repr(fastres.Predictor(engine32, resize=72))
    with pytest.raises(FileNotFoundError):
        list(pred.predict_paths([folder / "nope.jpg"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError):
        pred.predict_paths(tmp_path / "empty")


# -- GPU only: nvjpeg, pinned buffers, copies on their own stream ------------------------------

gpu = pytest.mark.skipif(not ON_GPU, reason="nvjpeg, pinned memory and copy streams need a CUDA device")


@gpu
def test_gpu_decode_matches_torchvision_on_the_gpu(folder, model):
    """nvjpeg + resize on the device == torchvision's pipeline run on the device itself."""
    from torchvision.io import ImageReadMode, decode_jpeg

    engine = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    pred = fastres.Predictor(engine, resize=RESIZE, crop=CROP, batch_size=BATCH, decode="cuda")
    paths = [p for p in sorted((folder / "a").iterdir()) if p.suffix == ".jpg" and p.name != "cmyk.jpg"]
    results = list(pred.predict_paths(paths))
    assert pred.stats.gpu_decoded == len(paths)
    preset = Transform(resize=RESIZE, crop=CROP).torchvision()
    x = torch.stack([preset(decode_jpeg(read_bytes(p), mode=ImageReadMode.RGB, device=DEVICE)) for p in paths])
    with torch.inference_mode():
        want = copy.deepcopy(model).to(DEVICE)(x)
    for r, w in zip(results, want):
        assert [t.index for t in r.top] == w.topk(5).indices.tolist()
    assert_close(torch.stack([r.logits for r in results]), want, 1e-4, what="nvjpeg path logits")


@gpu
def test_cpu_decode_through_pinned_buffers_on_the_gpu(folder, model):
    """CPU decode, pinned host buffers, copies on the batcher's stream: torchvision's CPU
    pipeline's top-k, many batches (both buffers reused), a caller stream's work untouched."""
    engine = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    pred = fastres.Predictor(engine, resize=RESIZE, crop=CROP, batch_size=2, decode="cpu")
    paths = sorted((folder / "a").iterdir()) * 3
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        results = list(pred.predict_paths(paths))
    want, _ = reference_logits(model, paths)
    for r, w in zip(results, want):
        assert [t.index for t in r.top] == w.topk(5).indices.tolist()
    batcher = pred._batcher(2)
    try:
        assert all(h.is_pinned() for h in batcher.host) and batcher.stream is not None
        assert batcher.stream.cuda_stream != torch.cuda.current_stream().cuda_stream
    finally:
        batcher.close()


@gpu
def test_gpu_tensors_in(folder, engine32):
    pred = fastres.Predictor(engine32, resize=RESIZE, crop=CROP, batch_size=BATCH)
    paths = sorted((folder / "a").iterdir())[:BATCH]
    images = [decode(read_bytes(p)) for p in paths]
    on_cpu = pred.predict_tensors(images)
    on_gpu = pred.predict_tensors([img.to(DEVICE) for img in images])
    assert [r.top[0].index for r in on_cpu] == [r.top[0].index for r in on_gpu]
