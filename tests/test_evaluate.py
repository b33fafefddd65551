"""`fastres eval` and fastres.evaluate: top-1 / top-5 counted as by hand, the two folder layouts
in torchvision's and MLPerf's order, float16 beside its float32 reference, the JSON document,
progress, and every usage mistake as one line and exit 2."""
from __future__ import annotations

import json
import re

import pytest
import torch

import fastres
from fastres import cli
from fastres.benchmark.numerics import rel_error
from fastres.errors import UserError
from fastres.evaluate import Tally, build, dtypes_to_run, list_dataset, topk_hits
from helpers import DEVICE, ON_GPU
from predict_helpers import GOOD, make_images
from test_build import calibrated

SMALL = ["--resize", "40", "--crop", "32", "--batch-size", "8"]
NAMES = ("rgb.jpg", "gray.jpg", "rgba.png", "wide.webp", "small.png", "tall.jpg")


def test_topk_and_tally_against_a_hand_count():
    logits = torch.tensor([[0.1, 0.9, 0.3, 0.2, 0.5, 0.0],    # order 1 4 2 3 0 5
                           [2.0, 1.0, 0.0, -1.0, -2.0, 3.0],   # order 5 0 1 2 3 4
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],     # order 5 4 3 2 1 0
                           [1.0, 0.0, 0.5, 0.25, 0.75, 0.6]])  # order 0 4 5 2 3 1
    labels = torch.tensor([1, 3, 0, 2])                         # 1st, 5th, 6th, 4th of their rows
    assert topk_hits(logits, labels, 1).tolist() == [True, False, False, False]
    assert topk_hits(logits, labels, 5).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="k must be between 1 and the 6 classes"):
        topk_hits(logits, labels, 7)
    other = logits.clone()
    other[1, 0] = 4.0                                           # image 1's top-1 becomes class 0, its 3 stays 5th
    tally = Tally()
    tally.add(other[:3], labels[:3], logits[:3])                # in two parts, as the loop tallies
    tally.add(other[3:], labels[3:], logits[3:])
    s = tally.summary()
    assert (s["images"], s["top1_correct"], s["top5_correct"]) == (4, 1, 3)
    assert s["top1"] == 25.0 and s["top5"] == 75.0 and s["agreement_top1"] == 75.0
    assert s["logits_rel_l2"] == pytest.approx(rel_error(other, logits), rel=1e-12)
    assert s["logits_rel_l2"] == pytest.approx(2.0 / logits.double().norm().item(), rel=1e-6)
    few = Tally()
    few.add(logits[:, :3], torch.tensor([1, 0, 2, 0]))          # 3 classes: no top-5, no reference
    s = few.summary()
    assert s["top1"] == 100.0 and s["top5"] is None and s["agreement_top1"] is None and s["logits_rel_l2"] is None
    worse = Tally()
    worse.add(torch.full((1, 6), float("inf")), labels[:1], logits[:1])
    assert worse.summary()["logits_rel_l2"] is None             # not finite: no number in the JSON


def test_float32_is_the_reference_of_any_other_dtype():
    assert dtypes_to_run(["float32"]) == ["float32"]
    assert dtypes_to_run(["float16"]) == ["float32", "float16"]
    assert dtypes_to_run(["float16", "float32", "float16", "bfloat16"]) == ["float32", "float16", "bfloat16"]


