"""The ranking on hand-built cases, and its invariances."""

import math

import pytest
import torch
from torch import nn

from llava.pdrop import PDropConfig
from llava.pdrop.decoder import KeepPlan
from llava.pdrop.keep import TokenSequence, compaction_index, dense_keep_index, select_image_tokens
from llava.pdrop.ranking import (RotaryTables, image_token_scores, inference_query_mask, query_slots,
                                 training_query_mask)

from ..conftest import Sample, make_batch, tiny_model


class _Attn(nn.Module):
    def __init__(self, q_weight, k_weight, head_dim):
        super().__init__()
        self.q_proj = nn.Linear(q_weight.shape[1], q_weight.shape[0], bias=False)
        self.k_proj = nn.Linear(k_weight.shape[1], k_weight.shape[0], bias=False)
        self.q_proj.weight.data, self.k_proj.weight.data = q_weight, k_weight
        self.head_dim = head_dim


class _Layer(nn.Module):
    def __init__(self, q_weight, k_weight, head_dim):
        super().__init__()
        self.input_layernorm = nn.Identity()
        self.self_attn = _Attn(q_weight, k_weight, head_dim)


def _no_rotation(n, head_dim):
    return torch.ones(1, n, head_dim), torch.zeros(1, n, head_dim)


def test_hand_built_scores_are_the_softmax_row_of_the_query():
    # one head of dim 2; q = sqrt(2) * h, k = h, so logits = a_j for a query h = [1, 0]
    layer = _Layer(math.sqrt(2) * torch.eye(2), torch.eye(2), head_dim=2)
    a = [0.0, 2.0, -1.0, 1.0, 1.0]  # text, img, img, img, query (text)
    hidden = torch.tensor([[x, 0.0] for x in a[:-1]] + [[1.0, 0.0]])[None]
    scores = image_token_scores(layer, hidden, _no_rotation(5, 2), torch.ones(1, 5, dtype=torch.bool),
                                torch.tensor([[4]]), torch.tensor([[True]]))
    z = sum(math.exp(x) for x in a)
    expected = torch.tensor([[math.exp(x) / z for x in a]])
    torch.testing.assert_close(scores, expected)
    image_mask = torch.tensor([[False, True, True, True, False]])
    keep = select_image_tokens(scores, image_mask, torch.tensor([2]))
    assert keep.tolist() == [[False, True, False, True, False]]


def test_keys_after_the_query_and_padding_get_nothing():
    layer = _Layer(torch.eye(2), torch.eye(2), head_dim=2)
    hidden = torch.randn(1, 6, 2)
    key_mask = torch.tensor([[False, True, True, True, True, True]])  # slot 0 is padding
    scores = image_token_scores(layer, hidden, _no_rotation(6, 2), key_mask, torch.tensor([[3]]), torch.tensor([[True]]))
    assert scores[0, 0] == 0 and scores[0, 4:].abs().sum() == 0
    torch.testing.assert_close(scores.sum(), torch.tensor(1.0))


def test_grouped_query_heads_use_their_own_key_head():
    torch.manual_seed(0)
    # 2 query heads share 1 key head (dim 2): the score is the mean of the two heads' softmax rows
    q_weight, k_weight = torch.randn(4, 2), torch.randn(2, 2)
    layer = _Layer(q_weight, k_weight, head_dim=2)
    hidden = torch.randn(1, 4, 2)
    scores = image_token_scores(layer, hidden, _no_rotation(4, 2), torch.ones(1, 4, dtype=torch.bool),
                                torch.tensor([[3]]), torch.tensor([[True]]))
    k = hidden[0] @ k_weight.T
    rows = [torch.softmax((hidden[0, 3] @ q_weight[2 * h:2 * h + 2].T) @ k.T / math.sqrt(2), dim=0) for h in range(2)]
    torch.testing.assert_close(scores[0], (rows[0] + rows[1]) / 2)


def test_padded_scores_equal_the_unpadded_sample():
    model = tiny_model()
    layer, rotary = model.model.language_model.layers[1], model.model.language_model.rotary_emb
    hidden = torch.randn(1, 10, 64)
    padded = torch.cat([torch.randn(1, 3, 64), hidden], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 10])
    pos = torch.tensor([[0, 0, 0] + list(range(10))])
    alone = image_token_scores(layer, hidden, rotary(hidden, torch.arange(10)[None]), torch.ones(1, 10, dtype=torch.bool),
                               torch.tensor([[9]]), torch.tensor([[True]]))
    batched = image_token_scores(layer, padded, rotary(padded, pos), mask, torch.tensor([[12]]), torch.tensor([[True]]))
    torch.testing.assert_close(batched[:, 3:], alone)


