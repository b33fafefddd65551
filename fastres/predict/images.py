"""Images in, as torchvision's classification pipeline reads them: finding the files, decoding
(``torchvision.io.decode_image(..., mode=RGB)``), resizing the shorter side (bilinear,
antialiased) and center-cropping (``Transform``: the very functions
``weights.transforms()`` calls, so the pixels are bitwise the same), and every way a file can
fail, as an `ImageError` naming the cause.

Unusual modes are converted by torchvision's decoder as its pipeline converts them: grayscale
(and palette, and 1-bit) to three equal channels, alpha dropped, CMYK JPEGs to RGB; a 16-bit
PNG stays 16-bit (uint16, scaled by 1/65535 when normalized, as ``convert_image_dtype`` does).
An animated GIF gives its first frame. EXIF orientation is not applied (torchvision's default).

Memory is bounded before anything is allocated: the pixel limit is checked on the size in the
file's header, and so is the decoder's own memory (`decode_bytes`: a progressive JPEG's
coefficient buffer included) (a JPEG's frame header found whatever precedes it, as libjpeg finds it; a PNG's
IHDR; a GIF's screen and first frame; a WEBP's canvas), a file whose header gives no size is
refused, and only a GIF's first frame is decoded (the file is cut after it).
"""
from __future__ import annotations

import dataclasses
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..engine import IMAGENET_MEAN, IMAGENET_STD
from ..errors import first_line

# What a directory search collects (case-insensitive). torchvision.io decodes the first five;
# the others are collected so that they get an error line instead of vanishing.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif")
DECODED = ("JPEG", "PNG", "GIF", "WEBP")
# PIL's decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS): 0.25 GiB of 24-bit pixels.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_RESIZE, DEFAULT_CROP = 256, 224
# What a decode may cost, per pixel of the limit: a 16-bit PNG's output at the limit. A
# progressive JPEG's coefficient buffer counts too (`decode_bytes`): 4:2:0 ones are decoded up
# to the pixel limit, 4:4:4 up to 2/3 of it, CMYK up to 6/11.
DECODE_BYTES_PER_PIXEL = 6


def resize_for_crop(crop: int) -> int:
    """The shorter side an image is resized to before a centre crop of `crop`: 256 for 224,
    and in the same proportion, rounded down, for other crops (36 for 32, 64 for 56)."""
    # MLPerf's reference ResNet-50 preprocessing decides the rounding (mlcommons/inference,
    # vision/classification_and_detection/python/dataset.py): the "imagenet" dataset every
    # resnet50 profile runs resizes the shorter side to int(100. * crop / 87.5), truncated
    # (87.5% is 224/256); its torchvision path fixes 256 for 224. The quotient is correctly
    # rounded and exact where it is an integer, so int() of it is crop * 256 // 224 for every crop.
    return crop * 256 // 224


class ImageError(Exception):
    """A file that cannot be classified; the message names the cause (one line)."""


class NoImagesError(ValueError):
    """A directory without a single image file in it."""


# -- finding the files ----------------------------------------------------------------------

def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every input file, in order: a file as given (whatever its suffix), a directory's image
    files (by suffix, hidden names skipped) searched recursively, sorted by path.
    Raises FileNotFoundError for a missing path, NoImagesError for a directory without images."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                inside += [Path(root) / f for f in sorted(files)
                           if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
            if not inside:
                raise NoImagesError(f"{p}: no image files in this directory (looked for "
                                    f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)}, recursively)")
            found += sorted(inside)
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return found


# -- what a file is -------------------------------------------------------------------------

