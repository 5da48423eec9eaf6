"""The physical limit of a schedule: the same layers on the token counts it leaves, by free slicing.

Stage ``s`` runs on the last ``n_s`` tokens of the sequence, a view (``hidden[:, -n_s:]``), with the
rotary embedding and the causal mask of the whole sequence sliced the same way; nothing is ranked,
gathered, compacted or rebuilt. ``n_s`` is the input length minus the image tokens the schedule has
dropped before stage ``s`` (:func:`stage_lengths`). This is what PyramidDrop would cost if choosing
and moving the tokens were free, so ``pdrop / ideal`` is the part of the possible gain lost to the
method's own work. Which tokens are cut (the first ones here) does not change the cost.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask

from ..pdrop.schedule import PDropConfig, kept_image_tokens


def stage_lengths(schedule: PDropConfig, length: int, image_tokens: int) -> list[int]:
    """Tokens of each stage for a sample of ``length`` tokens, ``image_tokens`` of them image tokens."""
    return [length] + [length - image_tokens + kept_image_tokens(image_tokens, r) for r in schedule.image_token_ratio_list]


def ideal_decoder_forward(decoder, schedule: PDropConfig, inputs_embeds: torch.Tensor, image_tokens: int,
                          cache=None) -> torch.Tensor:
    """``decoder``'s layers stage by stage on free slices; returns the normed last hidden states.

    A prefill (empty or no ``cache``) cuts each stage's leading tokens; a decode step runs its new
    tokens against each layer's (shorter) cache with the stage-0 mask's last columns.
    """
    batch, n, _ = inputs_embeds.shape
    past = 0 if cache is None else cache.get_seq_length()
    positions = torch.arange(past, past + n, device=inputs_embeds.device)[None]
    cos, sin = decoder.rotary_emb(inputs_embeds, positions)
    mask = create_causal_mask(decoder.config, inputs_embeds, None, cache, positions)
    lengths = stage_lengths(schedule, n, image_tokens) if past == 0 else [n] * schedule.num_stages
    hidden = inputs_embeds
    for layers, length in zip(schedule.stage_layers(decoder.config.num_hidden_layers), lengths):
        hidden, stage_cos, stage_sin = hidden[:, -length:], cos[:, -length:], sin[:, -length:]
        for index in layers:  # as the PyramidDrop loop: indexing, not a ModuleList slice
            layer = decoder.layers[index]
            kv = length if cache is None else cache.get_seq_length(layer.self_attn.layer_idx) + length
            stage_mask = None if mask is None else mask[..., -length:, -kv:]
            hidden = layer(hidden, attention_mask=stage_mask, position_embeddings=(stage_cos, stage_sin),
                           past_key_values=cache, use_cache=cache is not None)
    return decoder.norm(hidden)


def ideal_training_loss(model, schedule: PDropConfig, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The full model's loss with the ideal decoder: the images are encoded and merged as PyramidDrop does."""
    labels = batch["labels"]
    embeds, image_mask, _ = model.merge_inputs(batch["input_ids"], None, batch["pixel_values"], None, None,
                                               batch.get("image_sizes"))
    image_tokens = int(image_mask[0].sum())
    hidden = ideal_decoder_forward(model.model.language_model, schedule, embeds, image_tokens)
    logits = model.lm_head(hidden)
    return model.loss_function(logits=logits, labels=labels[:, -hidden.shape[1]:],
                               vocab_size=model.config.get_text_config().vocab_size)