def test_query_masks():
    labels = torch.tensor([[-100, -100, 5, 6, -100, -100, 7, -100], [-100, -100, -100, -100, -100, -100, -100, -100]])
    assert training_query_mask(labels).nonzero().tolist() == [[0, 1], [0, 5]]
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    assert inference_query_mask(mask).nonzero().tolist() == [[0, 3], [1, 1]]
    index, valid = query_slots(training_query_mask(labels))
    assert index.tolist() == [[1, 5], [0, 0]] and valid.tolist() == [[True, True], [False, False]]


def test_compaction_layouts():
    keep = torch.tensor([[True, False, True, True], [False, True, False, False]])
    index, valid = compaction_index(keep, align_right=True)
    assert index.tolist() == [[0, 2, 3], [0, 0, 1]] and valid.tolist() == [[True] * 3, [False, False, True]]
    index, valid = compaction_index(keep, align_right=False)
    assert index.tolist() == [[0, 2, 3], [1, 0, 0]] and valid.tolist() == [[True] * 3, [True, False, False]]


def test_selection_keeps_per_sample_counts_and_breaks_ties_to_the_earlier_token():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.9, 0.1, 0.3, 0.2]])
    image_mask = torch.tensor([[True, True, True, True], [False, True, True, True]])
    keep = select_image_tokens(scores, image_mask, torch.tensor([1, 2]))
    assert keep.tolist() == [[False, True, False, False], [False, False, True, True]]


def test_scores_are_float32_under_bf16_autocast():
    """Training with --bf16 runs under autocast: the ranking's matmul and softmax stay in float32."""
    model = tiny_model()
    layer, rotary = model.model.language_model.layers[1], model.model.language_model.rotary_emb
    hidden = torch.randn(2, 10, 64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :3] = False
    plain = image_token_scores(layer, hidden, rotary(hidden, torch.arange(10)[None]), mask, torch.tensor([[9], [9]]),
                               torch.tensor([[True], [True]]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = image_token_scores(layer, hidden, rotary(hidden, torch.arange(10)[None]), mask,
                                   torch.tensor([[9], [9]]), torch.tensor([[True], [True]]))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=5e-2)  # the projections ran in bf16, the scores did not


def _unpadded_sequence(positions, image_mask, labels=None):
    batch, n = image_mask.shape
    return TokenSequence(hidden_states=torch.randn(batch, n, 4), attention_mask=torch.ones(batch, n, dtype=torch.bool),
                         position_ids=positions, image_mask=image_mask, source_index=torch.arange(n).expand(batch, -1),
                         labels=labels, positions_are_arange=bool((positions == torch.arange(n)).all()))


@pytest.mark.parametrize("position_mode", ["compact", "original"])
@pytest.mark.parametrize("arange", [True, False])
def test_dense_compaction_equals_the_general_one(position_mode, arange):
    """Unpadded samples that keep the same token count (different image pools): one sort chooses the same
    tokens as select_image_tokens (ties to the earlier token) and the sequence comes out identical."""
    torch.manual_seed(0)
    n = 12
    image_mask = torch.zeros(3, n, dtype=torch.bool)
    image_mask[0, 2:10], image_mask[1, 1:7], image_mask[2, 3:11] = True, True, True  # 8, 6, 8 image tokens
    keep_counts = torch.tensor([4, 2, 4])  # every sample keeps 8 tokens
    scores = torch.randint(0, 3, (3, n)).float() / 4  # many ties
    positions = torch.arange(n).expand(3, -1) if arange else torch.arange(n).expand(3, -1) * 2 + 5
    seq = _unpadded_sequence(positions, image_mask, labels=torch.randint(0, 9, (3, n)))
    kept = select_image_tokens(scores, image_mask, keep_counts)
    general = seq.compact(~image_mask | kept, position_mode, align_right=True, length=8)
    dense = seq.compact_dense(dense_keep_index(scores, image_mask, 8), position_mode)
    for name in ("hidden_states", "attention_mask", "position_ids", "image_mask", "source_index", "labels"):
        assert torch.equal(getattr(dense, name), getattr(general, name)), name
    assert dense.positions_are_arange == (arange and position_mode == "compact")


@pytest.mark.parametrize("position_mode", ["compact", "original"])
def test_unpadded_prefill_takes_the_dense_path_with_the_same_result(monkeypatch, position_mode):
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), "sdpa")
    batch = make_batch([Sample(before=[5, 6], after=[8, 9, 10]), Sample(before=[12, 3], after=[13, 14, 15])], "left")
    with torch.no_grad():
        dense = model(**batch).logits
        trace = model.pdrop_trace
        calls = []
        monkeypatch.setattr(TokenSequence, "compact", lambda self, *a, **k: calls.append(1))
        model(**batch)  # the unpadded batch never takes the general compaction
        monkeypatch.undo()
        monkeypatch.setattr(KeepPlan, "dense_at", lambda self, boundary: False)
        general = model(**batch).logits
    assert not calls
    assert torch.equal(dense, general)
    assert [t.tolist() for t in trace.stage_source_index] == [t.tolist() for t in model.pdrop_trace.stage_source_index]