def sniff(data: bytes | bytearray | memoryview) -> str | None:
    """The image format of a file's first bytes (JPEG, PNG, GIF, WEBP, BMP, TIFF, AVIF, HEIC), or None."""
    head = bytes(data[:32])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIC"
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_frame(d: bytes | bytearray) -> tuple[int, int, int, bytes, int | None] | None:
    """(width, height, SOF marker, component specs (3 bytes each: id, sampling, table), the
    first scan's component count or None) of a JPEG, walking its marker segments as libjpeg
    reads them: bytes before a marker that are not 0xFF are skipped (libjpeg warns of
    "extraneous bytes" and goes on), fill bytes too; None where there is no frame header
    before the first scan or the end."""
    i, n = 2, len(d)
    frame = None
    while i < n:
        if d[i] != 0xFF:
            i = d.find(b"\xff", i)
            if i < 0:
                break
        while i < n and d[i] == 0xFF:
            i += 1
        if i + 2 >= n:
            break
        marker = d[i]
        i += 1
        if marker == 0x00 or marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # a stuffed byte (not a marker) or a marker without a length
        if marker == 0xD9:
            break  # end of image
        length = (d[i] << 8) | d[i + 1]
        if marker == 0xDA:  # the first scan: how many components it holds
            return None if frame is None else (*frame, d[i + 2] if i + 2 < n else None)
        if marker in _JPEG_SOF and frame is None:
            if i + 8 > n or length < 8:
                return None
            h, w = struct.unpack(">HH", bytes(d[i + 3:i + 7]))
            frame = (w, h, marker, bytes(d[i + 8:i + 8 + 3 * d[i + 7]]))
        if length < 2:
            break
        i += length
    return None if frame is None else (*frame, None)


def jpeg_components(d: bytes | bytearray) -> int | None:
    """The component count of a JPEG's frame header (1 gray, 3 YCbCr, 4 CMYK/YCCK), found as
    libjpeg finds it (see `_jpeg_frame`), or None."""
    frame = _jpeg_frame(d)
    return None if frame is None else len(frame[3]) // 3


def _jpeg_size(d: bytes | bytearray) -> tuple[int, int] | None:
    """(width, height) of a JPEG's first frame header (see `_jpeg_frame`)."""
    frame = _jpeg_frame(d)
    return None if frame is None else frame[:2]


