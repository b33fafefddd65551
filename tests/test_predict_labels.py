"""fastres.predict.labels: ImageNet's names offline, a labels file, the index otherwise."""
from __future__ import annotations

import pytest

from fastres.predict.labels import LabelsError, class_labels, imagenet_categories, read_labels


def test_imagenet_names_for_1000_classes():
    names = class_labels(1000)
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever"
    assert class_labels(1000, weights="ResNet50_Weights.IMAGENET1K_V2") == names == imagenet_categories()
    assert class_labels(1000, weights="NoSuch_Weights.X") == names  # an unknown entry: still ImageNet's


def test_index_otherwise():
    assert class_labels(3) == ["0", "1", "2"]


def test_labels_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("cat\n  dog \nbird\n")
    assert class_labels(3, f) == ["cat", "dog", "bird"] == read_labels(f, 3)
    assert class_labels(2, ["a", "b"]) == ["a", "b"]
    with pytest.raises(LabelsError, match=r"labels.txt has 3 labels but the model has 1000 classes"):
        class_labels(1000, f)
    f.write_text("cat\n\nbird\n")
    with pytest.raises(LabelsError, match="line 2 is empty"):
        read_labels(f, 3)
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LabelsError, match="not a UTF-8 text file"):
        read_labels(f, 1)
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        read_labels(tmp_path / "nope.txt", 1)
    with pytest.raises(LabelsError, match="1 labels given but the model has 2 classes"):
        class_labels(2, ["a"])
