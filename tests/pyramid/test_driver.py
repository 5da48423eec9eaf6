"""The coarse-to-fine driver on the tiny LLaVA-NeXT: parity with the slow reference, batching, features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from llava.model.processor import anyres_image_processor
from llava.pyramid import PyramidNotApplicable, coarse_to_fine, coarse_to_fine_batch, pack_input_ids, pack_inputs
from llava.pyramid import driver as driver_module
from llava.pyramid.image_io import ImageReadError
from tests.conftest import IMAGE_TOKEN

from . import reference
from .conftest import noise_image

PREFIX, QUESTION = [1, 5, 6, 7], [8, 9, 10, 11, 12]


def assert_matches_reference(result, record, atol=1e-5):
    assert [trace.tiles for trace in result.traces] == record["tiles"]
    assert [sorted(map(tuple, trace.kept_coords.tolist())) for trace in result.traces] == record["kept"]
    torch.testing.assert_close(result.image_embeds, record["embeds"], atol=atol, rtol=1e-4)


@pytest.mark.parametrize("size,overrides", [
    ((300, 170), {}),  # 4 levels (x8 .. x1), odd sizes: padded last row / column everywhere
    ((233, 97), {"token_keep_ratio": 0.5, "max_tiles_per_level": 5}),
    ((401, 260), {"max_levels": 2}),
    ((150, 300), {"token_budget": 2, "token_keep_ratio": 1.0, "max_tiles_per_level": 6}),
    ((120, 90), {"focus_softmax": "all", "focus_layer": 2}),
    ((50, 40), {}),  # one level: fits the 56 px base
    ((112, 60), {}),  # 112 -> 56: the coarsest level exactly at the base
    ((200, 120), {"pool": 1, "token_keep_ratio": 0.1}),
])
def test_driver_matches_the_slow_reference(next_model, tiny_config, size, overrides):
    cfg = dataclasses.replace(tiny_config, **overrides)
    image = noise_image(*size, seed=sum(size))
    result = coarse_to_fine(next_model, image, PREFIX, QUESTION, cfg)
    record = reference.walk(next_model, image, PREFIX, QUESTION, cfg)
    assert_matches_reference(result, record)
    assert result.num_thumbnail_tokens == 16
    assert result.num_image_tokens == result.num_thumbnail_tokens + result.num_local_tokens + result.num_newline_tokens
    assert result.num_vision_images == 1 + sum(result.tiles_per_level)


def test_the_walk_reaches_full_resolution_and_respects_the_caps(next_model, tiny_config):
    cfg = dataclasses.replace(tiny_config, token_keep_ratio=1.0, max_tiles_per_level=5, token_budget=7)
    result = coarse_to_fine(next_model, noise_image(420, 300), PREFIX, QUESTION, cfg)
    # 420 px: 420 -> 210 -> 105 -> 53 <= 56: levels x8, x4, x2, x1
    assert [lv.factor for lv in result.levels] == [8, 4, 2, 1] and result.stop_reason == "full_resolution"
    assert len(result.traces) == 4 and result.traces[-1].level.factor == 1
    assert result.tiles_per_level[0] == 4 and max(result.tiles_per_level[1:]) <= 5  # coarsest: 53 x 38 px, 2 x 2
    assert all(len(trace.kept_coords) <= 7 for trace in result.traces) and result.num_local_tokens == 7
    capped = coarse_to_fine(next_model, noise_image(420, 300), PREFIX, QUESTION,
                            dataclasses.replace(cfg, max_levels=2))
    assert capped.stop_reason == "max_levels" and [t.level.factor for t in capped.traces] == [8, 4]


def test_batched_equals_one_by_one(next_model, tiny_config):
    images = [noise_image(300, 170, seed=1), noise_image(90, 200, seed=2), noise_image(60, 61, seed=3)]
    prefixes, questions = [PREFIX, [1], [1, 3, 3, 3, 3, 3, 3]], [QUESTION, [20, 21], [30]]
    batched = coarse_to_fine_batch(next_model, images, prefixes, questions, tiny_config)
    assert len({len(r.traces) for r in batched}) > 1  # the samples walk pyramids of different depths
    for image, prefix, question, got in zip(images, prefixes, questions, batched):
        alone = coarse_to_fine(next_model, image, prefix, question, tiny_config)
        assert [t.tiles for t in got.traces] == [t.tiles for t in alone.traces]
        assert [t.kept_coords.tolist() for t in got.traces] == [t.kept_coords.tolist() for t in alone.traces]
        torch.testing.assert_close(got.image_embeds, alone.image_embeds, atol=1e-5, rtol=1e-4)


def test_unpooled_features_of_every_tile_are_the_vision_tower_and_projector_of_the_crops(next_model, tiny_config):
    """pool=1, one level kept whole: the local tokens are exactly the projected CLIP patches of each crop."""
    cfg = dataclasses.replace(tiny_config, pool=1, token_keep_ratio=1.0, max_levels=1, base_long_side=56)
    image = noise_image(53, 41, seed=5)  # one level, 2 x 2 tiles (the right / bottom ones padded)
    result = coarse_to_fine(next_model, image, PREFIX, QUESTION, cfg)
    crops = torch.stack([reference.normalised(image.crop(box), 28) for box in
                         [(0, 0, 28, 28), (28, 0, 53, 28), (0, 28, 28, 41), (28, 28, 53, 41)]])
    with torch.no_grad():
        hidden = next_model.model.vision_tower(crops, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = next_model.model.multi_modal_projector(hidden).reshape(2, 2, 4, 4, -1)  # tile r, c, patch i, j
    local = result.image_embeds[16:].reshape(8, 9, -1)  # 8 token rows of 8 tokens + a newline
    torch.testing.assert_close(local[:, :8], expected.permute(0, 2, 1, 3, 4).reshape(8, 8, -1), atol=1e-5, rtol=1e-4)
    assert torch.equal(local[:, 8], next_model.model.image_newline.detach().expand(8, -1))


def test_thumbnail_tokens_equal_llava_next_base_image_features(next_model, tiny_config):
    """The thumbnail goes through the model as LLaVA-NeXT's own base image does (stock get_image_features)."""
    image = noise_image(200, 90, seed=6)
    result = coarse_to_fine(next_model, image, PREFIX, QUESTION, tiny_config)
    coarsest = image.reduce(result.levels[0].factor)
    thumb = reference.thumbnail(image, coarsest, 28)
    sizes = torch.tensor([[28, 28]])
    count = image_size_to_num_patches(sizes[0], next_model.config.image_grid_pinpoints, 28)  # base + crops
    pixels = torch.cat([thumb[None], torch.randn(count - 1, 3, 28, 28)])[None]  # the base image is crop 0
    with torch.no_grad():
        stock = next_model.model.get_image_features(pixel_values=pixels, image_sizes=sizes,
                                                    return_dict=True).pooler_output[0]
    torch.testing.assert_close(result.image_embeds[:16], stock[:16], atol=1e-5, rtol=1e-4)


