"""Generation with the KV cache: equal to recomputation, padding-invariant, per-sample state kept."""

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava.model import enable_pdrop
from llava.pdrop import PDropCache, PDropConfig

from ..conftest import Sample, make_batch, position_ids_for, tiny_model

PROMPTS = [
    Sample(before=[5, 6, 7], after=[8, 9, 10, 11]),
    Sample(before=[12], after=[13, 14, 15, 16, 17, 18, 19, 20, 21]),
    Sample(before=[22, 23, 24, 25, 26], after=[27, 28], has_image=False),
]
NEW = 6


def _greedy(model, batch, **kwargs):
    out = model.generate(**batch, max_new_tokens=NEW, do_sample=False, pad_token_id=0, **kwargs)
    return out[:, batch["input_ids"].shape[1]:]


def _recompute_greedy(model, batch):
    """No cache: the whole sequence again at every step, ranked from the prompt's last token.

    Returns the new tokens ``(B, NEW)`` and the last-position logits of every step ``(B, NEW, V)``.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    prompt_end = torch.zeros_like(ids, dtype=torch.bool)
    prompt_end[:, -1] = True  # left padding: the prompt ends in the last column
    new, logits = [], []
    for _ in range(NEW):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                        position_ids=position_ids_for(mask), use_cache=False, pdrop_query_mask=prompt_end)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(token)
        logits.append(out.logits[:, -1])
        ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
        prompt_end = torch.cat([prompt_end, torch.zeros_like(token, dtype=torch.bool)], 1)
    return torch.cat(new, 1), torch.stack(logits, 1)


@pytest.mark.parametrize("position_mode", ["compact", "original"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cached_generation_equals_recomputation_with_the_same_drops(position_mode, attn):
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), attn)
    batch = make_batch(PROMPTS, "left")
    out = model.generate(**batch, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                         return_dict_in_generate=True, output_logits=True)
    tokens, logits = _recompute_greedy(model, batch)
    assert torch.equal(out.sequences[:, batch["input_ids"].shape[1]:], tokens)
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("position_mode", ["compact", "original"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padded_batch_equals_each_sample_alone(position_mode, attn):
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), attn)
    batch = make_batch(PROMPTS, "left")
    together = _greedy(model, batch)
    kept_together = model.pdrop_trace
    for b, sample in enumerate(PROMPTS):
        alone = make_batch([sample], "left")
        if sample.has_image:
            alone["pixel_values"] = batch["pixel_values"][b:b + 1]
        assert torch.equal(_greedy(model, alone), together[b:b + 1]), b
        pad = batch["input_ids"].shape[1] - alone["input_ids"].shape[1]
        for s in range(4):
            assert torch.equal(model.pdrop_trace.kept_image_positions(s)[0] + pad, kept_together.kept_image_positions(s)[b])


def test_text_only_sample_in_a_mixed_batch_is_unchanged():
    model = tiny_model()
    batch = make_batch(PROMPTS, "left")
    together = _greedy(model, batch)
    stock = enable_pdrop(tiny_model(), None)
    alone = make_batch([PROMPTS[2]], "left")
    assert torch.equal(_greedy(stock, alone), together[2:3])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_ratio_one_generation_equals_stock(attn):
    model = tiny_model(PDropConfig([1, 2, 3], [1.0, 1.0, 1.0]), attn)
    stock = enable_pdrop(tiny_model(None, attn), None)
    batch = make_batch(PROMPTS, "left")
    assert torch.equal(_greedy(model, batch), _greedy(stock, batch))
    assert torch.equal(_greedy(model, batch, num_beams=2), _greedy(stock, batch, num_beams=2))


def test_cache_holds_fewer_tokens_in_later_stages():
    model = tiny_model()
    batch = make_batch(PROMPTS[:1], "left")
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    cache = out.past_key_values
    assert isinstance(cache, PDropCache)
    n = batch["input_ids"].shape[1]
    # 3 new tokens: the last one is not in the cache yet; image tokens 16 -> 8 -> 4 -> 2
    assert [cache.get_seq_length(k) for k in range(4)] == [n + 2, n - 8 + 2, n - 12 + 2, n - 14 + 2]


def test_beam_search_keeps_each_sample_state():
    model = tiny_model()
    batch = make_batch(PROMPTS, "left")
    together = _greedy(model, batch, num_beams=3)
    for b, sample in enumerate(PROMPTS[:2]):
        alone = make_batch([sample], "left")
        alone["pixel_values"] = batch["pixel_values"][b:b + 1]
        assert torch.equal(_greedy(model, alone, num_beams=3), together[b:b + 1])


def _recomputed_logits(model, batch, sequences):
    """Last-position logits of every generated step, recomputed without a cache (the prompt's last token asks)."""
    n = batch["input_ids"].shape[1]
    logits = []
    for t in range(n, sequences.shape[1]):
        ids = sequences[:, :t]
        mask = torch.cat([batch["attention_mask"], torch.ones_like(ids[:, n:])], 1)
        prompt_end = torch.zeros_like(ids, dtype=torch.bool)
        prompt_end[:, n - 1] = True
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                        position_ids=position_ids_for(mask), use_cache=False, pdrop_query_mask=prompt_end)
        logits.append(out.logits[:, -1])
    return torch.stack(logits, 1)


