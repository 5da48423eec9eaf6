"""CUDA paths: bf16, SDPA and FlashAttention-2 kernels. Skipped without a GPU (and FA2 without flash-attn)."""

import pytest
import torch

from llava.model import enable_pdrop
from llava.pdrop import PDropConfig

from ..conftest import Sample, make_batch, position_ids_for, tiny_model
from .conftest import KERNELS

PROMPTS = [Sample(before=[5, 6, 7], after=[8, 9, 10, 11]), Sample(before=[12], after=[13, 14, 15, 16, 17, 18, 19])]


def _cuda_model(schedule, attn):
    return tiny_model(schedule, attn).to("cuda", torch.bfloat16)


def _cuda_batch():
    batch = make_batch(PROMPTS, "left")
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    return {k: v.cuda() for k, v in batch.items()}


@pytest.mark.parametrize("attn", KERNELS)
def test_ratio_one_equals_stock_on_the_same_kernel(attn):
    model = _cuda_model(PDropConfig([1, 2, 3], [1.0, 1.0, 1.0]), attn)
    stock = enable_pdrop(_cuda_model(None, attn), None)
    batch = _cuda_batch()
    with torch.no_grad():
        ours = model(**batch, position_ids=position_ids_for(batch["attention_mask"])).logits
        theirs = stock(**batch, position_ids=position_ids_for(batch["attention_mask"])).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("attn", KERNELS)
@pytest.mark.parametrize("position_mode", ["compact", "original"])
def test_cached_generation_matches_recomputation(attn, position_mode):
    model = _cuda_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), attn)
    batch = _cuda_batch()
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
    n = batch["input_ids"].shape[1]
    prompt_end = torch.zeros_like(generated, dtype=torch.bool)
    prompt_end[:, n - 1] = True
    mask = torch.cat([batch["attention_mask"], torch.ones_like(generated[:, n:])], 1)
    with torch.no_grad():
        out = model(input_ids=generated[:, :-1], attention_mask=mask[:, :-1], pixel_values=batch["pixel_values"],
                    position_ids=position_ids_for(mask[:, :-1]), use_cache=False, pdrop_query_mask=prompt_end[:, :-1])
    assert torch.equal(out.logits[:, -1].argmax(-1), generated[:, -1])
    assert model.pdrop_trace.image_tokens_per_stage()[0].tolist() == [16, 8, 4, 2]


def test_a_decode_step_reads_the_device_once_and_prefill_once_per_batch():
    """What a GPU run waits for: one host read per decode step (as the stock model), one per prefill."""
    from llava.bench.dispatch import count_dispatch

    model = _cuda_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]), "sdpa")
    batch = _cuda_batch()
    with torch.no_grad():
        prefill = count_dispatch(lambda: model(**batch, use_cache=True))
        out = model(**batch, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(token)], 1)
        step = count_dispatch(lambda: model(input_ids=token, attention_mask=mask, past_key_values=out.past_key_values))
    assert prefill["syncs"] <= 3  # the input checks, the keep plan, one mask builder read for the padded batch
    assert step["syncs"] == 1


def test_peak_memory_of_a_prefill_shrinks_with_the_drop():
    model = _cuda_model(None, "sdpa")
    batch = _cuda_batch()
    peaks = {}
    for name, schedule in (("none", None), ("pdrop", PDropConfig([1], [0.125]))):
        model.set_pdrop_config(schedule)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model(**batch, use_cache=True)
        peaks[name] = torch.cuda.max_memory_allocated()
    assert peaks["pdrop"] <= peaks["none"]
