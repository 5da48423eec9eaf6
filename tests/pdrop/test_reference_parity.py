"""The batched implementation equals the slow per-sample reference of the spec, token for token."""

import pytest
import torch

from llava.pdrop import PDropConfig

from ..conftest import N_IMAGE, Sample, make_batch, position_ids_for, tiny_model
from .reference import reference_forward

INFERENCE_SAMPLES = [
    Sample(before=[5, 6, 7], after=[8, 9, 10, 11]),
    Sample(before=[12], after=[13, 14, 15, 16, 17, 18, 19]),
    Sample(before=[20, 21, 22, 23, 24], after=[25, 26], has_image=False),  # text-only
]
TRAINING_SAMPLES = [
    # multi-turn: a first answer inside the prompt text (ids 3+16+1 .. +3) and a final answer
    Sample(before=[5, 6, 7], after=[8, 9, 10, 11, 12], answer=[30, 31, 32], extra_spans=((N_IMAGE + 4, N_IMAGE + 6),)),
    # `plain` pretraining: the caption follows the image, the query is the last (kept) image token
    Sample(before=[], after=[], answer=[40, 41, 42, 43]),
    Sample(before=[20, 21], after=[22, 23], has_image=False, answer=[50, 51]),
    # an image sample without any answer: it is not dropped
    Sample(before=[60], after=[61, 62]),
]


def _compare(model, schedule, batch, ref):
    trace = model.pdrop_trace
    for b in range(batch["input_ids"].shape[0]):
        for s in range(schedule.num_stages):
            assert torch.equal(trace.kept_image_positions(s)[b], ref.kept[b][s]), (b, s)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("position_mode", ["compact", "original"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_inference_matches_reference(attn, position_mode, padding_side):
    schedule = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode)
    model = tiny_model(schedule, attn)
    batch = make_batch(INFERENCE_SAMPLES, padding_side)
    positions = position_ids_for(batch["attention_mask"])
    with torch.no_grad():
        out = model(**batch, position_ids=positions)
    ref = reference_forward(model, schedule, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    _compare(model, schedule, batch, ref)
    final_source = model.pdrop_trace.stage_source_index[-1]
    for b in range(len(INFERENCE_SAMPLES)):
        rows = final_source[b] >= 0
        assert torch.equal(final_source[b][rows], ref.token_positions[b])
        torch.testing.assert_close(out.logits[b][rows], ref.logits[b], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.logits[b, -1], ref.logits[b][-1], rtol=1e-4, atol=1e-5)  # left-aligned


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("position_mode", ["compact", "original"])
def test_training_matches_reference(attn, position_mode):
    schedule = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode)
    model = tiny_model(schedule, attn)
    batch = make_batch(TRAINING_SAMPLES, "right")
    with torch.no_grad():
        out = model(**batch)
    ref = reference_forward(model, schedule, batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                            labels=batch["labels"])
    _compare(model, schedule, batch, ref)
    assert out.loss.item() == pytest.approx(ref.loss, rel=1e-5)
    final_source = model.pdrop_trace.stage_source_index[-1]
    for b in range(len(TRAINING_SAMPLES)):
        rows = final_source[b] >= 0
        torch.testing.assert_close(out.logits[b][rows], ref.logits[b], rtol=1e-4, atol=1e-5)


def test_sample_without_answer_keeps_its_images():
    model = tiny_model()
    batch = make_batch(TRAINING_SAMPLES, "right")
    with torch.no_grad():
        model(**batch)
    counts = model.pdrop_trace.image_tokens_per_stage()
    assert counts[3].tolist() == [N_IMAGE] * 4
    assert counts[0].tolist() == [16, 8, 4, 2]
    assert counts[2].tolist() == [0, 0, 0, 0]


def test_gqa_and_uneven_schedule_match_reference():
    schedule = PDropConfig([1, 3], [0.7, 0.3])  # floor(16 * 0.7) = 11, floor(16 * 0.3) = 4
    model = tiny_model(schedule, "eager", seed=3)
    batch = make_batch(INFERENCE_SAMPLES[:2], "left")
    with torch.no_grad():
        model(**batch, position_ids=position_ids_for(batch["attention_mask"]))
    ref = reference_forward(model, schedule, batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    _compare(model, schedule, batch, ref)
    assert model.pdrop_trace.image_tokens_per_stage()[0].tolist() == [16, 11, 4]
