"""Other language models (Qwen2, Mistral) and several images per sample, against the reference."""

import pytest
import torch

from llava.model import enable_pdrop
from llava.pdrop import PDropConfig

from ..conftest import N_IMAGE, TINY_SCHEDULE, Sample, make_batch, position_ids_for, preset_model, tiny_model
from .reference import reference_forward


def backbone_model(name, schedule=TINY_SCHEDULE, attn="eager", **text_overrides):
    return preset_model(name, schedule, attn, **text_overrides)


SAMPLES = [Sample([5, 6, 7], [8, 9, 10, 11], answer=[30, 31]), Sample([12], [13, 14, 15, 16, 17], answer=[32]),
           Sample([20, 21], [22], has_image=False, answer=[33, 34])]


@pytest.mark.parametrize("name", ["tiny-llava-qwen2", "tiny-llava-mistral"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("training", [False, True])
def test_backbones_match_reference(name, attn, training):
    model = backbone_model(name, attn=attn)
    batch = make_batch(SAMPLES, "right" if training else "left")
    labels = batch.pop("labels")
    kwargs = {"labels": labels} if training else {"position_ids": position_ids_for(batch["attention_mask"])}
    with torch.no_grad():
        out = model(**batch, **kwargs)
    ref = reference_forward(model, TINY_SCHEDULE, batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                            labels=labels if training else None)
    for b in range(len(SAMPLES)):
        for s in range(4):
            assert torch.equal(model.pdrop_trace.kept_image_positions(s)[b], ref.kept[b][s])
    if training:
        assert out.loss.item() == pytest.approx(ref.loss, rel=1e-5)
    else:
        torch.testing.assert_close(out.logits[:, -1], torch.stack([r[-1] for r in ref.logits]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llava-qwen2", "tiny-llava-mistral"])
def test_backbone_generation_and_ratio_one(name):
    model = backbone_model(name)
    batch = make_batch([Sample([5], [6, 7]), Sample([8, 9, 10], [11])], "left")
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    ones = backbone_model(name, PDropConfig([1, 2, 3], [1.0, 1.0, 1.0]))
    stock = enable_pdrop(backbone_model(name, None), None)
    with torch.no_grad():
        torch.testing.assert_close(ones(**batch).logits, stock(**batch).logits, rtol=0, atol=0)


def _kept_by(model, batch):
    with torch.no_grad():
        model(**batch, position_ids=position_ids_for(batch["attention_mask"]))
    return [[p.tolist() for p in model.pdrop_trace.kept_image_positions(s)] for s in range(4)]


def test_qwen2_keeps_its_qk_biases_in_the_ranking():
    model = backbone_model("tiny-llava-qwen2")
    generator = torch.Generator().manual_seed(1)
    for layer in model.model.language_model.layers:  # transformers initialises biases to zero
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            proj.bias.data = torch.randn(proj.bias.shape, generator=generator) * 2.0
    batch = make_batch(SAMPLES[:2], "left")
    batch.pop("labels")
    kept = _kept_by(model, batch)
    ref = reference_forward(model, TINY_SCHEDULE, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    assert kept == [[ref.kept[b][s].tolist() for b in range(2)] for s in range(4)]
    for layer in model.model.language_model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            proj.bias.data.zero_()
    assert _kept_by(model, batch) != kept  # so the biases decide something here


def test_sliding_window_is_refused_only_when_it_binds():
    model = backbone_model("tiny-llava-mistral", sliding_window=24)  # 1 + 16 + 2 prompt tokens fit the window
    short = make_batch([Sample([5], [6, 7])])
    with torch.no_grad():
        model(**short)
    # the last new token is sampled, not fed back: 19 + 5 decoded tokens fill the window exactly
    model.generate(**short, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with pytest.raises(ValueError, match="holds 25 tokens, more than the sliding window of 24"):
        model.generate(**short, max_new_tokens=7, do_sample=False, pad_token_id=0)
    with pytest.raises(ValueError, match="holds 31 tokens, more than the sliding window of 24"):
        model(**make_batch([Sample([5] * 5, [6] * 10)]))


def test_several_images_form_one_pool():
    model = tiny_model()
    samples = [Sample([5], [6, 7], image_tokens=(N_IMAGE, N_IMAGE)), Sample([8, 9], [10], image_tokens=(N_IMAGE,))]
    batch = make_batch(samples, "left")
    assert batch["pixel_values"].shape[0] == 3
    with torch.no_grad():
        model(**batch, position_ids=position_ids_for(batch["attention_mask"]))
    ref = reference_forward(model, TINY_SCHEDULE, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    assert model.pdrop_trace.image_tokens_per_stage().tolist() == [[32, 16, 8, 4], [16, 8, 4, 2]]
    for b in range(2):
        for s in range(4):
            assert torch.equal(model.pdrop_trace.kept_image_positions(s)[b], ref.kept[b][s])


def test_missing_or_extra_images_name_both_counts():
    model = tiny_model()
    batch = make_batch([Sample([5], [6], image_tokens=(N_IMAGE, N_IMAGE))], "left")
    with pytest.raises(ValueError, match=r"input holds 32 image tokens but the 1 image\(s\) give 16"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:1]})
    extra = torch.cat([batch["pixel_values"]] * 2)
    with pytest.raises(ValueError, match=r"input holds 32 image tokens but the 4 image\(s\) give 64"):
        model(**{**batch, "pixel_values": extra})
