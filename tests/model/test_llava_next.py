"""LLaVA-NeXT: any-resolution pools of different sizes per sample, against the per-sample reference."""

import pytest
import torch

from llava.model import PDropLlavaNextForConditionalGeneration, enable_pdrop
from llava.pdrop import PDropConfig

from ..conftest import Sample, make_batch, position_ids_for, preset_model
from ..pdrop.reference import reference_forward

SCHEDULE = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])
IMAGE_SIZES = torch.tensor([[20, 50], [28, 28]])  # a wide image (2 crops) and a square one (4 crops)


def next_model(schedule=SCHEDULE, attn="eager"):
    return preset_model("tiny-llava-next", schedule, attn)


def next_batch(model, padding_side="left", training=False, text_only=True):
    """Two images of different sizes (different N0) and optionally a text-only sample."""
    gen = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 5, 3, 28, 28, generator=gen)
    features = model.model.get_image_features(pixel_values=pixel_values, image_sizes=IMAGE_SIZES,
                                              return_dict=True).pooler_output
    counts = [f.shape[0] for f in features]
    answer = [30, 31] if training else None
    samples = [Sample([5, 6], [7, 8, 9], image_tokens=(counts[0],), answer=answer),
               Sample([10], [11, 12], image_tokens=(counts[1],), answer=answer)]
    if text_only:
        samples.append(Sample([13, 14, 15], [16], has_image=False, answer=answer))
    batch = make_batch(samples, padding_side)
    batch["pixel_values"], batch["image_sizes"] = pixel_values, IMAGE_SIZES
    return batch, counts


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_mixed_resolutions_match_reference(attn):
    model = next_model(attn=attn)
    batch, counts = next_batch(model)
    assert counts[0] != counts[1]
    with torch.no_grad():
        out = model(**batch, position_ids=position_ids_for(batch["attention_mask"]))
    ref = reference_forward(model, SCHEDULE, batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                            image_sizes=batch["image_sizes"])
    trace = model.pdrop_trace
    for b in range(3):
        for s in range(4):
            assert torch.equal(trace.kept_image_positions(s)[b], ref.kept[b][s])
        torch.testing.assert_close(out.logits[b, -1], ref.logits[b][-1], rtol=1e-4, atol=1e-5)
    assert trace.image_tokens_per_stage()[:2, 1].tolist() == [counts[0] // 2, counts[1] // 2]


def test_training_loss_matches_reference():
    model = next_model()
    batch, _ = next_batch(model, "right", training=True)
    with torch.no_grad():
        out = model(**batch)
    ref = reference_forward(model, SCHEDULE, batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                            labels=batch["labels"], image_sizes=batch["image_sizes"])
    assert out.loss.item() == pytest.approx(ref.loss, rel=1e-5)


def test_ratio_one_equals_stock_next():
    model = next_model(PDropConfig([1, 2, 3], [1.0, 1.0, 1.0]))
    stock = enable_pdrop(next_model(None), None)
    batch, _ = next_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stock(**batch).logits, rtol=0, atol=0)
    assert type(stock).__name__ == "LlavaNextForConditionalGeneration"


def test_cached_generation_equals_recomputation_and_each_sample_alone():
    model = next_model()
    batch, _ = next_batch(model, text_only=False)
    n = batch["input_ids"].shape[1]
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0, suppress_tokens=[127])
    mask = torch.cat([batch["attention_mask"], torch.ones_like(generated[:, n:])], 1)
    prompt_end = torch.zeros_like(generated, dtype=torch.bool)
    prompt_end[:, n - 1] = True
    with torch.no_grad():
        out = model(input_ids=generated[:, :-1], attention_mask=mask[:, :-1], pixel_values=batch["pixel_values"],
                    image_sizes=batch["image_sizes"], position_ids=position_ids_for(mask[:, :-1]), use_cache=False,
                    pdrop_query_mask=prompt_end[:, :-1])
    last = out.logits[:, -1].clone()
    last[:, 127] = float("-inf")  # suppressed in generate too
    assert torch.equal(last.argmax(-1), generated[:, -1])
    real = batch["attention_mask"][1].bool()
    alone = {"input_ids": batch["input_ids"][1:, real], "attention_mask": batch["attention_mask"][1:, real],
             "pixel_values": batch["pixel_values"][1:], "image_sizes": batch["image_sizes"][1:]}
    single = model.generate(**alone, max_new_tokens=4, do_sample=False, pad_token_id=0, suppress_tokens=[127])
    assert torch.equal(single[:, -4:], generated[1:, -4:])


@pytest.mark.parametrize("schedule", [SCHEDULE, None])
def test_image_sizes_errors(schedule):
    model = next_model(schedule)
    batch, _ = next_batch(model)
    with pytest.raises(ValueError, match="LLaVA-NeXT needs image_sizes"):
        model(**{k: v for k, v in batch.items() if k != "image_sizes"})
    with pytest.raises(ValueError, match="image_sizes has 1 rows but pixel_values holds 2 images"):
        model(**{**batch, "image_sizes": IMAGE_SIZES[:1]})
    with pytest.raises(ValueError, match=r"shape \(num_images, 2\)"):
        model(**{**batch, "image_sizes": torch.tensor([20, 50])})
    with pytest.raises(ValueError, match=r"pixel_values has shape \(3, 28, 28\); .* expects \(num_images, num_crops"):
        model(**{**batch, "pixel_values": batch["pixel_values"][0, 0]})


def test_saved_next_checkpoint_round_trips(tmp_path):
    model = next_model()
    model.save_pretrained(tmp_path)
    loaded = PDropLlavaNextForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.pdrop_config == SCHEDULE
