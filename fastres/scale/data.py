"""Offline batch inference on Ray Data: `Classifier`, the callable class for
``Dataset.map_batches`` (one engine per actor, built once), `classify` around it, and
`predict_files`, the ``fastres predict --ray`` pipeline.

A batch's images come as one of three columns, preprocessed exactly as ``fastres predict``
preprocesses files (torchvision's decoders and transforms):

- ``bytes``: encoded files (JPEG, PNG, GIF, WEBP), as ``ray.data.read_binary_files`` gives them;
- ``path``: file paths, read by the actor (so readable at that path on every node);
- ``image``: decoded uint8 pixels [H, W, 3], as ``ray.data.read_images(mode="RGB")`` gives them
  (decoded by PIL, whose JPEG pixels may differ from torchvision's by a level: for inputs
  bitwise those of ``fastres predict``, read bytes).

Each output row has ``path`` (the input's, or null), ``top`` (a list of {index, label, prob},
best first, null for an error) and ``error`` (null when classified): the schema of a
``fastres predict`` line. Every other input column is passed through.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..predict.images import DEFAULT_MAX_PIXELS
from ..predict.output import Prediction, Top
from .cluster import Placement, cluster_placement, for_workers, import_data

DATA_COLUMNS = ("bytes", "image", "path")
GPU_BATCH, CPU_BATCH = 64, 4


class Classifier:
    """``ds.map_batches(Classifier, fn_constructor_kwargs={"weights": ...}, batch_size=B,
    concurrency=N, num_gpus=1)``: builds a `fastres.Predictor` once per actor and classifies
    each batch (a dict of numpy columns, see the module's docstring) into a pyarrow Table.

    The engine runs every batch at `batch_size` rows (the last one padded), so a GPU reuses
    one CUDA graph: pass map_batches the same batch_size. device: default "cuda" where Ray
    gave the actor a GPU, else "cpu", which needs TRITON_INTERPRET=1 in the actor's
    environment (its runtime_env). The other arguments are `fastres.Predictor`'s.
    """

    def __init__(self, weights: str | os.PathLike, *, device: str | None = None, dtype: str | None = None,
                 batch_size: int | None = None, topk: int = 5, resize: int | None = None, crop: int | None = None,
                 labels: str | os.PathLike | Sequence[str] | None = None, decode: str = "auto",
                 workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, preprocess: str = "exact"):
        import torch

        from ..kernels import interpreting
        from ..predict.predictor import Predictor

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cpu" and not interpreting():
            raise RuntimeError("fastres: this Ray actor has no GPU and TRITON_INTERPRET is not set: ask for "
                               "num_gpus=1, or pass TRITON_INTERPRET=1 in its runtime_env to run on the CPU")
        torch.set_num_threads(1)  # the decode pool is the parallelism, as in `fastres predict`
        cuda = torch.device(device).type == "cuda"
        self.predictor = Predictor(weights, device=device, dtype=dtype,
                                   batch_size=batch_size or (GPU_BATCH if cuda else CPU_BATCH), topk=topk,
                                   resize=resize, crop=crop, labels=labels, decode=decode, workers=workers,
                                   max_pixels=max_pixels, preprocess=preprocess)
        self.batch_size = self.predictor.batch_size

    def __repr__(self) -> str:
        return f"Classifier({self.predictor!r})"

    def __call__(self, batch: Mapping[str, np.ndarray]):
        kind = next((c for c in DATA_COLUMNS if c in batch), None)
        if kind is None:
            raise ValueError(f"fastres Classifier: a batch needs a 'bytes', 'image' or 'path' column, got "
                             f"{sorted(batch)}")
        n = len(batch[kind])
        paths = [None if p is None else str(p) for p in batch["path"]] if "path" in batch else [None] * n
        if kind == "bytes":
            preds = self.predictor.predict_bytes(list(batch["bytes"]), paths=paths, pad_to=self.batch_size)
        elif kind == "path":
            preds = list(self.predictor.predict_files(paths, pad_to=self.batch_size))
        else:
            preds = self._predict_arrays(batch["image"], paths)
        return to_table(preds, {k: v for k, v in batch.items() if k not in ("bytes", "image", "path")})

    def _predict_arrays(self, images: Sequence[np.ndarray], paths: list[str | None]) -> list[Prediction]:
        """[H, W, 3] uint8 arrays; a row of another shape or dtype gets an error, not the batch."""
        import torch

        out: list[Prediction | None] = [None] * len(images)
        good, tensors = [], []
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
                out[i] = Prediction(paths[i], error=f"an image must be [H, W, 3] uint8 pixels (RGB), got shape "
                                                    f"{list(arr.shape)} {arr.dtype}")
                continue
            # Ray Data hands out read-only views of its blocks: copy, never write into them.
            tensors.append(torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1))
            good.append(i)
        for i, pred in zip(good, self.predictor.predict_tensors(tensors, pad_to=self.batch_size)):
            out[i] = Prediction(paths[i], top=pred.top, error=pred.error)
        return out


def to_table(preds: Sequence[Prediction], passthrough: Mapping[str, np.ndarray] | None = None):
    """Predictions as a pyarrow Table with the Parquet schema of `fastres predict` (path, top,
    error), then the passed-through columns."""
    import pyarrow as pa

    from ..predict.output import parquet_schema

    schema = parquet_schema()
    rows = [p.to_dict() for p in preds]
    columns = {"path": pa.array([r["path"] for r in rows], schema.field("path").type),
               "top": pa.array([r.get("top") for r in rows], schema.field("top").type),
               "error": pa.array([r.get("error") for r in rows], schema.field("error").type)}
    for name, col in (passthrough or {}).items():
        col = np.asarray(col)
        if col.ndim > 1:
            from ray.data.extensions import ArrowTensorArray

            columns[name] = ArrowTensorArray.from_numpy(col)
        else:
            columns[name] = pa.array(list(col) if col.dtype == object else col)
    return pa.table(columns)


def classify(ds, weights: str | os.PathLike, *, batch_size: int | None = None, actors: int | None = None,
             cpus: float | None = None, placement: Placement | None = None, **options: Any):
    """`ds` (rows with a bytes, path or image column) classified by a pool of Classifier actors
    on the connected cluster: one actor per GPU, each asking for one (and by default the
    cluster's CPUs per GPU, its decode threads), or without GPUs one actor on 1 CPU under
    the interpreter. `options` go to Classifier (topk, resize, crop, labels, dtype, ...).
    A lazy Dataset of the output rows (see the module's docstring)."""
    import ray
    import ray.data

    placement = placement or cluster_placement(cpus=cpus)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("GPU", 0))) if placement.gpu else 1
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    batch_size = batch_size or (GPU_BATCH if placement.gpu else CPU_BATCH)
    kwargs = dict(options, weights=str(for_workers(weights)), device=placement.device, batch_size=batch_size,
                  labels=for_workers(options.get("labels")),
                  workers=options.get("workers") or max(1, int(placement.num_cpus)))
    return ds.map_batches(Classifier, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy",
                          **placement.ray_options())


def predict_files(files: Sequence[str | os.PathLike], weights: str | os.PathLike, *, progress: bool = False,
                  **options: Any) -> Iterator[Prediction]:
    """One Prediction per file, in input order, each as soon as it and those before it are
    done, classified on the connected cluster (`classify`'s options). The actors read the
    files by absolute path (a worker's directory is not the driver's); each Prediction's
    path is the file as given. No logits: only what the output schema holds."""
    data = import_data()
    data.DataContext.get_current().enable_progress_bars = progress
    ds = data.from_items([{"index": i, "path": str(Path(f).resolve())} for i, f in enumerate(files)])
    done: dict[int, Prediction] = {}
    next_out = 0
    for block in classify(ds, weights, **options).iter_batches(batch_format="pyarrow", batch_size=None):
        for row in block.to_pylist():
            top = None if row["top"] is None else tuple(Top(t["index"], t["label"], t["prob"]) for t in row["top"])
            done[row["index"]] = Prediction(str(files[row["index"]]), top=top, error=row["error"])
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
    if next_out != len(files):
        raise RuntimeError(f"Ray Data returned {next_out} of {len(files)} results")
