"""CUDA paths: bf16, SDPA and FlashAttention-2 kernels. Skipped without a GPU (and FA2 without flash-attn)."""

import pytest
import torch

from llava.model import enable_pdrop
from llava.pdrop import PDropConfig

from ..bench.test_speed import prefill_and_decode_step_reads
from ..conftest import Sample, make_batch, position_ids_for, tiny_model
from .conftest import KERNELS

PROMPTS = [Sample(before=[5, 6, 7], after=[8, 9, 10, 11]), Sample(before=[12], after=[13, 14, 15, 16, 17, 18, 19])]


def _cuda_model(schedule, attn):
    return tiny_model(schedule, attn).to("cuda", torch.bfloat16)


def _cuda_batch(dtype=torch.bfloat16):
    batch = make_batch(PROMPTS, "left")
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
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


# cached decoding and recomputation take different kernels (one query row against the cache, the whole
# sequence): equal up to rounding, which in bfloat16 is coarse (8 bits of mantissa through 4 layers)
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.bfloat16: {"rtol": 0.05, "atol": 0.05}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("attn", KERNELS)
@pytest.mark.parametrize("position_mode", ["compact", "original"])
def test_cached_generation_matches_recomputation(attn, position_mode, dtype):
    """Every step's logits of cached greedy decoding against one forward over the generated sequence,
    ranked from the prompt's last token (the same drops). min_new_tokens: no sample stops early on EOS
    (a stopped sample's slots are padding, which the recomputation would read as tokens)."""
    if attn == "flash_attention_2" and dtype == torch.float32:
        pytest.skip("FlashAttention-2 runs in half precision only")
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), attn).to("cuda", dtype)
    batch = _cuda_batch(dtype)
    new = 4
    out = model.generate(**batch, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                         return_dict_in_generate=True, output_logits=True)
    generated, n = out.sequences, batch["input_ids"].shape[1]
    prompt_end = torch.zeros_like(generated, dtype=torch.bool)
    prompt_end[:, n - 1] = True
    mask = torch.cat([batch["attention_mask"], torch.ones_like(generated[:, n:])], 1)
    with torch.no_grad():
        again = model(input_ids=generated[:, :-1], attention_mask=mask[:, :-1], pixel_values=batch["pixel_values"],
                      position_ids=position_ids_for(mask[:, :-1]), use_cache=False, pdrop_query_mask=prompt_end[:, :-1])
    cached = torch.stack(out.logits, 1).float()  # (B, new, V), the raw logits of each step
    # the last `new` slots: the prompt's last token and the generated ones (the image tokens before them were dropped)
    torch.testing.assert_close(cached, again.logits[:, -new:].float(), **TOLERANCE[dtype])
    assert model.pdrop_trace.image_tokens_per_stage()[0].tolist() == [16, 8, 4, 2]


def test_a_prefill_reads_the_device_twice_and_a_decode_step_once():
    """What a GPU run waits for, counted on the GPU (the CPU suite asserts the same counts)."""
    model = _cuda_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]), "sdpa")
    assert prefill_and_decode_step_reads(model, _cuda_batch()) == (2, 1)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_compiled_ranking_keeps_the_eager_tokens(dtype):
    """The opt-in compiled ranking on the GPU against the eager one: in float32 the same kept tokens; in
    bfloat16 the fused kernels round k and the norm once instead of after every operation, so a
    near-tie may go the other way: most kept tokens are shared."""
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]), "sdpa").to("cuda", dtype)
    batch = _cuda_batch(dtype)
    kept, logits = {}, {}
    for compiled in (False, True):
        model.pdrop_compile_ranking = compiled
        with torch.no_grad():
            logits[compiled] = model(**batch).logits
        trace = model.pdrop_trace
        kept[compiled] = [[set(p.tolist()) for p in trace.kept_image_positions(s)] for s in range(trace.num_stages)]
    if dtype == torch.float32:
        assert kept[True] == kept[False]
        torch.testing.assert_close(logits[True], logits[False], **TOLERANCE[dtype])
    else:
        shared = sum(len(a & b) for stage_a, stage_b in zip(kept[True], kept[False]) for a, b in zip(stage_a, stage_b))
        total = sum(len(a) for stage in kept[False] for a in stage)
        assert shared >= 0.75 * total
