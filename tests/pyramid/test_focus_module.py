"""The trained focus: the module built from the LLM, the distillation loss, and the driver's focus choices."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llava.pyramid import coarse_to_fine, coarse_to_fine_batch
from llava.pyramid.distill import attention_kl, distillation_loss, image_key_mask, parse_distill_layers
from llava.pyramid.focus import focus_scores
from llava.pyramid.focus_module import (FOCUS_MODULE_FILE, RegionFocusModule, attach_focus_module, focus_module_of,
                                        load_focus_module, save_focus_module)
from tests.conftest import preset_model

from .checkpoint import tiny_next_processor
from .conftest import noise_image

PREFIX, QUESTION = [1, 5, 6, 7], [8, 9, 10, 11, 12]


@pytest.fixture
def model():
    """A fresh tiny LLaVA-NeXT per test (modules get attached to it)."""
    return preset_model("tiny-llava-next", schedule=None)


# --------------------------------------------------------------------------- the loss on hand-built attention
def rows(*values):
    return torch.tensor([values], dtype=torch.float32)  # (1, Q, n)


def test_kl_is_zero_when_the_attention_agrees_and_positive_otherwise():
    keys = torch.tensor([[False, True, True, True]])  # position 0 is not a local token
    valid = torch.tensor([[True]])
    target = rows([0.0, 0.2, 0.3, 0.5])
    assert attention_kl(target, target.clone(), keys, valid) == 0
    student = rows([0.0, 0.5, 0.3, 0.2])
    expected = 0.2 * torch.log(torch.tensor(0.2 / 0.5)) + 0.5 * torch.log(torch.tensor(0.5 / 0.2))
    torch.testing.assert_close(attention_kl(target, student, keys, valid), expected)
    # the mass a row puts outside the keys is not compared; a slot that is not valid does not count
    two = torch.tensor([[[0.0, 0.2, 0.3, 0.5], [0.0, 1.0, 0.0, 0.0]]])
    assert attention_kl(two, torch.tensor([[[0.9, 0.2, 0.3, 0.5], [0.0, 0.0, 0.0, 1.0]]]), keys,
                        torch.tensor([[True, False]])) == 0


def test_kl_gradient_reaches_the_student_only_and_an_empty_batch_is_zero():
    keys = torch.tensor([[True, True, True]])
    target = rows([0.1, 0.6, 0.3]).requires_grad_(True)
    logits = torch.zeros(1, 1, 3, requires_grad=True)
    loss = attention_kl(target, logits.softmax(-1), keys, torch.tensor([[True]]))
    loss.backward()
    assert loss > 0 and target.grad is None and logits.grad.abs().sum() > 0
    nothing = attention_kl(target, logits.softmax(-1), torch.zeros(1, 3, dtype=torch.bool), torch.tensor([[True]]))
    assert nothing == 0 and nothing.requires_grad  # still a graph: every rank runs the same backward


def test_distillation_keys_are_the_image_tokens_but_the_newlines(model):
    newline = model.model.image_newline.detach()
    d = newline.shape[0]
    crop_rows = [torch.cat([torch.randn(3, d), newline[None]]) for _ in range(2)]  # two rows of 3 tokens + newline
    several_crops = torch.cat([torch.randn(16, d), *crop_rows])  # the 4 x 4 base image, then the crops
    one_crop = torch.cat([torch.randn(16, d), newline[None]])
    image_mask = torch.zeros(2, 40, dtype=torch.bool)
    image_mask[0, 2:2 + 24], image_mask[1, 5:5 + 17] = True, True
    keys = image_key_mask(model, [several_crops, one_crop], image_mask)
    expected = image_mask.clone()
    expected[0, [21, 25]] = False  # the newlines after each crop row
    expected[1, 21] = False
    assert torch.equal(keys, expected)


def distill_batch(model, processor):
    """One training-shaped batch by hand: [prefix, image, question, answer], labels on the answer only."""
    image_processor = processor.image_processor
    processed = image_processor(images=[noise_image(60, 40, seed=3)], return_tensors="pt")
    encoded = model.model.get_image_features(pixel_values=processed["pixel_values"],
                                             image_sizes=processed["image_sizes"], return_dict=True)
    count = encoded.pooler_output[0].shape[0]
    ids = PREFIX + [model.config.image_token_id] * count + QUESTION + [20, 21]
    labels = [-100] * (len(ids) - 2) + [20, 21]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "labels": torch.tensor([labels]), "mm_encoder_outputs": {"image": encoded}}


def test_distillation_gradients_reach_only_the_focus_module(model):
    module = attach_focus_module(model, RegionFocusModule.from_decoder(model.model.language_model, 1, [2, 3]))
    model.requires_grad_(True)  # even trainable, the LLM, vision tower and projector get no gradient from it
    loss = distillation_loss(model, distill_batch(model, tiny_next_processor()))
    loss.backward()
    assert loss > 0
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(name.startswith("focus_module.") for name in with_grad)
    assert any(p.grad.abs().sum() > 0 for p in module.parameters() if p.grad is not None)


def test_distillation_from_the_module_s_own_scoring_layer_starts_at_zero(model):
    """A module built from layers 0..1 reproduces layer 1's attention: the KL against layer 1 alone is 0."""
    attach_focus_module(model, RegionFocusModule.from_decoder(model.model.language_model, 1, [1]))
    loss = distillation_loss(model, distill_batch(model, tiny_next_processor()))
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_distill_layers_default_and_errors():
    assert parse_distill_layers(None, 4, 1) == [1, 2, 3] and parse_distill_layers("[3, 0]", 4, 1) == [0, 3]
    assert parse_distill_layers(None, 4, 3) == [3]  # the module is as deep as the LLM allows
    for text, message in (("[4]", "layers are 0 .. 3"), ("[1, 1]", "each once"), ("x", "not a JSON list"),
                          ("[]", "non-empty")):
        with pytest.raises(ValueError, match=message):
            parse_distill_layers(text, 4, 1)


