"""``PDropCache``: a ``DynamicCache`` whose layers hold different tokens per stage.

The cache of a layer in stage ``s`` holds the tokens kept in stage ``s``; stage 0 holds the whole
prompt, so ``get_seq_length()`` (layer 0) is the prompt length that ``generate`` expects. Next to the
key/value tensors, each stage ``s >= 1`` remembers what a decode step needs to extend it:

* ``attention_mask`` ``(B, kv_len_s)`` bool: which cache slots are real (compaction pads samples);
* ``position_offset`` ``(B,)`` long: subtracted from the stage-0 position of a new token
  (image tokens dropped so far in ``compact`` mode, 0 in ``original`` mode).

Batch re-indexing (beam search, contrastive search) is applied to that state as well; cropping is
refused because a cut measured on layer 0 means different tokens in later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class StageCacheState:
    attention_mask: torch.Tensor  # (B, kv_len) bool
    position_offset: torch.Tensor  # (B,) long

    def select(self, index: torch.Tensor) -> None:
        self.attention_mask = self.attention_mask.index_select(0, index.to(self.attention_mask.device))
        self.position_offset = self.position_offset.index_select(0, index.to(self.position_offset.device))


class PDropCache(DynamicCache):
    """Dynamic KV cache plus the per-stage state of a PyramidDrop prefill (see module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stage_states: list[StageCacheState] = []

    def reset(self) -> None:
        super().reset()
        self.stage_states = []

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        for state in self.stage_states:
            state.select(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        for state in self.stage_states:
            state.select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        for state in self.stage_states:
            state.select(torch.arange(state.position_offset.shape[0]).repeat_interleave(repeats))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError(
            "PDropCache cannot be cropped: its later stages hold fewer tokens than layer 0, so a length "
            "measured on layer 0 names different tokens there (assisted/speculative decoding is not supported "
            "with PyramidDrop)"
        )
