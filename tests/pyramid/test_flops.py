"""FLOPs of coarse-to-fine runs: hand-computed counts on the tiny shapes, the plan as an upper bound, the CLI, timing.

Tiny shapes (configs/models/tiny-llava-next.json): CLIP d=32, m=64, 2 layers, 28 px / 7 px patches (g=4, n=17);
LLM 4 layers, d=64, m=128. Config ``tiny``: 28 px tiles, base 56, pool 2 (t=2, 4 tokens a tile), focus layer 1.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from llava.bench import flops as flops_cli
from llava.bench.coarse_to_fine import run_coarse_to_fine, synthetic_inputs
from llava.pdrop import PDropConfig
from llava.pdrop.flops import layer_flops, llm_flops
from llava.pyramid import coarse_to_fine, coarse_to_fine_batch
from llava.pyramid.flops import (LevelCount, VisionShape, WalkCount, coarse_to_fine_flops, full_grid_walk, model_flops,
                                 planned_walk, thumbnail_walk, vision_layer_flops, vision_pass_flops)
from llava.pyramid.select import NEWLINE, newline_layout
from llava.pyramid.geometry import tile_token_coords
from tests.conftest import preset_model

from .conftest import noise_image

TINY_VISION = VisionShape(2, 32, 64, 28, 7, 64)
CLIP_PASS = 489_088  # 16*3*49*32 = 75,264 embedding + 2 * 157,760 layers + 16*(32*64 + 64*64) = 98,304 projector
PREFIX, QUESTION = [1, 5, 6, 7], [8, 9, 10, 11, 12]


def test_vision_tower_counts_by_hand():
    # n = 17: 4*17*32^2 = 69,632; 2*17^2*32 = 18,496; 2*17*32*64 = 69,632
    assert vision_layer_flops(17, 32, 64) == 157_760
    assert vision_pass_flops(TINY_VISION) == CLIP_PASS
    assert VisionShape.from_config(preset_model("tiny-llava-next", schedule=None).config) == TINY_VISION
    # CLIP ViT-L/14 at 336 px (LLaVA-NeXT-7B's tower): ~0.2 TFLOPs a crop, the figure usually quoted (190 G + projector)
    assert 0.19e12 < vision_pass_flops(VisionShape(24, 1024, 4096, 336, 14, 4096)) < 0.21e12


def test_a_walk_counted_by_hand():
    """3 crops; one focus level of 8 local tokens + 2 newlines; 24 image tokens; 10 text tokens; schedule [1,2,3]."""
    walk = WalkCount(thumbnail_tokens=16, num_vision_images=3, num_image_tokens=24, levels=[LevelCount(2, 2, 8, 2)])
    counts = coarse_to_fine_flops(walk, TINY_VISION, 4, 64, 128, text_tokens=10, focus_layer=1,
                                  schedule=PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]))
    assert counts.vision == 3 * CLIP_PASS
    assert counts.focus == 1_640_448  # one layer over 10 + 16 + 8 + 2 = 36 tokens: 589,824 + 165,888 + 884,736
    assert counts.llm_no_drop == 4 * 1_540_608  # 34 tokens: 557,056 + 147,968 + 835,584
    # 34 tokens, then 12 + 10 = 22, 6 + 10 = 16, 3 + 10 = 13
    assert counts.llm_pdrop == 1_540_608 + 963_072 + 688_128 + 554_112
    assert counts.total_no_drop == counts.vision + counts.focus + counts.llm_no_drop
    assert coarse_to_fine_flops(walk, TINY_VISION, 4, 64, 128, 10, 1).llm_pdrop is None


def test_plan_and_references_by_hand(tiny_config):
    """300 x 170: levels x8 38x22 px (1 x 2 tiles), x4 75x43 (2 x 3), x2 150x85 (4 x 6), x1 300x170 (7 x 11)."""
    plan = planned_walk(300, 170, tiny_config, patch_size=7)
    # x8: all 2 tiles, 8 tokens, 1 tile row -> 2 newlines, keep 2; then min(4 tiles, the level's, 4 x 2 kept) = 4
    assert plan.levels == [LevelCount(8, 2, 8, 2), LevelCount(4, 4, 16, 4), LevelCount(2, 4, 16, 8),
                           LevelCount(1, 4, 16, 8)]
    assert plan.num_vision_images == 15 and plan.num_image_tokens == 16 + 4 + 4
    capped = planned_walk(300, 170, dataclasses.replace(tiny_config, max_levels=2, token_budget=1), patch_size=7)
    assert [lv.tiles for lv in capped.levels] == [2, 4] and capped.num_image_tokens == 16 + 1 + 1
    # one token kept: the next level can only be the (at most 4) tiles under it, however many are allowed
    few = planned_walk(300, 170, dataclasses.replace(tiny_config, max_tiles_per_level=9, token_budget=1), 7)
    assert [lv.tiles for lv in few.levels] == [2, 4, 4, 4]
    full = full_grid_walk(300, 170, tiny_config, patch_size=7)
    assert (full.num_vision_images, full.num_image_tokens, full.levels) == (78, 16 + 77 * 4 + 7 * 2, [])
    assert thumbnail_walk(tiny_config, 7) == WalkCount(16, 1, 16)
    with pytest.raises(ValueError, match="a 28 x 20 image fits one 28 px tile: no pyramid"):
        planned_walk(28, 20, tiny_config, 7)


@pytest.fixture(scope="module")
def next_model():
    return preset_model("tiny-llava-next", schedule=PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]))


@pytest.mark.parametrize("size,overrides", [((300, 170), {}), ((420, 300), {"token_keep_ratio": 1.0}),
                                            ((233, 97), {"token_budget": 1}), ((150, 300), {"max_levels": 2}),
                                            ((420, 300), {"token_budget": 1, "max_tiles_per_level": 9})])
def test_real_walks_stay_within_the_plan_and_are_counted_from_their_trace(next_model, tiny_config, size, overrides):
    cfg = dataclasses.replace(tiny_config, **overrides)
    result = coarse_to_fine(next_model, noise_image(*size, seed=sum(size)), PREFIX, QUESTION, cfg)
    walk = WalkCount.from_result(result, tokens_per_side=2)
    for trace, level in zip(result.traces, walk.levels):  # newlines as the driver lays the level out
        layout = newline_layout(tile_token_coords(trace.tiles, 2))
        assert level.newline_tokens == int((layout == NEWLINE).sum()) and level.local_tokens == trace.num_tokens
    plan = planned_walk(*size, cfg, patch_size=7)
    assert walk.num_vision_images <= plan.num_vision_images and walk.num_image_tokens <= plan.num_image_tokens
    assert all(w.tiles <= p.tiles and w.local_tokens + w.newline_tokens <= p.local_tokens + p.newline_tokens
               for w, p in zip(walk.levels, plan.levels))
    counts = model_flops(next_model, result, len(PREFIX) + len(QUESTION), cfg, next_model.pdrop_config)
    assert counts.vision == result.num_vision_images * CLIP_PASS
    assert counts.focus == sum(layer_flops(9 + 16 + lv.local_tokens + lv.newline_tokens, 64, 128) for lv in walk.levels)
    assert counts.llm_pdrop == llm_flops(4, 64, 128, result.num_image_tokens, 9, next_model.pdrop_config)


def test_the_plain_fallback_is_counted_as_its_crops(next_model, tiny_config):
    from transformers import CLIPImageProcessor

    from llava.model.processor import anyres_image_processor

    processor = anyres_image_processor(CLIPImageProcessor(size={"shortest_edge": 28}, crop_size=28),
                                       next_model.config.image_grid_pinpoints)
    result = coarse_to_fine(next_model, noise_image(20, 28), PREFIX, QUESTION, tiny_config, image_processor=processor)
    walk = WalkCount.from_result(result, 2)
    assert walk == WalkCount(0, result.num_vision_images, result.num_image_tokens, [])
    assert model_flops(next_model, result, 9, tiny_config).focus == 0


def test_flops_command(capsys):
    report = flops_cli.main(["--preset", "tiny-llava-next", "--coarse_to_fine", "--image_size", "300x170", "--json", "-"])
    assert json.loads(capsys.readouterr().out) == report
    rows = report["rows"]
    assert (rows["coarse_to_fine"]["vision_images"], rows["coarse_to_fine"]["image_tokens"]) == (15, 24)
    assert (rows["full_grid"]["vision_images"], rows["full_grid"]["image_tokens"]) == (78, 338)
    assert rows["thumbnail_only"]["flops"]["vision"] == CLIP_PASS and rows["thumbnail_only"]["flops"]["focus"] == 0
    assert report["schedule"]["layer_list"] == [1, 2, 3] and report["config"]["tile_size"] == 28  # tiny defaults
    flops_cli.main(["--preset", "tiny-llava-next", "--coarse_to_fine", "--image_size", "300x170", "--focus_layer", "1",
                    "--layer_list", "[2]", "--image_token_ratio_list", "[0.5]"])
    table = capsys.readouterr().out
    assert "coarse-to-fine (<=)" in table and "schedule: [2] [0.5]" in table and "MFLOPs" in table
    assert "x8: 2 tiles, x4: 4 tiles, x2: 4 tiles, x1: 4 tiles" in table


@pytest.mark.parametrize("flags,message", [
    (["--image_size", "300x170"], "--image_size applies to --coarse_to_fine"),
    (["--coarse_to_fine"], "--coarse_to_fine needs --image_size"),
    (["--coarse_to_fine", "--image_size", "300by170"], "--image_size '300by170': write WIDTHxHEIGHT"),
    (["--coarse_to_fine", "--image_size", "20x28"], "a 20 x 28 image fits one 28 px tile"),
    (["--coarse_to_fine", "--image_size", "300x170", "--focus_layer", "2"],
     "focus_layer=2 is beyond the first PyramidDrop boundary 1"),
])
def test_flops_command_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        flops_cli.main(["--preset", "tiny-llava-next", *flags])
    assert f"error: {message}" in capsys.readouterr().err


def test_timed_run_for_the_bench(next_model, tiny_config):
    images, prefixes, questions = synthetic_inputs(next_model, 300, 170, batch=2, text_tokens=8)
    calls = []

    def timer(fn):
        calls.append(fn)
        return fn(), 0.5

    timings = run_coarse_to_fine(next_model, images, prefixes, questions, tiny_config, max_new_tokens=3, timer=timer)
    expected = coarse_to_fine_batch(next_model, images, prefixes, questions, tiny_config)
    assert timings.num_image_tokens == [r.num_image_tokens for r in expected] and len(calls) == 3  # walk, prefill, gen
    assert timings.tiles_per_level == [r.tiles_per_level for r in expected]
    assert (timings.walk_s, timings.prefill_s, timings.generate_s, timings.decode_s, timings.total_s) == \
        (0.5, 0.5, 0.5, 0.0, 1.0)
    assert 0 < timings.vision_s and not next_model.model.vision_tower._forward_hooks  # hooks removed
    assert timings.flops[0] == model_flops(next_model, expected[0], 8, tiny_config, next_model.pdrop_config).to_dict()
    wall = run_coarse_to_fine(next_model, images[:1], prefixes[:1], questions[:1], tiny_config)
    assert wall.generate_s == 0 and wall.new_tokens == 0 and 0 < wall.vision_s <= wall.walk_s
    assert wall.total_s == wall.walk_s + wall.prefill_s and wall.peak_mem_mib is None  # CPU
    assert torch.is_grad_enabled()
