"""Choosing the image tokens to keep and compacting the batch, vectorised over samples.

Shapes: ``B`` batch, ``n`` current length, ``m`` length after the drop (the longest sample).

After a drop every sample holds its real text tokens and its kept image tokens in their original
order; input padding is removed and each sample is re-padded to ``m``: on the left for inference
(so the last slot is every sample's last token, where generation reads the logits and appends),
on the right for training. :class:`TokenSequence` carries every per-token tensor through the
drops so that hidden states, masks, labels and positions never fall out of sync.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .ranking import IGNORE_INDEX, gather_tokens


def select_image_tokens(scores: torch.Tensor, image_mask: torch.Tensor, keep_counts: torch.Tensor) -> torch.Tensor:
    """The ``keep_counts[b]`` highest-scoring image tokens of each sample.

    Args:
        scores: ``(B, n)`` float; image_mask: ``(B, n)`` bool; keep_counts: ``(B,)`` long.
    Returns:
        ``(B, n)`` bool, True at kept image tokens. Ties go to the earlier token.
    """
    ranked = torch.where(image_mask, scores.float(), float("-inf"))
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return image_mask & (rank < keep_counts[:, None])


def compaction_index(keep: torch.Tensor, align_right: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each slot of the compacted batch comes from.

    Args:
        keep: ``(B, n)`` bool, tokens that survive (in order).
        align_right: put the padding on the left (inference) instead of the right (training).
    Returns:
        ``index`` ``(B, m)`` long source positions (0 in padding slots) and ``valid`` ``(B, m)`` bool.
    """
    batch, n = keep.shape
    counts = keep.sum(dim=1)
    m = int(counts.max()) if batch else 0
    dest = keep.long().cumsum(dim=1) - 1
    if align_right:
        dest = dest + (m - counts)[:, None]
    dest = torch.where(keep, dest, m)  # dropped tokens go to a scratch column
    source = torch.arange(n, device=keep.device).expand(batch, -1)
    index = torch.zeros(batch, m + 1, dtype=torch.long, device=keep.device).scatter_(1, dest, source)
    valid = torch.zeros(batch, m + 1, dtype=torch.bool, device=keep.device).scatter_(1, dest, keep)
    return index[:, :m], valid[:, :m]


def _take(x: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else gather_tokens(x, index)


@dataclass
class TokenSequence:
    """The per-token state of a batch inside the language model during a prefill.

    Attributes (all ``(B, n, ...)`` over the current tokens):
        hidden_states: ``(B, n, d)``.
        attention_mask: ``(B, n)`` bool, True at real tokens.
        position_ids: ``(B, n)`` long, the position ids the current stage uses.
        image_mask: ``(B, n)`` bool, True at image tokens still present.
        source_index: ``(B, n)`` long, the input position of each token (-1 in padding slots).
        labels: ``(B, n)`` long or None (training).
        query_override: ``(B, n)`` bool or None, explicit query tokens given by the caller.
    """

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    image_mask: torch.Tensor
    source_index: torch.Tensor
    labels: torch.Tensor | None = None
    query_override: torch.Tensor | None = None

    def compact(self, keep: torch.Tensor, position_mode: str, align_right: bool) -> tuple["TokenSequence", torch.Tensor]:
        """Keep the tokens in ``keep`` ``(B, n)`` (padding is never kept), re-padded to the longest sample.

        Returns the new sequence and the number of image tokens each sample dropped ``(B,)``.
        In ``compact`` mode a kept token's position drops by the number of tokens removed before it,
        which renumbers a sample's tokens 0..k-1 when its input positions were 0..n-1.
        """
        keep = keep & self.attention_mask
        dropped = self.attention_mask & ~keep
        index, valid = compaction_index(keep, align_right)
        positions = self.position_ids
        if position_mode == "compact":
            positions = positions - (dropped.long().cumsum(dim=1) - dropped.long())
        labels = _take(self.labels, index)
        new = replace(
            self,
            hidden_states=_take(self.hidden_states, index) * valid[..., None].to(self.hidden_states.dtype),
            attention_mask=valid,
            position_ids=torch.where(valid, _take(positions, index), 0),
            image_mask=_take(self.image_mask, index) & valid,
            source_index=torch.where(valid, _take(self.source_index, index), -1),
            labels=None if labels is None else torch.where(valid, labels, IGNORE_INDEX),
            query_override=None if self.query_override is None else _take(self.query_override, index) & valid,
        )
        return new, (dropped & self.image_mask).sum(dim=1)