@pytest.mark.parametrize("position_mode", ["compact", "original"])
def test_unpadded_training_batch_takes_the_dense_path_with_the_same_loss_and_gradients(monkeypatch, position_mode):
    """Training queries (the token before each answer), labels carried through the drops, backward."""
    samples = [Sample(before=[5, 6], after=[8, 9], answer=[10, 11]), Sample(before=[12, 3], after=[13, 14], answer=[15, 16])]
    batch = make_batch(samples, "right")
    runs = []
    for dense in (True, False):
        model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125], position_mode), "sdpa")
        if not dense:
            monkeypatch.setattr(KeepPlan, "dense_at", lambda self, boundary: False)
        out = model(**batch)
        out.loss.backward()
        runs.append((out.loss.detach(), out.logits.detach(), model.lm_head.weight.grad.clone()))
    for dense_value, general_value in zip(*runs):
        assert torch.equal(dense_value, general_value)


def test_under_zero3_every_stage_calls_the_rotary_module(monkeypatch):
    """ZeRO-3 checks that every rank calls the same modules in the same order; whether a batch is unpadded
    (and could slice stage 0's rotary embedding) differs between ranks, so then every stage calls it."""
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]), "sdpa")
    decoder = model.model.language_model
    batch = make_batch([Sample(before=[5, 6], after=[8, 9, 10])], "left")
    calls = []
    decoder.rotary_emb.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        unpartitioned = model(**batch).logits
        sliced = len(calls)
        monkeypatch.setattr(next(decoder.parameters()), "ds_id", 0, raising=False)  # what ZeRO-3 marks
        calls.clear()
        partitioned = model(**batch).logits
    assert (sliced, len(calls)) == (1, 4)
    assert torch.equal(unpartitioned, partitioned)


# ---------------------------------------------------------------------------------------------- rotary tables
def _rotary(n=9, batch=1):
    model = tiny_model()
    decoder = model.model.language_model
    hidden = torch.randn(batch, n, decoder.config.hidden_size)
    return decoder.rotary_emb(hidden, torch.arange(n)[None].expand(batch, -1))


def test_rotary_tables_rotate_exactly_as_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cos, sin = _rotary()
    q, k = torch.randn(1, 4, 9, 16), torch.randn(1, 2, 9, 16)
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)
    tables = RotaryTables.of((cos, sin))
    assert torch.equal(tables.apply(q), expected_q) and torch.equal(tables.apply(k), expected_k)
    assert RotaryTables.of(tables) is tables


def test_rotary_table_slices_are_the_rows_they_name():
    cos, sin = _rotary(batch=2)
    tables = RotaryTables.of((cos, sin))
    x = torch.randn(2, 4, 1, 16)
    assert torch.equal(tables.last().apply(x), RotaryTables.of((cos[:, -1:], sin[:, -1:])).apply(x))
    y = torch.randn(2, 4, 5, 16)
    assert torch.equal(tables.head(5).apply(y), RotaryTables.of((cos[:, :5], sin[:, :5])).apply(y))
    index = torch.tensor([[3, 8], [0, 2]])
    at = tables.at(index)
    for b in range(2):
        for slot in range(2):
            row = index[b, slot]
            assert torch.equal(at.apply(x)[b, :, slot], RotaryTables.of((cos[b:b + 1, row:row + 1],
                                                                        sin[b:b + 1, row:row + 1])).apply(x[b:b + 1])[0, :, 0])


def test_an_inference_prefill_hands_back_ordinary_tensors():
    # the ranking runs in inference mode when no gradient is asked for; nothing it returns may carry that
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]))
    batch = make_batch([Sample(before=[5, 6], after=[7, 8, 9])] * 2, "left")
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    cached = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
    assert not any(t.is_inference() for t in [out.logits, *cached])
    trace = model.pdrop_trace
    assert not any(t.is_inference() for t in [*trace.stage_source_index, *trace.stage_image_mask])
    out.past_key_values.layers[0].keys.add_(0)  # in place outside inference mode: refused for inference tensors
