"""fastres.predict.images: finding files, decoding and cropping exactly as torchvision's
pipeline does (bitwise, every mode), header sizes, and every kind of bad file."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from fastres.predict.images import (
    DEFAULT_MAX_PIXELS, ImageError, NoImagesError, Transform, check_tensor_image, decode, find_images, image_size,
    read_bytes, resize_for_crop, sniff,
)
from predict_helpers import DEEP, GOOD, animated_gif, bad_files, make_images, torchvision_reference

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return make_images(folder, {**GOOD, **DEEP}) + [animated_gif(folder / "animated.gif")]


@pytest.mark.parametrize("resize,crop", [(40, 32), (24, 32), (256, 224)], ids=["40-32", "pad", "imagenet"])
def test_decode_and_transform_are_torchvision_bitwise(images, resize, crop):
    """decode + Transform + normalize == decode_image(RGB) + ImageClassification, bit for bit,
    for every mode (grayscale, CMYK, alpha, palette, 1-bit, 16-bit), format and aspect ratio;
    a crop larger than the resized image is zero-padded as torchvision pads it."""
    t = Transform(resize=resize, crop=crop)
    for path in images:
        crop_px = t(decode(read_bytes(path)))
        assert crop_px.shape == (3, crop, crop) and crop_px.dtype == (torch.uint16 if "16" in path.name else torch.uint8)
        assert torch.equal(t.normalize(crop_px), torchvision_reference(path, resize, crop)), path.name


def test_bicubic_transform_is_torchvisions_bicubic_preset(images):
    """interpolation="bicubic" (timm's and transformers' checkpoints state it) is torchvision's
    preset with bicubic resizing, bit for bit; anything but bilinear or bicubic is refused."""
    t = Transform(resize=40, crop=32, interpolation="bicubic")
    preset = t.torchvision()
    for path in images[:4]:
        img = decode(read_bytes(path))
        assert torch.equal(t.normalize(t(img)), preset(img)), path.name
    with pytest.raises(ValueError, match="bilinear"):
        Transform(interpolation="nearest")


def test_transform_from_torchvision_weights():
    t = Transform.from_torchvision("ResNet50_Weights.IMAGENET1K_V2")
    assert (t.resize, t.crop, t.source) == (232, 224, "ResNet50_Weights.IMAGENET1K_V2")
    assert Transform.from_torchvision("ResNet18_Weights.IMAGENET1K_V1", crop=32).resize == 256
    assert Transform.from_torchvision("ResNet18_Weights.IMAGENET1K_V1", crop=32).crop == 32
    with pytest.raises(ValueError, match="torchvision does not know the weights"):
        Transform.from_torchvision("ResNet18_Weights.NOPE")
    with pytest.raises(ValueError, match="resize and crop must be >= 1"):
        Transform(resize=0)


def test_header_sizes_match_pil(images):
    for path in images:
        data = read_bytes(path)
        fmt = sniff(data)
        if fmt in ("JPEG", "PNG", "GIF", "WEBP"):
            assert image_size(data, fmt) == Image.open(path).size, path.name


def test_bad_files_say_why(tmp_path):
    for name, (path, words) in bad_files(tmp_path).items():
        with pytest.raises(ImageError, match=words):
            decode(read_bytes(path))
    with pytest.raises(ImageError, match="cannot read the file"):
        read_bytes(tmp_path)  # a directory is not a readable file


def test_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1200, 1000)).save(path)
    assert decode(read_bytes(path), max_pixels=None).shape == (3, 1000, 1200)
    with pytest.raises(ImageError, match=r"1200x1000 pixels \(1.2 Mpx\) is over the limit of 1.0 Mpx"):
        decode(read_bytes(path), max_pixels=1_000_000)
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_find_images_sorted_recursive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "z").mkdir(parents=True)
    for name in ("b/2.JPG", "b/1.png", "a/z/0.webp", "c.gif", ".hidden.jpg", "notes.txt", "a/x.tiff"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "h.jpg").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert found == ["a/x.tiff", "a/z/0.webp", "b/1.png", "b/2.JPG", "c.gif"]
    # files as given, in the order given, whatever their suffix; a folder's files in place
    assert find_images([tmp_path / "notes.txt", tmp_path / "b"]) == [tmp_path / "notes.txt", tmp_path / "b/1.png",
                                                                    tmp_path / "b/2.JPG"]
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file or directory"):
        find_images([tmp_path / "c.gif", tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="empty: no image files in this directory"):
        find_images([tmp_path / "empty"])


def test_tensor_image_checks():
    assert check_tensor_image(torch.zeros(3, 4, 5, dtype=torch.uint8), "x").shape == (3, 4, 5)
    with pytest.raises(ValueError, match=r"x must be \[3, H, W\] \(RGB\), got shape \(1, 4, 5\)"):
        check_tensor_image(torch.zeros(1, 4, 5, dtype=torch.uint8), "x")
    with pytest.raises(TypeError, match="x must be uint8 pixels"):
        check_tensor_image(torch.zeros(3, 4, 5), "x")
    with pytest.raises(ValueError, match="x is empty"):
        check_tensor_image(torch.zeros(3, 0, 5, dtype=torch.uint8), "x")


def test_jpeg_header_found_past_stray_bytes(tmp_path):
    """Bytes before a marker (libjpeg skips them with a warning) and fill bytes do not hide
    the frame header: the size is read, the limit applies, the image decodes as torchvision
    decodes it."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (10, 120, 230)).save(buf, "JPEG")
    d = buf.getvalue()
    sof = d.index(b"\xff\xc0")
    odd = d[:sof] + b"\x00\x13" + b"\xff\xff" + d[sof:]
    assert image_size(odd, "JPEG") == (48, 40)
    path = tmp_path / "odd.jpg"
    path.write_bytes(odd)
    assert decode(read_bytes(path)).shape == (3, 40, 48)
    with pytest.raises(ImageError, match="over the limit"):
        decode(read_bytes(path), max_pixels=1000)


def test_resize_for_crop_is_mlperfs_rule():
    # MLPerf's reference ResNet-50 preprocessing: int(100. * crop / 87.5), truncated (32 -> 36,
    # where rounding would give 37)
    assert resize_for_crop(224) == 256 and resize_for_crop(32) == 36 and resize_for_crop(56) == 64
    assert all(resize_for_crop(c) == int(100.0 * c / 87.5) for c in range(1, 2048))
