"""Pyramid geometry on odd sizes, every number computed by hand in the comments."""

from __future__ import annotations

import pytest
import torch

from llava.pyramid.geometry import (Level, next_level_tiles, num_levels, pyramid_applies, pyramid_levels,
                                    thumbnail_geometry, tile_box, tile_grid, tile_token_coords, tokens_per_tile_side)


@pytest.mark.parametrize("size,expected", [
    ((1, 1), 1), ((1008, 1008), 1), ((1008, 3), 1),
    ((1009, 1), 2),  # ceil(1009 / 2) = 505 <= 1008
    ((2016, 2016), 2), ((2017, 5), 3),  # ceil(2017 / 2) = 1009 > 1008; ceil(2017 / 4) = 505
    ((7099, 6329), 4),  # LRS-VQA's mean size: 7099 -> 3550 -> 1775 -> 888
    ((20000, 20000), 6),  # 20000 -> 10000 -> 5000 -> 2500 -> 1250 -> 625
    ((27328, 1000), 6),  # 27328 -> 13664 -> 6832 -> 3416 -> 1708 -> 854
])
def test_level_counts(size, expected):
    assert num_levels(*size, 1008) == expected


def test_levels_of_an_odd_size():
    # 5000 x 3001: factor 8 -> ceil(5000/8) = 625 x ceil(3001/8) = 376 (375.125) px,
    #   tiles (rows x cols) ceil(376/336) = 2 x ceil(625/336) = 2
    # factor 4 -> 1250 x 751 (750.25): 3 x 4 tiles (751/336 = 2.2, 1250/336 = 3.7)
    # factor 2 -> 2500 x 1501: 5 x 8 tiles (4.47, 7.44); factor 1 -> 5000 x 3001: 9 x 15 tiles (8.93, 14.88)
    levels = pyramid_levels(5000, 3001, 336, 1008)
    assert levels == [Level(0, 8, 625, 376, 2, 2), Level(1, 4, 1250, 751, 3, 4), Level(2, 2, 2500, 1501, 5, 8),
                      Level(3, 1, 5000, 3001, 9, 15)]
    assert [lv.num_tiles for lv in levels] == [4, 12, 40, 135]


def test_tiny_levels():
    # tile 28, base 56: 300 x 170 px -> x8: 38 x 22 px (1 x 2 tiles, rows x cols), x4: 75 x 43 (2 x 3),
    # x2: 150 x 85 (4 x 6), x1: 300 x 170 (7 x 11)
    levels = pyramid_levels(300, 170, 28, 56)
    assert [(lv.factor, lv.width, lv.height, lv.rows, lv.cols) for lv in levels] == [
        (8, 38, 22, 1, 2), (4, 75, 43, 2, 3), (2, 150, 85, 4, 6), (1, 300, 170, 7, 11)]


def test_tile_boxes_are_clipped_at_the_last_row_and_column():
    level = Level(0, 8, 625, 376, 2, 2)
    assert tile_box(level, 0, 0, 336) == (0, 0, 336, 336)
    assert tile_box(level, 1, 1, 336) == (336, 336, 625, 376)  # 289 x 40 px of content, the rest padding
    with pytest.raises(ValueError, match=r"tile \(2, 0\) is outside the 2 x 2 grid of level 0"):
        tile_box(level, 2, 0, 336)
    assert tile_grid(1, 1, 336) == (1, 1) and tile_grid(337, 336, 336) == (1, 2)


def test_pyramid_applies_only_above_one_tile():
    assert not pyramid_applies(336, 336, 336) and not pyramid_applies(1, 1, 336)
    assert pyramid_applies(337, 1, 336) and pyramid_applies(1, 337, 336)
    with pytest.raises(ValueError, match=r"image size must be positive integers \(width, height\), got \(0, 5\)"):
        pyramid_applies(0, 5, 336)


@pytest.mark.parametrize("size,expected", [
    ((5000, 3001), (336, 202, 0, 67)),  # 3001 * 336 / 5000 = 201.67 -> 202; (336 - 202) // 2 = 67
    ((3001, 5000), (202, 336, 67, 0)),
    ((1, 1), (336, 336, 0, 0)),
    ((10, 1000), (3, 336, 166, 0)),  # 3.36 -> 3
    ((2000, 5), (336, 1, 0, 167)),  # 0.84 -> 1
    ((1000, 500), (336, 168, 0, 84)),
])
def test_thumbnail_geometry(size, expected):
    assert thumbnail_geometry(*size, 336) == expected


def test_tokens_per_tile_side():
    assert tokens_per_tile_side(336, 14, 2) == 12 and tokens_per_tile_side(336, 14, 1) == 24
    assert tokens_per_tile_side(28, 7, 2) == 2
    with pytest.raises(ValueError, match="tile_size=336 must be a multiple of patch_size=14 \\* pool=5"):
        tokens_per_tile_side(336, 14, 5)


def test_tile_token_coords():
    # tile (1, 0) with t = 2: tokens (2, 0), (2, 1), (3, 0), (3, 1); tile (0, 2): (0, 4), (0, 5), (1, 4), (1, 5)
    assert tile_token_coords([(1, 0), (0, 2)], 2).tolist() == [[2, 0], [2, 1], [3, 0], [3, 1],
                                                                [0, 4], [0, 5], [1, 4], [1, 5]]
    assert tile_token_coords([], 12).shape == (0, 2)


def test_token_to_next_level_tiles():
    # 336 px tiles, 28 px tokens: token row r covers next-level rows [56 r, 56 r + 56): tile row floor(56 r / 336)
    nxt = Level(1, 4, 1250, 751, 3, 4)
    tokens = torch.tensor([[0, 0], [5, 5], [6, 0], [11, 23], [12, 0], [17, 24]])
    assert next_level_tiles(tokens, 28, 336, nxt) == [
        [(0, 0)],  # rows 0..55, cols 0..55
        [(0, 0)],  # rows 280..335
        [(1, 0)],  # rows 336..391
        [(1, 3)],  # rows 616..671, cols 1288..1343 -> col 3 (1288 / 336 = 3.8)
        [(2, 0)],  # rows 672..727
        [],  # rows 952..1007 -> tile row 2, cols 1344..1399 -> col 4: outside the 3 x 4 grid
    ]
    # footprints that straddle tiles (token_px 21, tile 28): token (1, 0) -> rows [42, 84), cols [0, 42):
    # tile rows 1..2 (84 - 1 = 83 -> 2), tile cols 0..1
    wide = Level(1, 1, 100, 100, 4, 4)
    assert next_level_tiles(torch.tensor([[1, 0]]), 21, 28, wide) == [[(1, 0), (1, 1), (2, 0), (2, 1)]]