# Progressive frames (Huffman or arithmetic, differential or not): libjpeg holds every DCT
# coefficient of the image until the last scan.
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def decode_bytes(data: bytes | bytearray | memoryview, fmt: str, width: int, height: int) -> int:
    """What decoding costs, from the header: the RGB output (3 bytes a pixel, 6 for a 16-bit
    PNG; a GIF's palette indices 1 more), plus, for a JPEG decoded in several passes (progressive, or one scan per component),
    libjpeg's whole-image coefficient buffer (2 bytes a coefficient, each component at its
    sampling)."""
    px = width * height
    if fmt == "PNG":
        d = bytes(data[:32])
        return px * (6 if len(d) > 24 and d[24] == 16 else 3)
    if fmt == "GIF":
        return 4 * px  # giflib's raster of palette indices, then the RGB output
    if fmt != "JPEG":
        return 3 * px
    frame = _jpeg_frame(data if isinstance(data, (bytes, bytearray)) else bytes(data))
    if frame is None:
        return 3 * px
    _, _, marker, comps, scan = frame
    nf = len(comps) // 3
    if marker not in _JPEG_PROGRESSIVE and (scan is None or scan >= nf):
        return 3 * px
    samp = [(comps[3 * k + 1] >> 4, comps[3 * k + 1] & 15) for k in range(nf)]
    hmax, vmax = max(max(a for a, _ in samp), 1), max(max(b for _, b in samp), 1)
    blocks = sum(-(-width * a // (8 * hmax)) * -(-height * b // (8 * vmax)) for a, b in samp)
    return 3 * px + 128 * blocks


def image_size(data: bytes | bytearray | memoryview, fmt: str | None) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, GIF or WEBP file, without decoding any
    pixel; None where the header does not say (`check_decodable` then refuses the file: its
    size is never found by decoding it)."""
    try:
        if fmt == "JPEG":
            return _jpeg_size(data if isinstance(data, (bytes, bytearray)) else bytes(data))
        d = bytes(data[:64])
        if fmt == "PNG":  # libpng insists on IHDR as the first chunk
            return struct.unpack(">II", d[16:24]) if d[12:16] == b"IHDR" else None
        if fmt == "GIF":
            return struct.unpack("<HH", d[6:10])
        if fmt == "WEBP":
            chunk = d[12:16]
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", d[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(d[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
            return None
    except struct.error:
        return None
    return None


def gif_first_frame(data: bytes | bytearray | memoryview, max_pixels: int | None) -> bytearray:
    """A GIF cut after its first image (the trailer appended): the decoder then decodes that
    frame alone, the frame classification uses, whatever the file's frame count. The first
    frame's own size is held to the pixel limit too. ImageError if the blocks cannot be walked.
    The cut is the one copy made (its bytes up to the first frame's end, plus one): the blocks
    are walked on a view of `data`."""
    with memoryview(data) as view, view.cast("B") as d:
        n = len(d)

        def sub_blocks(i: int) -> int:  # the index after a chain of data sub-blocks
            while i < n and d[i]:
                i += 1 + d[i]
            if i >= n:
                raise ImageError("cannot decode GIF: the file ends inside its first frame")
            return i + 1

        i = 13
        if n < 13:
            raise ImageError("cannot decode GIF: the file ends inside its header")
        if d[10] & 0x80:
            i += 3 << ((d[10] & 7) + 1)
        while i < n:
            block = d[i]
            if block == 0x21 and i + 1 < n:  # an extension: label, then sub-blocks
                i = sub_blocks(i + 2)
            elif block == 0x2C and i + 10 <= n:  # the first image descriptor
                fw, fh = struct.unpack("<HH", d[i + 5:i + 9])
                check_pixels(max(fw, 1), max(fh, 1), max_pixels)
                j = i + 10 + ((3 << ((d[i + 9] & 7) + 1)) if d[i + 9] & 0x80 else 0)
                end = sub_blocks(j + 1)
                cut = bytearray(end + 1)
                with memoryview(cut) as out:
                    out[:end] = d[:end]  # a bytearray's own slice assignment would copy d[:end] first
                cut[end] = 0x3B  # the trailer
                return cut
            else:
                break
    raise ImageError("cannot decode GIF: no image in the file")


def _decoder_message(exc: BaseException) -> str:
    """torchvision's decoder error without its C++ source location, first line only."""
    text = first_line(exc, typed=False, limit=None)
    text = re.sub(r"^.*?\.(?:cpp|cu|h):\d+,\s*", "", text)
    return text[:1].lower() + text[1:200]


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} Mpx"


def check_decodable(data: bytes | bytearray | memoryview, max_pixels: int | None) -> str:
    """The format of a file's bytes, if torchvision can decode it within the pixel limit; else
    an ImageError saying why not (empty, not an image, unsupported format, too many pixels)."""
    return check_header(data, max_pixels)[0]


def check_header(data: bytes | bytearray | memoryview, max_pixels: int | None) -> tuple[str, tuple[int, int]]:
    """`check_decodable`, returning the (width, height) its header gave too."""
    if len(data) == 0:
        raise ImageError("empty file")
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("not an image: unrecognized file contents (fastres reads JPEG, PNG, GIF and WEBP)")
    if fmt not in DECODED:
        raise ImageError(f"unsupported image format {fmt}: torchvision.io decodes JPEG, PNG, GIF and WEBP")
    size = image_size(data, fmt)
    if size is None:
        raise ImageError(f"cannot decode {fmt}: no image size in its header (refused rather than decoded blind)")
    check_pixels(size[0], size[1], max_pixels)
    if max_pixels is not None:
        cost, budget = decode_bytes(data, fmt, *size), DECODE_BYTES_PER_PIXEL * max_pixels
        if cost > budget:
            raise ImageError(f"{size[0]}x{size[1]} pixels: decoding this {fmt} would take {cost / 2**20:.0f} MB (a "
                             f"progressive JPEG holds all its DCT coefficients), over the limit of {budget / 2**20:.0f} "
                             f"MB ({DECODE_BYTES_PER_PIXEL} bytes a pixel of --max-pixels); raise it with --max-pixels")
    return fmt, size


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"empty image ({width}x{height} pixels)")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{width}x{height} pixels ({_mpx(width * height)}) is over the limit of "
                         f"{_mpx(max_pixels)} (a decompression bomb?); raise it with --max-pixels")


def writable(data: bytes | bytearray | memoryview) -> bytearray:
    """`data` as a buffer torch.frombuffer shares without a warning (a writable one): a
    bytearray as it is (the decoders only read it), anything else copied once."""
    return data if isinstance(data, bytearray) else bytearray(data)