# --------------------------------------------------------------------------- the module itself
def test_an_untrained_module_scores_exactly_as_the_training_free_focus(model):
    decoder = model.model.language_model
    torch.manual_seed(0)
    embeds, mask = torch.randn(2, 14, 64), torch.ones(2, 14, dtype=torch.bool)
    mask[1, :3] = False  # left padding
    local = torch.zeros(2, 14, dtype=torch.bool)
    local[:, 4:10] = True
    for focus_layer in (1, 2):
        module = RegionFocusModule.from_decoder(decoder, focus_layer)
        assert len(module.layers) == focus_layer + 1 and module.focus_layer == focus_layer
        assert torch.equal(focus_scores(module, embeds, mask, local, focus_layer),
                           focus_scores(decoder, embeds, mask, local, focus_layer))
    with pytest.raises(ValueError, match="runs 1 .. 3 layers"):
        RegionFocusModule.from_decoder(decoder, 4)


def test_save_and_load_round_trip_next_to_a_stock_checkpoint(model, tmp_path):
    from transformers import LlavaNextForConditionalGeneration

    module = attach_focus_module(model, RegionFocusModule.from_decoder(model.model.language_model, 2, [3]))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path)
    save_focus_module(model, tmp_path)
    stock = LlavaNextForConditionalGeneration.from_pretrained(tmp_path)  # ignores the extra file
    assert not any(key.startswith("focus_module") for key in stock.state_dict())
    again = preset_model("tiny-llava-next", schedule=None)
    loaded = load_focus_module(again, tmp_path)
    assert loaded.focus_layer == 2 and loaded.distill_layers == [3]
    for (name, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    other = preset_model("tiny-llava-next", schedule=None, num_hidden_layers=3)
    with pytest.raises(ValueError, match="4 layers of width 64, this one has 3"):
        load_focus_module(other, tmp_path)


# --------------------------------------------------------------------------- the driver's focus choices
def perturbed_module(model, focus_layer=1):
    module = attach_focus_module(model, RegionFocusModule.from_decoder(model.model.language_model, focus_layer))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return module


def test_trained_focus_in_the_driver_batched_equals_one_by_one(model, tiny_config):
    perturbed_module(model)
    cfg = dataclasses.replace(tiny_config, focus="trained")
    images = [noise_image(300, 170, seed=1), noise_image(90, 200, seed=2), noise_image(233, 97, seed=4)]
    prefixes, questions = [PREFIX, [1], [1, 3, 3]], [QUESTION, [20, 21], [30]]
    batched = coarse_to_fine_batch(model, images, prefixes, questions, cfg)
    for image, prefix, question, got in zip(images, prefixes, questions, batched):
        alone = coarse_to_fine(model, image, prefix, question, cfg)
        assert [t.tiles for t in got.traces] == [t.tiles for t in alone.traces]
        assert [t.kept_coords.tolist() for t in got.traces] == [t.kept_coords.tolist() for t in alone.traces]
        torch.testing.assert_close(got.image_embeds, alone.image_embeds, atol=1e-5, rtol=1e-4)
    own = coarse_to_fine_batch(model, images, prefixes, questions, tiny_config)  # the LLM's layers: other choices
    assert [[t.kept_coords.tolist() for t in r.traces] for r in own] != \
        [[t.kept_coords.tolist() for t in r.traces] for r in batched]


def test_trained_focus_is_loaded_from_the_checkpoint_folder_and_checked(model, tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, focus="trained")
    model.save_pretrained(tmp_path)
    plain = type(model).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"has no {FOCUS_MODULE_FILE}: train one with"):
        coarse_to_fine(plain, noise_image(120, 90), PREFIX, QUESTION, cfg)
    perturbed_module(model, focus_layer=2)
    save_focus_module(model, tmp_path)
    fresh = type(model).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="scores after 2 layers, but focus_layer=1; set --focus_layer 2"):
        coarse_to_fine(fresh, noise_image(120, 90), PREFIX, QUESTION, cfg)
    deeper = dataclasses.replace(cfg, focus_layer=2)
    got = coarse_to_fine(fresh, noise_image(120, 90), PREFIX, QUESTION, deeper)
    expected = coarse_to_fine(model, noise_image(120, 90), PREFIX, QUESTION, deeper)
    assert focus_module_of(fresh).focus_layer == 2
    torch.testing.assert_close(got.image_embeds, expected.image_embeds)


