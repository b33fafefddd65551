"""Accuracy on a labelled image folder (``fastres eval``): top-1 and top-5 of one or several
dtypes side by side, and how far each strays from float32.

- The folder: MLPerf's ImageNet layout (``val_map.txt``, ``FILE LABEL`` lines, read by
  `fastres.benchmark.mlperf.read_val_map`) or torchvision's ``ImageFolder`` (one folder per
  class, classes numbered in sorted name order, files with torchvision's ``IMG_EXTENSIONS``:
  torchvision's own ``find_classes`` and ``make_dataset``). Images in sorted order.
- The models: `build` makes the one each dtype is evaluated with; float32 is always among them
  as the reference when another dtype is asked.
- The loop: each image read, decoded and cropped once, as ``fastres predict`` does it (its
  worker job, `load_item`, on a thread pool, in the same ``exact`` or ``fast`` mode and with
  the same `Transform`; decoded on the CPU, never by nvjpeg, so that ``exact`` gives
  torchvision's pixels), and every batch run through each dtype's model (one `ImageBatcher`
  each: fixed-shape batches, normalized in the stem).
- The metrics: `topk_hits` and `Tally` (top-1, top-5, agreement of top-1 with the reference,
  relative L2 error of the logits over the whole set).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from .errors import UserError, first_line

if TYPE_CHECKING:
    from .predict.pipeline import StageTimes

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
QUANTIZED_DTYPES = ("int8", "float8_e4m3fn")
DTYPES = FLOAT_DTYPES + QUANTIZED_DTYPES
REFERENCE = "float32"
TOPK = (1, 5)
# Rows of logits gathered before they are tallied: the tally's cost is per call, not per image.
TALLY_ROWS = 256


# -- the folder -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dataset:
    """Labelled images: `paths` [N] and `labels` (int64 [N]) in sorted order. layout: "val_map"
    (MLPerf's) or "image_folder" (torchvision's); `classes`: an ImageFolder's class folder names
    by index (None for val_map)."""

    root: Path
    layout: str
    paths: list[Path]
    labels: torch.Tensor
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        """Where image i's label comes from, for a message."""
        rel = self.paths[i].relative_to(self.root) if self.paths[i].is_relative_to(self.root) else self.paths[i]
        if self.classes is None:
            return f"{rel} (val_map.txt)"
        return f"{rel} (class folder {self.classes[int(self.labels[i])]!r})"


def list_dataset(root: str | os.PathLike, limit: int | None = None) -> Dataset:
    """The labelled images of `root`: its ``val_map.txt`` where it has one (sorted by file name),
    else its class folders as torchvision's ImageFolder reads them (in ImageFolder's order:
    classes by name, then each class's files sorted). limit: the first `limit` of them.
    A UserError for a missing or empty folder, one of neither layout, or no images."""
    from .benchmark.mlperf import read_val_map

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root}: no such folder")
    if (root / "val_map.txt").is_file():
        paths, labels = read_val_map(root)
        order = sorted(range(len(paths)), key=lambda i: paths[i])
        paths, labels, layout, classes = [paths[i] for i in order], torch.from_numpy(labels[order]), "val_map", None
    else:
        paths, labels, classes = _image_folder(root)
        layout = "image_folder"
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    return Dataset(root, layout, paths, labels, classes)


