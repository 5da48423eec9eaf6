"""The two references coarse-to-fine is measured against: the thumbnail alone, and every tile of the image.

Both return :class:`~.driver.CoarseToFineResult` objects, so :func:`~.driver.pack_input_ids` and
:func:`~.flops.model_flops`-style counts take them like a walk's result:

* :func:`thumbnail_only`: the global thumbnail (the coarsest level read, resized to ``thumbnail_size``),
  one crop encoded; what a model gets that never looks closer (:func:`~.flops.thumbnail_walk`).
* :func:`full_grid`: the thumbnail, then every tile of the full-resolution image, pooled and laid out
  row-major with a newline per token row, all kept, no focus pass (:func:`~.flops.full_grid_walk`).
  Tiles are encoded ``chunk`` at a time, one image after the other: the pixels of at most ``chunk``
  tiles exist as floats at once.

Example::

    results = full_grid(model, ["scene.jpg"], config, PixelNorm.from_processor(processor))
    model.generate(**pack_input_ids(model, results, prefixes, questions, pad_token_id), max_new_tokens=8)
"""

from __future__ import annotations

from typing import Sequence

import torch

from .config import CoarseToFineConfig
from .driver import CoarseToFineResult, check_model
from .geometry import pyramid_levels, tile_box, tile_token_coords, tokens_per_tile_side
from .image_io import LargeImage, open_image
from .pixels import PixelNorm, padded_tile, thumbnail_tensor
from .select import assemble, encode_images, llava_parts, newline_layout, pool_tokens


def _thumbnail(model, image: LargeImage, config: CoarseToFineConfig, norm: PixelNorm):
    """``(levels, (g*g, d) thumbnail features)``; the thumbnail is made from the coarsest level, as the walk does."""
    levels = pyramid_levels(*image.size, config.tile_size, config.base_long_side)
    pixels = thumbnail_tensor(image.level_rgb(levels[0].factor), image.size, config.thumbnail_size, norm)
    return levels, encode_images(model, pixels[None])[0]


@torch.no_grad()
def thumbnail_only(model, images: Sequence, config: CoarseToFineConfig,
                   norm: PixelNorm | None = None) -> list[CoarseToFineResult]:
    """Per image: the thumbnail's ``g * g`` tokens only (``stop_reason="thumbnail"``, no level visited)."""
    check_model(model, config)
    results = []
    for source in images:
        image = open_image(source, config.max_image_pixels)
        levels, features = _thumbnail(model, image, config, norm or PixelNorm())
        image.close()
        results.append(CoarseToFineResult(features, image.size, features.shape[0], 0, 0, 1, "thumbnail", levels))
    return results


@torch.no_grad()
def full_grid(model, images: Sequence, config: CoarseToFineConfig, norm: PixelNorm | None = None,
              chunk: int = 16) -> list[CoarseToFineResult]:
    """Per image: the thumbnail, then every full-resolution tile's pooled tokens (``stop_reason="full_grid"``)."""
    check_model(model, config)
    norm = norm or PixelNorm()
    newline = llava_parts(model)[2]
    t = tokens_per_tile_side(config.tile_size, model.config.vision_config.patch_size, config.pool)
    results = []
    for source in images:
        image = open_image(source, config.max_image_pixels)
        levels, thumbnail = _thumbnail(model, image, config, norm)
        full = levels[-1]
        tiles = [(r, c) for r in range(full.rows) for c in range(full.cols)]
        features = []
        for start in range(0, len(tiles), chunk):
            pixels = torch.stack([padded_tile(image.tile(full.factor, tile_box(full, r, c, config.tile_size)),
                                              config.tile_size, norm) for r, c in tiles[start:start + chunk]])
            features.append(pool_tokens(encode_images(model, pixels), config.pool))
        image.close()
        local = torch.cat(features).reshape(-1, thumbnail.shape[-1])
        layout = newline_layout(tile_token_coords(tiles, t))
        embeds = torch.cat([thumbnail, assemble(local, layout, newline).to(thumbnail.dtype)])
        results.append(CoarseToFineResult(embeds, image.size, thumbnail.shape[0], local.shape[0],
                                          int((layout < 0).sum()), 1 + len(tiles), "full_grid", levels))
    return results


__all__ = ["full_grid", "thumbnail_only"]