def test_both_layouts_in_their_own_order(tmp_path):
    """val_map.txt: sorted by file name; ImageFolder: torchvision's classes and files (its
    IMG_EXTENSIONS, any case; other files ignored); --limit: the first N of that order."""
    mlperf = tmp_path / "mlperf"
    make_images(mlperf, {n: GOOD[n] for n in ("rgb.jpg", "gray.jpg", "small.png")})
    (mlperf / "val_map.txt").write_text("rgb.jpg 7\n\ngray.jpg 3\nsmall.png 0\n")
    ds = list_dataset(mlperf)
    assert ds.layout == "val_map" and ds.classes is None
    assert [p.name for p in ds.paths] == ["gray.jpg", "rgb.jpg", "small.png"] and ds.labels.tolist() == [3, 7, 0]
    assert [p.name for p in list_dataset(mlperf, limit=2).paths] == ["gray.jpg", "rgb.jpg"]

    folder = tmp_path / "folder"
    make_images(folder / "dog", {"b.JPG": GOOD["rgb.jpg"], "a.png": GOOD["small.png"]})
    make_images(folder / "cat", {"z.webp": GOOD["wide.webp"]})
    (folder / "cat" / "notes.txt").write_text("not an image")
    ds = list_dataset(folder)
    assert ds.layout == "image_folder" and ds.classes == ["cat", "dog"]
    assert [p.relative_to(folder).as_posix() for p in ds.paths] == ["cat/z.webp", "dog/a.png", "dog/b.JPG"]
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds.labels.tolist()[:2] == list_dataset(folder, limit=2).labels.tolist()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A float32 resnet18 file, six images, and the float32 engine's own top-5 of each (through
    fastres.Predictor, preprocessed as fastres eval preprocesses them)."""
    root = tmp_path_factory.mktemp("eval")
    weights = fastres.convert(calibrated("resnet18"), root / "r18-float32.safetensors", dtype=torch.float32)
    images = make_images(root / "photos", {n: GOOD[n] for n in NAMES})
    predictor = fastres.Predictor(weights, device=DEVICE, resize=40, crop=32, batch_size=8, topk=5)
    top = {p.path: [t.index for t in p.top] for p in predictor.predict_paths(images)}
    return root, weights, images, top


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_val_map_float16_beside_float32(setup, capsys, monkeypatch):
    """Labels are float32's own answers: 100% for float32; float16 agrees with it and its logits
    are close; a broken file is listed, not counted, and makes the exit status 1."""
    root, weights, images, top = setup
    data = root / "mlperf"
    data.mkdir()
    for img in images:
        (data / img.name).write_bytes(img.read_bytes())
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    (data / "val_map.txt").write_text("".join(f"{p.name} {top[str(p)][0]}\n" for p in images) + "broken.jpg 0\n")
    monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", "0")  # stderr is no terminal: a line per image
    out = root / "eval.json"
    # batch 6: the six images the Predictor ran in one batch of six, the same shape here
    rc, stdout, err = run_cli(capsys, "--weights", weights, "--data", data, "--dtype", "float16", "--json",
                              "--out", out, *SMALL, "--batch-size", "6")
    assert rc == 1 and "Traceback" not in err, err
    doc = json.loads(stdout)
    assert doc == json.loads(out.read_text())
    assert doc["layout"] == "val_map" and doc["images"] == 7 and doc["classified"] == 6
    assert [f["path"] for f in doc["failed"]] == [str(data / "broken.jpg")]
    assert "cannot decode JPEG" in doc["failed"][0]["error"]
    assert doc["weights_dtype"] == "float32" and doc["num_classes"] == 10 and doc["reference"] == "float32"
    assert doc["preprocess"]["resize"] == 40 and doc["preprocess"]["crop"] == 32 and doc["preprocess"]["mode"] == "exact"
    f32, f16 = doc["results"]
    assert (f32["dtype"], f32["reference"], f16["dtype"], f16["reference"]) == ("float32", True, "float16", False)
    assert f32["top1"] == 100.0 and f32["top5"] == 100.0 and f32["top1_correct"] == 6
    assert f32["agreement_top1"] is None and f32["logits_rel_l2"] is None
    assert 0 < f16["logits_rel_l2"] < 2e-2                    # DESIGN.md section 4's float16 cap
    assert f16["agreement_top1"] == pytest.approx(100.0 * f16["top1_correct"] / 6)
    progress = [line for line in err.splitlines() if line.startswith("evaluating: ")]
    assert progress and progress[-1].startswith("evaluating: 7/7 img, "), err
    assert all(re.fullmatch(r"evaluating: \d+/7 img, [\d.]+ img/s, \d+ s", line) for line in progress), progress
    assert "1 failed" in err.strip().splitlines()[-1]          # the time split closes stderr


def test_image_folder_limit_and_table(setup, capsys):
    """Class folders a, b (labels 0, 1), --limit 5: top-1 and top-5 as counted from float32's
    own answers; the file's own dtype by default, so no reference columns; exit 0."""
    root, weights, images, top = setup
    data = root / "folder"
    labels = {}
    for i, img in enumerate(images):
        cls = "ab"[i % 2]
        (data / cls).mkdir(parents=True, exist_ok=True)
        (data / cls / img.name).write_bytes(img.read_bytes())
        labels[(cls, img.name)] = (i % 2, top[str(img)])
    first = sorted(labels)[:5]                                  # ImageFolder's order: a's files, then b's
    top1 = sum(answers[0] == label for label, answers in (labels[k] for k in first))
    top5 = sum(label in answers for label, answers in (labels[k] for k in first))
    rc, stdout, err = run_cli(capsys, "--weights", weights, "--data", data, "--limit", 5, "--no-progress", *SMALL)
    assert rc == 0 and "evaluating:" not in err, err
    lines = stdout.splitlines()
    assert lines[0].startswith("5 of 5 images classified (image_folder: ")
    assert lines[1].split() == ["dtype", "top-1", "top-5"]
    assert lines[2].split() == ["float32", f"{100 * top1 / 5:.2f}%", f"{100 * top5 / 5:.2f}%"]


