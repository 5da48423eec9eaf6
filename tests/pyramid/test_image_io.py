"""The lazy reader: formats (PNG, JPEG, strip / tiled / Big TIFF), modes, bad files, the pixel limit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from llava.pyramid.image_io import ImageReadError, LargeImage, open_image, to_rgb

from .conftest import noise_image
from .tiff import write_tiled_tiff


def pixels(image):
    return np.asarray(image, dtype=np.int64)


@pytest.mark.parametrize("suffix,options", [(".png", {}), (".tif", {}), (".tif", {"compression": "tiff_lzw"}),
                                            (".tif", {"big_tiff": True})])
def test_levels_and_tiles_equal_pillow_reduce_and_crop(tmp_path, suffix, options):
    image = noise_image(203, 150, seed=4)
    path = tmp_path / f"image{suffix}"
    image.save(path, **options)
    with LargeImage(path) as large:
        assert large.size == (203, 150)
        level = large.level(4)
        assert level.size == (51, 38)  # ceil(203 / 4), ceil(150 / 4)
        assert np.array_equal(pixels(level), pixels(image.reduce(4)))
        assert np.array_equal(pixels(large.tile(1, (28, 56, 56, 84))), pixels(image.crop((28, 56, 56, 84))))
        assert np.array_equal(pixels(large.tile(2, (56, 56, 102, 75))), pixels(image.reduce(2).crop((56, 56, 102, 75))))


def test_tiled_tiff(tmp_path):
    image = noise_image(70, 45, seed=7)
    path = write_tiled_tiff(tmp_path / "tiled.tif", np.asarray(image), tile=16)
    with Image.open(path) as check:
        assert check.tag_v2[322] == 16  # really tiled
    with LargeImage(path) as large:
        assert large.size == (70, 45)
        assert np.array_equal(pixels(large.tile(1, (28, 28, 56, 45))), pixels(image.crop((28, 28, 56, 45))))
        assert np.array_equal(pixels(large.level(2)), pixels(image.reduce(2)))


def test_jpeg_levels_are_drafted_without_decoding_the_full_image(tmp_path):
    image = noise_image(640, 400, seed=8).resize((640, 400))
    path = tmp_path / "photo.jpg"
    image.save(path, quality=95)
    with LargeImage(path) as large:
        level = large.level(8)
        assert level.size == (80, 50) and large._full is None  # decoded at 1/8 scale only
        with Image.open(path) as full:
            box = full.convert("RGB").reduce(8)
        assert np.abs(pixels(level) - pixels(box)).mean() < 6  # DCT scaling vs a box filter: close, not equal
        assert large.level(1).size == (640, 400) and large._full is not None
        assert large.tile(1, (0, 0, 28, 28)).size == (28, 28)


@pytest.mark.parametrize("mode,value,rgb", [
    ("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255)), ("LA", (90, 0), (90, 90, 90)),
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, as llava.data.images loads images
    ("P", 3, None), ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("I;16", 65535, (255, 255, 255)), ("I;16", 257, (1, 1, 1)), ("I;16", 32768, (128, 128, 128)),  # v * 255 / 65535
    ("I;16B", 1000, (4, 4, 4)),  # 3.89 -> 4
    ("I", 70000, (255, 255, 255)), ("I", 514, (2, 2, 2)), ("F", 300.7, (255, 255, 255)), ("F", 12.4, (12, 12, 12)),
])
def test_modes_become_rgb(tmp_path, mode, value, rgb):
    image = Image.new(mode, (60, 40), value)
    if mode == "P":
        image.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0, 0, 0] * 252)
        rgb = (200, 100, 50)
    large = LargeImage(image)
    for crop in (large.tile(1, (0, 0, 28, 28)), large.tile(2, (0, 0, 28, 20)), large.level_rgb(4)):
        assert crop.mode == "RGB" and crop.getpixel((0, 0)) == rgb


def test_sixteen_bit_png_round_trip(tmp_path):
    values = np.linspace(0, 65535, 50 * 30).reshape(30, 50).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with LargeImage(path) as large:
        gray = pixels(large.tile(1, (0, 0, 50, 30)))[..., 0]
    assert np.array_equal(gray, (values.astype(np.int64) * 255 + 32767) // 65535)
    assert to_rgb(Image.fromarray(values)).mode == "RGB"


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError, match="junk.tif: cannot read image"):
        LargeImage(junk)
    for suffix in (".png", ".tif", ".jpg"):
        whole = tmp_path / f"whole{suffix}"
        noise_image(300, 200, seed=9).save(whole)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        reason = f"cut{suffix}: cannot (decode image, corrupt or truncated|read image)"
        with pytest.raises(ImageReadError, match=reason):
            with LargeImage(cut) as large:
                large.level(1)
                large.level(2)


def test_the_pixel_limit_replaces_pillows_bomb_guard(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    noise_image(200, 150).save(path)
    with pytest.raises(ImageReadError, match=r"big.png: 200 x 150 = 30,000 pixels is above max_image_pixels=29,999 "
                                             r".*pass a larger --max_image_pixels"):
        LargeImage(path, max_image_pixels=29_999)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this file as a bomb
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    with LargeImage(path, max_image_pixels=30_000) as large:
        assert large.level(1).size == (200, 150)
    assert Image.MAX_IMAGE_PIXELS == 100  # our reads lifted it only for themselves
    with pytest.raises(ImageReadError, match="above max_image_pixels=10"):
        open_image(LargeImage(path), max_image_pixels=10)
