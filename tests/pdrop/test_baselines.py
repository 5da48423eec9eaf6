"""The baselines one flag apart: FastV (previous layer's attention) and seeded random dropping."""

from dataclasses import replace

import pytest
import torch

from llava.model import enable_pdrop
from llava.pdrop import PDropConfig

from ..conftest import N_IMAGE, TINY_SCHEDULE, Sample, make_batch, position_ids_for, tiny_model

SAMPLES = [Sample(before=[5, 6, 7], after=[8, 9, 10, 11]), Sample(before=[12], after=[13, 14])]


def _kept(model, batch, stage=1):
    with torch.no_grad():
        model(**batch, position_ids=position_ids_for(batch["attention_mask"]))
    return [t.tolist() for t in model.pdrop_trace.kept_image_positions(stage)]


@pytest.mark.parametrize("k", [1, 2])
def test_fastv_keeps_the_tokens_the_last_token_attended_most_in_layer_k(k):
    """Independent check: the stock model's own attention weights (eager) at layer K-1."""
    batch = make_batch(SAMPLES, "left")
    stock = enable_pdrop(tiny_model(), None)
    with torch.no_grad():
        out = stock(**batch, position_ids=position_ids_for(batch["attention_mask"]), output_attentions=True)
    attention = out.attentions[k - 1][:, :, -1].float().mean(dim=1)  # (B, n): last token, mean over heads
    keep = 6
    expected = []
    for b in range(len(SAMPLES)):
        image = (batch["input_ids"][b] == 127).nonzero().flatten()
        top = image[attention[b, image].topk(keep).indices]
        expected.append(sorted(top.tolist()))
    fastv = enable_pdrop(stock, PDropConfig.fastv(k, 1 - keep / N_IMAGE))
    assert _kept(fastv, batch) == expected


def test_fastv_differs_from_pdrop_which_uses_the_next_layer():
    batch = make_batch(SAMPLES, "left")
    pdrop = _kept(tiny_model(PDropConfig([2], [0.25])), batch)
    fastv = _kept(tiny_model(PDropConfig([2], [0.25], method="fastv")), batch)
    assert all(len(p) == len(f) == 4 for p, f in zip(pdrop, fastv)) and pdrop != fastv


def test_random_is_seeded_and_keeps_the_schedule_counts():
    batch = make_batch(SAMPLES, "left")
    random0 = replace(TINY_SCHEDULE, method="random", seed=0)
    first, again = _kept(tiny_model(random0), batch), _kept(tiny_model(random0), batch)
    other = _kept(tiny_model(replace(random0, seed=1)), batch)
    assert first == again and first != other
    model = tiny_model(random0)
    _kept(model, batch)
    assert model.pdrop_trace.image_tokens_per_stage().tolist() == [[16, 8, 4, 2]] * 2


def test_baselines_generate_with_a_cache_and_round_trip_through_save(tmp_path):
    batch = make_batch(SAMPLES, "left")
    for schedule in (PDropConfig.fastv(2, 0.5), replace(TINY_SCHEDULE, method="random", seed=3)):
        model = tiny_model(schedule)
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, suppress_tokens=[127])
        assert out.shape == (2, batch["input_ids"].shape[1] + 3)
        model.save_pretrained(tmp_path / schedule.method)
        loaded = type(model).from_pretrained(tmp_path / schedule.method)
        assert loaded.pdrop_config == schedule


def test_fastv_at_equal_flops_spends_the_same_image_token_layers():
    fastv = TINY_SCHEDULE.fastv_at_equal_flops(4, k=1)
    assert fastv.method == "fastv" and fastv.layer_list == (1,)
    assert fastv.image_token_layers(4) == pytest.approx(TINY_SCHEDULE.image_token_layers(4))
    default = PDropConfig([8, 16, 24], [0.5, 0.25, 0.125])
    assert default.fastv_at_equal_flops(32, k=2).image_token_layers(32) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="no FastV ratio"):
        default.fastv_at_equal_flops(32, k=20)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "sparsevlm"}, "method='sparsevlm' is not one of"),
    ({"seed": "1"}, "seed='1' must be an integer"),
])
def test_bad_method_or_seed_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PDropConfig([1], [0.5], **kwargs)
    with pytest.raises(ValueError, match="R=1.0"):
        PDropConfig.fastv(2, 1.0)


@pytest.mark.parametrize("method", ["pdrop", "fastv", "random"])
def test_every_method_keeps_the_same_tokens_batched_and_one_by_one(method):
    """A sample's choice depends on the sample only: not on the batch size, its place or the padding."""
    samples = SAMPLES + [Sample(before=[20, 21], after=[22])]
    model = tiny_model(replace(TINY_SCHEDULE, method=method, seed=5))
    batch = make_batch(samples, "left")
    batched = [_kept(model, batch, stage) for stage in (1, 2, 3)]
    for b, sample in enumerate(samples):
        alone = make_batch([sample], "left")
        alone["pixel_values"] = batch["pixel_values"][b:b + 1]  # the same image as in the batch
        offset = batch["input_ids"].shape[1] - alone["input_ids"].shape[1]
        for stage in (1, 2, 3):
            assert [p + offset for p in _kept(model, alone, stage)[0]] == batched[stage - 1][b]


def test_random_choices_differ_between_samples():
    """Seeded by each sample's content: two different prompts do not get the same pattern."""
    model = tiny_model(replace(TINY_SCHEDULE, method="random", seed=0))
    first = _kept(model, make_batch([SAMPLES[0]], "left"))[0]
    second = _kept(model, make_batch([Sample(before=[5, 6, 7], after=[8, 9, 10, 12])], "left"))[0]
    assert first != second
