"""The stage-wise decoder forward of PyramidDrop over a transformers decoder (Llama, Mistral, Qwen2).

``pdrop_decoder_forward`` replaces ``LlamaModel.forward`` (same embeddings, layers, norm, rotary
embedding, mask builder; nothing copied from transformers) with this loop::

    for each stage s (layers between two boundaries):
        if s > 0 and prefill:  rank image tokens with layer[start_s]'s q/k, keep the top
                               floor(N0 * ratio), compact hidden states / masks / labels / positions
        if s > 0 and decode:   extend stage s's kept-token mask, shift positions (compact mode)
        causal mask for stage s  (2D mask of the stage's tokens, cache layer start_s)
        run the stage's layers

A prefill is a forward whose cache is empty (or absent): only it drops. Later forwards (decode
steps) append to every stage and never drop; tokens they carry are text (images enter at prefill). With all ratios 1.0 nothing is compacted and the
computation is exactly the stock decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask

from .cache import PDropCache, StageCacheState
from .keep import TokenSequence, select_image_tokens
from .ranking import image_token_scores, inference_query_mask, query_slots, training_query_mask
from .schedule import PDropConfig

REQUIRED_LAYER_PARTS = ("input_layernorm", "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.head_dim")


@dataclass
class DropTrace:
    """What a prefill kept, for tests, pictures and debugging.

    Attributes:
        image_mask: ``(B, n)`` bool, the image tokens of the input (the pool of each sample).
        stage_source_index: per stage (stage 0 first), ``(B, m_s)`` long: the input position of the
            token in each slot of that stage, -1 for padding slots.
        stage_image_mask: per stage, ``(B, m_s)`` bool: which slots hold image tokens.
    """

    image_mask: torch.Tensor
    stage_source_index: list[torch.Tensor] = field(default_factory=list)
    stage_image_mask: list[torch.Tensor] = field(default_factory=list)

    @property
    def num_stages(self) -> int:
        return len(self.stage_source_index)

    def kept_image_positions(self, stage: int) -> list[torch.Tensor]:
        """Per sample, the sorted input positions of the image tokens present in ``stage``."""
        index, images = self.stage_source_index[stage], self.stage_image_mask[stage]
        return [row[mask] for row, mask in zip(index, images)]

    def image_tokens_per_stage(self) -> torch.Tensor:
        """``(B, S)`` long: image tokens each sample has in each stage (column 0 is N0)."""
        return torch.stack([m.sum(dim=1) for m in self.stage_image_mask], dim=1)

    def tokens_per_stage(self) -> torch.Tensor:
        """``(B, S)`` long: real tokens (text + image) each sample has in each stage."""
        return torch.stack([(i >= 0).sum(dim=1) for i in self.stage_source_index], dim=1)


@dataclass
class PDropDecoderOutput:
    last_hidden_state: torch.Tensor  # (B, m_last, d)
    past_key_values: Cache | None
    labels: torch.Tensor | None  # (B, m_last), kept in sync with last_hidden_state
    trace: DropTrace | None  # None for decode steps


def check_decoder_supported(decoder: nn.Module) -> None:
    """Refuse a decoder whose layers lack what the ranking and the loop use, naming what is missing."""
    missing = [name for name in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(decoder, name)]
    layer = decoder.layers[0] if hasattr(decoder, "layers") and len(decoder.layers) else None
    if layer is not None:
        for path in REQUIRED_LAYER_PARTS:
            obj = layer
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"layers[i].{path}")
        attn = getattr(layer, "self_attn", None)
        for extra in ("q_norm", "k_norm"):
            if getattr(attn, extra, None) is not None:
                missing.append(f"support for self_attn.{extra} (not implemented in the ranking)")
    if missing:
        raise ValueError(f"PyramidDrop does not support the decoder {type(decoder).__name__}: missing {missing}")
    _check_no_active_sliding_window(decoder)


def _check_no_active_sliding_window(decoder: nn.Module) -> None:
    """Sliding-window attention (Mistral, some Qwen2) is refused unless the window can never bind.

    The stage loop builds full causal masks; a window shorter than the longest sequence would
    need a sliding mask over the compacted tokens, which this implementation does not do.
    """
    config = decoder.config
    window = getattr(config, "sliding_window", None)
    sliding_layers = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    max_positions = getattr(config, "max_position_embeddings", None)
    if (window is not None or sliding_layers) and (window is None or max_positions is None or window < max_positions):
        raise ValueError(
            f"PyramidDrop does not support sliding-window attention in {type(decoder).__name__} "
            f"(sliding_window={window}, max_position_embeddings={max_positions}): set text_config.sliding_window=None "
            "(exact while every sequence is shorter than the window) or use a full-attention model"
        )


def pdrop_decoder_forward(
    decoder: nn.Module,
    schedule: PDropConfig,
    inputs_embeds: torch.Tensor,
    image_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    past_key_values: Cache | None = None,
    use_cache: bool = False,
    labels: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    **kwargs,
) -> PDropDecoderOutput:
    """Run ``decoder`` (a ``LlamaModel``-like module) stage by stage with PyramidDrop.

    Args:
        inputs_embeds: ``(B, n, d)`` merged text + image embeddings.
        image_mask: ``(B, n)`` bool, True at image tokens (one pool per sample).
        attention_mask: ``(B, past + n)`` 2D padding mask or None; 4D masks are refused.
        position_ids: ``(B or 1, n)`` or None (then ``past + arange(n)`` as the stock model).
        labels: ``(B, n)`` unshifted labels; given labels select the training queries and come back
            dropped in sync with the hidden states.
        query_mask: ``(B, n)`` bool, explicit query tokens (overrides the labels/last-token rule).
    """
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("PyramidDrop needs a 2D attention_mask (batch, sequence); got a 4D mask")
    num_layers = decoder.config.num_hidden_layers
    stages = schedule.stage_layers(num_layers)
    if use_cache and past_key_values is None:
        past_key_values = PDropCache(config=decoder.config)
    is_prefill = past_key_values is None or past_key_values.get_seq_length() == 0
    if is_prefill and past_key_values is not None and not isinstance(past_key_values, PDropCache):
        past_key_values = PDropCache(config=decoder.config)  # an empty plain cache cannot hold stage state
    if not is_prefill:
        _check_decode_cache(past_key_values, len(stages))

    batch, n, _ = inputs_embeds.shape
    if position_ids is None:
        past = 0 if past_key_values is None else past_key_values.get_seq_length()
        position_ids = torch.arange(past, past + n, device=inputs_embeds.device)[None]
    position_ids = position_ids.expand(batch, -1)

    hidden_states = inputs_embeds
    if is_prefill:
        seq = _initial_sequence(inputs_embeds, attention_mask, position_ids, image_mask, labels, query_mask)
        trace = DropTrace(image_mask=image_mask, stage_source_index=[seq.source_index], stage_image_mask=[seq.image_mask])
        n0 = seq.image_mask.sum(dim=1)  # the pool: image tokens under the attention mask
        if past_key_values is not None:
            past_key_values.stage_states = []
        stage_mask, stage_positions, changed = attention_mask, position_ids, False
        offsets = torch.zeros(batch, dtype=torch.long, device=inputs_embeds.device)
    layer_kwargs = dict(past_key_values=past_key_values, use_cache=use_cache, **kwargs)

    last_layer_input = None  # the input of the last layer run (FastV ranks with that layer's attention)
    position_embeddings = None  # the previous stage's rotary embedding, set before any boundary
    for s, layer_range in enumerate(stages):
        if s > 0 and is_prefill:
            seq.hidden_states = hidden_states
            ranker = _Ranker(decoder.layers, layer_range.start, schedule, last_layer_input, position_embeddings)
            seq, dropped = _drop_at_boundary(ranker, seq, schedule, s - 1, n0, labels is not None)
            changed = changed or bool(dropped.any())
            hidden_states = seq.hidden_states
            stage_mask, stage_positions = (seq.attention_mask, seq.position_ids) if changed else (attention_mask, position_ids)
            if schedule.position_mode == "compact":
                offsets = offsets + dropped
            trace.stage_source_index.append(seq.source_index)
            trace.stage_image_mask.append(seq.image_mask)
            if past_key_values is not None:
                past_key_values.stage_states.append(StageCacheState(_as_bool_mask(seq.attention_mask), offsets.clone()))
        elif s > 0:
            stage_mask, stage_positions = _extend_stage(past_key_values.stage_states[s - 1], attention_mask, position_ids, n)
            changed = True
        elif not is_prefill:
            stage_mask, stage_positions, changed = attention_mask, position_ids, False

        causal_mask = create_causal_mask(
            config=decoder.config,
            inputs_embeds=hidden_states,
            attention_mask=stage_mask,
            past_key_values=past_key_values,
            position_ids=stage_positions,
            layer_idx=layer_range.start,
        )
        position_embeddings = decoder.rotary_emb(hidden_states, position_ids=stage_positions)
        for layer in decoder.layers[layer_range.start : layer_range.stop]:
            last_layer_input = hidden_states
            hidden_states = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                # after a drop the positions may have gaps; FlashAttention would read them as packed sequences
                position_ids=None if changed else stage_positions,
                **layer_kwargs,
            )

    return PDropDecoderOutput(
        last_hidden_state=decoder.norm(hidden_states),
        past_key_values=past_key_values,
        labels=seq.labels if is_prefill else labels,
        trace=trace if is_prefill else None,
    )


def _initial_sequence(inputs_embeds, attention_mask, position_ids, image_mask, labels, query_mask) -> TokenSequence:
    batch, n, _ = inputs_embeds.shape
    real = torch.ones(batch, n, dtype=torch.bool, device=inputs_embeds.device) if attention_mask is None \
        else _as_bool_mask(attention_mask[:, -n:])
    source = torch.arange(n, device=inputs_embeds.device).expand(batch, -1)
    return TokenSequence(
        hidden_states=inputs_embeds,
        attention_mask=real,
        position_ids=position_ids,
        image_mask=image_mask & real,
        source_index=torch.where(real, source, -1),
        labels=labels,
        query_override=None if query_mask is None else query_mask.bool() & real,
    )


@dataclass
class _Ranker:
    """Scores image tokens at a boundary by the schedule's method (see ``PDropConfig.method``)."""

    layers: nn.ModuleList
    next_index: int  # the first layer of the next stage
    schedule: PDropConfig
    last_layer_input: torch.Tensor  # (B, m, d) what the previous layer (next_index - 1) received
    position_embeddings: tuple[torch.Tensor, torch.Tensor]

    def scores(self, seq: TokenSequence, query_index, query_valid, boundary: int) -> torch.Tensor:
        """``(B, m)`` float32, higher = kept first."""
        if self.schedule.method == "random":
            device = seq.hidden_states.device
            generator = torch.Generator(device=device).manual_seed(self.schedule.seed * 1000 + boundary)
            return torch.rand(seq.image_mask.shape, generator=generator, device=device)
        if self.schedule.method == "fastv":
            layer, hidden = self.layers[self.next_index - 1], self.last_layer_input
        else:
            layer, hidden = self.layers[self.next_index], seq.hidden_states
        return image_token_scores(layer, hidden, self.position_embeddings, seq.attention_mask, query_index, query_valid)


