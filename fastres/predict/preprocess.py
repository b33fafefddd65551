"""`fastres.preprocess`: an encoded image file's bytes in, the crop the engine takes out
(uint8 ``[3, crop, crop]``), in one of two modes.

``mode="exact"`` (the default) gives torchvision's ImageClassification preset bit for bit
(``decode_image(..., mode=RGB)``, ``F.resize(antialias=True)``, ``F.center_crop``): the same
pixels, so the same logits. It is torchvision's own arithmetic, only less of it:

- torch's antialiased resize is separable, the horizontal pass first, then the vertical one,
  each output element a float32 sum of its taps in a fixed order. The horizontal pass is
  computed on strips of rows, each converted to float32 while it is in cache (torchvision
  converts the whole image first: on a 12 MP photo that one conversion costs as much as the
  resize), and only on the rows the crop's vertical taps read; the vertical pass only on
  the columns the crop keeps, down to its last row (the rows above it are computed too: see
  `_exact`). Every output pixel the crop keeps is the same sum of the same
  products as in torchvision's call (the tests compare them bit for bit on every image kind).
  uint8 and uint16 (16-bit PNGs: torchvision truncates those instead of rounding, and so does
  this) alike.
- Where that does not apply (a crop larger than the resized image, an image already at its
  resized size, a tensor not on the CPU), torchvision's functions themselves run.

``mode="fast"`` drops exactness for speed (a different image, close to the exact one):

- a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8, libjpeg-turbo's scaled IDCT)
  that still leaves at least twice the resize target on the shorter side; a 12 MP phone photo
  at resize 256 is decoded at 1/4 (1008x756), about half the time of a full decode;
- the resize is torch's uint8 antialiased kernel on a channels_last tensor (fixed-point
  weights: up to one level off the float kernel): ~0.4-0.6 ms for a 500x375 image where
  torchvision's float path takes ~1.9 ms, ~1 ms for a 12 MP photo decoded at 1/4
  (torchvision's decoders and PIL give channels-last views, which the kernel takes as they are;
  a planar [3, H, W] tensor over 4 Mpx takes the exact path instead, where a channels_last
  copy alone would cost as much);
- the rest as exact: the output size is computed from the file's own size, then the same
  center crop.

  Its deviation from exact, on generated photos (gradients, noise, edges, JPEG quality 75-95):
  at resize 256, a mean absolute difference of 0.1-0.35 levels of 255, a max of 1-15, and
  ResNet-50's logits within 0.3% (relative L2, random calibrated weights; ``fastres bench
  preprocess`` reports all three); at small targets, where a 1/4-scale IDCT keeps frequencies
  a full-size antialiased resize removes, up to 2.5 mean and 31 max (a 333x777 photo at resize
  40, in the tests). `FAST_MEAN_BOUND` (3 levels) and `FAST_MAX_BOUND` (48
  levels) are the documented bounds for photographs; the tests hold fast to tighter ones per
  target size (tests/test_predict_preprocess.py's FAST_BOUNDS: at 256/224 a mean of 0.6 and a
  max of 15, where a 1280x1040 photo decoded at 1/2 measures 0.37 and 9). Synthetic
  patterns are another matter: sawtooth gradients with a hard edge every ~50 pixels, decoded
  at 1/4 scale, reached a mean of 3.7 and a max of 26 (a reduced IDCT smooths such edges
  otherwise than the full-size resize does).

  The decoder: PIL's ``draft`` (PIL is already a dependency) for the scaled JPEG decodes,
  torchvision's ``decode_image`` for a full-size one. Measured against simplejpeg 1.9 (a
  libjpeg-turbo wheel with scaled decode), PIL decodes the same pixels within 5-12% of its time
  at 1/2 to 1/8 scale; at full scale PIL's per-call overhead costs ~0.5 ms a small photo where
  torchvision's decoder is as fast as simplejpeg, so full-size decodes stay on torchvision.
  No extra dependency does clearly better.

The limits are the pipeline's (`fastres.predict.images`): the pixel limit read from the
header before anything is decoded, the first frame of an animated GIF only, and an aspect
ratio over `MAX_ASPECT` refused (its resized image would be that many crops wide), each as an
`ImageError`. 16-bit PNGs come out as uint16 in both modes (scaled by 1/65535 when
normalized, as torchvision does).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from torch.nn.functional import interpolate

from ..errors import first_line
from .images import (
    DECODE_BYTES_PER_PIXEL, DEFAULT_CROP, DEFAULT_MAX_PIXELS, DEFAULT_RESIZE, INTERPOLATIONS, ImageError,
    check_header, decode_checked,
)

MODES = ("exact", "fast")
# The longest side may be at most this many times the shortest: past it the resized image
# (and each pass's buffer) grows with the ratio while the crop stays one square.
MAX_ASPECT = 64
# fast's documented deviation from exact (levels of 255; measured: see above).
FAST_MEAN_BOUND = 3.0
FAST_MAX_BOUND = 48
# fast mode resizes a planar [3, H, W] tensor with the uint8 kernel up to this size; past it,
# its channels_last copy would cost as much as the exact path does (decoders give HWC views).
_FAST_PLANAR_PIXELS = 4_000_000
# Rows of the horizontal pass converted to float32 at once: ~1 MB per strip on a 12 MP photo.
_STRIP_BYTES = 1 << 20


def memory_bound(max_pixels: int = DEFAULT_MAX_PIXELS, resize: int = DEFAULT_RESIZE, crop: int = DEFAULT_CROP, *,
                 encoded_bytes: int, bytes_per_pixel: int = DECODE_BYTES_PER_PIXEL) -> int:
    """The most memory (bytes) one image of `encoded_bytes` costs, by construction, from its
    encoded bytes to its crop (a `fastres serve` request: its body; `preprocess`, the pipeline's
    job, `Predictor.predict_bytes`: the caller's bytes and what they allocate):

    - the encoded bytes held: at most 9/8 of them plus 64 bytes (`fastres serve` grows the body
      in one bytearray, by an eighth at a time, then decodes it in place);
    - one copy of them at most: a GIF's first frame cut out (up to the whole file, plus its
      trailer), fast mode's JPEG decoder (PIL: it keeps the comment and APPn segments), or
      bytes that are not a bytearray made writable for the decoder;
    - the decode: at most `bytes_per_pixel` (`DECODE_BYTES_PER_PIXEL` = 6) bytes a pixel of
      `max_pixels`, checked from the header: a 16-bit PNG's output, or a progressive JPEG's
      output and coefficient buffer;
    - the vertical pass's float32 [3, resize * MAX_ASPECT, crop] output;
    - 32 MB for the strips, the crop and the decoders' row buffers.

    At the default flags and a 20 MB body (`fastres serve`'s default limit): 627 MB; with
    bytes_per_pixel=3, what a baseline JPEG, an 8-bit PNG or a WEBP can cost: 371 MB. The tests
    measure the copies of the encoded bytes (Python's allocations, through the server's path:
    1.1 times the body for a JPEG or a PNG, 2.1 for a GIF or a JPEG in fast mode)
    and the peak RSS on the worst files the limits let through: 285 MB (8-bit PNGs, baseline
    JPEGs), 327 MB (a GIF), 516 MB (a 16-bit PNG, a progressive JPEG)."""
    return encoded_memory(encoded_bytes) + bytes_per_pixel * max_pixels + 12 * resize * MAX_ASPECT * crop + (32 << 20)


def encoded_memory(encoded_bytes: int) -> int:
    """`memory_bound`'s share for the encoded bytes (see there): held (9/8 of them, plus 64
    bytes) and one copy (a GIF's first frame, PIL's JPEG segments, or bytes made writable)."""
    if encoded_bytes < 0:
        raise ValueError(f"encoded_bytes must be >= 0, got {encoded_bytes}")
    return (encoded_bytes + encoded_bytes // 8 + 64) + (encoded_bytes + 1)


def check_mode(mode: str, interpolation: str = "bilinear") -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to `resize`, as torchvision computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    return (new_long, resize) if width <= height else (resize, new_long)


def check_resizable(width: int, height: int) -> None:
    """An ImageError for an image too elongated to resize within bounded memory."""
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"{width}x{height} pixels: an aspect ratio over {MAX_ASPECT}:1 is refused (resized, it "
                         f"would be {max(width, height) // max(1, min(width, height))} crops long)")


def check_input(data: bytes | bytearray | memoryview, max_pixels: int | None) -> tuple[str, tuple[int, int]]:
    """The format and (width, height) of a file's bytes, every limit checked from its header
    (ImageError otherwise): nothing is decoded."""
    fmt, size = check_header(data, max_pixels)
    check_resizable(*size)
    return fmt, size


def preprocess(data: bytes | bytearray | memoryview, *, resize: int = DEFAULT_RESIZE, crop: int = DEFAULT_CROP,
               mode: str = "exact", interpolation: str = "bilinear",
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An encoded image (JPEG, PNG, GIF or WEBP bytes) as the crop the engine takes: uint8
    ``[3, crop, crop]`` on the CPU (uint16 for a 16-bit PNG), contiguous.

    mode "exact": torchvision's ImageClassification preset (decode_image RGB, resize the
    shorter side to `resize` antialiased, center crop) bit for bit; "fast": JPEGs decoded at a
    reduced DCT scale and torch's uint8 resize (see the module docstring for its deviation).
    interpolation: "bilinear" (torchvision's ResNets) or "bicubic" (timm and transformers
    checkpoints). Normalization (mean/std) is not applied: the engine does it in its stem
    (``Transform.normalize`` gives torchvision's float tensor). Safe to call from DataLoader
    workers and threads. Raises ImageError for a file that cannot be classified, ValueError
    for bad arguments."""
    check_mode(mode, interpolation)
    if resize < 1 or crop < 1:
        raise ValueError(f"resize and crop must be >= 1, got {resize} and {crop}")
    img, size = decode_input(data, resize, mode, max_pixels)
    return resize_crop(img, resize, crop, mode=mode, interpolation=interpolation, size=size)


