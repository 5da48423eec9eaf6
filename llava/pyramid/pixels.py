"""Pixels to vision-tower input: tiles and the thumbnail as normalised ``(3, S, S)`` float tensors.

Only tiles (``tile_size`` squares) and the thumbnail ever become float tensors. Padding (the last
row / column of tiles, the thumbnail's sides) is 0 *after* normalisation, i.e. the processor's mean
colour in pixels, as LLaVA pads images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .geometry import thumbnail_geometry

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, what LLaVA's processors use
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PixelNorm:
    """``(pixel * rescale - mean) / std`` per channel, as the CLIP image processor normalises."""

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale: float = 1 / 255

    @classmethod
    def from_processor(cls, processor) -> "PixelNorm":
        """From a processor or image processor (``image_mean``, ``image_std``, ``rescale_factor``)."""
        image_processor = getattr(processor, "image_processor", processor)
        return cls(tuple(image_processor.image_mean), tuple(image_processor.image_std),
                   float(getattr(image_processor, "rescale_factor", 1 / 255)))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image ``(w, h)`` -> ``(3, h, w)`` float32, normalised."""
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy()).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (pixels * self.rescale - mean) / std


def padded_tile(image: Image.Image, size: int, norm: PixelNorm, left: int = 0, top: int = 0) -> torch.Tensor:
    """``(3, size, size)``: ``image`` normalised and placed at ``(left, top)``, zeros elsewhere."""
    width, height = image.size
    if left + width > size or top + height > size:
        raise ValueError(f"a {width} x {height} crop does not fit a {size} px tile at ({left}, {top})")
    out = torch.zeros(3, size, size)
    out[:, top:top + height, left:left + width] = norm(image)
    return out


def thumbnail_tensor(level_image: Image.Image, image_size: tuple[int, int], size: int, norm: PixelNorm) -> torch.Tensor:
    """``(3, size, size)``: the global thumbnail (long side ``size``, bicubic, centred, padded).

    ``level_image`` is any level of the image (the coarsest); ``image_size`` the full image's
    ``(width, height)``, which fixes the thumbnail's shape (:func:`.geometry.thumbnail_geometry`).
    """
    w, h, left, top = thumbnail_geometry(*image_size, size)
    resized = level_image.resize((w, h), Image.Resampling.BICUBIC)
    return padded_tile(resized, size, norm, left, top)
