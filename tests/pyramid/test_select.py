"""Token layout, pooling, top-token choice and next-level tiles on hand-built score maps."""

from __future__ import annotations

import torch

from llava.pyramid.geometry import Level, tile_token_coords
from llava.pyramid.select import NEWLINE, assemble, choose_next_tiles, newline_layout, pool_tokens, top_tokens


def test_newline_layout_is_row_major_with_a_newline_per_row():
    coords = torch.tensor([[1, 0], [0, 3], [0, 1]])
    assert newline_layout(coords).tolist() == [2, 1, NEWLINE, 0, NEWLINE]
    # two tiles of one tile row, t = 2: rows interleave the tiles, as LLaVA-NeXT lays out its crops
    coords = tile_token_coords([(0, 0), (0, 1)], 2)  # (0,0) (0,1) (1,0) (1,1) | (0,2) (0,3) (1,2) (1,3)
    assert newline_layout(coords).tolist() == [0, 1, 4, 5, NEWLINE, 2, 3, 6, 7, NEWLINE]
    assert newline_layout(torch.zeros(0, 2, dtype=torch.long)).tolist() == []


def test_assemble_puts_the_newline_embedding_in_its_slots():
    features, newline = torch.arange(6.0).reshape(3, 2), torch.tensor([-1.0, -2.0])
    out = assemble(features, torch.tensor([2, 0, NEWLINE, 1, NEWLINE]), newline)
    assert out.tolist() == [[4, 5], [0, 1], [-1, -2], [2, 3], [-1, -2]]


def test_pooling_two_by_two_is_the_mean_of_each_block_and_pool_one_is_identity():
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 patch grid, one channel, value = 4 r + c
    pooled = pool_tokens(grid, 2)
    # block (0, 0) = {0, 1, 4, 5} -> 2.5; (0, 1) = {2, 3, 6, 7} -> 4.5; (1, 0) -> 10.5; (1, 1) -> 12.5
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert torch.equal(pool_tokens(grid, 1), grid)
    big = torch.randn(3, 24 * 24, 5)
    assert pool_tokens(big, 2).shape == (3, 144, 5)


def test_top_tokens_keeps_order_and_breaks_ties_to_the_earlier():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.5, 0.9])
    assert top_tokens(scores, 2).tolist() == [1, 4]  # 0.9 and the first 0.5
    assert top_tokens(scores, 3).tolist() == [1, 3, 4]


def test_next_tiles_from_a_hand_built_attention_map():
    """A level of 2 x 2 tiles (t = 2: a 4 x 4 token grid, 14 px tokens, 28 px tiles); next level 4 x 4 tiles.

    Attention map (token grid)::

        0.30 0    0    0.05        token (r, c) -> next-level tile (r, c) (a token's 2 x 14 px = one tile)
        0    0    0    0
        0    0.20 0.25 0
        0    0    0    0.10
    """
    attention = torch.zeros(4, 4)
    attention[0, 0], attention[0, 3], attention[2, 1], attention[2, 2], attention[3, 3] = 0.3, 0.05, 0.2, 0.25, 0.1
    coords = tile_token_coords([(0, 0), (0, 1), (1, 0), (1, 1)], 2)
    scores = attention[coords[:, 0], coords[:, 1]]
    kept = top_tokens(scores, 4)  # 25 % of 16
    assert sorted(map(tuple, coords[kept].tolist())) == [(0, 0), (2, 1), (2, 2), (3, 3)]
    nxt = Level(1, 1, 112, 112, 4, 4)
    assert choose_next_tiles(coords[kept], scores[kept], 14, 28, nxt, 16) == [(0, 0), (2, 1), (2, 2), (3, 3)]
    # at most 2 tiles: the two best (0.3 at (0, 0), 0.25 at (2, 2)), returned row-major
    assert choose_next_tiles(coords[kept], scores[kept], 14, 28, nxt, 2) == [(0, 0), (2, 2)]


def test_tile_priority_sums_the_tokens_pointing_at_it():
    # 28 px tokens, 336 px tiles: six token rows / columns share a next-level tile
    nxt = Level(1, 1, 672, 672, 2, 2)
    kept = torch.tensor([[0, 0], [1, 1], [2, 2], [6, 6]])  # three tokens -> tile (0, 0), one -> (1, 1)
    scores = torch.tensor([0.2, 0.2, 0.2, 0.5])
    assert choose_next_tiles(kept, scores, 28, 336, nxt, 1) == [(0, 0)]  # 0.6 beats 0.5
    assert choose_next_tiles(kept, scores, 28, 336, nxt, 2) == [(0, 0), (1, 1)]