def hand_built_focus(monkeypatch, maps):
    """Replace the focus pass by hand-built attention maps, one ``{(row, col): score}`` per level visited."""
    seen = []
    real_coords = driver_module.tile_token_coords

    def recording_coords(tiles, t):
        seen.append(real_coords(tiles, t))
        return seen[-1]

    def fake_scores(decoder, embeds, attention_mask, local_mask, focus_layer, softmax):
        scores = torch.zeros(attention_mask.shape, dtype=torch.float32)
        in_layout_order = sorted(map(tuple, seen[-1].tolist()))  # row-major, as the level is laid out
        for position, token in zip(local_mask[0].nonzero()[:, 0].tolist(), in_layout_order, strict=True):
            scores[0, position] = maps[len(seen) - 1].get(token, 0.0)
        return scores

    monkeypatch.setattr(driver_module, "tile_token_coords", recording_coords)
    monkeypatch.setattr(driver_module, "focus_scores", fake_scores)


def test_hand_built_attention_maps_steer_the_walk(next_model, tiny_config, monkeypatch):
    """200 x 100 px, 28 px tiles, 14 px tokens: levels x4 (50 x 25 px, 1 x 2 tiles), x2 (2 x 4), x1 (4 x 8).

    Level x4, 8 tokens, keep 2: (0, 1) covers x4 rows 0..13, cols 14..27 -> x2 rows 0..27, cols 28..55:
    tile (0, 1); (1, 3): x4 rows 14..27, cols 42..55 -> x2 rows 28..55, cols 84..111: tile (1, 3).
    Level x2: (1, 3) -> x1 rows 28..55, cols 84..111: tile (1, 3); (2, 6) -> rows 56..83, cols 168..195: (2, 6).
    """
    hand_built_focus(monkeypatch, [{(0, 1): 0.6, (1, 3): 0.3, (0, 0): 0.05},
                                   {(1, 3): 0.5, (2, 6): 0.4, (0, 2): 0.1},
                                   {(3, 7): 0.9, (4, 12): 0.8, (2, 6): 0.1}])
    result = coarse_to_fine(next_model, noise_image(200, 100), PREFIX, QUESTION, tiny_config)
    assert [t.tiles for t in result.traces] == [[(0, 0), (0, 1)], [(0, 1), (1, 3)], [(1, 3), (2, 6)]]
    assert [t.kept_coords.tolist() for t in result.traces] == [[[0, 1], [1, 3]], [[1, 3], [2, 6]], [[3, 7], [4, 12]]]
    assert result.stop_reason == "full_resolution" and result.num_newline_tokens == 2  # kept rows 3 and 4


