"""``PDropCache``: a ``DynamicCache`` whose layers hold different tokens per stage, and what a decode step reads from it.

The cache of a layer in stage ``s`` holds the tokens kept in stage ``s``; stage 0 holds the whole
prompt, so ``get_seq_length()`` (layer 0) is the prompt length that ``generate`` expects. Next to the
key/value tensors it keeps, for every stage ``s >= 1``, what a decode step needs to extend it:

* ``attention_mask`` ``(B, kv_len_s)`` bool: which cache slots are real (compaction pads samples),
  plus ``has_padding``, the same fact known on the host (no device read per step);
* ``position_offsets`` ``(S, B)`` long: subtracted from the stage-0 position of a new token
  (image tokens dropped so far in ``compact`` mode; row 0 and ``original`` mode: 0).

A decode step builds every stage's attention mask from those columns and every stage's rotary
embedding in one call (:func:`decode_stage_inputs`), instead of running transformers' mask builder
and the rotary module once per stage. Batch re-indexing (beam search, contrastive search) applies
to that state too; cropping is refused because a cut measured on layer 0 means different tokens in
later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

FAST_MASK_KERNELS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class StageCacheState:
    attention_mask: torch.Tensor  # (B, kv_len) bool
    has_padding: bool  # some slot of attention_mask is False (known on the host)

    def select(self, index: torch.Tensor) -> None:
        """Rows ``index`` of the batch (a selection of padding-free rows is padding-free)."""
        self.attention_mask = self.attention_mask.index_select(0, index.to(self.attention_mask.device))


class PDropCache(DynamicCache):
    """Dynamic KV cache plus the per-stage state of a PyramidDrop prefill (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stage_states: list[StageCacheState] = []
        self.position_offsets: torch.Tensor | None = None  # (S, B) long, None in "original" mode

    def reset(self) -> None:
        super().reset()
        self.stage_states, self.position_offsets = [], None

    def _select_stage_state(self, index: torch.Tensor) -> None:
        for state in self.stage_states:
            state.select(index)
        if self.position_offsets is not None:
            self.position_offsets = self.position_offsets.index_select(1, index.to(self.position_offsets.device))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._select_stage_state(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._select_stage_state(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        batch = self.stage_states[0].attention_mask.shape[0] if self.stage_states else 0
        self._select_stage_state(torch.arange(batch).repeat_interleave(repeats))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError(
            "PDropCache cannot be cropped: its later stages hold fewer tokens than layer 0, so a length "
            "measured on layer 0 names different tokens there (assisted/speculative decoding is not supported "
            "with PyramidDrop)"
        )


def decode_stage_inputs(decoder, cache: PDropCache, stage_starts: list[int], inputs_embeds: torch.Tensor,
                        attention_mask: torch.Tensor | None, position_ids: torch.Tensor) -> list[tuple]:
    """Per stage, ``(causal_mask, (cos, sin), position_ids)`` of one decode step; extends the stage masks.

    Args:
        stage_starts: the first layer of every stage (stage 0 first).
        inputs_embeds: ``(B, t, d)`` the new tokens; attention_mask: ``(B, past + t)`` or None.
        position_ids: ``(B, t)`` stage-0 positions of the new tokens.
    """
    batch, t = inputs_embeds.shape[:2]
    new_columns = (torch.ones(batch, t, dtype=torch.bool, device=inputs_embeds.device) if attention_mask is None
                   else attention_mask[:, -t:].bool())
    for state in cache.stage_states:
        state.attention_mask = torch.cat([state.attention_mask, new_columns], dim=1)
    masks = _stage_masks(decoder.config, cache, stage_starts, inputs_embeds, attention_mask, position_ids, new_columns)
    positions = [position_ids] * len(stage_starts)
    if cache.position_offsets is None:
        embeddings = [decoder.rotary_emb(inputs_embeds, position_ids)] * len(stage_starts)
    else:  # one rotary call for every stage's shifted positions
        shifted = position_ids[None] - cache.position_offsets[:, :, None]  # (S, B, t)
        cos, sin = decoder.rotary_emb(inputs_embeds, shifted.reshape(-1, t))
        embeddings = list(zip(cos.split(batch), sin.split(batch)))
        positions = list(shifted)
    return list(zip(masks, embeddings, positions))


def _stage_masks(config, cache, stage_starts, inputs_embeds, attention_mask, position_ids, new_columns) -> list:
    """The attention-kernel masks of every stage for a decode step (transformers' builder as the fallback)."""
    t = inputs_embeds.shape[1]
    kernel = config._attn_implementation
    past = cache.get_seq_length(0)
    if t != 1 or kernel not in FAST_MASK_KERNELS or (attention_mask is not None and attention_mask.shape[1] != past + t):
        stage0 = [create_causal_mask(config, inputs_embeds, attention_mask, cache, position_ids, layer_idx=0)]
        return stage0 + [create_causal_mask(config, inputs_embeds, state.attention_mask, cache, None, layer_idx=start)
                         for state, start in zip(cache.stage_states, stage_starts[1:])]
    # One token against its whole cache: every real slot is visible, so a mask is the padding columns.
    stage0 = new_columns.new_ones(new_columns.shape[0], past + t) if attention_mask is None else attention_mask.bool()
    full = [stage0] + [state.attention_mask for state in cache.stage_states]
    padded = [state.has_padding for state in cache.stage_states]
    if kernel != "eager" and attention_mask is not None:  # one device read per step, as transformers' builder
        stage0_real, new_real = torch.stack([stage0.all(), new_columns.all()]).tolist()
        padded = [not stage0_real] + [p or not new_real for p in padded]
        for state, p in zip(cache.stage_states, padded[1:]):
            state.has_padding = p
    else:
        padded = [attention_mask is not None] + padded
    return [_kernel_mask(kernel, mask, p, inputs_embeds.dtype) for mask, p in zip(full, padded)]


def _kernel_mask(kernel: str, mask: torch.Tensor, padded: bool, dtype: torch.dtype):
    """``mask`` ``(B, kv)`` bool as transformers' mask builder gives it to ``kernel`` for one query token."""
    if kernel == "eager":
        return torch.where(mask[:, None, None, :], torch.zeros((), dtype=dtype, device=mask.device),
                           torch.finfo(dtype).min)
    if not padded:
        return None
    return mask[:, None, None, :] if kernel == "sdpa" else mask
