"""fastres.scale.data: the map_batches class on its kinds of column (Ray Data's read-only
arrays left untouched), and `fastres predict --ray` on a local Ray cluster giving exactly the
lines single-process `fastres predict` gives on the same files."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from fastres import cli
from fastres.predict.images import decode, read_bytes
from fastres.predict.output import read_parquet
from helpers import ON_GPU
from predict_helpers import GOOD, bad_files, make_images
import scale_helpers  # noqa: F401 - Ray's test environment, set before ray is imported
from test_build import calibrated

pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision"),
    # Ray Data copies its own context, deprecated fields and all, when a dataset runs.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]
NAMES = ("rgb.jpg", "gray.jpg", "rgba.png", "wide.webp")
SMALL = ["--resize", "40", "--crop", "32", "--dtype", "float32", "--batch", "4", "--topk", "3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_images(root / "photos" / "a", {n: GOOD[n] for n in NAMES})
    bad = bad_files(root / "photos" / "b")
    for name in [n for n in bad if n not in ("truncated.jpg", "notes.png", "empty.jpg")]:
        bad[name][0].unlink()  # three damaged files are enough here
    torch.save(calibrated("resnet18").state_dict(), root / "r18.pth")
    (root / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    return root


@pytest.fixture(scope="module")
def single(root):
    """Single-process `fastres predict` on the folder, written as Parquet: its rows."""
    import os

    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the ray extra brings it)")
    here = os.getcwd()
    os.chdir(root)
    try:
        rc = cli.main(["predict", "photos", "--weights", "r18.pth", "--labels", "labels.txt", "--no-progress", *SMALL,
                       "--out", "single.parquet"])
    finally:
        os.chdir(here)
    rows = read_parquet(root / "single.parquet")
    assert rc == 1 and len(rows) == 7 and sum("error" in r for r in rows) == 3
    return rows


def test_classifier_on_read_only_arrays_and_bytes(root, single):
    """Decoded pixels of the files, as read-only arrays (as Ray Data hands them out): exactly
    the single-process lines (one batch shape, so bitwise), the arrays neither written nor
    warned about; a bad row is an error row, the others go on; bytes rows that are not
    images get their errors with their paths; other columns pass through."""
    from fastres.scale.data import Classifier

    files = sorted((root / "photos" / "a").iterdir())
    clf = Classifier(root / "r18.pth", dtype="float32", resize=40, crop=32, topk=3, batch_size=4,
                     labels=root / "labels.txt")
    images = np.empty(len(files) + 1, dtype=object)
    for i, f in enumerate(files):
        images[i] = decode(read_bytes(f)).permute(1, 2, 0).numpy().copy()
    images[-1] = np.zeros((5, 5), dtype=np.uint8)
    for img in images:
        img.setflags(write=False)
    before = [img.copy() for img in images]
    names = np.array([f"photos/a/{f.name}" for f in files] + ["flat"], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch warns on a non-writable array it would share
        by_image = clf({"image": images, "path": names, "id": np.arange(len(images))}).to_pylist()
    assert [{"path": r["path"], "top": r["top"]} for r in by_image[:-1]] == single[:len(files)]
    assert by_image[-1]["error"] == "an image must be [H, W, 3] uint8 pixels (RGB), got shape [5, 5] uint8"
    assert [r["id"] for r in by_image] == list(range(len(images)))
    assert all(not img.flags.writeable and np.array_equal(img, b) for img, b in zip(images, before))

    by_bytes = clf({"bytes": np.array([b"", b"some text"], dtype=object),
                    "path": np.array(["e.jpg", "t.jpg"], dtype=object)}).to_pylist()
    assert [(r["path"], r["top"], r["error"].split(":")[0]) for r in by_bytes] == \
        [("e.jpg", None, "empty file"), ("t.jpg", None, "not an image")]
    with pytest.raises(ValueError, match=r"a batch needs a 'bytes', 'image' or 'path' column, got \['id'\]"):
        clf({"id": np.arange(2)})


def test_predict_on_ray_equals_single_process(root, single, ray_cluster, monkeypatch, capsys):
    """`fastres predict --ray` on the cluster this process is connected to: one JSON line per
    file on stdout (nothing else there), in input order, equal to single-process `fastres
    predict`'s own; exit 1 for the damaged files; no traceback. (`fastres serve`'s test runs
    the same connection code from a fresh process with --address.)"""
    monkeypatch.chdir(root)
    rc = cli.main(["predict", "--ray", "photos", "--weights", "r18.pth", "--labels", "labels.txt", "--no-progress",
                   *SMALL])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert "Traceback" not in err, err
    assert [json.loads(line) for line in out.splitlines()] == single
    where = "1 GPU and" if ON_GPU else "1 CPU each, through triton's CPU interpreter"
    assert f"on 1 Ray actor(s), {where}" in err
    assert err.strip().splitlines()[-1].startswith("7 images (3 failed) in ")
    import ray

    assert ray.is_initialized()  # a cluster it did not start or connect to is left as it was


def test_bfloat16_on_a_cluster_without_gpus_is_one_line(root, ray_cluster, monkeypatch, capsys):
    if ON_GPU:
        pytest.skip("the test cluster has a GPU here")
    monkeypatch.chdir(root)
    rc = cli.main(["predict", "--ray", "photos", "--weights", "r18.pth", "--dtype", "bfloat16"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.strip().splitlines() == [
        "fastres predict: error: bfloat16 needs a GPU, and this Ray cluster has none: triton's CPU interpreter "
        "multiplies bf16 wrongly (triton issue 11584)"], err
