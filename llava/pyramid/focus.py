"""Region focus with the language model's own layers: score the local image tokens of a level.

The sequence ``[prefix, thumbnail, local tokens (with newlines), question]`` runs through the first
``focus_layer`` decoder layers; the next layer's norm and q/k projections score every token for the
query, the last question token (:func:`llava.pdrop.ranking.image_token_scores`, PyramidDrop's
ranking: RoPE, float32 softmax, mean over heads). ``softmax="local"`` restricts the softmax to the
local image tokens (the LRS-VQA rule: attention *among* the local tokens); ``"all"`` keeps
PyramidDrop's softmax over every key. Nothing but the scores leaves this module: the focus pass is a
separate, cache-free forward. The same pass with gradients and training queries (:func:`focus_attention`)
is what the trained focus module (:mod:`.focus_module`) learns through.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask

from ..pdrop.ranking import image_token_scores, inference_query_mask, query_attention, query_slots


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
        decoder: the language model (``LlamaModel``-like: ``layers``, ``rotary_emb``, ``config``), or a
            trained focus module of that shape (:class:`~.focus_module.RegionFocusModule`).
        inputs_embeds: ``(B, n, d)``, left-padded sequences ending with the question.
        attention_mask: ``(B, n)`` bool, True at real tokens.
        local_mask: ``(B, n)`` bool, True at the local image tokens to score (newlines excluded).
        focus_layer: layers run before scoring; layer ``focus_layer`` (0-based) scores.
        softmax: ``"local"`` (over the local tokens) or ``"all"`` (over every real key).
    Returns:
        ``(B, n)`` float32; read it at ``local_mask``. With ``"local"`` each row's local scores sum to 1.
    """
    attention_mask = attention_mask.bool()
    hidden, position_embeddings = layer_inputs(decoder, inputs_embeds, attention_mask, focus_layer)
    query_index, query_valid = query_slots(inference_query_mask(attention_mask))
    return image_token_scores(decoder.layers[focus_layer], hidden, position_embeddings,
                              _key_mask(attention_mask, local_mask, softmax), query_index, query_valid)


def focus_attention(decoder, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, local_mask: torch.Tensor,
                    focus_layer: int, query_mask: torch.Tensor, softmax: str = "local"):
    """:func:`focus_scores` per query and with gradients: what the focus module's distillation trains.

    ``query_mask`` ``(B, n)`` bool marks the queries (training: the token before each answer,
    :func:`llava.pdrop.ranking.training_query_mask`). Returns ``(probs, valid)``: ``(B, Q, n)`` float32
    attention of each query slot, ``(B, Q)`` bool the real slots.
    """
    attention_mask = attention_mask.bool()
    hidden, position_embeddings = layer_inputs(decoder, inputs_embeds, attention_mask, focus_layer)
    query_index, query_valid = query_slots(query_mask)
    probs = query_attention(decoder.layers[focus_layer], hidden, position_embeddings,
                            _key_mask(attention_mask, local_mask, softmax), query_index)
    return probs, query_valid


def layer_inputs(decoder, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, layer: int):
    """``(hidden, (cos, sin))``: the hidden states ``(B, n, d)`` entering decoder layer ``layer`` and the
    rotary embedding (:func:`layers_inputs` of one layer)."""
    hidden, position_embeddings = layers_inputs(decoder, inputs_embeds, attention_mask, [layer])
    return hidden[layer], position_embeddings


def layers_inputs(decoder, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, layers):
    """``({l: hidden_l}, (cos, sin))``: the hidden states ``(B, n, d)`` entering each decoder layer ``l`` of
    ``layers`` (0-based; the first ``max(layers)`` layers run, cache-free, positions numbered over the
    real tokens) and the rotary embedding at those positions."""
    attention_mask = attention_mask.bool()
    position_ids = position_ids_of(attention_mask)
    hidden = inputs_embeds
    causal_mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                     past_key_values=None, position_ids=position_ids)
    position_embeddings = decoder.rotary_emb(hidden, position_ids=position_ids)
    wanted, collected = set(layers), {}
    for index in range(max(wanted) + 1):
        if index in wanted:
            collected[index] = hidden
        if index < max(wanted):
            hidden = decoder.layers[index](hidden, attention_mask=causal_mask, position_embeddings=position_embeddings,
                                           position_ids=position_ids, past_key_values=None, use_cache=False)
    return collected, position_embeddings


def _key_mask(attention_mask: torch.Tensor, local_mask: torch.Tensor, softmax: str) -> torch.Tensor:
    if softmax not in ("local", "all"):
        raise ValueError(f"softmax={softmax!r} is not 'local' or 'all'")
    return attention_mask & local_mask.bool() if softmax == "local" else attention_mask
