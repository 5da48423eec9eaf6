"""Region focus with the language model's own layers: score the local image tokens of a level.

The sequence ``[prefix, thumbnail, local tokens (with newlines), question]`` runs through the first
``focus_layer`` decoder layers; the next layer's norm and q/k projections score every token for the
query, the last question token (:func:`llava.pdrop.ranking.image_token_scores`, PyramidDrop's
ranking: RoPE, float32 softmax, mean over heads). ``softmax="local"`` restricts the softmax to the
local image tokens (the LRS-VQA rule: attention *among* the local tokens); ``"all"`` keeps
PyramidDrop's softmax over every key. Nothing but the scores leaves this module: the focus pass is a
separate, cache-free forward.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask

from ..pdrop.ranking import image_token_scores, inference_query_mask, query_slots


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, n)``: 0..m-1 over each row's real tokens (left padding gets 0), as ``generate`` numbers them."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def focus_scores(
    decoder,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    local_mask: torch.Tensor,
    focus_layer: int,
    softmax: str = "local",
) -> torch.Tensor:
    """Scores of the local image tokens after ``focus_layer`` layers of ``decoder``.

    Args:
        decoder: the language model (``LlamaModel``-like: ``layers``, ``rotary_emb``, ``config``).
        inputs_embeds: ``(B, n, d)``, left-padded sequences ending with the question.
        attention_mask: ``(B, n)`` bool, True at real tokens.
        local_mask: ``(B, n)`` bool, True at the local image tokens to score (newlines excluded).
        focus_layer: layers run before scoring; layer ``focus_layer`` (0-based) scores.
        softmax: ``"local"`` (over the local tokens) or ``"all"`` (over every real key).
    Returns:
        ``(B, n)`` float32; read it at ``local_mask``. With ``"local"`` each row's local scores sum to 1.
    """
    if softmax not in ("local", "all"):
        raise ValueError(f"softmax={softmax!r} is not 'local' or 'all'")
    attention_mask = attention_mask.bool()
    position_ids = position_ids_of(attention_mask)
    hidden = inputs_embeds
    causal_mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                     past_key_values=None, position_ids=position_ids)
    position_embeddings = decoder.rotary_emb(hidden, position_ids=position_ids)
    for layer in decoder.layers[:focus_layer]:
        hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                       position_ids=position_ids, past_key_values=None, use_cache=False)
    query_index, query_valid = query_slots(inference_query_mask(attention_mask))
    key_mask = attention_mask & local_mask if softmax == "local" else attention_mask
    return image_token_scores(decoder.layers[focus_layer], hidden, position_embeddings, key_mask, query_index,
                              query_valid)
