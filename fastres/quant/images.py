"""Calibration batches from a folder of images: the first `count` image files in sorted order,
preprocessed as `fastres predict` preprocesses them and normalized, in float32 batches."""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import torch

from ..engine import IMAGENET_MEAN, IMAGENET_STD
from ..errors import UserError


class CalibrationImages:
    """Re-iterable calibration batches [<=batch, 3, crop, crop] float32 (fastres.quantize
    iterates twice) from `folder`'s first `count` images (recursively, sorted by path)."""

    def __init__(self, folder: str | os.PathLike, count: int = 500, *, batch: int = 32, resize: int = 256,
                 crop: int = 224, mode: str = "exact", interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        from ..predict.images import NoImagesError, find_images

        if count < 1 or batch < 1:
            raise UserError(f"the calibration count and batch must be >= 1, got {count} and {batch}")
        try:
            files = find_images([folder])
        except (FileNotFoundError, NoImagesError) as exc:
            raise UserError(str(exc)) from None
        self.files = files[:count]
        self.batch, self.mode = batch, mode
        self.set_transform(resize=resize, crop=crop, interpolation=interpolation, mean=mean, std=std)

    def set_transform(self, *, resize: int = 256, crop: int = 224, interpolation: str = "bilinear",
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        """How the images are preprocessed (a checkpoint states its own only once it is read,
        after the folder has been listed)."""
        self.resize, self.crop, self.interpolation = resize, crop, interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        from ..predict.images import ImageError
        from ..predict.preprocess import preprocess

        for i in range(0, len(self.files), self.batch):
            crops = []
            for path in self.files[i:i + self.batch]:
                try:
                    crop = preprocess(path.read_bytes(), resize=self.resize, crop=self.crop, mode=self.mode,
                                      interpolation=self.interpolation)
                except ImageError as exc:
                    raise UserError(f"{path}: {exc}") from None
                full = 255.0 if crop.dtype == torch.uint8 else 65535.0  # a 16-bit PNG decodes to uint16
                crops.append(((crop.float() / full) - self.mean) / self.std)
            yield torch.stack(crops)