def test_a_level_that_would_add_nothing_stops_the_walk(next_model, tiny_config, monkeypatch):
    """120 x 40: level x4 is 30 x 10 px (1 x 2 tiles); token (0, 3) covers x4 cols 42..55, all padding,
    -> x2 cols 84..111 = tile column 3, but x2 (60 x 20 px) has 3 tile columns: no tile to fetch."""
    hand_built_focus(monkeypatch, [{(0, 3): 1.0}])
    cfg = dataclasses.replace(tiny_config, token_keep_ratio=0.125)  # 8 tokens -> keep 1
    result = coarse_to_fine(next_model, noise_image(120, 40), PREFIX, QUESTION, cfg)
    assert result.stop_reason == "no_next_tiles" and len(result.traces) == 1
    assert result.traces[0].kept_coords.tolist() == [[0, 3]] and result.num_vision_images == 1 + 2


def test_fallback_for_images_that_fit_one_tile(next_model, tiny_config):
    from transformers import CLIPImageProcessor

    image = noise_image(20, 28)
    with pytest.raises(PyramidNotApplicable, match="fits in one 28 px tile"):
        coarse_to_fine(next_model, image, PREFIX, QUESTION, tiny_config)
    processor = anyres_image_processor(CLIPImageProcessor(size={"shortest_edge": 28}, crop_size=28),
                                       next_model.config.image_grid_pinpoints)
    for tiny in (image, noise_image(1, 1)):
        result = coarse_to_fine(next_model, tiny, PREFIX, QUESTION, tiny_config, image_processor=processor)
        processed = processor(images=[tiny], return_tensors="pt")
        with torch.no_grad():
            stock = next_model.model.get_image_features(pixel_values=processed["pixel_values"],
                                                        image_sizes=processed["image_sizes"],
                                                        return_dict=True).pooler_output[0]
        assert result.stop_reason == "no_pyramid" and result.traces == []
        torch.testing.assert_close(result.image_embeds, stock)


def test_bad_inputs_are_refused_with_the_reason(next_model, tiny_config, tmp_path):
    image = noise_image(100, 100)
    with pytest.raises(ValueError, match="question_ids is empty: the prompt has no text after the image"):
        coarse_to_fine(next_model, image, PREFIX, [], tiny_config)
    with pytest.raises(ValueError, match=f"holds the image token {IMAGE_TOKEN}"):
        coarse_to_fine(next_model, image, PREFIX + [IMAGE_TOKEN], QUESTION, tiny_config)
    with pytest.raises(ValueError, match="focus_layer=4 needs a next layer.*has 4 layers"):
        coarse_to_fine(next_model, image, PREFIX, QUESTION, dataclasses.replace(tiny_config, focus_layer=4))
    with pytest.raises(ValueError, match="tile_size=56 must equal the vision tower's image_size=28"):
        coarse_to_fine(next_model, image, PREFIX, QUESTION,
                       dataclasses.replace(tiny_config, tile_size=56, base_long_side=112))
    with pytest.raises(ImageReadError,
                       match="100 x 100 = 10,000 pixels is above max_image_pixels=9,999.*--max_image_pixels"):
        coarse_to_fine(next_model, image, PREFIX, QUESTION, dataclasses.replace(tiny_config, max_image_pixels=9999))
    with pytest.raises(ImageReadError, match="missing.png: image file does not exist"):
        coarse_to_fine(next_model, tmp_path / "missing.png", PREFIX, QUESTION, tiny_config)