def test_build_casts_a_converted_file_and_folds_a_checkpoint(setup):
    root, weights, _, _ = setup
    f32, meta = build(weights, "float32", DEVICE)
    f16, _ = build(weights, "float16", DEVICE)
    assert meta["dtype"] == "float32" and f16.dtype == torch.float16
    for k, v in f32.params().items():
        assert f16.params()[k].dtype == (torch.float16 if k.endswith(".weight") else torch.float32)
        assert torch.equal(f16.params()[k], v.to(f16.params()[k].dtype)), k
    pth = root / "r18.pth"
    torch.save(calibrated("resnet18").state_dict(), pth)
    model, _ = build(pth, "float16", DEVICE)
    assert model.dtype == torch.float16 and model.num_classes == 10
    for name in ("int8", "float8_e4m3fn"):
        with pytest.raises(UserError, match=f"--dtype {name}: .* holds float32 weights; give --calibrate DIR"):
            build(weights, name, DEVICE)
        with pytest.raises(UserError, match=f"--dtype {name}: .* holds a checkpoint; give --calibrate DIR"):
            build(pth, name, DEVICE)


@pytest.mark.parametrize("case,words", [
    ("neither", "neither layout: no val_map.txt"),
    ("empty", "the folder is empty"),
    ("no-images", "Found no valid file for the classes c"),
    ("label", "wide.webp (val_map.txt) has label 10, out of range of the model's 10 classes (0 to 9)"),
    ("folder-label", "(class folder 'k') has label 10, out of range of the model's 10 classes"),
    ("missing", "no such image"),
    ("bf16", "bfloat16 needs a GPU"),
    ("int8", "holds float32 weights; give --calibrate DIR to quantize it here, or a file converted with "
             "`fastres convert --dtype int8 --calibrate DIR`"),
    ("unknown", "--dtype fp8: unknown (choose from float32, float16, bfloat16, int8, float8_e4m3fn)"),
    ("limit", "--limit must be >= 1, got 0"),
    ("calibrate", "--calibrate quantizes a float file for --dtype int8 or float8_e4m3fn; no 8-bit dtype is asked"),
])
def test_usage_mistakes_are_one_line_and_exit_2(setup, tmp_path, capsys, case, words):
    root, weights, images, _ = setup
    if case == "bf16" and ON_GPU:
        pytest.skip("a CPU-only mistake")
    data = tmp_path / "data"
    data.mkdir()
    if case == "neither":
        (data / "a.jpg").write_bytes(images[0].read_bytes())
    elif case == "no-images":
        (data / "c").mkdir()
    elif case in ("label", "missing"):
        (data / "wide.webp").write_bytes(images[3].read_bytes())
        (data / "val_map.txt").write_text("wide.webp 10\n" if case == "label" else "gone.jpg 1\n")
    elif case == "folder-label":
        for i in range(11):  # eleven classes for a model of ten
            (data / f"{chr(ord('a') + i)}").mkdir()
            (data / f"{chr(ord('a') + i)}" / "x.png").write_bytes(images[4].read_bytes())
    elif case not in ("empty",):
        (data / "val_map.txt").write_text("x.png 1\n")
        (data / "x.png").write_bytes(images[4].read_bytes())
    extra = {"bf16": ["--dtype", "bfloat16"], "int8": ["--dtype", "float16", "int8"],
             "unknown": ["--dtype", "float16,fp8"], "limit": ["--limit", "0"],
             "calibrate": ["--dtype", "float16", "--calibrate", str(data)]}.get(case, [])
    rc, out, err = run_cli(capsys, "--weights", weights, "--data", data, *extra, *SMALL)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("fastres eval: error: ") and words in lines[0], lines[0]