def _drop_at_boundary(ranker: _Ranker, seq: TokenSequence, schedule: PDropConfig, boundary: int, n0: torch.Tensor,
                      training: bool) -> tuple[TokenSequence, torch.Tensor]:
    """Rank and drop at one boundary. Returns the new sequence and image tokens dropped per sample ``(B,)``."""
    if seq.query_override is not None:
        queries = seq.query_override
    elif seq.labels is not None:
        queries = training_query_mask(seq.labels) & seq.attention_mask
    else:
        queries = inference_query_mask(seq.attention_mask)
    present = seq.image_mask.sum(dim=1)
    target = torch.floor(n0.double() * schedule.image_token_ratio_list[boundary]).long()
    has_query = queries.any(dim=1)
    target = torch.where(has_query, torch.minimum(target, present), present)  # no query: no drop here
    query_index, query_valid = query_slots(queries)
    # Scored even when nothing is dropped (e.g. a text-only batch): under ZeRO-3 every rank must call
    # the same modules in the same order, since each call gathers that module's parameters.
    with torch.profiler.record_function("pdrop/rank"):
        scores = ranker.scores(seq, query_index, query_valid, boundary)
    if bool((target >= present).all()):
        return seq, torch.zeros_like(present)
    with torch.profiler.record_function("pdrop/compact"):
        keep = ~seq.image_mask | select_image_tokens(scores, seq.image_mask, target)
        return seq.compact(keep, schedule.position_mode, align_right=not training)


def _extend_stage(state: StageCacheState, attention_mask, position_ids, n: int):
    """Decode step in stage ``s``: append the new tokens' mask columns and shift their positions."""
    if attention_mask is None:
        new_columns = torch.ones(state.attention_mask.shape[0], n, dtype=torch.bool, device=state.attention_mask.device)
    else:
        new_columns = _as_bool_mask(attention_mask[:, -n:])
    state.attention_mask = torch.cat([state.attention_mask, new_columns], dim=1)
    return state.attention_mask, position_ids - state.position_offset[:, None]


def _check_decode_cache(cache: Cache, num_stages: int) -> None:
    if not isinstance(cache, PDropCache) or len(cache.stage_states) != num_stages - 1:
        raise ValueError(
            "past_key_values holds tokens but was not filled by a PyramidDrop prefill with this schedule "
            "(expected a PDropCache with one state per later stage)"
        )


def _as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0
