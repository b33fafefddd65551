"""Quantized files (format version 3, weights/README.md): `fastres.convert(..., dtype="int8",
calibrate=)` from a folder of images and from a list of batches, `fastres convert --dtype int8
--calibrate DIR`, `fastres.load` giving the engine `fastres.quantize` makes from the same
calibration (the same ranges, weights and report; the same logits), e4m3, `fastres run` on such
a file, and every bad input. Versions 1 and 2 are tested in tests/test_weights.py.

One random resnet18 of 10 classes is converted three times per module (about 5 s each on the
CPU: calibration is torch); forwards run at 32x32.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fastres
from fastres import cli
from fastres.errors import WeightsError
from fastres.models import random_resnet
from fastres.plan import arch_convs
from fastres.quant.images import CalibrationImages
from helpers import DEVICE, ON_GPU, assert_close
from predict_helpers import GOOD, make_images, torchvision_reference
from quant_helpers import launch_dtypes
from test_weights import metadata, rewrite

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NUM_CLASSES = 10
CONVS = [c.name for c in arch_convs("resnet18")]
# Listed out of order: calibration takes the first COUNT in sorted order (a.jpg, b.jpg).
PHOTOS = {"c.png": GOOD["small.png"], "a.jpg": GOOD["rgb.jpg"], "b.jpg": GOOD["gray.jpg"]}
COUNT = 2


def _cli(*argv) -> tuple[int, str, str]:
    """`fastres ...` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The model, its checkpoint, the images, their calibration batches, and three int8 engines
    from the same calibration: a file converted by the command line from the folder, a file
    converted by `fastres.convert` from the batches, and `fastres.quantize`'s, in memory."""
    root = tmp_path_factory.mktemp("quantized")
    model = random_resnet("resnet18", NUM_CLASSES, seed=0)
    pth = root / "r18.pth"
    torch.save(model.state_dict(), pth)
    photos = root / "photos"
    make_images(photos, PHOTOS)
    batches = list(CalibrationImages(photos, COUNT))  # preprocessed as convert does: 256, then 224
    folder_file = root / "r18-int8-folder.safetensors"
    cli_run = _cli("convert", pth, "--dtype", "int8", "--calibrate", photos, "--calibration-count", COUNT,
                   "--out", folder_file)
    batches_file = fastres.convert(model, root / "r18-int8-batches.safetensors", dtype="int8", calibrate=batches)
    q = fastres.quantize(model, batches, dtype=torch.int8, device=DEVICE, progress=False)
    return SimpleNamespace(root=root, model=model, pth=pth, photos=photos, batches=batches, cli=cli_run,
                           folder_file=folder_file, batches_file=batches_file, q=q)


def _dtypes(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_slice(k).get_dtype() for k in f.keys()}


def _same_engine(engine, q) -> None:
    """What a quantized engine is: its 8-bit layers, ranges, parameters (bit for bit), report."""
    assert engine.quantized == q.quantized and engine.ranges.amax == q.ranges.amax
    theirs = q.params()
    assert engine.params().keys() == theirs.keys()
    for k, v in engine.params().items():
        assert v.dtype == theirs[k].dtype and torch.equal(v.cpu(), theirs[k].cpu()), k
    assert engine.quantization_report() == q.quantization_report()


def test_calibration_images_are_the_first_in_sorted_order(made):
    """The batches every engine here was calibrated on: a.jpg and b.jpg (not c.png), as
    torchvision's ImageNet preprocessing makes them."""
    (batch,) = made.batches
    assert batch.shape == (COUNT, 3, 224, 224) and batch.dtype == torch.float32
    for image, name in zip(batch, ("a.jpg", "b.jpg")):
        assert_close(image, torchvision_reference(made.photos / name, 256, 224), 1e-6, name)