def decode_input(data: bytes | bytearray | memoryview, resize: int, mode: str,
                 max_pixels: int | None) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """(decoded [3, h, w] image, the file's own (width, height) where the image is a reduced
    decode of it, else None): full size in exact mode, a JPEG at a reduced DCT scale in fast
    mode. Raises ImageError."""
    fmt, size = check_input(data, max_pixels)
    if mode == "fast" and fmt == "JPEG":
        scale = jpeg_scale(*size, resize)
        if scale > 1:
            img = _decode_jpeg_scaled(data, size, scale)
            if img is not None:
                return img, size
    return decode_checked(data, fmt, max_pixels), None


def jpeg_scale(width: int, height: int, resize: int) -> int:
    """fast mode's DCT scale denominator: the largest of 8, 4, 2 leaving >= 2 * resize on the
    shorter side (libjpeg rounds a scaled size up), else 1."""
    short = min(width, height)
    return next((s for s in (8, 4, 2) if -(-short // s) >= 2 * resize), 1)


def _decode_jpeg_scaled(data, size: tuple[int, int], scale: int) -> torch.Tensor | None:
    """A YCbCr or gray JPEG decoded at 1/scale by libjpeg-turbo (PIL's draft), as [3, h, w]
    uint8; None for another kind (CMYK, YCCK: decoded in full, as exact mode decodes them) or
    a size over PIL's own decompression-bomb limit."""
    from PIL import Image

    w, h = size
    if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        return None  # PIL would warn or refuse: a --max-pixels raised past its limit decodes in full
    try:
        with _Reader(data) as f, Image.open(f, formats=["JPEG"]) as im:
            if im.mode not in ("RGB", "L"):
                return None
            im.draft("RGB", (w // scale, h // scale))  # PIL picks the largest scale s with w // s >= this
            if im.mode != "RGB":
                im = im.convert("RGB")
            im.load()
            hw = (im.size[1], im.size[0])
            pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError for bad data
        raise ImageError(f"cannot decode JPEG: {first_line(exc, typed=False, limit=200)}") from None
    return pixels.view(*hw, 3).permute(2, 0, 1)  # channels_last: what the uint8 resize wants


class _Reader(io.RawIOBase):
    """A seekable read-only file over a buffer, for PIL, without a copy of it (io.BytesIO
    copies anything but bytes): PIL reads it a block at a time."""

    def __init__(self, data: bytes | bytearray | memoryview):
        super().__init__()
        self._view, self._pos = memoryview(data).cast("B"), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        with memoryview(b) as out, out.cast("B") as flat:
            flat[:n] = self._view[self._pos:self._pos + n]  # a bytearray's slice assignment would copy first
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = (0, self._pos, len(self._view))[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._view.release()  # a bytearray under it can be resized again
        super().close()


def resize_crop(img: torch.Tensor, resize: int, crop: int, *, mode: str = "exact", interpolation: str = "bilinear",
                size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize a decoded [3, H, W] image's shorter side to `resize` and center-crop `crop`.
    exact: torchvision's arithmetic bit for bit; fast: torch's uint8 antialiased kernel, the
    output size computed from `size` (width, height) where given: the file's own size, for a
    JPEG decoded at a reduced scale (exact always uses the image's own)."""
    check_mode(mode, interpolation)
    _, h, w = img.shape
    check_resizable(w, h)
    if mode == "fast" and img.dtype == torch.uint8 and (img.stride(0) == 1 or h * w <= _FAST_PLANAR_PIXELS):
        sw, sh = size if size is not None else (w, h)
        return _fast(img, *resized_size(sh, sw, resize), crop, interpolation)
    oh, ow = resized_size(h, w, resize)
    # ow == 1: torch's kernel resizes a one-column image otherwise than a column of a wider one
    # (see `_exact`), and the rows it is handed must then be all the image's
    if img.dtype not in (torch.uint8, torch.uint16) or crop > oh or crop > ow or (oh, ow) == (h, w) \
            or img.device.type != "cpu" or ow == 1:
        return _torchvision(img, resize, crop, interpolation)
    return _exact(img, oh, ow, crop, interpolation)


def _torchvision(img: torch.Tensor, resize: int, crop: int, interpolation: str) -> torch.Tensor:
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    how = InterpolationMode(interpolation)
    return F.center_crop(F.resize(img, [resize], interpolation=how, antialias=True), [crop]).contiguous()


def _taps(n_in: int, n_out: int, first: int, last: int, interpolation: str) -> tuple[int, int]:
    """The input range [lo, hi) that outputs first..last-1 of torch's antialiased 1-d resize
    read (its index arithmetic, widened by two on each side against rounding)."""
    scale = n_in / n_out
    half = (2.0 if interpolation == "bicubic" else 1.0) * max(scale, 1.0)
    lo = int(scale * (first + 0.5) - half + 0.5) - 2
    hi = int(scale * (last - 0.5) + half + 0.5) + 2
    return max(lo, 0), min(hi, n_in)


def _exact(img: torch.Tensor, oh: int, ow: int, crop: int, interpolation: str) -> torch.Tensor:
    """torchvision's resize + center crop of a uint8 or uint16 image, computing little more
    than what the crop keeps. The horizontal pass runs one strip of rows at a time in float32,
    on the rows [r0, r1) the kept rows' vertical taps read, keeping the crop's columns
    ([3, r1, crop] float32: rows below r1 are never allocated). The vertical pass computes the
    output rows from the first down to the crop's last, not below it: torch's kernel has no
    first-row offset, and an output row's weights depend on its index, so the rows above the
    crop are computed too (from buffer rows above r0, never written: their values land only in
    rows the crop drops). Its buffer: [3, top + crop, crop] float32 (two columns for a crop of 1)."""
    _, h, w = img.shape
    top, left = int(round((oh - crop) / 2.0)), int(round((ow - crop) / 2.0))
    center = left
    x = img.unsqueeze(0)
    # horizontal pass (torch's first), on the rows the kept rows' vertical taps read
    r0, r1 = _taps(h, oh, top, top + crop, interpolation) if oh != h else (top, top + crop)
    rows = top + crop  # the vertical pass's output rows
    if oh != h and r1 == rows:  # torch leaves a dimension whose size does not change as it is
        r1, rows = (r1 + 1, rows) if r1 < h else (r1, rows + 1)
    # torch's kernel resizes a one-column image otherwise than a column of a wider one: a crop
    # of 1 keeps a neighbouring column too (where the resized image has one)
    keep = 2 if crop == 1 else crop  # ow > 1 here (resize_crop)
    left = min(left, ow - keep)
    cols = torch.empty((1, 3, r1, keep), dtype=torch.float32)
    step = max(1, _STRIP_BYTES // (12 * max(w, ow)))
    for s in range(r0, r1, step):
        e = min(s + step, r1)
        strip = x[:, :, s:e].float()
        if ow != w:
            strip = interpolate(strip, size=(e - s, ow), mode=interpolation, align_corners=False, antialias=True)
        cols[:, :, s:e] = strip[..., left:left + keep]
    # vertical pass, on the kept columns only, down to the crop's last row
    out = _vertical(cols, h, oh, rows, interpolation)[:, :, top:top + crop] if oh != h else cols[:, :, top:top + crop]
    if keep != crop:
        out = out[..., center - left:center - left + 1]
    if img.dtype == torch.uint8:  # torchvision rounds (and clamps bicubic) for uint8 only
        if interpolation == "bicubic":
            out = out.clamp(0, 255)
        out = out.round()
    return out[0].to(img.dtype).contiguous()


def _vertical(cols: torch.Tensor, h: int, oh: int, rows: int, interpolation: str) -> torch.Tensor:
    """The first `rows` rows of torch's antialiased resize of an `h`-row image to `oh` rows,
    from `cols` (its first rows: those these outputs read), bit for bit: the scale torch would
    compute from the sizes, float32(h) / oh, is handed to its kernel so that the shorter input
    and output leave every weight as it was."""
    scale = float(np.float32(h) / np.float32(oh))
    op = torch.ops.aten._upsample_bicubic2d_aa if interpolation == "bicubic" else torch.ops.aten._upsample_bilinear2d_aa
    # the kernel takes 1 / its scale (what F.interpolate's scale_factor is); back in float32 it is `scale` again
    return op(cols, [rows, cols.shape[-1]], False, 1.0 / scale, None)


def _fast(img: torch.Tensor, oh: int, ow: int, crop: int, interpolation: str) -> torch.Tensor:
    """torch's uint8 antialiased resize (channels_last), then the center crop."""
    import torchvision.transforms.functional as F

    x = img.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    if (oh, ow) != tuple(img.shape[-2:]):
        x = interpolate(x, size=(oh, ow), mode=interpolation, align_corners=False, antialias=True)
    return F.center_crop(x[0], [crop]).contiguous()


__all__ = ["FAST_MAX_BOUND", "FAST_MEAN_BOUND", "INTERPOLATIONS", "MAX_ASPECT", "MODES", "check_input",
           "check_mode", "check_resizable", "decode_input", "encoded_memory", "jpeg_scale", "memory_bound",
           "preprocess", "resize_crop", "resized_size"]
