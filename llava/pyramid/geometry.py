"""Pyramid geometry: levels, tile grids, token grids and the token -> next-level tile mapping.

Pure integer functions, no images. Conventions:

* Sizes are ``(width, height)`` in pixels; grids are ``(rows, cols)``; a tile is ``(row, col)``.
* Level 0 is the coarsest; the last level is the image at full resolution. Level ``k`` of an
  ``n``-level pyramid is the image reduced by ``factor = 2 ** (n - 1 - k)`` (a box reduction, as
  Pillow's ``Image.reduce``), so it is ``ceil(W / factor) x ceil(H / factor)`` pixels, and one of its
  pixels ``x`` covers pixels ``2x`` and ``2x + 1`` of the next level.
* The level count is the smallest ``n >= 1`` with ``ceil(L / 2 ** (n - 1)) <= base_long_side``,
  ``L = max(W, H)``: 1 for images whose long side fits the base, then one more per halving. It
  grows with ``log2(L / base_long_side)``.
* A level is cut into ``tile_size`` tiles from the top-left corner; the last row / column of tiles
  is padded (zeros after normalisation) to a full tile.
* A tile's ``g x g`` patch grid (``g = tile_size / patch_size``) pooled by ``pool`` gives
  ``t = g / pool`` tokens per side; one token covers ``s = patch_size * pool`` pixels of its level.
  A level's token grid is ``(rows * t) x (cols * t)``.

Hand-computed examples (tile 336, base 1008, patch 14, pool 2: ``t = 12``, ``s = 28``)::

    num_levels(27328, 27328, 1008)   # 6: 27328 -> 13664 -> 6832 -> 3416 -> 1708 -> 854 <= 1008
    num_levels(1008, 500, 1008)      # 1
    num_levels(1009, 500, 1008)      # 2: ceil(1009 / 2) = 505
    pyramid_levels(5000, 3001, 336, 1008)
    # factor 8: 625 x 376 px, 2 x 2 tiles; factor 4: 1250 x 751, 3 x 4; factor 2: 2500 x 1501, 5 x 8;
    # factor 1: 5000 x 3001, 9 x 15
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Level:
    """One level of the pyramid: its reduction factor, pixel size and tile grid."""

    index: int  # 0 = coarsest
    factor: int  # the level is the full image reduced by this (a power of two)
    width: int  # ceil(W / factor)
    height: int  # ceil(H / factor)
    rows: int  # tile rows: ceil(height / tile_size)
    cols: int  # tile columns: ceil(width / tile_size)

    @property
    def num_tiles(self) -> int:
        return self.rows * self.cols


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def num_levels(width: int, height: int, base_long_side: int) -> int:
    """Smallest ``n >= 1`` with ``ceil(max(width, height) / 2 ** (n - 1)) <= base_long_side``.

    >>> num_levels(1008, 10, 1008), num_levels(1009, 10, 1008), num_levels(2016, 10, 1008), num_levels(2017, 10, 1008)
    (1, 2, 2, 3)
    """
    _check_size(width, height)
    long_side, n = max(width, height), 1
    while ceil_div(long_side, 2 ** (n - 1)) > base_long_side:
        n += 1
    return n


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """``(rows, cols)`` of ``tile_size`` tiles covering ``width x height`` (last row / column padded).

    >>> tile_grid(625, 376, 336)
    (2, 2)
    """
    _check_size(width, height)
    return ceil_div(height, tile_size), ceil_div(width, tile_size)


def pyramid_levels(width: int, height: int, tile_size: int, base_long_side: int) -> list[Level]:
    """The levels of a ``width x height`` image, coarsest first (see the module docstring)."""
    n = num_levels(width, height, base_long_side)
    levels = []
    for index in range(n):
        factor = 2 ** (n - 1 - index)
        w, h = ceil_div(width, factor), ceil_div(height, factor)
        rows, cols = tile_grid(w, h, tile_size)
        levels.append(Level(index, factor, w, h, rows, cols))
    return levels


def pyramid_applies(width: int, height: int, tile_size: int) -> bool:
    """Whether the coarse-to-fine path applies: the image's long side exceeds one tile.

    An image that fits in one tile has nothing to zoom into: it takes the plain (any-resolution)
    path of the model instead. ``pyramid_applies(336, 200, 336)`` is False, ``(337, 1, 336)`` True.
    """
    _check_size(width, height)
    return max(width, height) > tile_size


def tile_box(level: Level, row: int, col: int, tile_size: int) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` of tile ``(row, col)`` in its level, clipped to the image.

    The tile's content is ``right - left`` by ``bottom - top`` pixels; the rest of the tile is padding.
    Level 625 x 376, tile 336: tile (1, 1) is ``(336, 336, 625, 376)``: 289 x 40 pixels of content.
    """
    if not (0 <= row < level.rows and 0 <= col < level.cols):
        raise ValueError(f"tile ({row}, {col}) is outside the {level.rows} x {level.cols} grid of level {level.index}")
    left, top = col * tile_size, row * tile_size
    return left, top, min(left + tile_size, level.width), min(top + tile_size, level.height)