def _image_folder(root: Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    with os.scandir(root) as it:
        entries = list(it)
    if not entries:
        raise UserError(f"--data {root}: the folder is empty")
    if not any(e.is_dir() for e in entries):
        raise UserError(f"--data {root}: neither layout: no val_map.txt (MLPerf's 'FILE LABEL' lines) and no class "
                        "folders (torchvision's ImageFolder)")
    classes, class_to_idx = find_classes(root)
    try:
        samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without an image file: torchvision refuses it
        raise UserError(f"--data {root}: {first_line(exc, typed=False, limit=None)}") from None
    return ([Path(p) for p, _ in samples], torch.tensor([c for _, c in samples], dtype=torch.int64), classes)


def check_labels(dataset: Dataset, num_classes: int) -> None:
    """A UserError naming the first image whose label the model's classes do not cover."""
    bad = ((dataset.labels < 0) | (dataset.labels >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise UserError(f"--data {dataset.root}: {dataset.describe(i)} has label {int(dataset.labels[i])}, out of range "
                        f"of the model's {num_classes} classes (0 to {num_classes - 1})")


# -- the models -------------------------------------------------------------------------------

def build(weights: str | os.PathLike, dtype: str, device: torch.device, *, calibrate: str | os.PathLike | None = None,
          calibration_count: int = 500, method: str | None = None, resize: int | None = None, crop: int | None = None,
          mode: str = "exact", progress: bool = False):
    """(model, metadata): the classifier `weights` give, evaluated at `dtype` on `device`, and
    the file's metadata (what chooses the preprocessing: `weights_transform`).

    The model has ``device``, ``num_classes``, ``forward_pixels(uint8 [N, 3, H, W], mean, std)``
    and ``__call__(float [N, 3, H, W])``, each giving logits [N, num_classes], as a
    `fastres.ResNet` does. A float dtype: a converted file in its own dtype is loaded as it is
    (`fastres.load`); a torchvision checkpoint (.pth) is folded at `dtype`; a converted file in
    another dtype has its weights cast (biases stay float32, as in every file), so float32 from
    a float16 file computes the float16 weights in float32. A UserError for anything the file
    or the device cannot give (bfloat16 on the CPU, a trunk, a damaged file).

    int8 / float8_e4m3fn: a file converted in that dtype runs as it is; any other file is
    quantized here by fastres.quantize (`method`), calibrated on the first `calibration_count`
    images of `calibrate`, preprocessed as the evaluated images are: as the file says, with
    `resize` / `crop` overriding its sizes, in `mode` ("exact" or "fast"); `progress`: the
    calibration's on stderr. A float dtype of a quantized file: the float model it stands for
    (its 8-bit weights dequantized)."""
    if dtype in QUANTIZED_DTYPES:
        return _quantized(Path(weights), dtype, device, calibrate, calibration_count, method,
                          dict(resize=resize, crop=crop, mode=mode), progress)
    if dtype not in FLOAT_DTYPES:
        raise UserError(f"--dtype {dtype}: unknown (choose from {', '.join(DTYPES)})")
    from .errors import WeightsError
    from .weights import DTYPES as TORCH_DTYPES, load, open_model

    path, graph = Path(weights), device.type == "cuda"
    try:
        meta = _converted_metadata(path)
        if meta is not None and "quantized" in meta:
            from .quant.quantize import dequantized

            return dequantized(load(path, "cpu", cuda_graph=False), TORCH_DTYPES[dtype], device, graph), meta
        if meta is None or meta["dtype"] == dtype:
            return open_model(path, device, dtype=TORCH_DTYPES[dtype], cuda_graph=graph)
        return _cast(load(path, device, cuda_graph=False), TORCH_DTYPES[dtype], graph), meta
    except (WeightsError, FileNotFoundError, ValueError, TypeError) as exc:
        raise UserError(first_line(exc, typed=False, limit=None)) from None


def _quantized(path: Path, dtype: str, device: torch.device, calibrate, count: int, method: str, preprocess: dict,
               progress: bool):
    from .errors import WeightsError
    from .weights import open_model

    meta = _converted_metadata(path)
    graph = device.type == "cuda"
    try:
        if meta is not None and meta.get("quantized") == dtype:
            return open_model(path, device, dtype=dtype, cuda_graph=graph)
        if calibrate is None:
            held = "a checkpoint" if meta is None else f"{meta.get('quantized', meta['dtype'])} weights"
            raise UserError(f"--dtype {dtype}: {path} holds {held}; give --calibrate DIR to quantize it here, or a file "
                            f"converted with `fastres convert --dtype {dtype} --calibrate DIR`")
        from .predict.predictor import weights_transform
        from .quant.images import CalibrationImages
        from .quant.quantize import quantize

        model, meta = build(path, "float32", torch.device("cpu"))
        t, _ = weights_transform(meta, preprocess["resize"], preprocess["crop"])
        images = CalibrationImages(calibrate, count, resize=t.resize, crop=t.crop, mode=preprocess["mode"],
                                   interpolation=t.interpolation, mean=t.mean, std=t.std)
        return quantize(model, images, dtype=getattr(torch, dtype), method=method, device=device, cuda_graph=graph,
                        progress=progress), meta
    except (WeightsError, FileNotFoundError, ValueError, TypeError) as exc:
        raise UserError(first_line(exc, typed=False, limit=None)) from None


def stored_dtype(weights: str | os.PathLike) -> str | None:
    """The dtype a converted classifier file holds (a quantized file's 8-bit dtype); None for a
    checkpoint (folded at whatever dtype is asked)."""
    meta = _converted_metadata(Path(weights))
    return None if meta is None else meta.get("quantized", meta["dtype"])


def _converted_metadata(path: Path) -> dict[str, str] | None:
    """A converted classifier file's metadata; None for anything else (a checkpoint to fold, a
    trunk, a damaged file: `open_model` says what is wrong with those)."""
    from .errors import WeightsError
    from .weights import read_metadata

    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        meta = read_metadata(path)
    except WeightsError:
        return None
    return meta if "num_classes" in meta else None


def _cast(model, dtype: torch.dtype, cuda_graph: bool):
    """A ResNet with `model`'s parameters, its weights cast to `dtype` (biases stay float32)."""
    from .engine import ResNet
    from .plan import named

    params = {k: (v.to(dtype) if k.endswith(".weight") else v) for k, v in model.params().items()}
    return ResNet(named(model.spec), params, num_classes=model.num_classes, dilate=model.dilate, dtype=dtype,
                  device=model.device, cuda_graph=cuda_graph)


def dtypes_to_run(asked: Sequence[str]) -> list[str]:
    """The dtypes evaluated: those asked, each once, in order, after float32 (the reference)
    whenever another dtype is asked."""
    out = list(dict.fromkeys(asked))
    if out == [REFERENCE]:
        return out
    return [REFERENCE, *(d for d in out if d != REFERENCE)]


# -- the metrics ------------------------------------------------------------------------------

def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """bool [N]: whether labels[i] is among the `k` largest of logits[i] ([N, C], k <= C)."""
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be between 1 and the {logits.shape[1]} classes, got {k}")
    return (logits.topk(k, dim=1).indices == labels.to(logits.device)[:, None]).any(dim=1)


class Tally:
    """One dtype's running counts: images, top-1 and top-5 hits, and against the reference's
    logits (when given) top-1 agreement and the squared L2 norms of the difference and of the
    reference (float64), so that the relative error is that of the whole set at once."""

    def __init__(self) -> None:
        self.images = 0
        self.hits = dict.fromkeys(TOPK, 0)
        self.compared = 0
        self.agree = 0
        self.err_sq = 0.0
        self.ref_sq = 0.0
        self.nonfinite = False
        self.num_classes: int | None = None

    def add(self, logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor | None = None) -> None:
        """logits [n, C] (any float dtype), labels int64 [n], reference: the reference's logits
        of the same images [n, C], or None."""
        self.num_classes = logits.shape[1]
        self.images += logits.shape[0]
        for k in TOPK:
            if k <= self.num_classes:
                self.hits[k] += int(topk_hits(logits, labels, k).sum())
        if reference is None:
            return
        o, r = logits.double(), reference.to(logits.device).double()
        self.compared += logits.shape[0]
        self.agree += int((o.topk(1, dim=1).indices == r.topk(1, dim=1).indices).sum())
        self.nonfinite |= bool((~torch.isfinite(o) & torch.isfinite(r)).any())
        self.err_sq += float(((o - r) ** 2).sum())
        self.ref_sq += float((r ** 2).sum())

    def summary(self) -> dict:
        """{"images", "top1", "top5" (percent; top5 None under 5 classes), "top1_correct",
        "top5_correct", "agreement_top1" (percent of images whose top-1 is the reference's),
        "logits_rel_l2" (||logits - reference|| / ||reference|| over every logit; None where
        not finite)}; the last two None without a reference, the percentages None for no images."""
        def pct(n: int, of: int) -> float | None:
            return 100.0 * n / of if of else None

        five = self.num_classes is not None and self.num_classes >= 5
        out = {"images": self.images, "top1": pct(self.hits[1], self.images),
               "top5": pct(self.hits[5], self.images) if five else None,
               "top1_correct": self.hits[1], "top5_correct": self.hits[5] if five else None,
               "agreement_top1": None, "logits_rel_l2": None}
        if self.compared:
            rel = math.inf if self.nonfinite else math.sqrt(self.err_sq) / max(math.sqrt(self.ref_sq), 1e-300)
            out.update(agreement_top1=pct(self.agree, self.compared), logits_rel_l2=rel if math.isfinite(rel) else None)
        return out


# -- the loop ---------------------------------------------------------------------------------

class _EachModel:
    """run_pipeline's batcher: every batch of decoded crops through each model's ImageBatcher;
    an image's Prediction carries the logits of every model stacked, [models, classes]."""

    def __init__(self, batchers: Sequence, stages) -> None:
        self.batchers, self.stages = list(batchers), stages
        self.batch_size = self.batchers[0].batch_size

    def submit(self, items: list) -> list:
        return [b.submit(items) for b in self.batchers]

    def finish(self, batches: list) -> list:
        from .predict.output import Prediction

        outs = [b.finish(batch) for b, batch in zip(self.batchers, batches)]
        rows = []
        for k, (index, first) in enumerate(outs[0]):
            if first.ok:
                first = Prediction(first.path, top=first.top, logits=torch.stack([out[k][1].logits for out in outs]))
            rows.append((index, first))
        return rows

    def close(self) -> None:
        for b in self.batchers:
            b.close()


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` found: per dtype (in run order) its `Tally`, the images that could not be
    classified (path, why), and the pipeline's stage times."""

    dataset: Dataset
    tallies: dict[str, Tally]
    failed: list[tuple[str, str]]
    stages: "StageTimes"

    @property
    def reference(self) -> str | None:
        """The dtype the others were compared with (the first), None when only one ran."""
        return next(iter(self.tallies)) if len(self.tallies) > 1 else None

    def rows(self) -> list[dict]:
        """One summary per dtype: {"dtype", "reference": bool, **Tally.summary()}."""
        return [{"dtype": name, "reference": name == self.reference, **t.summary()} for name, t in self.tallies.items()]

    def to_dict(self) -> dict:
        """{"data", "layout", "images" (listed), "classified", "failed": [{"path", "error"}],
        "reference" (None for one dtype), "results": `rows()`, "seconds" (wall)}."""
        return {"data": str(self.dataset.root), "layout": self.dataset.layout, "images": len(self.dataset),
                "classified": len(self.dataset) - len(self.failed),
                "failed": [{"path": path, "error": error} for path, error in self.failed],
                "reference": self.reference, "results": self.rows(), "seconds": round(self.stages.wall, 3)}


def evaluate(models: Mapping[str, object], dataset: Dataset, transform, *, batch_size: int, mode: str = "exact",
             workers: int | None = None, max_pixels: int | None = None, progress: bool = False) -> Evaluation:
    """Run every image of `dataset` through each of `models` (dtype name -> model, the reference
    first where there are several), decoded and cropped once with `transform` in `mode`
    ("exact" or "fast"); tally each model against the labels and against the first model."""
    from .predict.images import DEFAULT_MAX_PIXELS
    from .predict.pipeline import ImageBatcher, StageTimes, default_workers, load_item, run_pipeline
    from .progress import Progress

    names = list(models)
    num_classes = models[names[0]].num_classes
    workers = int(workers or default_workers())
    stages = StageTimes(workers=workers)
    labels = [str(i) for i in range(num_classes)]
    topk = min(max(TOPK), num_classes)
    rows = min(batch_size, max(1, len(dataset)))
    batcher = _EachModel([ImageBatcher(models[n], transform, labels, batch_size=rows, topk=topk, stages=stages)
                          for n in names], stages)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    jobs = (lambda i=i, p=p: load_item(i, str(p), transform, limit, stages, False, mode=mode)
            for i, p in enumerate(dataset.paths))
    tallies = {n: Tally() for n in names}
    failed: list[tuple[str, str]] = []
    pending: list[tuple[torch.Tensor, int]] = []

    def flush() -> None:
        if not pending:
            return
        logits = torch.stack([row for row, _ in pending], dim=1)  # [models, n, classes]
        target = dataset.labels[[i for _, i in pending]]
        for m, name in enumerate(names):
            tallies[name].add(logits[m], target, logits[0] if m else None)
        pending.clear()

    preds = run_pipeline(jobs, batcher, workers=min(workers, max(1, len(dataset))),
                         lookahead=max(2 * rows, 4 * workers))
    try:
        with Progress(len(dataset), desc="evaluating", unit="img", enabled=progress) as bar:
            for index, pred in enumerate(preds):
                bar.update()
                if not pred.ok:
                    failed.append((pred.path, pred.error))
                    continue
                pending.append((pred.logits, index))
                if len(pending) >= TALLY_ROWS:
                    flush()
        flush()
    finally:
        preds.close()
        batcher.close()
    return Evaluation(dataset, tallies, failed, stages)


__all__ = ["DTYPES", "Dataset", "Evaluation", "FLOAT_DTYPES", "QUANTIZED_DTYPES", "REFERENCE", "Tally", "build",
           "check_labels", "dtypes_to_run", "evaluate", "list_dataset", "stored_dtype", "topk_hits"]
