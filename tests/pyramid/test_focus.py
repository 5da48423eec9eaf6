"""The focus pass: PyramidDrop's ranking at the focus layer, softmax over the local span or every key."""

from __future__ import annotations

import torch

from llava.pyramid.focus import focus_scores

from . import reference


def test_focus_scores_equal_a_hand_written_softmax_over_the_local_tokens(next_model):
    decoder = next_model.model.language_model
    torch.manual_seed(0)
    embeds = torch.randn(1, 12, 64)
    local = torch.zeros(1, 12, dtype=torch.bool)
    local[0, 3:9] = True
    mask = torch.ones(1, 12, dtype=torch.bool)
    for softmax in ("local", "all"):
        got = focus_scores(decoder, embeds, mask, local, 2, softmax)[0, 3:9]
        with torch.no_grad():
            expected = reference.local_scores(next_model, embeds[0], list(range(3, 9)), 2, softmax)
        torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=1e-5)
    assert abs(float(focus_scores(decoder, embeds, mask, local, 2, "local")[0, 3:9].sum()) - 1) < 1e-5


def test_left_padding_does_not_change_the_scores(next_model):
    decoder = next_model.model.language_model
    torch.manual_seed(1)
    embeds = torch.randn(1, 10, 64)
    local = torch.zeros(1, 10, dtype=torch.bool)
    local[0, 2:7] = True
    alone = focus_scores(decoder, embeds, torch.ones(1, 10, dtype=torch.bool), local, 1)
    padded = torch.cat([torch.zeros(1, 4, 64), embeds], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 10, dtype=torch.bool)], dim=1)
    local_padded = torch.cat([torch.zeros(1, 4, dtype=torch.bool), local], dim=1)
    torch.testing.assert_close(focus_scores(decoder, padded, mask, local_padded, 1)[:, 4:], alone, atol=1e-6, rtol=1e-5)