def test_file_metadata_and_tensors(made):
    for path, source in ((made.folder_file, f"{COUNT} images of photos"), (made.batches_file, "batches")):
        meta = metadata(path)
        assert (meta["format"], meta["format_version"], meta["quantized"], meta["dtype"]) == \
            ("fastres", "3", "int8", "float16")
        assert meta["arch"] == "resnet18" and meta["num_classes"] == str(NUM_CLASSES)
        report = json.loads(meta["quantization_report"])
        fc_8bit = report["layers"][-1]["precision"] == "int8"  # chosen by its measured agreement
        assert json.loads(meta["quantized_layers"]) == sorted(CONVS + ["fc"] * fc_8bit)
        ranges = json.loads(meta["ranges"])
        assert set(ranges) == {"input", *CONVS, "pool"} and all(0 < v < math.inf for v in ranges.values())
        assert json.loads(meta["calibration"]) == {"method": "entropy", "source": source, "images": COUNT, "batches": 1}
        report = json.loads(meta["quantization_report"])
        assert (report["arch"], report["dtype"], report["method"], report["images"]) == ("resnet18", "int8", "entropy", COUNT)
        assert [r["layer"] for r in report["layers"]] == CONVS + ["fc"]
        dtypes = _dtypes(path)
        for conv in CONVS:
            assert (dtypes[f"{conv}.weight"], dtypes[f"{conv}.weight_scale"], dtypes[f"{conv}.bias"]) == ("I8", "F32", "F32")
        if fc_8bit:
            assert (dtypes["fc.weight"], dtypes["fc.weight_scale"], dtypes["fc.bias"]) == ("I8", "F32", "F32")
        else:
            assert (dtypes["fc.weight"], dtypes["fc.bias"]) == ("F16", "F32")
        assert len(dtypes) == 3 * len(CONVS) + 2 + fc_8bit
    stored = load_file(str(made.folder_file))
    assert stored["conv1.weight"].shape == (64, 7, 7, 3)  # physically [Cout, KH, KW, Cin]
    assert stored["conv1.weight_scale"].shape == (64,) and bool((stored["conv1.weight_scale"] > 0).all())
    codes = torch.cat([stored[f"{c}.weight"].flatten() for c in CONVS])
    assert int(codes.min()) >= -127 and int(codes.max()) == 127  # symmetric: each row's max is +-127


def test_a_loaded_file_is_the_engine_quantize_makes(made):
    """Both files (from the folder, from its batches) load as fastres.quantize's engine of the
    same calibration; its forward equals theirs bit for bit in the interpreter."""
    folder = fastres.load(made.folder_file, DEVICE, cuda_graph=False)
    _same_engine(folder, made.q)
    _same_engine(fastres.load(made.batches_file, DEVICE, cuda_graph=False), made.q)
    x = torch.randn(2, 3, 32, 32).to(DEVICE)
    out, ref = folder(x), made.q(x)
    assert out.shape == (2, NUM_CLASSES) and out.dtype == torch.float32
    if ON_GPU:
        assert_close(out, ref, 1e-6)
    else:
        assert torch.equal(out, ref)
    assert str(folder.quantization_report()) == str(made.q.quantization_report())


def test_e4m3_file(made, tmp_path):
    """As int8, with e4m3 weights (no forward here: an e4m3 forward costs seconds in the
    interpreter, and equal parameters and ranges make the same engine)."""
    fp8 = torch.float8_e4m3fn
    batches = [b[:, :, :32, :32] for b in made.batches]  # small: calibration costs less
    path = fastres.convert(made.model, tmp_path / "r18-e4m3.safetensors", dtype=fp8, calibrate=batches, method="max")
    meta = metadata(path)
    assert (meta["format_version"], meta["quantized"]) == ("3", "float8_e4m3fn")
    assert json.loads(meta["calibration"])["method"] == "max"
    dtypes = _dtypes(path)
    assert {dtypes[f"{c}.weight"] for c in CONVS} == {"F8_E4M3"} and dtypes["conv1.weight_scale"] == "F32"
    engine = fastres.load(path, DEVICE, cuda_graph=False)
    assert engine.quantized.dtype == fp8 and engine.quantization_report().method == "max"
    _same_engine(engine, fastres.quantize(made.model, batches, dtype=fp8, method="max", device=DEVICE, progress=False))


