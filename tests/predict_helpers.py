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


def torchvision_reference(path: Path, resize: int, crop: int, interpolation: str = "bilinear") -> torch.Tensor:
    """decode_image(mode=RGB) + torchvision's ImageClassification preset: the float32 crop."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    img = decode_image(str(path), mode=ImageReadMode.RGB)
    if img.dim() == 4:
        img = img[0]
    return ImageClassification(crop_size=crop, resize_size=resize, interpolation=InterpolationMode(interpolation))(img)


# -- hostile files: small bodies that would cost a decoder a lot -----------------------------

def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def _gif_frames(frame: bytes, count: int) -> bytes:
    """A one-frame GIF (as PIL writes it) with its image block repeated `count` times."""
    i = 13 + ((3 << ((frame[10] & 7) + 1)) if frame[10] & 0x80 else 0)
    start = frame.index(b"\x2c", i)  # PIL writes no extension before a still frame's image
    end = len(frame) - 1  # before the trailer
    return frame[:start] + frame[start:end] * count + b"\x3b"


def hostile_files(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, words its ImageError must contain, or None where it must be classified
    within the memory bound). Each is at most a few hundred KB."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str | None]] = {}

    def put(name, data, words):
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)

    # 81 Mpx of 1-bit pixels, under the 89.5 Mpx limit: decoded, within the bound
    put("bits-9000.png", _png(Image.new("1", (9000, 9000))), None)
    # as long as allowed (63.5:1), 88.9 Mpx: decoded, within the bound
    put("tall-63.png", _png(Image.new("1", (1183, 75150))), None)
    # 300 frames of 1000x1000: only the first is decoded
    frame = io.BytesIO()
    still = Image.new("P", (1000, 1000), 0)
    still.paste(pixels((100, 100), "P", 3), (450, 450))
    still.save(frame, "GIF")
    put("frames-300.gif", _gif_frames(frame.getvalue(), 300), None)
    # extreme aspect ratios: the resized image would be huge
    put("line-40000x1.png", _png(Image.new("RGB", (40000, 1))), "aspect ratio")
    put("line-1000x1.png", _png(Image.new("RGB", (1000, 1))), "aspect ratio")
    put("column-1x5000.png", _png(Image.new("L", (1, 5000))), "aspect ratio")
    # a JPEG claiming 12000x12000 behind a stray byte before its frame header
    jpeg = io.BytesIO()
    pixels((64, 64), "RGB", 5).save(jpeg, "JPEG")
    d = bytearray(jpeg.getvalue())
    sof = d.index(b"\xff\xc0")
    d[sof + 5:sof + 9] = (12000).to_bytes(2, "big") * 2
    put("stray-12000.jpg", bytes(d[:sof]) + b"\x00" + bytes(d[sof:]), "over the limit")
    # progressive JPEGs claiming 9450x9450 (89.3 Mpx, under the pixel limit), whose DCT
    # coefficients libjpeg would hold whole: 4:4:4 (767 MB to decode) and CMYK (938 MB)
    for name, mode, options in (("progressive-444.jpg", "RGB", {"subsampling": 0}), ("progressive-cmyk.jpg", "CMYK", {})):
        p = io.BytesIO()
        pixels((64, 64), mode, 6).convert(mode).save(p, "JPEG", progressive=True, **options)
        pd = bytearray(p.getvalue())
        at = pd.index(b"\xff\xc2")
        pd[at + 5:at + 9] = (9450).to_bytes(2, "big") * 2
        put(name, bytes(pd), "would take")
    # a JPEG whose scan comes before any frame header
    head = bytes(d[:sof])
    sos = d.index(b"\xff\xda")
    put("no-frame.jpg", head + bytes(d[sos:]), "no image size in its header")
    # a PNG with a chunk before its IHDR (libpng refuses it too; its size is not where it looks)
    png = _png(pixels((16, 16), "RGB", 2))
    text = b"tEXt" + b"k\x00v"
    import zlib
    chunk = len(b"k\x00v").to_bytes(4, "big") + text + zlib.crc32(text).to_bytes(4, "big")
    put("late-ihdr.png", png[:8] + chunk + png[8:], "no image size in its header")
    # a GIF whose 16x16 screen holds a first frame claiming 50000x50000
    g = bytearray(frame.getvalue())
    desc = g.index(b"\x2c", 13 + ((3 << ((g[10] & 7) + 1)) if g[10] & 0x80 else 0))
    g[6:10] = (16).to_bytes(2, "little") * 2
    g[desc + 5:desc + 9] = (50000).to_bytes(2, "little") * 2
    put("frame-bomb.gif", bytes(g), "over the limit")
    # a lossy WEBP claiming 16383x16383
    webp = io.BytesIO()
    pixels((32, 32), "RGB", 4).save(webp, "WEBP", quality=80)
    w = bytearray(webp.getvalue())
    w[26:30] = (16383).to_bytes(2, "little") * 2
    put("canvas-16383.webp", bytes(w), "over the limit")
    return out
