"""Reading huge images lazily: level images and tiles on demand, never the full image as floats.

:class:`LargeImage` opens a file (JPEG, PNG, TIFF incl. tiled and BigTIFF, anything Pillow reads) or
wraps a PIL image. Only the header is read when it opens; the pixel count is checked against
``max_image_pixels`` there (default ~1 gigapixel; ``--max_image_pixels`` raises it), before anything
is decoded. Pillow's own decompression-bomb guard is lifted for our reads only, and only because
this explicit check replaces it.

Memory (what the 3 GB bound for 20,000 x 20,000 px rests on):

* The full image is decoded at most once, in an 8-bit (or Pillow-native reducible) mode: 4 bytes a
  pixel for RGB (1.6 GB at 20k x 20k), 1 for grayscale; 16-bit images are brought to 8 bits in
  bands (they would otherwise need a 4-byte copy).
* A level image is ``Image.reduce(factor)`` of it (a box filter); one level is cached at a time.
  JPEG levels coarser than the full image are decoded at reduced scale (``Image.draft``) without
  decoding the full image; they may differ from a box reduction of the full image in the last bits.
* Tiles are crops of the cached level; only they and the thumbnail become tensors (``pixels.py``).

Modes: RGB as is; grayscale (``1``, ``L``, ``LA``) and colour modes (``P``, ``RGBA``, ``CMYK``,
``YCbCr`` ...) converted as ``Image.convert("RGB")`` does (alpha dropped, as ``llava.data.images``
loads training images); 16-bit (``I;16*``) and 32-bit integer (``I``, read as a 16-bit container)
scaled linearly ``v * 255 / 65535`` with rounding; float (``F``) clipped to [0, 255].
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import DEFAULT_MAX_IMAGE_PIXELS
from .geometry import ceil_div

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
NEEDS_RGB_FIRST = ("1", "P", "PA", "RGBa", "La")  # reduce() cannot average these (palette indices, premultiplied)
WITH_ALPHA = {"RGBA": "RGB", "LA": "L"}  # reduced channel by channel: reduce() would weight colour by alpha
BAND_ROWS = 1024  # rows converted at once from 16 bits


class ImageReadError(ValueError):
    """An image cannot be read (missing, corrupt, truncated, too large); the message names the file."""


@contextlib.contextmanager
def _bomb_check_lifted():
    """Pillow's decompression-bomb guard off for this block: :class:`LargeImage` checks the size itself."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_pixels(width: int, height: int, max_image_pixels: int, name: str) -> None:
    """Refuse an image with more than ``max_image_pixels`` pixels, naming the flag that raises the limit."""
    if width * height > max_image_pixels:
        raise ImageReadError(
            f"{name}: {width} x {height} = {width * height:,} pixels is above max_image_pixels={max_image_pixels:,} "
            "(a guard against decompression bombs); pass a larger --max_image_pixels to read it")


