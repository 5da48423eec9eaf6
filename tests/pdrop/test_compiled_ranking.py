"""The opt-in compiled ranking (model.pdrop_compile_ranking): the same tokens kept as the eager one."""

import pytest
import torch

from llava.pdrop import PDropConfig
from llava.pdrop.decoder import pdrop_decoder_forward

from ..conftest import Sample, make_batch, tiny_model
from .test_reference_parity import INFERENCE_SAMPLES, TRAINING_SAMPLES

SCHEDULE = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])


def _kept(model):
    trace = model.pdrop_trace
    return [[positions.tolist() for positions in trace.kept_image_positions(s)] for s in range(trace.num_stages)]


def _run(model, batch, compiled: bool, grad: bool):
    model.pdrop_compile_ranking = compiled
    with torch.set_grad_enabled(grad):
        out = model(**batch)
    return out, _kept(model)


@pytest.mark.integration
@pytest.mark.parametrize("samples, padding_side, grad", [
    (INFERENCE_SAMPLES, "left", False),  # padded inference: queries gathered, keys masked
    ([Sample(before=[5, 6], after=[7, 8, 9])] * 2, "left", False),  # dense: the last slot asks
    (TRAINING_SAMPLES, "right", True),  # training: several queries per sample, gradients on
])
def test_compiled_ranking_keeps_what_the_eager_one_keeps(samples, padding_side, grad):
    model = tiny_model(SCHEDULE)
    batch = make_batch(samples, padding_side)
    eager, eager_kept = _run(model, batch, compiled=False, grad=grad)
    compiled, compiled_kept = _run(model, batch, compiled=True, grad=grad)
    assert compiled_kept == eager_kept
    torch.testing.assert_close(compiled.logits, eager.logits)
    if grad:
        torch.testing.assert_close(compiled.loss, eager.loss)
        compiled.loss.backward()  # the kept tokens' gradients flow as with the eager ranking


def test_compiled_ranking_is_refused_under_zero3():
    model = tiny_model(SCHEDULE)
    decoder = model.model.language_model
    next(decoder.parameters()).ds_id = 0  # what partitioned_by_zero3 reads
    batch = make_batch(INFERENCE_SAMPLES, "left")
    embeds = model.get_input_embeddings()(batch["input_ids"])
    image_mask = batch["input_ids"] == model.config.image_token_id
    with torch.no_grad(), pytest.raises(ValueError, match="not supported under DeepSpeed ZeRO-3"):
        pdrop_decoder_forward(decoder, SCHEDULE, embeds, image_mask, attention_mask=batch["attention_mask"],
                              compile_ranking=True)


@pytest.mark.integration
def test_compiled_ranking_follows_batch_and_length_changes():
    # new batch sizes and lengths after the first compile (the shapes turn symbolic), rotary tables both
    # made for the call and sliced from a longer prefix: each result equals the eager one
    from llava.pdrop.ranking import RotaryTables, compiled_query_attention, query_attention

    decoder = tiny_model(SCHEDULE).model.language_model
    full = RotaryTables.of(decoder.rotary_emb(torch.randn(1, 40, 64), torch.arange(40)[None]))
    for batch, n in [(1, 28), (1, 22), (2, 30), (2, 17), (3, 25)]:
        hidden = torch.randn(batch, n, 64)
        for tables in (full.head(n), RotaryTables.of(decoder.rotary_emb(hidden, torch.arange(n)[None]))):
            with torch.inference_mode():
                args = (decoder.layers[1], hidden, tables, None, None, False)
                torch.testing.assert_close(compiled_query_attention()(*args), query_attention(*args))
