"""Choosing the image tokens to keep and compacting the batch, vectorised over samples.

Shapes: ``B`` batch, ``n`` current length, ``m`` length after the drop (the longest sample).

After a drop every sample holds its real text tokens and its kept image tokens in their original
order; input padding is removed and each sample is re-padded to ``m``: on the left for inference
(so the last slot is every sample's last token, where generation reads the logits and appends),
on the right for training. :class:`TokenSequence` carries every per-token tensor through the
drops so that hidden states, masks, labels and positions never fall out of sync.

The callers know ``m`` and the keep counts on the host (see ``decoder.KeepPlan``), so nothing here
reads a device value back; the optional arguments fall back to reading them for direct use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .ranking import IGNORE_INDEX, gather_tokens


def select_image_tokens(scores: torch.Tensor, image_mask: torch.Tensor, keep_counts: torch.Tensor | None,
                        max_keep: int | None = None) -> torch.Tensor:
    """The ``keep_counts[b]`` highest-scoring image tokens of each sample.

    Args:
        scores: ``(B, n)`` float, non-negative (attention weights or uniform draws).
        image_mask: ``(B, n)`` bool; keep_counts: ``(B,)`` long, each at most the sample's image tokens,
            or None: every sample keeps ``max_keep``, which none exceeds.
        max_keep: ``keep_counts.max()`` if the caller knows it (read from the tensor when None).
    Returns:
        ``(B, n)`` bool, True at kept image tokens. Ties go to the earlier token: the score's float32
        bits (order-preserving for non-negative floats) and the reversed position form one integer key.
    """
    batch, n = scores.shape
    if max_keep is None:
        max_keep = int(keep_counts.max()) if batch else 0
    max_keep = min(max_keep, n)
    if max_keep == 0:
        return torch.zeros_like(image_mask)
    bits = scores.float().contiguous().view(torch.int32).long()
    later_first = torch.arange(n - 1, -1, -1, device=scores.device)
    key = torch.where(image_mask, bits * n + later_first, -1)
    top = key.topk(max_keep, dim=1).indices  # (B, max_keep), best first
    if keep_counts is None:
        return torch.zeros_like(image_mask).scatter_(1, top, True)
    chosen = torch.arange(max_keep, device=scores.device) < keep_counts[:, None]
    return torch.zeros_like(image_mask).scatter_(1, top, chosen) & image_mask


def dense_keep_index(scores: torch.Tensor, image_mask: torch.Tensor, length: int) -> torch.Tensor:
    """The tokens kept when no sample has padding and every sample keeps ``length`` tokens, in one pass.

    Each sample keeps its text tokens and its ``length - text`` highest-scoring image tokens, the set
    :func:`select_image_tokens` chooses (ties to the earlier token: a stable sort), so
    :meth:`TokenSequence.compact_dense` gives what :meth:`TokenSequence.compact` would, with fewer steps.

    Args:
        scores: ``(B, n)`` float, non-negative; image_mask: ``(B, n)`` bool; length: ``m``.
    Returns:
        ``(B, m)`` long: the kept input positions in increasing order.
    """
    key = torch.where(image_mask, scores.float(), float("inf"))  # text first, then image tokens best first
    best = key.sort(dim=1, descending=True, stable=True).indices[:, :length]
    return best.sort(dim=1).values


def compaction_index(keep: torch.Tensor, align_right: bool, length: int | None = None,
                     counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each slot of the compacted batch comes from.

    Args:
        keep: ``(B, n)`` bool, tokens that survive (in order).
        align_right: put the padding on the left (inference) instead of the right (training).
        length: ``m``, the most tokens any sample keeps, and ``counts`` ``(B,)`` the tokens each keeps, if
            the caller knows them (read from ``keep`` when None).
    Returns:
        ``index`` ``(B, m)`` long source positions (0 in padding slots) and ``valid`` ``(B, m)`` bool.
    """
    batch, n = keep.shape
    counts = keep.sum(dim=1) if counts is None else counts
    m = (int(counts.max()) if batch else 0) if length is None else length
    dest = keep.cumsum(dim=1) - 1
    if align_right:
        dest = dest + (m - counts)[:, None]
    dest = torch.where(keep, dest, m)  # dropped tokens go to a scratch column
    source = torch.arange(n, device=keep.device).expand(batch, -1)
    index = keep.new_zeros(batch, m + 1, dtype=torch.long).scatter_(1, dest, source)
    valid = keep.new_zeros(batch, m + 1).scatter_(1, dest, keep)
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
        source_index: ``(B, n)`` long, the input position of each token (-1 in padding slots), or
            None when no trace is kept (it is only read by :class:`~llava.pdrop.decoder.DropTrace`).
        labels: ``(B, n)`` long or None (training).
        query_override: ``(B, n)`` bool or None, explicit query tokens given by the caller.
        positions_are_arange: ``position_ids`` is ``0..n-1`` in every row (known on the host: the
            default positions of a prompt, kept by dense drops in ``compact`` mode).
    """

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    image_mask: torch.Tensor
    source_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    query_override: torch.Tensor | None = None
    positions_are_arange: bool = False

    def compact(self, keep: torch.Tensor, position_mode: str, align_right: bool, length: int | None = None,
                counts: torch.Tensor | None = None) -> "TokenSequence":
        """Keep the tokens in ``keep`` ``(B, n)`` (padding is never kept), re-padded to ``length`` slots
        (``counts`` ``(B,)``: the tokens each sample keeps, when known; see :func:`compaction_index`).

        In ``compact`` mode a kept token's position drops by the number of tokens removed before it,
        which renumbers a sample's tokens 0..k-1 when its input positions were 0..n-1. Padding slots
        hold a copy of some real token's hidden state: they are masked everywhere they are read.
        """
        keep = keep & self.attention_mask
        index, valid = compaction_index(keep, align_right, length, counts)
        positions = self.position_ids
        if position_mode == "compact":
            dropped = (self.attention_mask & ~keep).long()
            positions = positions - (dropped.cumsum(dim=1) - dropped)
        labels = _take(self.labels, index)
        return replace(
            self,
            hidden_states=_take(self.hidden_states, index),
            attention_mask=valid,
            position_ids=_take(positions, index).masked_fill(~valid, 0),
            image_mask=_take(self.image_mask, index) & valid,
            source_index=None if self.source_index is None else _take(self.source_index, index).masked_fill(~valid, -1),
            labels=None if labels is None else labels.masked_fill(~valid, IGNORE_INDEX),
            query_override=None if self.query_override is None else _take(self.query_override, index) & valid,
            positions_are_arange=False,
        )

    def compact_dense(self, index: torch.Tensor, position_mode: str) -> "TokenSequence":
        """:meth:`compact` when no sample has padding before or after the drop: keep the input positions
        ``index`` ``(B, m)`` (increasing, from :func:`dense_keep_index`). Every slot is real, so the masks
        need no work; the result is the same.

        In ``compact`` mode the token in slot ``j``, from input slot ``i``, had ``i - j`` tokens removed
        before it; positions ``0..n-1`` become ``0..m-1`` (a view).
        """
        m = index.shape[1]
        positions = self.position_ids
        if position_mode != "compact":
            positions = _take(positions, index)
        elif not self.positions_are_arange:
            positions = _take(positions, index) - index + torch.arange(m, device=index.device)
        else:
            positions = positions[:, :m]
        return TokenSequence(  # built directly, not by dataclasses.replace: this runs once per boundary
            hidden_states=_take(self.hidden_states, index),
            attention_mask=self.attention_mask[:, :m],  # all True, as before
            position_ids=positions,
            image_mask=_take(self.image_mask, index),
            source_index=_take(self.source_index, index),
            labels=_take(self.labels, index),
            query_override=_take(self.query_override, index),
            positions_are_arange=self.positions_are_arange and position_mode == "compact",
        )
