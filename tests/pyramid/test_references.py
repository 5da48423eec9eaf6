"""The references coarse-to-fine is measured against: the thumbnail alone and the full grid of tiles."""

from __future__ import annotations

import dataclasses

import torch

from llava.pyramid import coarse_to_fine, pack_input_ids
from llava.pyramid.flops import full_grid_walk, thumbnail_walk
from llava.pyramid.references import full_grid, thumbnail_only

from .conftest import noise_image

PREFIX, QUESTION = [1, 5, 6, 7], [8, 9, 10, 11, 12]


def test_full_grid_is_the_walk_over_one_full_resolution_level_keeping_every_token(next_model, tiny_config):
    image = noise_image(150, 97, seed=3)  # 6 x 4 tiles of 28 px, the last column and row padded
    grid = full_grid(next_model, [image], tiny_config, chunk=5)[0]  # chunks do not change the features
    whole = dataclasses.replace(tiny_config, base_long_side=150, token_keep_ratio=1.0, max_tiles_per_level=36)
    walk = coarse_to_fine(next_model, image, PREFIX, QUESTION, whole)
    assert [t.level.factor for t in walk.traces] == [1] and walk.tiles_per_level == [24]
    torch.testing.assert_close(grid.image_embeds[16:], walk.image_embeds[16:], atol=1e-5, rtol=1e-4)
    # the thumbnail is made from the coarsest level of the config's pyramid, as the walk makes it
    usual = coarse_to_fine(next_model, image, PREFIX, QUESTION, tiny_config)
    torch.testing.assert_close(grid.image_embeds[:16], usual.image_embeds[:16])
    expected = full_grid_walk(150, 97, tiny_config, patch_size=7)
    assert (grid.num_image_tokens, grid.num_vision_images) == (expected.num_image_tokens, expected.num_vision_images)
    assert grid.stop_reason == "full_grid" and grid.num_local_tokens == 24 * 4 and grid.num_newline_tokens == 8


def test_thumbnail_only_is_the_walk_s_thumbnail(next_model, tiny_config):
    image = noise_image(300, 170, seed=1)
    thumb = thumbnail_only(next_model, [image], tiny_config)[0]
    walk = coarse_to_fine(next_model, image, PREFIX, QUESTION, tiny_config)
    torch.testing.assert_close(thumb.image_embeds, walk.image_embeds[:walk.num_thumbnail_tokens])
    expected = thumbnail_walk(tiny_config, patch_size=7)
    assert (thumb.num_image_tokens, thumb.num_vision_images, thumb.traces) == (expected.num_image_tokens, 1, [])


def test_references_go_to_generate_like_walks(next_model, tiny_config):
    images = [noise_image(300, 170, seed=1), noise_image(90, 200, seed=2)]
    for results in (thumbnail_only(next_model, images, tiny_config), full_grid(next_model, images, tiny_config)):
        batch = pack_input_ids(next_model, results, [PREFIX, [1]], [QUESTION, [20, 21]], pad_token_id=0)
        out = next_model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=0)
        assert out.shape == (2, batch["input_ids"].shape[1] + 2)