class LargeImage:
    """A possibly huge image read on demand (see the module docstring).

    Args:
        source: a path, or an already opened PIL image (then ``name`` is used in errors).
        max_image_pixels: refuse images with more pixels (checked from the header).
    """

    def __init__(self, source: str | os.PathLike | Image.Image, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 name: str | None = None):
        self.max_image_pixels = max_image_pixels
        self._level_cache: tuple[int, Image.Image] | None = None
        self._full: Image.Image | None = None
        if isinstance(source, Image.Image):
            self.path, self.name = None, name or "<image>"
            self._handle = source
        else:
            self.path = Path(source)
            self.name = name or str(source)
            self._handle = self._open()
        self.size: tuple[int, int] = self._handle.size  # (width, height)
        self.format = self._handle.format
        check_pixels(*self.size, max_image_pixels, self.name)

    def _open(self) -> Image.Image:
        if not self.path.is_file():
            raise ImageReadError(f"{self.name}: image file does not exist")
        try:
            with _bomb_check_lifted():
                return Image.open(self.path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(f"{self.name}: cannot read image ({type(err).__name__}: {err})") from err

    # ------------------------------------------------------------------ levels and tiles
    def level(self, factor: int) -> Image.Image:
        """The image reduced by ``factor`` (a power of two, box filter), RGB, ``ceil(W/f) x ceil(H/f)``.

        The last level asked for is cached, so the tiles of one level reuse it.
        """
        if self._level_cache is not None and self._level_cache[0] == factor:
            return self._level_cache[1]
        self._level_cache = None  # free the previous level before making the next
        if factor == 1:
            image = self._decoded()
        elif self._full is None and self.format == "JPEG" and self.path is not None:
            image = self._jpeg_draft(factor)
        else:
            image = reduce_image(self._decoded(), factor)
        self._level_cache = (factor, image)
        return image

    def tile(self, factor: int, box: tuple[int, int, int, int]) -> Image.Image:
        """RGB crop ``box = (left, top, right, bottom)`` of the level reduced by ``factor``."""
        return to_rgb(self.level(factor).crop(box))

    def level_rgb(self, factor: int) -> Image.Image:
        """The whole level as RGB (small levels: the thumbnail, pictures)."""
        return to_rgb(self.level(factor))

    def close(self) -> None:
        """Release the decoded pixels and the file."""
        self._level_cache, self._full = None, None
        if self.path is not None:
            self._handle.close()

    def __enter__(self) -> "LargeImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding
    def _decoded(self) -> Image.Image:
        """The full image decoded once, in a mode ``reduce`` can average (8-bit for 16-bit sources)."""
        if self._full is None:
            image = self._handle
            try:
                with _bomb_check_lifted():
                    image.load()
            except (OSError, SyntaxError, ValueError) as err:
                raise ImageReadError(f"{self.name}: cannot decode image, corrupt or truncated "
                                     f"({type(err).__name__}: {err})") from err
            self._full = reducible(image)
            if self._full is not image and self.path is not None:
                image.close()  # the 16-bit / palette original is no longer needed
        return self._full

    def _jpeg_draft(self, factor: int) -> Image.Image:
        """A JPEG level decoded at reduced scale (1/2 .. 1/8 in the decoder), then box-reduced to size."""
        width, height = self.size
        target = (ceil_div(width, factor), ceil_div(height, factor))
        with _bomb_check_lifted(), Image.open(self.path) as image:
            image.draft(image.mode, target)
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as err:
                raise ImageReadError(f"{self.name}: cannot decode image, corrupt or truncated "
                                     f"({type(err).__name__}: {err})") from err
            scale = next((s for s in (8, 4, 2, 1) if (ceil_div(width, s), ceil_div(height, s)) == image.size), None)
            image = reducible(image)
            if scale is None:  # a decoder that scaled otherwise: resize the rest of the way
                return image.resize(target, Image.Resampling.BOX)
            return reduce_image(image, factor // scale) if factor > scale else image.copy()


def reduce_image(image: Image.Image, factor: int) -> Image.Image:
    """``Image.reduce`` (box filter); images with alpha lose it first, one colour channel at a time
    (so a full-size copy is never made, and transparent pixels keep their colour as ``convert`` does)."""
    if image.mode in WITH_ALPHA:
        bands = WITH_ALPHA[image.mode]
        return Image.merge(bands, [image.getchannel(band).reduce(factor) for band in bands])
    return image.reduce(factor)


def reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode that ``Image.reduce`` averages correctly, 8 bits where the source has more.

    16-bit / 32-bit integer -> ``L`` (``v * 255 / 65535``, rounded, in bands of rows); palette and
    bilevel, premultiplied -> RGB / L; every other mode is returned as is (converted per crop by
    :func:`to_rgb`; alpha is dropped by :func:`reduce_image`).
    """
    if image.mode in SIXTEEN_BIT:
        return _sixteen_to_l(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode in NEEDS_RGB_FIRST:
        return image.convert("RGB")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image of ``image`` (see the module docstring for each mode)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT:
        image = _sixteen_to_l(image)
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).round().astype(np.uint8))
    return image.convert("RGB")


def _sixteen_to_l(image: Image.Image) -> Image.Image:
    width, height = image.size
    out = Image.new("L", image.size)
    for top in range(0, height, BAND_ROWS):
        band = np.asarray(image.crop((0, top, width, min(top + BAND_ROWS, height)))).astype(np.int64)
        band = (np.clip(band, 0, 65535) * 255 + 32767) // 65535
        out.paste(Image.fromarray(band.astype(np.uint8)), (0, top))
    return out


def open_image(source, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> LargeImage:
    """A :class:`LargeImage` of ``source`` (a path, a PIL image or an already open ``LargeImage``)."""
    if isinstance(source, LargeImage):
        check_pixels(*source.size, max_image_pixels, source.name)
        return source
    return LargeImage(source, max_image_pixels)