def read_bytes(path: str | os.PathLike) -> bytearray:
    """A file's bytes (writable, so torch.frombuffer shares them); an ImageError if unreadable."""
    try:
        with open(path, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(buf)
            return buf[:n] if n < len(buf) else buf
    except OSError as exc:
        raise ImageError(f"cannot read the file: {exc.strerror or exc}") from None


def decode(data: bytes | bytearray | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A file's bytes as torchvision's ``decode_image(..., mode=ImageReadMode.RGB)`` gives them:
    [3, H, W] uint8 (uint16 for 16-bit PNGs), on the CPU. Raises ImageError."""
    return decode_checked(data, check_decodable(data, max_pixels), max_pixels)


def decode_checked(data: bytes | bytearray | memoryview, fmt: str, max_pixels: int | None) -> torch.Tensor:
    """`decode` of bytes `check_decodable` has passed as `fmt`. At most one copy of `data` is
    made: a GIF's first frame (`gif_first_frame`), or bytes that are not a bytearray made
    writable (`writable`); a bytearray is decoded in place."""
    from torchvision.io import ImageReadMode, decode_image

    data = gif_first_frame(data, max_pixels) if fmt == "GIF" else writable(data)
    try:
        img = decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError; anything else is as bad
        raise ImageError(f"cannot decode {fmt}: {_decoder_message(exc)}") from None
    if img.dim() == 4:  # a GIF: its one frame
        img = img[0]
    check_pixels(img.shape[-1], img.shape[-2], max_pixels)
    return img


# -- resize and crop --------------------------------------------------------------------------

INTERPOLATIONS = ("bilinear", "bicubic")  # torchvision's presets', and timm's and transformers' checkpoints'


@dataclasses.dataclass(frozen=True)
class Transform:
    """torchvision's ImageClassification preset: resize the shorter side to `resize` (bilinear,
    antialiased), center-crop `crop`, then (`normalize`) scale to [0, 1] and normalize by
    mean / std. `source` says where the sizes came from (a torchvision weights entry, a timm
    or transformers config, or "default"). interpolation: "bilinear" (torchvision's preset)
    or "bicubic" (what many timm and transformers checkpoints state), antialiased."""

    resize: int = DEFAULT_RESIZE
    crop: int = DEFAULT_CROP
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str = "default"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}")
        if self.resize < 1 or self.crop < 1:
            raise ValueError(f"resize and crop must be >= 1, got {self.resize} and {self.crop}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per channel (3)")

    @classmethod
    def from_torchvision(cls, name: str, *, resize: int | None = None, crop: int | None = None) -> "Transform":
        """The preset of a torchvision weights entry ("ResNet50_Weights.IMAGENET1K_V2"), its
        sizes overridden where given. ValueError if this torchvision does not know it."""
        from torchvision.models import get_weight

        try:
            preset = get_weight(name).transforms()
        except Exception as exc:  # noqa: BLE001 - KeyError, ValueError, AttributeError across versions
            raise ValueError(f"torchvision does not know the weights {name!r} ({type(exc).__name__})") from None
        return cls(resize=resize or preset.resize_size[0], crop=crop or preset.crop_size[0],
                   mean=tuple(preset.mean), std=tuple(preset.std), source=name)

    def torchvision(self):
        """torchvision's own preset with these settings (the reference this class matches)."""
        from torchvision.transforms._presets import ImageClassification

        from torchvision.transforms import InterpolationMode

        return ImageClassification(crop_size=self.crop, resize_size=self.resize, mean=self.mean, std=self.std,
                                   interpolation=InterpolationMode(self.interpolation))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Resize and crop a decoded [3, H, W] image (any device; its dtype kept)."""
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode

        img = F.resize(img, [self.resize], interpolation=InterpolationMode(self.interpolation), antialias=True)
        return F.center_crop(img, [self.crop])

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """Resized crops (uint8 or uint16) as the float32 tensor torchvision's preset returns."""
        import torchvision.transforms.functional as F

        return F.normalize(F.convert_image_dtype(crops, torch.float), list(self.mean), list(self.std))


def check_tensor_image(img, where: str) -> torch.Tensor:
    """A caller's image tensor: [3, H, W] uint8 (or uint16), at least 1x1."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"{where} must be [3, H, W] (RGB), got shape {tuple(img.shape)}")
    if img.dtype not in (torch.uint8, torch.uint16):
        raise TypeError(f"{where} must be uint8 pixels (or uint16), got {img.dtype}")
    if img.shape[1] < 1 or img.shape[2] < 1:
        raise ValueError(f"{where} is empty: {img.shape[1]}x{img.shape[2]} pixels")
    return img


def as_image_list(images) -> Sequence[torch.Tensor]:
    """[N, 3, H, W] or a sequence of [3, H, W] tensors, as a sequence of [3, H, W] tensors."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() != 4:
            raise ValueError(f"images must be [N, 3, H, W] or a list of [3, H, W], got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    if isinstance(images, (str, bytes, os.PathLike)):
        raise TypeError("images must be tensors: for files, use predict_paths")
    return list(images)
