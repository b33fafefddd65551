"""Images for the predict tests, generated with PIL: varied sizes, aspect ratios, modes and
formats, and damaged or unsupported files; torchvision's own pipeline as the reference."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# name -> (size (w, h), PIL mode, format, save options)
GOOD = {
    "rgb.jpg": ((50, 40), "RGB", "JPEG", {"quality": 90}),
    "tall.jpg": ((23, 71), "RGB", "JPEG", {"quality": 75, "subsampling": 0}),
    "progressive.jpg": ((64, 48), "RGB", "JPEG", {"progressive": True}),
    "gray.jpg": ((41, 37), "L", "JPEG", {}),
    "cmyk.jpg": ((36, 52), "CMYK", "JPEG", {}),
    "rgba.png": ((45, 45), "RGBA", "PNG", {}),
    "palette.png": ((60, 30), "P", "PNG", {}),
    "gray_alpha.png": ((30, 44), "LA", "PNG", {}),
    "bits.png": ((40, 40), "1", "PNG", {}),
    "small.png": ((20, 16), "RGB", "PNG", {}),
    "wide.webp": ((120, 25), "RGB", "WEBP", {"quality": 80}),
    "lossless.webp": ((33, 33), "RGB", "WEBP", {"lossless": True}),
    "still.gif": ((38, 42), "P", "GIF", {}),
}
DEEP = {"deep16.png": ((37, 29), "I;16", "PNG", {})}


def pixels(size, mode: str, seed: int) -> Image.Image:
    """A smooth image with some noise (photo-like enough for JPEG), in `mode`."""
    w, h = size
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * r.uniform(2, 6)) % 256, (yy * r.uniform(2, 6)) % 256, ((xx + yy) * 3.0) % 256], -1)
    rgb = np.clip(base + r.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        return Image.fromarray((rgb[..., 0].astype(np.uint16) * 257 + r.integers(0, 257, (h, w))).astype(np.uint16))
    if mode == "RGBA":
        img = img.copy()
        img.putalpha(Image.fromarray(r.integers(0, 256, (h, w), dtype=np.uint8)))
        return img
    if mode == "P":
        return img.quantize(32)
    return img.convert(mode)


def write_image(path: Path, size, mode: str, fmt: str, options: dict, seed: int = 0) -> Path:
    pixels(size, mode, seed).save(path, fmt, **options)
    return path


def make_images(folder: Path, specs=GOOD) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_image(folder / name, *spec, seed=i) for i, (name, spec) in enumerate(specs.items())]


def animated_gif(path: Path) -> Path:
    frames = [pixels((30, 20), "P", s) for s in (1, 2)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return path


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, words its error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = io.BytesIO()
    pixels((64, 64), "RGB", 9).save(jpeg, "JPEG")
    png = io.BytesIO()
    pixels((64, 64), "RGB", 9).save(png, "PNG")
    out = {}

    def put(name, data, words):
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)

    put("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "cannot decode JPEG")
    put("truncated.png", png.getvalue()[: len(png.getvalue()) // 2], "cannot decode PNG")
    put("empty.jpg", b"", "empty file")
    put("notes.png", b"just some text, not an image\n" * 4, "not an image")
    bmp = io.BytesIO()
    pixels((8, 8), "RGB", 1).save(bmp, "BMP")
    put("old.bmp", bmp.getvalue(), "unsupported image format BMP")
    tif = io.BytesIO()
    pixels((8, 8), "RGB", 1).save(tif, "TIFF")
    put("scan.tiff", tif.getvalue(), "unsupported image format TIFF")
    # a PNG whose header claims 100000 x 100000 pixels: refused before any decoding
    head = bytearray(png.getvalue())
    head[16:24] = (100000).to_bytes(4, "big") * 2
    put("bomb.png", bytes(head), "over the limit")
    return out


def torchvision_reference(path: Path, resize: int, crop: int) -> torch.Tensor:
    """decode_image(mode=RGB) + torchvision's ImageClassification preset: the float32 crop."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms._presets import ImageClassification

    img = decode_image(str(path), mode=ImageReadMode.RGB)
    if img.dim() == 4:
        img = img[0]
    return ImageClassification(crop_size=crop, resize_size=resize)(img)
