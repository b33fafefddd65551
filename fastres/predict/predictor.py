"""`fastres.Predictor`: images in, labels out, as torchvision's classification pipeline gives
them (`predict_paths` over files and folders, `predict_tensors` over uint8 tensors)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from .images import DEFAULT_MAX_PIXELS, Transform, as_image_list, check_tensor_image, find_images
from .labels import class_labels
from .output import Prediction
from .preprocess import MODES
from .pipeline import ImageBatcher, Item, StageTimes, default_workers, load_item, run_pipeline

DECODE_CHOICES = ("auto", "cpu", "cuda")
GPU_BATCH, CPU_BATCH = 64, 4


def _nvjpeg_works(device: torch.device) -> bool:
    """Whether torchvision's nvjpeg decodes on `device` (one tiny JPEG, round trip)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        img = torch.full((3, 16, 16), 128, dtype=torch.uint8)
        out = decode_jpeg([encode_jpeg(img)], mode=ImageReadMode.RGB, device=device)[0]
        return out.shape == img.shape and out.device.type == "cuda"
    except Exception:  # noqa: BLE001 - no nvjpeg in this build, or no driver support
        return False


def _sizes_origin(resize_given: bool, crop_given: bool, preset: str | None) -> str:
    """Where the resize and crop sizes came from, in words that cannot be misread."""
    if resize_given and crop_given:
        return "both as given"
    if resize_given or crop_given:
        given, other = ("resize", "crop") if resize_given else ("crop", "resize")
        return f"{given} as given, {other} from {preset}" if preset else f"{given} as given, {other} the default"
    return f"those of {preset}" if preset else ("the defaults: no torchvision weights entry or checkpoint config to take "
                                                "them from")


def weights_transform(metadata: Mapping[str, str], resize: int | None = None,
                      crop: int | None = None) -> tuple[Transform, str]:
    """(the Transform, where its sizes came from, in words) for a weights file's metadata: the
    preset of the torchvision weights entry it records, else the preprocessing a timm or
    transformers checkpoint states, else 256 / 224; `resize` / `crop` override the sizes."""
    name = metadata.get("torchvision_weights")
    preset = None
    if name:
        try:
            transform = Transform.from_torchvision(name, resize=resize, crop=crop)
            preset = name
        except ValueError:  # a newer torchvision's entry: the defaults, still overridable
            transform = Transform(resize=resize or 256, crop=crop or 224)
    elif "preprocess" in metadata:  # a timm or transformers checkpoint's stated preprocessing
        stated = json.loads(metadata["preprocess"])
        transform = Transform(resize=resize or stated["resize"], crop=crop or stated["crop"],
                              mean=tuple(stated["mean"]), std=tuple(stated["std"]),
                              interpolation=stated["interpolation"], source=stated["source"])
        preset = stated["source"]
    else:
        transform = Transform(resize=resize or 256, crop=crop or 224)
    return transform, _sizes_origin(resize is not None, crop is not None, preset)