def test_convert_errors(made, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(WeightsError, match="int8 needs calibration images"):
        fastres.convert(made.pth, out, dtype="int8")
    with pytest.raises(WeightsError, match="calibrate is for a quantized file"):
        fastres.convert(made.pth, out, dtype="float16", calibrate=made.photos)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="calibration images: .*empty: no image files"):
        fastres.convert(made.pth, out, dtype="int8", calibrate=tmp_path / "empty")
    with pytest.raises(WeightsError, match="calibration failed: calibration gave no batches"):
        fastres.convert(made.pth, out, dtype="int8", calibrate=[])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    with pytest.raises(WeightsError, match="calibration images: .*a.jpg: cannot decode JPEG"):
        fastres.convert(made.pth, out, dtype="int8", calibrate=broken)
    assert not out.exists()


def _ranges(change) -> dict:
    def make(meta: dict) -> dict:
        ranges = json.loads(meta["ranges"])
        change(ranges)
        return {"ranges": json.dumps(ranges)}
    return make


BAD_FILES = {
    "damaged ranges": (lambda meta: {"ranges": meta["ranges"][:-3]}, {}, ["invalid quantization metadata"]),
    "a negative range": (_ranges(lambda r: r.update(conv1=-1.0)), {}, ["positive finite numbers"]),
    "an infinite range": (_ranges(lambda r: r.update(conv1=math.inf)), {}, ["positive finite numbers"]),
    "a range missing": (_ranges(lambda r: r.pop("layer3.0.conv2")), {}, ["ranges lacks 'layer3.0.conv2'"]),
    "unknown quantized dtype": (lambda meta: {"quantized": "int4"}, {}, ["quantized='int4'", "int8, float8_e4m3fn"]),
    "unknown quantized layer": (lambda meta: {"quantized_layers": json.dumps([*json.loads(meta["quantized_layers"]),
                                                                               "layer5.0.conv1"])}, {},
                                ["quantized_layers names ['layer5.0.conv1']", "not convs of resnet18"]),
    "layer list damaged": (lambda meta: {"quantized_layers": '["conv1", 3]'}, {}, ["not a list of layer names"]),
    "damaged report": (lambda meta: {"quantization_report": meta["quantization_report"][:40]}, {},
                       ["invalid quantization_report"]),
    "float weight of an 8-bit conv": (lambda meta: {}, {"layer2.0.conv1.weight": torch.zeros(128, 3, 3, 64, dtype=torch.float16)},
                                      ["'layer2.0.conv1.weight'", "torch.float16", "expected torch.int8"]),
    "e4m3 weight in an int8 file": (lambda meta: {}, {"conv1.weight": torch.zeros(64, 7, 7, 3, dtype=torch.float8_e4m3fn)},
                                    ["'conv1.weight'", "float8_e4m3fn", "expected torch.int8"]),
    "float16 weight scales": (lambda meta: {}, {"conv1.weight_scale": torch.ones(64, dtype=torch.float16)},
                              ["'conv1.weight_scale'", "expected torch.float32"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_bad_version_3_file(made, tmp_path, case):
    """Refused by fastres.load with a WeightsError naming what is wrong, before any forward."""
    meta, tensors, fragments = BAD_FILES[case]
    path = rewrite(made.batches_file, tmp_path / "bad.safetensors", meta=meta(metadata(made.batches_file)),
                   tensors=tensors)
    with pytest.raises(WeightsError) as info:
        fastres.load(path, DEVICE, cuda_graph=False)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_cli_convert_prints_the_report_and_the_summary(made):
    rc, out, err = made.cli
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"resnet18 quantized to int8 (entropy calibration on {COUNT} images in 1 batches)")
    assert [line.split()[:2] for line in lines[2:2 + len(CONVS)]] == [[c, "int8"] for c in CONVS]
    report = made.q.quantization_report()
    layers, eight = len(report.layers), sum(r.precision == "int8" for r in report.layers)
    assert report.layers[-1].layer == "fc" and eight >= len(CONVS)
    assert lines[-2].startswith(f"{eight} of {layers} layers in int8")
    size = made.folder_file.stat().st_size / 1e6
    assert lines[-1] == f"{made.folder_file}: resnet18, {NUM_CLASSES} classes, int8 (float layers float16), {size:.1f} MB"
    assert "\n".join(lines[:-1]) == str(made.q.quantization_report())
    assert "Traceback" not in err and f"wrote {made.folder_file}" in err


@pytest.mark.parametrize("extra,words", [
    (["--dtype", "int8"], "--dtype int8 needs calibration images: --calibrate DIR"),
    (["--calibrate", "PHOTOS"], "--calibrate is for a quantized file: --dtype int8 or float8_e4m3fn"),
    (["--dtype", "int8", "--calibrate", "EMPTY"], "no image files in this directory"),
    (["--dtype", "int8", "--calibrate", "PHOTOS", "--calibration-count", "0"], "--calibration-count must be >= 1, got 0"),
    (["--dtype", "int4", "--calibrate", "PHOTOS"], "unknown dtype 'int4'"),
], ids=["no-calibrate", "float-calibrate", "empty-folder", "count-0", "int4"])
def test_cli_convert_usage_errors_are_one_line(made, tmp_path, extra, words):
    (tmp_path / "empty").mkdir()
    folders = {"PHOTOS": str(made.photos), "EMPTY": str(tmp_path / "empty")}
    out = tmp_path / "x.safetensors"
    rc, stdout, err = _cli("convert", made.pth, "--out", out, *(folders.get(a, a) for a in extra))
    lines = err.strip().splitlines()
    assert rc == 2 and stdout == "" and len(lines) == 1, err
    assert lines[0].startswith("fastres convert: error: ") and words in lines[0], lines[0]
    assert not out.exists()


def test_cli_run_a_quantized_file(made):
    """`fastres run --weights FILE`: the file's engine against the float model it stands for and
    against the torch reference of its integer math (equal in the interpreter but for the
    float16 logits' rounding); `--plan` names the int8 launches; a contradicting --dtype is refused."""
    rc, out, err = _cli("run", "--weights", made.folder_file, "--size", "32", "--batch", "1")
    assert rc == 0, out + err
    eight = len(fastres.load(made.folder_file, "cpu", cuda_graph=False).quantized.layers)  # the convs, and fc if 8-bit
    assert f"resnet18 ({made.folder_file}), int8 ({eight} layers; float layers float16), batch 1, 32x32" in out
    parity = next(line for line in out.splitlines() if line.startswith("parity vs that reference: rel L2 "))
    assert float(parity.split()[6]) <= (1e-2 if ON_GPU else 1e-3), parity
    rc, out, err = _cli("run", "--weights", made.folder_file, "--plan", "--batch", "1", "--size", "32")
    assert rc == 0, err
    launches = launch_dtypes(out)
    assert list(launches) == [CONVS[0], "maxpool", *CONVS[1:], "fc"], out
    fc = "int8(int8->-)" if eight > len(CONVS) else "f16(int8->-)"
    assert (launches.pop("conv1"), launches.pop("fc")) == ("int8(-->int8)", fc)
    assert set(launches.values()) == {"int8(int8->int8)"}, launches
    assert "parity" not in out
    rc, out, err = _cli("run", "--weights", made.folder_file, "--dtype", "float16", "--size", "32")
    assert rc == 2 and "--dtype float16 contradicts" in err and "holds int8" in err, err
