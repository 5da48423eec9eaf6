"""The stage-wise decoder forward of PyramidDrop over a transformers decoder (Llama, Mistral, Qwen2).

It replaces ``LlamaModel.forward`` (same embeddings, layers, norm, rotary embedding, mask builder;
nothing copied from transformers) with two loops over the stages that share :func:`run_stage`::

    prefill(...)       # the cache is empty: rank and drop at every boundary
        for each stage s:
            if s > 0: rank image tokens with layer[start_s]'s q/k, keep floor(N0 * ratio),
                      compact hidden states / masks / labels / positions      (drop_at_boundary)
            run_stage(layers of s, the stage's causal mask and rotary embedding)

    decode_step(...)   # the cache holds a prompt: new (text) tokens, never a drop
        every stage's mask and rotary embedding from the cache's stage state, in one go
        for each stage s: run_stage(layers of s)

Every shape and keep count of a prefill follows from a few numbers per sample (real tokens, image
tokens N0, whether it has queries), read from the device once into a :class:`KeepPlan`; the drops
themselves never wait for the device. With all ratios 1.0 nothing is compacted and the computation
is exactly the stock decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask

from .cache import PDropCache, StageCacheState, decode_stage_inputs
from .keep import TokenSequence, dense_keep_index, select_image_tokens
from .ranking import (RotaryTables, image_token_scores, inference_query_mask, query_slots, random_keys,
                      random_scores, training_query_mask)
from .ranges import profiled
from .schedule import PDropConfig, kept_image_tokens
from .support import check_window_not_binding, partitioned_by_zero3, sliding_window


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

    def record(self, seq: TokenSequence) -> None:
        self.stage_source_index.append(seq.source_index)
        self.stage_image_mask.append(seq.image_mask)

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
    trace: DropTrace | None  # None for decode steps and when no trace was asked for


@dataclass
class KeepPlan:
    """The host-side arithmetic of a prefill's drops, from per-sample counts read once.

    ``kept[b][i]``: image tokens sample ``i`` holds after boundary ``b`` (``floor(N0 x ratio)``, or all
    it has when it has no query); ``length[b]``: the longest sample after it; ``drops[b]``: whether any
    sample loses a token there. A sample's queries can only merge, never appear, as tokens drop, so
    the query count at the input bounds every boundary's (``query_slots``).
    """

    real: list[int]
    n0: list[int]
    has_query: list[bool]
    query_slots: int
    width: int  # slots per sample at the input (n)
    input_ends_aligned: bool  # every sample's last input token is in the last slot (left padding or none)
    kept: list[list[int]] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    drops: list[bool] = field(default_factory=list)
    compacted: list[bool] = field(default_factory=list)  # per stage: :meth:`dropped_before`
    padded: list[bool] = field(default_factory=list)  # per stage: :meth:`has_padding`

    @classmethod
    def read(cls, seq: TokenSequence, queries: torch.Tensor, schedule: PDropConfig) -> "KeepPlan":
        counts = torch.stack([seq.attention_mask.sum(1), seq.image_mask.sum(1), queries.sum(1),
                              seq.attention_mask[:, -1].long()]).tolist()
        if seq.query_override is not None and bool((seq.query_override & seq.image_mask).any()):
            raise ValueError("pdrop_query_mask marks image tokens: queries must be text tokens (they are never dropped)")
        plan = cls(counts[0], counts[1], [q > 0 for q in counts[2]], max(max(counts[2], default=1), 1),
                   seq.attention_mask.shape[1], all(counts[3]))
        present = list(plan.n0)
        for ratio in schedule.image_token_ratio_list:
            kept = [min(kept_image_tokens(n0, ratio), p) if q else p
                    for n0, p, q in zip(plan.n0, present, plan.has_query)]
            plan.kept.append(kept)
            plan.length.append(max((r - n0 + k for r, n0, k in zip(plan.real, plan.n0, kept)), default=0))
            plan.drops.append(kept != present)
            present = kept
        plan.compacted = [any(plan.drops[:stage]) for stage in range(len(plan.drops) + 1)]
        plan.padded = [plan._padded(stage) for stage in range(len(plan.drops) + 1)]
        return plan

    def _padded(self, stage: int) -> bool:
        if not self.compacted[stage]:
            return min(self.real, default=0) < self.width
        kept = self.kept[stage - 1]
        return any(r - n0 + k != self.length[stage - 1] for r, n0, k in zip(self.real, self.n0, kept))

    def dropped_before(self, stage: int) -> bool:
        """Whether stage ``stage`` runs on compacted tokens (some sample dropped at an earlier boundary)."""
        return self.compacted[stage]

    def ends_in_last_slot(self, stage: int) -> bool:
        """Whether every sample's last token sits in the last slot in ``stage`` (inference compacts to the right)."""
        return self.input_ends_aligned or self.dropped_before(stage)

    def has_padding(self, stage: int) -> bool:
        """Whether some sample of stage ``stage`` is shorter than the batch's slots."""
        return self.padded[stage]

    def dense_at(self, boundary: int) -> bool:
        """Whether no sample has padding before or after boundary ``boundary`` (its compaction needs no masks)."""
        return not (self.padded[boundary] or self.padded[boundary + 1])

    def device_tensors(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sent to ``device`` in one copy: ``(S-1, B)`` image tokens kept and tokens kept after each
        boundary, and ``(S, B)`` position offsets (image tokens dropped before each stage)."""
        offsets = [[0] * len(self.n0)] + [[n0 - k for n0, k in zip(self.n0, kept)] for kept in self.kept]
        lengths = [[r - n0 + k for r, n0, k in zip(self.real, self.n0, kept)] for kept in self.kept]
        rows = torch.tensor(self.kept + lengths + offsets, dtype=torch.long, device=device).view(-1, len(self.n0))
        boundaries = len(self.kept)
        return rows[:boundaries], rows[boundaries:2 * boundaries], rows[2 * boundaries:]


def pdrop_decoder_forward(decoder: nn.Module, schedule: PDropConfig, inputs_embeds: torch.Tensor,
                          image_mask: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          position_ids: torch.Tensor | None = None, past_key_values: Cache | None = None,
                          use_cache: bool = False, labels: torch.Tensor | None = None,
                          query_mask: torch.Tensor | None = None, trace: bool = True, compile_ranking: bool = False,
                          **kwargs) -> PDropDecoderOutput:
    """Run ``decoder`` (a ``LlamaModel``-like module) stage by stage with PyramidDrop.

    Args:
        inputs_embeds: ``(B, n, d)`` merged text + image embeddings.
        image_mask: ``(B, n)`` bool, True at image tokens (one pool per sample).
        attention_mask: ``(B, past + n)`` 2D padding mask or None; 4D masks are refused.
        position_ids: ``(B or 1, n)`` or None (then ``past + arange(n)`` as the stock model).
        past_key_values: a :class:`PDropCache` (empty: this is a prefill) or None (one is made if ``use_cache``).
        labels: ``(B, n)`` unshifted labels; given labels select the training queries and come back
            dropped in sync with the hidden states.
        query_mask: ``(B, n)`` bool, explicit query tokens (overrides the labels/last-token rule).
        trace: keep a :class:`DropTrace` of the prefill (costs one gather per boundary).
        compile_ranking: score with :func:`~llava.pdrop.ranking.compiled_query_attention` (refused under ZeRO-3).
    """
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("PyramidDrop needs a 2D attention_mask (batch, sequence); got a 4D mask")
    if past_key_values is not None and not isinstance(past_key_values, PDropCache):
        what = ("holds tokens but was not filled by a PyramidDrop prefill" if past_key_values.get_seq_length()
                else "cannot hold PyramidDrop's stages")
        raise ValueError(f"past_key_values of type {type(past_key_values).__name__} {what}: pass a PDropCache "
                         "(model.generate makes one) or None")
    if use_cache and past_key_values is None:
        past_key_values = PDropCache(config=decoder.config)
    past = 0 if past_key_values is None else past_key_values.get_seq_length()
    batch, n, _ = inputs_embeds.shape
    check_window_not_binding(past_key_values.window if past else sliding_window(decoder.config), past + n)
    default_positions = position_ids is None
    if default_positions:
        position_ids = torch.arange(past, past + n, device=inputs_embeds.device)[None]
    position_ids = position_ids.expand(batch, -1)
    if past > 0:
        hidden = decode_step(decoder, schedule, inputs_embeds, attention_mask, position_ids, past_key_values,
                             use_cache=use_cache, **kwargs)
        return PDropDecoderOutput(decoder.norm(hidden), past_key_values, labels, None)
    seq = _initial_sequence(inputs_embeds, attention_mask, position_ids, image_mask, labels, query_mask, trace,
                            positions_are_arange=default_positions)  # past == 0 here: 0..n-1
    seq, drop_trace = prefill(decoder, schedule, seq, attention_mask, position_ids, past_key_values,
                              compile_ranking=compile_ranking, use_cache=use_cache, **kwargs)
    return PDropDecoderOutput(decoder.norm(seq.hidden_states), past_key_values, seq.labels, drop_trace)


def prefill(decoder: nn.Module, schedule: PDropConfig, seq: TokenSequence, attention_mask, position_ids,
            cache: PDropCache | None, compile_ranking: bool = False,
            **layer_kwargs) -> tuple[TokenSequence, DropTrace | None]:
    """The prompt through every stage, dropping at each boundary; fills ``cache``'s stage state."""
    stages = schedule.stage_layers(decoder.config.num_hidden_layers)
    training = seq.labels is not None
    inference = seq.labels is None and seq.query_override is None  # one query per sample: its last token
    plan = KeepPlan.read(seq, seq.attention_mask.any(dim=1, keepdim=True) if inference else _queries(seq), schedule)
    keep_counts, lengths, offsets = plan.device_tensors(seq.hidden_states.device)
    content_keys = (random_keys(seq.hidden_states, seq.attention_mask & ~seq.image_mask)
                    if schedule.method == "random" else None)
    trace = DropTrace(seq.image_mask) if seq.source_index is not None else None
    if cache is not None:
        cache.reset_stages(stages, offsets if schedule.position_mode == "compact" else None,
                           sliding_window(decoder.config), schedule)
    stage_input = rotary = first = None
    ranking_rotary = _RankingRotary()
    # ZeRO-3: every rank calls the rotary module at every stage (whether a batch can slice stage 0's is per rank)
    slice_rotary = not partitioned_by_zero3(decoder)
    # no gradient asked for: the ranking runs in inference mode (less work per operator call); not under
    # ZeRO-3, whose parameter gathers in the ranking's module calls must stay ordinary tensors
    inference_mode = slice_rotary and not torch.is_grad_enabled()
    if compile_ranking and not slice_rotary:
        raise ValueError("pdrop_compile_ranking is not supported under DeepSpeed ZeRO-3 (its parameter gathers in "
                         "module hooks do not compile): turn it off")
    for s, layers in enumerate(stages):
        if s > 0:
            ranking = _Ranking(decoder.layers, layers.start, schedule, stage_input, rotary, content_keys,
                               ranking_rotary, _slices_first_rotary(seq, plan, s - 1, slice_rotary), inference_mode,
                               compile_ranking)
            seq = drop_at_boundary(ranking, seq, plan, s - 1, keep_counts[s - 1], lengths[s - 1],
                                   align_right=not training)
            if cache is not None:
                cache.stage_states.append(StageCacheState(seq.attention_mask if plan.has_padding(s) else None))
        if trace is not None:
            trace.record(seq)
        causal_mask, rotary, positions = _stage_inputs(decoder, seq, plan, s, layers, attention_mask, position_ids,
                                                       cache, first, slice_rotary)
        first = first or (causal_mask, rotary)
        # after a drop the positions may have gaps; FlashAttention would read them as packed sequences
        seq.hidden_states, stage_input = run_stage(decoder, layers, seq.hidden_states, causal_mask, rotary, positions,
                                                   cache, keep_input=schedule.method == "fastv", **layer_kwargs)
    return seq, trace


def _stage_inputs(decoder: nn.Module, seq: TokenSequence, plan: KeepPlan, stage: int, layers: range,
                  attention_mask, position_ids, cache, first, slice_rotary: bool) -> tuple:
    """Stage ``stage``'s causal mask, rotary embedding and the position ids its layers are given (None after
    a drop). ``first``: stage 0's mask and rotary embedding, reused where they are the same (as views);
    ``slice_rotary`` False: the rotary module is called again at every stage (ZeRO-3)."""
    compacted, padded = plan.dropped_before(stage), plan.has_padding(stage)
    if not compacted:
        mask, positions = attention_mask, position_ids
    else:  # a mask only where padding is (known here): no device read in the mask builder
        mask, positions = (seq.attention_mask if padded else None), seq.position_ids
    m = seq.hidden_states.shape[1]
    if _slices_first_rotary(seq, plan, stage, slice_rotary):
        rotary = tuple(t[:, :m] for t in first[1])
    else:
        rotary = decoder.rotary_emb(seq.hidden_states, position_ids=positions)
    if compacted and not padded and first[0] is None:
        causal_mask = None  # the builder left stage 0's unpadded causal mask to the kernel: the same now
    else:  # with padding the builder's check for an implicit causal mask can only fail: skip its device reads
        causal_mask = create_causal_mask(config=decoder.config, inputs_embeds=seq.hidden_states, attention_mask=mask,
                                         past_key_values=cache, position_ids=None if compacted else positions,
                                         layer_idx=layers.start, allow_is_causal_skip=not padded)
    return causal_mask, rotary, None if compacted else positions


def _slices_first_rotary(seq: TokenSequence, plan: KeepPlan, stage: int, slice_rotary: bool) -> bool:
    """Whether stage ``stage``'s rotary embedding is stage 0's first rows: its positions are ``0..m-1`` after a drop."""
    return slice_rotary and seq.positions_are_arange and plan.dropped_before(stage)


def decode_step(decoder: nn.Module, schedule: PDropConfig, inputs_embeds: torch.Tensor, attention_mask,
                position_ids: torch.Tensor, cache: PDropCache, **layer_kwargs) -> torch.Tensor:
    """New tokens (text) through every stage against its cache; returns the last hidden states ``(B, t, d)``.

    Everything static (the stages, the window) comes from the cache, set by the prefill.
    """
    if cache.schedule is not schedule and cache.schedule != schedule:
        raise ValueError("past_key_values holds tokens but was not filled by a PyramidDrop prefill with this schedule "
                         f"(its prefill ran {cache.schedule})")
    inputs = decode_stage_inputs(decoder, cache, inputs_embeds, attention_mask, position_ids)
    hidden = inputs_embeds
    for s, (layers, (causal_mask, rotary, positions)) in enumerate(zip(cache.stages, inputs)):
        hidden, _ = run_stage(decoder, layers, hidden, causal_mask, rotary, None if s else positions, cache,
                              **layer_kwargs)
    return hidden


def run_stage(decoder: nn.Module, layers: range, hidden: torch.Tensor, causal_mask, rotary, position_ids,
              cache: Cache | None, keep_input: bool = False, **layer_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``hidden`` ``(B, m, d)`` through ``decoder.layers[layers]``; also the last layer's input if ``keep_input``."""
    last_input = None
    for index in layers:  # indexing, not slicing: a slice of a ModuleList builds a new ModuleList
        layer = decoder.layers[index]
        if keep_input:
            last_input = hidden
        hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=rotary, position_ids=position_ids,
                       past_key_values=cache, **layer_kwargs)
    return hidden, last_input


@dataclass
class _Ranking:
    """Scores image tokens at a boundary by the schedule's method (see ``PDropConfig.method``)."""

    layers: nn.ModuleList
    next_index: int  # the first layer of the next stage
    schedule: PDropConfig
    stage_input: torch.Tensor | None  # FastV: (B, m, d) what the previous layer (next_index - 1) received
    rotary: tuple[torch.Tensor, torch.Tensor]  # the stage's (cos, sin)
    content_keys: torch.Tensor | None  # random: (B,) per-sample keys
    ranking_rotary: "_RankingRotary"  # the prefill's rotary tables
    first_rows: bool  # the stage's rotary embedding is stage 0's first rows (positions 0..m-1)
    inference_mode: bool  # score in torch.inference_mode (no gradient anywhere, no ZeRO-3)
    compiled: bool  # score with the compiled query attention

    def rotary_tables(self, length: int) -> RotaryTables:
        return self.ranking_rotary.first.head(length) if self.first_rows else self.ranking_rotary.make(self.rotary)

    def scores(self, seq: TokenSequence, plan: "KeepPlan", boundary: int) -> torch.Tensor:
        """``(B, m)`` float32, non-negative, higher = kept first."""
        if not self.inference_mode:
            return self._scores(seq, plan, boundary)
        with torch.inference_mode():  # the scores are an inference tensor: only read (sorted), never saved
            return self._scores(seq, plan, boundary)

    def _scores(self, seq: TokenSequence, plan: "KeepPlan", boundary: int) -> torch.Tensor:
        if self.schedule.method == "random":
            return random_scores(self.content_keys, seq.attention_mask, self.schedule.seed, boundary)
        if self.schedule.method == "fastv":
            layer, hidden = self.layers[self.next_index - 1], self.stage_input
        else:
            layer, hidden = self.layers[self.next_index], seq.hidden_states
        key_mask = seq.attention_mask if plan.has_padding(boundary) else None
        if seq.labels is None and seq.query_override is None:  # inference: each sample's last token asks
            index = None if plan.ends_in_last_slot(boundary) else query_slots(inference_query_mask(seq.attention_mask), 1)[0]
            return image_token_scores(layer, hidden, self.rotary_tables(hidden.shape[1]), key_mask, index, None,
                                      causal=False, compiled=self.compiled)
        index, valid = query_slots(_queries(seq), plan.query_slots)
        return image_token_scores(layer, hidden, self.rotary_tables(hidden.shape[1]), key_mask, index, valid,
                                  compiled=self.compiled)


@dataclass
class _RankingRotary:
    """The rotary tables of a prefill's rankings: stage 0's are made by the first boundary (inside its
    ``pdrop/rank`` range) and kept, so that later stages whose positions are ``0..m-1`` slice them."""

    first: RotaryTables | None = None

    def make(self, rotary: tuple[torch.Tensor, torch.Tensor]) -> RotaryTables:
        tables = RotaryTables.of(rotary)
        if self.first is None:
            self.first = tables
        return tables


def drop_at_boundary(ranking: _Ranking, seq: TokenSequence, plan: KeepPlan, boundary: int, keep_counts: torch.Tensor,
                     lengths: torch.Tensor, align_right: bool) -> TokenSequence:
    """Rank and drop at one boundary (``keep_counts``, ``lengths``: ``(B,)`` image tokens and tokens each sample
    keeps, ``plan``'s numbers on the device)."""
    # Ranked even when nothing is dropped (e.g. a text-only batch): under ZeRO-3 every rank must call
    # the same modules in the same order, since each call gathers that module's parameters.
    with profiled("pdrop/rank"):
        scores = ranking.scores(seq, plan, boundary)
    if not plan.drops[boundary]:
        return seq
    with profiled("pdrop/compact"):
        if plan.dense_at(boundary):  # no padding before or after: one sort chooses, one orders
            index = dense_keep_index(scores, seq.image_mask, plan.length[boundary])
            return seq.compact_dense(index, ranking.schedule.position_mode)
        uniform = len(set(plan.kept[boundary])) == 1  # every sample keeps the same count: no per-sample cut
        kept = select_image_tokens(scores, seq.image_mask, None if uniform else keep_counts, max(plan.kept[boundary]))
        return seq.compact(~seq.image_mask | kept, ranking.schedule.position_mode, align_right, plan.length[boundary],
                           lengths)


def _queries(seq: TokenSequence) -> torch.Tensor:
    """``(B, n)`` bool query tokens: the caller's, the tokens before answers (training), else the last token."""
    if seq.query_override is not None:
        return seq.query_override
    if seq.labels is not None:
        return training_query_mask(seq.labels) & seq.attention_mask
    return inference_query_mask(seq.attention_mask)


def _initial_sequence(inputs_embeds, attention_mask, position_ids, image_mask, labels, query_mask,
                      trace: bool, positions_are_arange: bool) -> TokenSequence:
    batch, n, _ = inputs_embeds.shape
    real = torch.ones(batch, n, dtype=torch.bool, device=inputs_embeds.device) if attention_mask is None \
        else attention_mask[:, -n:].bool()
    source = torch.arange(n, device=inputs_embeds.device).expand(batch, -1).masked_fill(~real, -1) if trace else None
    return TokenSequence(
        hidden_states=inputs_embeds,
        attention_mask=real,
        position_ids=position_ids,
        image_mask=image_mask & real,
        source_index=source,
        labels=labels,
        query_override=None if query_mask is None else query_mask.bool() & real,
        positions_are_arange=positions_are_arange,
    )