class Predictor:
    """Classify images with a fastres engine, preprocessing exactly as torchvision's weights do.

    model: a converted file (.safetensors), a torchvision checkpoint (.pth/.pt, folded at
    `dtype`), a `fastres.ResNet`, or a torchvision ResNet module (in eval mode).
    resize / crop: default those of the torchvision weights the file records (e.g. 232/224
    for ResNet50_Weights.IMAGENET1K_V2), else 256/224. labels: a file (one per line) or a
    list; default ImageNet's names for 1000 classes, else the class index.
    decode: "cpu" (a thread pool of `workers`), "cuda" (nvjpeg for JPEGs) or "auto" (nvjpeg
    when the engine is on CUDA and torchvision has it). nvjpeg's IDCT is not libjpeg-turbo's:
    its pixels may differ by a level or two, so bitwise torchvision-CPU inputs need "cpu".
    max_pixels: larger images are refused (PIL's decompression-bomb limit by default).
    preprocess: "exact" (torchvision's pixels, bit for bit) or "fast" (JPEGs decoded at a
    reduced DCT scale, torch's uint8 resize; close to exact, several times faster on large
    photos: see `fastres.preprocess`), for files and bytes decoded on the CPU; nvjpeg's
    decodes are resized as torchvision does.
    For the best CPU decode throughput, run with torch.set_num_threads(1): the pool is the
    parallelism (`fastres predict` does).
    """

    def __init__(self, model, *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
                 batch_size: int | None = None, topk: int = 5, resize: int | None = None, crop: int | None = None,
                 labels: str | os.PathLike | Sequence[str] | None = None, decode: str = "auto",
                 workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, cuda_graph: bool = True,
                 tune=False, preprocess: str = "exact"):
        from ..engine import ResNet

        if decode not in DECODE_CHOICES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
        if preprocess not in MODES:
            raise ValueError(f"preprocess must be one of {', '.join(MODES)}, got {preprocess!r}")
        self.preprocess = preprocess
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.metadata: dict[str, str] = {}
        if isinstance(dtype, str):
            from ..weights import _dtype

            dtype = _dtype(dtype)
        if isinstance(model, (str, os.PathLike)):
            from ..weights import open_model

            self.engine, self.metadata = open_model(model, device, dtype=dtype, cuda_graph=cuda_graph, tune=tune)
        elif isinstance(model, ResNet):
            if dtype is not None and model.dtype != dtype:
                raise ValueError(f"the engine runs {model.dtype}, not {dtype}")
            self.engine = model
        elif isinstance(model, torch.nn.Module):
            from ..build import from_torchvision

            self.engine = from_torchvision(model, dtype=dtype or torch.float16, device=device, cuda_graph=cuda_graph,
                                           tune=tune)
        else:
            raise TypeError(f"model must be a weights file, a fastres.ResNet or a torchvision ResNet, got "
                            f"{type(model).__name__}")
        self.device = self.engine.device
        self.weights_name = self.metadata.get("torchvision_weights")
        self.transform, self.sizes_origin = weights_transform(self.metadata, resize, crop)
        num_classes = self.engine.num_classes
        if not 1 <= int(topk) <= num_classes:
            raise ValueError(f"topk must be between 1 and the model's {num_classes} classes, got {topk}")
        self.topk = int(topk)
        self.labels = class_labels(num_classes, labels, self.weights_name)
        # Names, not indices: given, or ImageNet's (what Triton's classification appends).
        self.has_labels = labels is not None or self.labels != [str(i) for i in range(num_classes)]
        cuda = self.device.type == "cuda"
        self.batch_size = int(batch_size or (GPU_BATCH if cuda else CPU_BATCH))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.workers = int(workers or default_workers())
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 (or None for no limit), got {max_pixels}")
        self.max_pixels = max_pixels
        if decode == "cuda" and not cuda:
            raise ValueError("decode='cuda' needs the engine on a CUDA device")
        self.gpu_decode = cuda and decode != "cpu" and _nvjpeg_works(self.device)
        if decode == "cuda" and not self.gpu_decode:
            raise ValueError("decode='cuda': this torchvision cannot decode JPEGs on the GPU (no nvjpeg)")
        self.stats = StageTimes()

    def __repr__(self) -> str:
        t = self.transform
        return (f"Predictor({self.engine.arch}, {self.engine.num_classes} classes, {self.engine.dtype}, {self.device}, "
                f"resize {t.resize}, crop {t.crop} ({self.sizes_origin}), batch {self.batch_size}, top {self.topk}, "
                f"decode {'nvjpeg + CPU' if self.gpu_decode else 'CPU'}, preprocess {self.preprocess})")

    def _batcher(self, batch_size: int, hw: tuple[int, int] | None = None) -> ImageBatcher:
        self.stats = StageTimes(workers=self.workers)
        return ImageBatcher(self.engine, self.transform, self.labels, batch_size=batch_size, topk=self.topk,
                       stages=self.stats, gpu_decode=self.gpu_decode, hw=hw)

    def predict_paths(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                      progress: bool = False) -> Iterator[Prediction]:
        """One Prediction per image file, in input order (a folder: its images, recursively,
        sorted), each as soon as its batch is done. A file that cannot be classified gets a
        Prediction with `error` and the others go on. Raises FileNotFoundError for a missing
        path, NoImagesError for a folder without images (before anything runs). progress: on
        stderr, a bar on a terminal, else a line every few seconds (``fastres.progress``)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = find_images(paths)
        return self._run_files(files, progress)

    def predict_files(self, files: Iterable[str | os.PathLike], *, pad_to: int | None = None) -> Iterator[Prediction]:
        """One Prediction per file, as given: no folder search, and a file that is missing or
        cannot be read gets a Prediction with `error` instead of raising (for paths that come
        from elsewhere, such as a dataset's rows). pad_to: see `predict_bytes`."""
        self._batch_rows(1, pad_to)  # a bad pad_to raises here, not at the first next()
        return self._run_files([Path(f) for f in files], False, pad_to)

    def predict_bytes(self, datas: Sequence[bytes | bytearray | memoryview], *,
                      paths: Sequence[str | None] | None = None, pad_to: int | None = None) -> list[Prediction]:
        """Predictions for encoded image files' bytes (JPEG, PNG, GIF, WEBP), decoded and
        preprocessed as files are; `paths` (default None) is what each Prediction's `path` says.
        A bytearray is read in place (not changed: leave it as it is until this returns); bytes
        and memoryviews are copied once each, one at a time per worker (torch.frombuffer shares
        writable buffers only), and a GIF's first frame is cut out of either (one copy).
        pad_to: the rows of every batch the engine runs, the last one padded (default: the
        batch size, or fewer inputs): one shape, so its CUDA graph is reused."""
        datas = list(datas)
        if paths is not None and len(paths) != len(datas):
            raise ValueError(f"{len(paths)} paths for {len(datas)} images")
        if not datas:
            return []
        names = list(paths) if paths is not None else [None] * len(datas)
        batcher = self._batcher(self._batch_rows(len(datas), pad_to))
        t, mp, stats, gpu = self.transform, self.max_pixels, self.stats, batcher.gpu_decode
        mode = self.preprocess
        jobs = (lambda i=i, d=d: load_item(i, names[i], t, mp, stats, gpu, data=d, mode=mode)
                for i, d in enumerate(datas))
        return list(self._progress(run_pipeline(jobs, batcher, workers=min(self.workers, len(datas)),
                                                lookahead=self._lookahead(batcher)), len(datas), False, batcher))

    def _batch_rows(self, n: int, pad_to: int | None) -> int:
        if pad_to is None:
            return min(self.batch_size, max(1, n))
        if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1:
            raise ValueError(f"pad_to must be a positive int, got {pad_to!r}")
        return pad_to

    def _run_files(self, files: list[Path], progress: bool, pad_to: int | None = None) -> Iterator[Prediction]:
        batcher = self._batcher(self._batch_rows(len(files), pad_to))
        t, mp, stats, gpu = self.transform, self.max_pixels, self.stats, batcher.gpu_decode
        mode = self.preprocess
        jobs = (lambda i=i, f=f: load_item(i, str(f), t, mp, stats, gpu, mode=mode) for i, f in enumerate(files))
        yield from self._progress(run_pipeline(jobs, batcher, workers=self.workers, lookahead=self._lookahead(batcher)),
                                  len(files), progress, batcher)

    def _lookahead(self, batcher: ImageBatcher) -> int:
        return max(2 * batcher.batch_size, 4 * self.workers)

    def _progress(self, preds: Iterator[Prediction], total: int, progress: bool, batcher: ImageBatcher):
        from ..progress import Progress

        try:
            with Progress(total, desc="classifying", unit="img", enabled=progress) as bar:
                for pred in preds:
                    bar.update()
                    yield pred
        finally:
            preds.close()
            batcher.close()

    def predict_tensors(self, images, *, preprocess: bool = True, pad_to: int | None = None) -> list[Prediction]:
        """Predictions for uint8 images: [N, 3, H, W] or a list of [3, H, W] (sizes may differ;
        CPU tensors, or tensors on the engine's device), resized and cropped as files are
        (preprocess=False: already cropped, all of one shape). `path` is None. pad_to: see
        `predict_bytes`."""
        imgs = [check_tensor_image(img, f"images[{i}]") for i, img in enumerate(as_image_list(images))]
        if not imgs:
            return []
        for i, img in enumerate(imgs):
            if img.device.type != "cpu" and img.device != self.device:
                raise ValueError(f"images[{i}] is on {img.device}; pass CPU tensors or tensors on {self.device}")
        hw = None
        if not preprocess:
            if len({tuple(img.shape) for img in imgs}) > 1:
                raise ValueError("preprocess=False needs images of one shape (a batch of crops)")
            hw = tuple(imgs[0].shape[-2:])
        transform = self.transform if preprocess else (lambda img: img)
        batcher = self._batcher(self._batch_rows(len(imgs), pad_to), hw)
        batcher.after_caller()

        def job(i: int, img: torch.Tensor) -> Item:
            crop = batcher.on_device(transform, img) if img.device.type == "cuda" else transform(img)
            return Item(i, None, crop=crop)

        jobs = (lambda i=i, img=img: job(i, img) for i, img in enumerate(imgs))
        return list(self._progress(run_pipeline(jobs, batcher, workers=min(self.workers, len(imgs)),
                                                lookahead=self._lookahead(batcher)), len(imgs), False, batcher))