# -- quantized dtypes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantized(setup):
    """An int8 file of the same resnet18, calibrated on two of the images (preprocessed at
    resize 256, crop 224: the file states no preprocessing), and a val_map folder of three
    images labelled with float32's answers."""
    root, _, images, top = setup
    path = fastres.convert(calibrated("resnet18"), root / "r18-int8.safetensors", dtype="int8",
                           calibrate=images[0].parent, calibration_count=2, method="max")
    data = root / "three"
    data.mkdir()
    for img in images[:3]:
        (data / img.name).write_bytes(img.read_bytes())
    (data / "val_map.txt").write_text("".join(f"{p.name} {top[str(p)][0]}\n" for p in images[:3]))
    return path, data


def _rows(doc: dict) -> None:
    assert doc["reference"] == "float32" and [r["dtype"] for r in doc["results"]] == ["float32", "int8"]
    f32, int8 = doc["results"]
    assert f32["reference"] and f32["agreement_top1"] is None and f32["logits_rel_l2"] is None
    assert not int8["reference"] and int8["images"] == 3 and int8["agreement_top1"] is not None
    assert 0 < int8["logits_rel_l2"] < 0.5


def test_a_quantized_file_beside_the_float_model_it_stands_for(setup, quantized, capsys):
    """--dtype int8 of an int8 file: the file as it is, and as float32 the float model it stands
    for (its codes times their scales): the logits' difference is the quantization's alone."""
    root, weights, _, _ = setup
    path, data = quantized
    rc, stdout, err = run_cli(capsys, "--weights", path, "--data", data, "--dtype", "int8", "--json", "--no-progress",
                              *SMALL)
    assert rc == 0 and err.count("\n") == 2, err               # the run's line and the time split
    doc = json.loads(stdout)
    assert doc["weights_dtype"] == "int8" and doc["classified"] == 3
    _rows(doc)
    q = fastres.load(path, "cpu", cuda_graph=False)
    f32, meta = build(path, "float32", DEVICE)
    assert meta["quantized"] == "int8" and f32.quantized is None and f32.dtype == torch.float32
    for k, v in f32.params().items():
        want = q.params()[k].float()
        if k.removesuffix(".weight") in q.quantized.layers:
            scale = q.params()[k.replace(".weight", ".weight_scale")]  # per output channel (per class for fc)
            want = want * scale.view(-1, *[1] * (want.dim() - 1))
        assert torch.equal(v.cpu(), want), k


def test_a_float_file_quantized_here(setup, quantized, capsys, monkeypatch):
    """--dtype float32 int8 --calibrate DIR: the float file quantized by fastres.quantize on the
    calibration images, preprocessed as the evaluated ones (--resize 40 --crop 32)."""
    import fastres.quant.quantize as quantize_module

    root, weights, images, _ = setup
    _, data = quantized
    seen = []
    real = quantize_module.quantize

    def spy(model, calibration, **kw):
        seen.extend(tuple(b.shape) for b in calibration)
        return real(model, calibration, **kw)

    monkeypatch.setattr(quantize_module, "quantize", spy)
    rc, stdout, err = run_cli(capsys, "--weights", weights, "--data", data, "--dtype", "float32", "int8",
                              "--calibrate", images[0].parent, "--calibration-count", 3, "--method", "max", "--json",
                              "--no-progress", *SMALL)
    assert rc == 0, err
    assert seen == [(3, 3, 32, 32)]
    doc = json.loads(stdout)
    assert doc["weights_dtype"] == "float32"
    _rows(doc)
