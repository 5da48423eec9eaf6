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
    """What a decode step needs to extend one later stage: which of its cache slots are real.

    ``attention_mask`` ``(B, kv_len)`` bool, or None while every slot is real (the host knows it from
    the prefill's counts), so that a batch without padding builds no mask at all.
    """

    attention_mask: torch.Tensor | None

    def extend(self, new_columns: torch.Tensor, new_real: bool, kv_length) -> torch.Tensor | None:
        """Append the new tokens' columns ``(B, t)`` and return the mask (None while every slot is real);
        ``kv_length()`` gives the stage's cache length before them, read only to materialise the mask."""
        if self.attention_mask is None and new_real:
            return None
        if self.attention_mask is None:
            self.attention_mask = new_columns.new_ones(new_columns.shape[0], kv_length())
        self.attention_mask = torch.cat([self.attention_mask, new_columns], dim=1)
        return self.attention_mask


class PDropCache(DynamicCache):
    """Dynamic KV cache plus the per-stage state of a PyramidDrop prefill (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reset_stages()

    def reset_stages(self, stages: list[range] | None = None, position_offsets: torch.Tensor | None = None,
                     window: int | None = None, schedule=None) -> None:
        """Start a prefill: its stages (layer ranges), offsets ``(S, B)`` (None in ``original`` mode), the
        decoder's sliding window, and the schedule it runs (a decode step must use the same)."""
        self.stages, self.position_offsets, self.window, self.schedule = stages or [], position_offsets, window, schedule
        self.stage_states: list[StageCacheState] = []

    def reset(self) -> None:
        super().reset()
        self.reset_stages()

    def _map_batch(self, fn) -> None:
        """Apply ``fn(tensor, batch_dim)`` to the stage state, as the parent class does to keys and values."""
        for state in self.stage_states:
            if state.attention_mask is not None:
                state.attention_mask = fn(state.attention_mask, 0)
        if self.position_offsets is not None:
            self.position_offsets = fn(self.position_offsets, 1)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_batch(lambda t, dim: t.index_select(dim, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_batch(lambda t, dim: t.index_select(dim, indices.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_batch(lambda t, dim: t.repeat_interleave(repeats, dim=dim))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError(
            "PDropCache cannot be cropped: its later stages hold fewer tokens than layer 0, so a length "
            "measured on layer 0 names different tokens there (assisted/speculative decoding is not supported "
            "with PyramidDrop)"
        )


def decode_stage_inputs(decoder, cache: PDropCache, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                        position_ids: torch.Tensor) -> list[tuple]:
    """Per stage, ``(causal_mask, (cos, sin), position_ids)`` of one decode step; extends the stage masks.

    Args:
        inputs_embeds: ``(B, t, d)`` the new tokens; attention_mask: ``(B, past + t)`` or None.
        position_ids: ``(B, t)`` stage-0 positions of the new tokens.
    """
    batch, t = inputs_embeds.shape[:2]
    num_stages = len(cache.stages)
    masks = _stage_masks(decoder.config, cache, inputs_embeds, attention_mask, position_ids)
    if cache.position_offsets is None:
        return list(zip(masks, [decoder.rotary_emb(inputs_embeds, position_ids)] * num_stages, [position_ids] * num_stages))
    shifted = position_ids[None] - cache.position_offsets[:, :, None]  # (S, B, t): one rotary call for every stage
    cos, sin = decoder.rotary_emb(inputs_embeds, shifted.view(-1, t))
    return list(zip(masks, zip(cos.split(batch), sin.split(batch)), shifted.unbind()))


def _stage_masks(config, cache: PDropCache, inputs_embeds, attention_mask, position_ids) -> list:
    """The attention-kernel masks of every stage for a decode step (transformers' builder as the fallback)."""
    batch, t = inputs_embeds.shape[:2]
    kernel = config._attn_implementation
    past = cache.get_seq_length(0)
    new_columns = (attention_mask[:, -t:].bool() if attention_mask is not None
                   else inputs_embeds.new_ones(batch, t, dtype=torch.bool))
    fast = t == 1 and kernel in FAST_MASK_KERNELS and (attention_mask is None or attention_mask.shape[1] == past + t)
    stage0_real = new_real = attention_mask is None
    if fast and attention_mask is not None and kernel != "eager":  # one device read per step, as transformers' builder
        stage0_real, new_real = torch.stack([attention_mask.bool().all(), new_columns.all()]).tolist()
    keep_none = new_real and fast and kernel != "eager"  # a stage without padding needs no mask at all
    later = [state.extend(new_columns, keep_none, lambda start=stage.start: cache.get_seq_length(start))
             for state, stage in zip(cache.stage_states, cache.stages[1:])]
    if not fast:
        return [create_causal_mask(config, inputs_embeds, attention_mask, cache, position_ids, layer_idx=0)] + [
            create_causal_mask(config, inputs_embeds, mask, cache, None, layer_idx=stage.start)
            for mask, stage in zip(later, cache.stages[1:])]
    # One token against its whole cache: every real slot is visible, so a mask is the padding columns.
    stage0 = None if stage0_real and kernel != "eager" else (
        attention_mask.bool() if attention_mask is not None else new_columns.new_ones(batch, past + t))
    return [_kernel_mask(kernel, mask, inputs_embeds.dtype) for mask in [stage0, *later]]


def _kernel_mask(kernel: str, mask: torch.Tensor | None, dtype: torch.dtype):
    """``mask`` ``(B, kv)`` bool (None: every slot real) as transformers' mask builder gives it to ``kernel``
    for one query token."""
    if mask is None:
        return None
    if kernel == "eager":
        return torch.where(mask[:, None, None, :], torch.zeros((), dtype=dtype, device=mask.device),
                           torch.finfo(dtype).min)
    return mask[:, None, None, :] if kernel == "sdpa" else mask