def test_focus_layer_beyond_the_first_pdrop_boundary_is_refused(tiny_config):
    from llava.pdrop import PDropConfig
    from tests.conftest import preset_model

    model = preset_model("tiny-llava-next", schedule=PDropConfig([1, 2], [0.5, 0.25]))
    with pytest.raises(ValueError,
                       match=r"focus_layer=2 is beyond the first PyramidDrop boundary 1 \(layer_list=\[1, 2\]\)"):
        coarse_to_fine(model, noise_image(80, 80), PREFIX, QUESTION, dataclasses.replace(tiny_config, focus_layer=2))
    result = coarse_to_fine(model, noise_image(80, 80), PREFIX, QUESTION, tiny_config)  # focus_layer 1: allowed
    assert result.num_local_tokens >= 1


def test_pack_inputs_places_the_image_between_prefix_and_question(next_model, tiny_config):
    images = [noise_image(120, 80, seed=1), noise_image(60, 90, seed=2)]
    prefixes, questions = [PREFIX, [1]], [QUESTION, [20, 21]]
    results = coarse_to_fine_batch(next_model, images, prefixes, questions, tiny_config)
    batch = pack_inputs(next_model, results, prefixes, questions)
    lengths = [len(p) + r.num_image_tokens + len(q) for p, r, q in zip(prefixes, results, questions)]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["image_mask"].sum(1).tolist() == [r.num_image_tokens for r in results]
    embed = next_model.get_input_embeddings()
    for b, (prefix, result, question) in enumerate(zip(prefixes, results, questions)):
        row = batch["inputs_embeds"][b, -lengths[b]:]
        torch.testing.assert_close(row[:len(prefix)], embed(torch.tensor(prefix)))
        torch.testing.assert_close(row[batch["image_mask"][b, -lengths[b]:]], result.image_embeds)
        torch.testing.assert_close(row[-len(question):], embed(torch.tensor(question)))
    with torch.no_grad():  # the stock language model takes it as is
        out = next_model(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"])
    assert out.logits.shape[:2] == batch["attention_mask"].shape


def test_results_go_through_generate_as_pre_encoded_image_features(tiny_config):
    """input_ids with image-token slots + mm_encoder_outputs: the same logits as the packed embeddings,
    and batched greedy generation with the KV cache, PyramidDrop off and on (the pool = the image slots)."""
    from llava.pdrop import PDropConfig
    from tests.conftest import PAD, preset_model

    images = [noise_image(120, 80, seed=1), noise_image(60, 90, seed=2)]
    prefixes, questions = [PREFIX, [1]], [QUESTION, [20, 21]]
    for schedule in (None, PDropConfig([2, 3], [0.5, 0.25])):
        model = preset_model("tiny-llava-next", schedule=schedule)
        results = coarse_to_fine_batch(model, images, prefixes, questions, tiny_config)
        batch = pack_input_ids(model, results, prefixes, questions, pad_token_id=PAD)
        assert (batch["input_ids"] == IMAGE_TOKEN).sum(1).tolist() == [r.num_image_tokens for r in results]
        with torch.no_grad():
            by_ids = model(**batch).logits[:, -1]
            embeds = pack_inputs(model, results, prefixes, questions)
            if schedule is None:
                by_embeds = model(inputs_embeds=embeds["inputs_embeds"], attention_mask=embeds["attention_mask"]).logits
                torch.testing.assert_close(by_ids, by_embeds[:, -1], atol=1e-5, rtol=1e-4)
            else:
                kept = model.pdrop_trace.image_tokens_per_stage()
                assert kept[:, 0].tolist() == [r.num_image_tokens for r in results]
                assert bool((kept[:, 1] < kept[:, 0]).all())
            out = model.generate(**batch, max_new_tokens=3, do_sample=False)
        assert out.shape == (2, batch["input_ids"].shape[1] + 3)
        assert out[:, batch["input_ids"].shape[1]].tolist() == by_ids.argmax(-1).tolist()
