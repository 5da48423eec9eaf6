"""The model class: enabling, disabling, saving, loading, and the errors users meet."""

import json

import pytest
import torch
from transformers import AutoConfig, LlavaConfig, LlavaForConditionalGeneration

from llava.model import PDropLlavaForConditionalGeneration, enable_pdrop
from llava.pdrop import PDropConfig, get_kept_positions

from ..conftest import TINY_SCHEDULE, Sample, make_batch, position_ids_for, tiny_model

PROMPT = [Sample(before=[5, 6], after=[7, 8, 9])]


def _last_logits(model, batch):
    with torch.no_grad():
        return model(**batch, position_ids=position_ids_for(batch["attention_mask"])).logits[:, -1]


def test_enable_switches_a_stock_model_in_place_and_back():
    stock = enable_pdrop(tiny_model(), None)
    assert type(stock) is LlavaForConditionalGeneration and getattr(stock.config, "pdrop", None) is None
    batch = make_batch(PROMPT)
    reference = _last_logits(stock, batch)
    model = enable_pdrop(stock, TINY_SCHEDULE)
    assert model is stock and isinstance(model, PDropLlavaForConditionalGeneration)
    assert model.config.pdrop == TINY_SCHEDULE.to_dict()
    dropped = _last_logits(model, batch)
    assert not torch.allclose(dropped, reference)
    assert [len(p[0]) for p in get_kept_positions(model)] == [16, 8, 4, 2]
    back = enable_pdrop(model, None)
    assert type(back) is LlavaForConditionalGeneration
    torch.testing.assert_close(_last_logits(back, batch), reference)


def test_boundaries_beyond_the_model_are_refused_at_enable():
    stock = enable_pdrop(tiny_model(), None)
    with pytest.raises(ValueError, match=r"boundary 4 .* only 4 layers"):
        enable_pdrop(stock, PDropConfig([2, 4], [0.5, 0.25]))
    assert type(stock) is LlavaForConditionalGeneration  # left as it was
    with pytest.raises(TypeError, match="enable_pdrop supports LlavaForConditionalGeneration"):
        enable_pdrop(torch.nn.Linear(2, 2), TINY_SCHEDULE)


def test_unsupported_backbone_is_refused_naming_what_is_missing():
    text = AutoConfig.for_model("qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=128, head_dim=8)
    vision = AutoConfig.for_model("clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=28, patch_size=7)
    stock = LlavaForConditionalGeneration(LlavaConfig(text_config=text, vision_config=vision, image_token_id=127))
    with pytest.raises(ValueError, match=r"does not support the decoder Qwen3Model: .*q_norm"):
        enable_pdrop(stock, TINY_SCHEDULE)


def test_schedule_round_trips_through_save_and_load(tmp_path):
    model = tiny_model(PDropConfig([1, 3], [0.5, 0.25], "original"))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LlavaForConditionalGeneration"] and saved["model_type"] == "llava"
    assert saved["pdrop"] == {"layer_list": [1, 3], "image_token_ratio_list": [0.5, 0.25], "position_mode": "original"}
    loaded = PDropLlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.pdrop_config == model.pdrop_config
    batch = make_batch(PROMPT)
    torch.testing.assert_close(_last_logits(loaded, batch), _last_logits(model, batch))
    override = PDropLlavaForConditionalGeneration.from_pretrained(tmp_path, pdrop_config=TINY_SCHEDULE)
    assert override.pdrop_config == TINY_SCHEDULE
    off = PDropLlavaForConditionalGeneration.from_pretrained(tmp_path, pdrop_config=None)
    stock = LlavaForConditionalGeneration.from_pretrained(tmp_path)  # a plain transformers load
    torch.testing.assert_close(_last_logits(off, batch), _last_logits(stock, batch))


def test_image_token_count_mismatch_names_both_counts():
    model = tiny_model()
    batch = make_batch(PROMPT)
    batch["input_ids"][0, 3] = 5  # one image token fewer than the 16 features
    with pytest.raises(ValueError, match=r"input holds 15 image tokens but the 1 image\(s\) give 16 feature vectors"):
        model(**batch)


def test_unsupported_requests_are_refused():
    model = tiny_model()
    batch = make_batch(PROMPT)
    with pytest.raises(ValueError, match="2D attention_mask"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
              attention_mask=torch.ones(1, 1, 23, 23))
    with pytest.raises(ValueError, match="output_attentions=True is not supported"):
        model(**batch, output_attentions=True)
    with pytest.raises(ValueError, match="no PyramidDrop forward has run"):
        get_kept_positions(tiny_model())
    with pytest.raises(ValueError, match="PyramidDrop is off"):
        tiny_model(None)(**batch, pdrop_query_mask=torch.ones_like(batch["input_ids"], dtype=torch.bool))


def test_inputs_embeds_path_finds_the_image_tokens():
    model = tiny_model()
    batch = make_batch(PROMPT)
    expected = _last_logits(model, batch)
    embeds = model.get_input_embeddings()(batch.pop("input_ids"))
    with torch.no_grad():
        out = model(inputs_embeds=embeds, **batch, position_ids=position_ids_for(batch["attention_mask"]))
    torch.testing.assert_close(out.logits[:, -1], expected)


@pytest.mark.parametrize("schedule", [TINY_SCHEDULE, None])
def test_inputs_that_would_run_silently_are_refused(schedule):
    model = tiny_model(schedule)
    batch = make_batch([Sample(before=[5, 6], after=[7, 8, 9]), Sample(before=[10], after=[11])])
    empty = dict(batch, attention_mask=batch["attention_mask"].clone())
    empty["attention_mask"][1] = 0
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have an attention mask of all zeros"):
        model(**empty)
    with pytest.raises(ValueError, match="holds 32 image tokens but no pixel_values"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match=r"pixel_values has shape \(3, 28, 28\); .* expects \(num_images, 3, height"):
        model(**dict(batch, pixel_values=batch["pixel_values"][0]))


@pytest.mark.parametrize("saved", [5, True, "[8,16,24]", [8, 16, 24], {"layer_list": [1, 2]},
                                   {"layer_list": [1], "image_token_ratio_list": 0.5}])
def test_a_bad_saved_schedule_is_named_and_none_still_loads(saved, tmp_path):
    model = tiny_model(None)
    model.config.pdrop = saved
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.pdrop|image_token_ratio_list|lacks"):
        PDropLlavaForConditionalGeneration.from_pretrained(tmp_path)
    off = PDropLlavaForConditionalGeneration.from_pretrained(tmp_path, pdrop_config=None)
    assert off.pdrop_config is None
    again = PDropLlavaForConditionalGeneration.from_pretrained(tmp_path, pdrop_config=TINY_SCHEDULE)
    assert again.pdrop_config == TINY_SCHEDULE


def test_save_pretrained_pushes_the_stock_class_and_honours_is_main_process(tmp_path, monkeypatch):
    model = tiny_model()
    model.save_pretrained(tmp_path / "other_rank", is_main_process=False)
    assert not (tmp_path / "other_rank" / "config.json").exists()
    pushed = {}

    def fake_push(self, repo_id, **kwargs):
        folder = tmp_path / "pushed"
        self.save_pretrained(folder)
        pushed.update(repo_id=repo_id, config=json.loads((folder / "config.json").read_text()))

    monkeypatch.setattr(PDropLlavaForConditionalGeneration, "push_to_hub", fake_push)
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="me/tiny")
    assert pushed["repo_id"] == "me/tiny" and pushed["config"]["architectures"] == ["LlavaForConditionalGeneration"]
    assert pushed["config"]["pdrop"] == TINY_SCHEDULE.to_dict()