def test_sampling_draws_from_the_recomputed_distribution_and_is_seeded():
    model = tiny_model()
    batch = make_batch(PROMPTS, "left")
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(**batch, max_new_tokens=NEW, do_sample=True, top_k=20, pad_token_id=0,
                                   return_dict_in_generate=True, output_logits=True))
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    sampled = runs[0].sequences
    greedy = _greedy(model, batch)
    assert not torch.equal(sampled[:, batch["input_ids"].shape[1]:], greedy)  # sampling took other paths
    # each step's distribution is the one the whole sequence gives without a cache, with the same drops
    recomputed = _recomputed_logits(model, batch, sampled)
    torch.testing.assert_close(torch.stack(runs[0].logits, 1), recomputed, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("operation", ["reorder_cache", "batch_select_indices"])
def test_reindexing_the_cache_moves_each_samples_stage_state(operation):
    """Samples of different lengths (different padding and offsets per stage) swapped in the cache decode
    exactly as a cache filled with the swapped batch."""
    model = tiny_model()
    batch = make_batch(PROMPTS[:2], "left")
    swapped = make_batch(PROMPTS[1::-1], "left")
    swapped["pixel_values"] = batch["pixel_values"].flip(0)
    token = torch.tensor([[40], [41]])

    def decode(prompt, reindex=None):
        with torch.no_grad():
            out = model(**prompt, position_ids=position_ids_for(prompt["attention_mask"]), use_cache=True)
            cache = out.past_key_values
            if reindex is not None:
                getattr(cache, operation)(reindex)
            mask = torch.cat([prompt["attention_mask"].flip(0) if reindex is not None else prompt["attention_mask"],
                              torch.ones_like(token)], 1)
            step = model(input_ids=token, attention_mask=mask, past_key_values=cache,
                         position_ids=position_ids_for(mask)[:, -1:])
        return step.logits[:, -1]

    torch.testing.assert_close(decode(batch, torch.tensor([1, 0])), decode(swapped), rtol=1e-5, atol=1e-6)


def test_repeating_the_cache_per_beam_repeats_each_samples_state():
    model = tiny_model()
    batch = make_batch(PROMPTS[:2], "left")
    repeated = {k: v.repeat_interleave(2, 0) for k, v in batch.items()}
    token = torch.tensor([[40], [40], [41], [41]])
    logits = []
    for prompt, repeat in ((batch, True), (repeated, False)):
        with torch.no_grad():
            cache = model(**prompt, position_ids=position_ids_for(prompt["attention_mask"]), use_cache=True).past_key_values
            if repeat:
                cache.batch_repeat_interleave(2)
            mask = torch.cat([repeated["attention_mask"], torch.ones_like(token)], 1)
            logits.append(model(input_ids=token, attention_mask=mask, past_key_values=cache,
                                position_ids=position_ids_for(mask)[:, -1:]).logits[:, -1])
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-6)


def test_static_cache_and_assisted_decoding_are_refused():
    model = tiny_model()
    batch = make_batch(PROMPTS[:1], "left")
    with pytest.raises(ValueError, match="cache_implementation='static' is not supported with PyramidDrop"):
        model.generate(**batch, max_new_tokens=2, cache_implementation="static")
    with pytest.raises(ValueError, match="assisted decoding"):
        model.generate(**batch, max_new_tokens=2, prompt_lookup_num_tokens=2)
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        PDropCache().crop(3)


def test_decoding_on_a_foreign_cache_is_refused():
    from transformers import DynamicCache

    model = tiny_model()
    stock = LlavaForConditionalGeneration(model.config)
    batch = make_batch(PROMPTS[:1], "left")
    cache = DynamicCache(config=model.config.text_config)
    with torch.no_grad():
        stock(**batch, past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="was not filled by a PyramidDrop prefill"):
        model(input_ids=torch.tensor([[5]]), past_key_values=cache, use_cache=True)
