"""Images: loading with clear errors, LLaVA's square padding, and pixel values + token counts.

``image_aspect_ratio`` (``--image_aspect_ratio``) picks the preprocessing:

- ``pad`` (LLaVA-1.5): the image centred on a square canvas of its longer side filled with the
  processor's mean colour, then resized to the vision tower's size. Nothing is cropped away.
- ``square``: the image processor as is (resize the shorter side, centre crop).
- ``anyres`` (LLaVA-NeXT): a base image plus crops on the best grid of ``image_grid_pinpoints``;
  the number of crops, hence of image tokens, depends on the image's size.

Example::

    preprocess = ImagePreprocessor(processor, "pad")
    batch = preprocess([load_image("images/0001.png", sample_id="vqa-1")])
    batch.pixel_values.shape, batch.num_image_tokens  # (1, 3, 336, 336), [576]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from ..model.processor import is_anyres, num_image_tokens

ASPECT_RATIOS = ("pad", "square", "anyres")


class ImageError(ValueError):
    """An image of a sample is missing or cannot be decoded; the message names the sample id and the path."""


def load_image(path: str | os.PathLike, sample_id: str) -> Image.Image:
    """The image at ``path`` fully decoded as RGB; ImageError naming ``sample_id`` and ``path`` otherwise.

    Decoding the whole file here (not lazily) catches truncated and corrupt files at load time.
    """
    if not os.path.isfile(path):
        raise ImageError(f"sample {sample_id}: image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise ImageError(f"sample {sample_id}: image {path} cannot be read ({reason})") from error


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """``image`` centred on a ``background``-coloured square canvas whose side is its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


@dataclass
class ImageBatch:
    """Pixel values of the k images of one sample and the token count of each.

    ``pixel_values``: ``(k, 3, H, W)`` (pad / square) or ``(k, P_max, 3, H, W)`` (anyres: base image
    + crops, zero-padded to the sample's largest crop count). ``image_sizes``: ``(k, 2)`` long
    (height, width) of the original images for anyres, None otherwise. ``num_image_tokens[i]``:
    tokens the model produces for image i (the length of its expanded ``<image>`` span).
    """

    pixel_values: torch.Tensor
    image_sizes: torch.Tensor | None
    num_image_tokens: list[int]


class ImagePreprocessor:
    """Turns a sample's PIL images into an :class:`ImageBatch` for ``processor`` and ``aspect_ratio``.

    ``anyres`` needs a ``LlavaNextProcessor`` and a ``LlavaNextProcessor`` needs ``anyres``.
    """

    def __init__(self, processor, aspect_ratio: str):
        if aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio {aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}")
        if (aspect_ratio == "anyres") != is_anyres(processor):
            raise ValueError(
                f"image_aspect_ratio {aspect_ratio!r} does not fit a {type(processor).__name__}: anyres needs a "
                "LLaVA-NeXT processor (built with image_grid_pinpoints) and a LLaVA-NeXT processor needs anyres")
        self.processor = processor
        self.aspect_ratio = aspect_ratio
        mean = processor.image_processor.image_mean
        self.background = tuple(int(round(255 * float(m))) for m in mean)

    def __call__(self, images: list[Image.Image]) -> ImageBatch:
        if self.aspect_ratio == "pad":
            images = [expand_to_square(image, self.background) for image in images]
        out = self.processor.image_processor(images, return_tensors="pt")
        sizes = [(image.height, image.width) for image in images]
        counts = [num_image_tokens(self.processor, size) for size in sizes]
        image_sizes = None
        if self.aspect_ratio == "anyres":
            image_sizes = torch.as_tensor(out["image_sizes"], dtype=torch.long).reshape(len(images), 2)
        return ImageBatch(pixel_values=out["pixel_values"], image_sizes=image_sizes, num_image_tokens=counts)

    def estimated_tokens_per_image(self) -> int:
        """Tokens of a typical image without loading one: exact for pad / square; for anyres the count of
        a square image at the largest grid resolution."""
        if self.aspect_ratio != "anyres":
            crop = self.processor.image_processor.crop_size
            height, width = _size_hw(crop)
            return num_image_tokens(self.processor, (height, width))
        pinpoints = self.processor.image_processor.image_grid_pinpoints
        side = max(max(h, w) for h, w in pinpoints)
        return num_image_tokens(self.processor, (side, side))


def _size_hw(size) -> tuple[int, int]:
    """(height, width) of a size dict / SizeDict with height+width or shortest_edge."""
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    return int(get("shortest_edge")), int(get("shortest_edge"))