def thumbnail_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(w, h, left, top)``: the image resized to long side ``size`` and centred on a ``size`` square.

    ``w = max(1, round(width * size / L))`` rounding halves up (same for ``h``), ``L = max(width, height)``; the offsets
    centre it (``(size - w) // 2``), the rest is padding. ``thumbnail_geometry(5000, 3001, 336)`` is
    ``(336, 202, 0, 67)``: 3001 * 336 / 5000 = 201.67 -> 202, (336 - 202) // 2 = 67.
    """
    _check_size(width, height)
    long_side = max(width, height)
    w, h = (max(1, (2 * side * size + long_side) // (2 * long_side)) for side in (width, height))
    return w, h, (size - w) // 2, (size - h) // 2


def tokens_per_tile_side(tile_size: int, patch_size: int, pool: int) -> int:
    """``t = tile_size / patch_size / pool``: 336 / 14 / 2 = 12 (144 tokens a tile); 28 / 7 / 2 = 2."""
    grid, rest = divmod(tile_size, patch_size)
    if rest or grid % pool:
        raise ValueError(f"tile_size={tile_size} must be a multiple of patch_size={patch_size} * pool={pool}")
    return grid // pool


def tile_token_coords(tiles: list[tuple[int, int]], t: int) -> torch.Tensor:
    """``(len(tiles) * t * t, 2)`` long: the (row, col) in the level's token grid of every token of
    ``tiles``, tile by tile in the given order, each tile's tokens row-major.

    Tile (1, 0) with ``t = 2`` has tokens (2, 0), (2, 1), (3, 0), (3, 1).
    """
    if not tiles:
        return torch.zeros(0, 2, dtype=torch.long)
    local = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij"), dim=-1).reshape(-1, 2)
    origin = torch.tensor(tiles, dtype=torch.long) * t  # (k, 2)
    return (origin[:, None, :] + local[None]).reshape(-1, 2)


def next_level_tiles(token_coords: torch.Tensor, token_px: int, tile_size: int,
                     next_level: Level) -> list[list[tuple[int, int]]]:
    """For each token, the tiles of the next (2x finer) level that its pixels fall in.

    Token ``(r, c)`` covers pixels ``[r * token_px, (r + 1) * token_px)`` of its level, i.e. rows
    ``[2 r token_px, 2 (r + 1) token_px)`` of the next level, which lie in tile rows
    ``floor(2 r token_px / T) .. floor((2 (r + 1) token_px - 1) / T)`` (columns alike). Tiles outside
    the next level's grid (a token in the padding) are left out, so a list may be empty.
    With ``token_px = 28``, ``T = 336``: token row 5 -> next-level rows [280, 336) -> tile row 0;
    row 6 -> [336, 392) -> tile row 1 (every 6 token rows map to one tile row).
    """
    result = []
    for r, c in token_coords.tolist():
        rows = _span(r, token_px, tile_size, next_level.rows)
        cols = _span(c, token_px, tile_size, next_level.cols)
        result.append([(i, j) for i in rows for j in cols])
    return result


def _span(index: int, token_px: int, tile_size: int, limit: int) -> range:
    first = (2 * index * token_px) // tile_size
    last = (2 * (index + 1) * token_px - 1) // tile_size
    return range(min(first, limit), min(last + 1, limit))


def _check_size(width: int, height: int) -> None:
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, int) \
            or not isinstance(height, int) or width < 1 or height < 1:
        raise ValueError(f"image size must be positive integers (width, height), got ({width!r}, {height!r})")


def level_summary(levels: list[Level]) -> str:
    """One line per level, for logs and errors: ``level 0: x8, 625 x 376 px, 2 x 2 tiles``."""
    return "\n".join(f"level {lv.index}: x{lv.factor}, {lv.width} x {lv.height} px, {lv.rows} x {lv.cols} tiles"
                     for lv in levels)


__all__ = ["Level", "ceil_div", "level_summary", "next_level_tiles", "num_levels", "pyramid_applies",
           "pyramid_levels", "thumbnail_geometry", "tile_box", "tile_grid", "tile_token_coords",
           "tokens_per_tile_side"]
