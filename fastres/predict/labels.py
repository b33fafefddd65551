"""Class names: a labels file (one per line), else the categories a torchvision weights
entry ships (ImageNet-1k's, available offline: they are part of torchvision's code) for a
1000-class model, else the class index."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


class LabelsError(ValueError):
    """A labels file that does not fit the model."""


def imagenet_categories(weights: str | None = None) -> list[str]:
    """The 1000 category names of a torchvision weights entry (default: ImageNet-1k's, as every
    torchvision ResNet's IMAGENET1K entries list them)."""
    from torchvision.models import ResNet50_Weights, get_weight

    entry = get_weight(weights) if weights else ResNet50_Weights.IMAGENET1K_V2
    return list(entry.meta["categories"])


def read_labels(path: str | os.PathLike, num_classes: int) -> list[str]:
    """One label per line (surrounding blanks stripped; a final empty line ignored), exactly
    `num_classes` of them. Raises FileNotFoundError, LabelsError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise LabelsError(f"{path} is not a UTF-8 text file (one label per line)") from None
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    labels = [line.strip() for line in text.splitlines()]
    empty = [i + 1 for i, label in enumerate(labels) if not label]
    if empty:
        raise LabelsError(f"{path}: line {empty[0]} is empty (one label per line, {num_classes} lines)")
    if len(labels) != num_classes:
        raise LabelsError(f"{path} has {len(labels)} labels but the model has {num_classes} classes")
    return labels


def class_labels(num_classes: int, labels: str | os.PathLike | Sequence[str] | None = None,
                 weights: str | None = None) -> list[str]:
    """The label of every class: `labels` (a file, or a list), else ImageNet's names (those of
    the torchvision weights entry `weights` if given) for 1000 classes, else the index."""
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        labels = [str(v) for v in labels]
        if len(labels) != num_classes:
            raise LabelsError(f"{len(labels)} labels given but the model has {num_classes} classes")
        return labels
    if labels is not None:
        return read_labels(labels, num_classes)
    if num_classes == 1000:
        try:
            names = imagenet_categories(weights)
        except Exception:  # noqa: BLE001 - an entry this torchvision does not know: ImageNet's
            names = imagenet_categories()
        if len(names) == num_classes:
            return names
    return [str(i) for i in range(num_classes)]