def test_random_focus_is_seeded_batch_independent_and_keeps_the_walk_shape(model, tiny_config):
    images = [noise_image(300, 170, seed=1), noise_image(300, 170, seed=9)]
    cfg = dataclasses.replace(tiny_config, focus="random")
    batched = coarse_to_fine_batch(model, images, [PREFIX] * 2, [QUESTION] * 2, cfg)
    again = [coarse_to_fine(model, image, PREFIX, QUESTION, cfg) for image in images]
    kept = [[t.kept_coords.tolist() for t in r.traces] for r in batched]
    assert kept == [[t.kept_coords.tolist() for t in r.traces] for r in again]
    assert kept[0] != kept[1]  # keyed by the pixels: another image, other draws
    seeds = {str([[t.kept_coords.tolist() for t in r.traces] for r in coarse_to_fine_batch(
        model, images, [PREFIX] * 2, [QUESTION] * 2, dataclasses.replace(cfg, focus_seed=s))]) for s in range(4)}
    assert len(seeds) > 1
    own = coarse_to_fine(model, images[0], PREFIX, QUESTION, tiny_config)
    assert [t.num_tokens for t in batched[0].traces][0] == own.traces[0].num_tokens  # the same coarsest level


def test_focus_config_values_are_checked(tiny_config):
    with pytest.raises(ValueError, match="focus='learned' is not one of"):
        dataclasses.replace(tiny_config, focus="learned")
    with pytest.raises(ValueError, match="focus_seed=-1 must be >= 0"):
        dataclasses.replace(tiny_config, focus_seed=-1)
