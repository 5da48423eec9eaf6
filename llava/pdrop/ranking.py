"""Ranking image tokens at a stage boundary: the attention that the query tokens pay them.

Everything here is a plain tensor function; shapes use ``B`` batch, ``n`` current sequence length,
``Q`` query slots per sample (padded), ``H`` query heads, ``G`` key/value heads, ``D`` head dim.

The rule (``docs/pdrop-spec.md``): with the *next* decoder layer, ``x = input_layernorm(h)``,
``q = q_proj(x)`` at the query positions only, ``k = k_proj(x)`` everywhere, rotary embedding at the
current position ids, key heads repeated to the query heads; scores ``q k^T / sqrt(D)`` under the
causal and padding masks, softmax over keys in float32, mean over heads, mean over the query
positions. The attention kernel is never asked for weights, so any kernel works.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

IGNORE_INDEX = -100


def training_query_mask(labels: torch.Tensor) -> torch.Tensor:
    """Queries for training: the last token before each answer span.

    Args:
        labels: ``(B, n)`` unshifted labels, ``IGNORE_INDEX`` where no loss is taken.
    Returns:
        ``(B, n)`` bool, True at every ``t`` with ``labels[t] == -100`` and ``labels[t+1] != -100``.
    """
    ignored = labels == IGNORE_INDEX
    mask = torch.zeros_like(ignored)
    mask[:, :-1] = ignored[:, :-1] & ~ignored[:, 1:]
    return mask


def inference_query_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Query for inference: the last non-padding token of each sample.

    Args:
        attention_mask: ``(B, n)`` bool, True at real tokens.
    Returns:
        ``(B, n)`` bool with one True per sample that has a real token.
    """
    n = attention_mask.shape[1]
    positions = torch.arange(n, device=attention_mask.device).expand_as(attention_mask)
    last = torch.where(attention_mask, positions, -1).amax(dim=1)  # (B,)
    return positions == last[:, None]


def query_slots(query_mask: torch.Tensor, num_slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a boolean query mask into padded index slots, without sorting.

    Args:
        query_mask: ``(B, n)`` bool.
        num_slots: ``Q``, at least the most queries any sample has (read from the mask when None).
    Returns:
        ``index`` ``(B, Q)`` long positions of the queries in order (0 in empty slots) and
        ``valid`` ``(B, Q)`` bool.
    """
    batch, n = query_mask.shape
    if num_slots is None:
        num_slots = max(int(query_mask.sum(dim=1).max()), 1) if query_mask.numel() else 1
    slot = torch.where(query_mask, query_mask.long().cumsum(dim=1) - 1, num_slots)  # non-queries: a scratch slot
    positions = torch.arange(n, device=query_mask.device).expand(batch, -1)
    index = query_mask.new_zeros(batch, num_slots + 1, dtype=torch.long).scatter_(1, slot, positions)
    valid = query_mask.new_zeros(batch, num_slots + 1).scatter_(1, slot, query_mask)
    return index[:, :num_slots], valid[:, :num_slots]


def half_signed(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated, so that ``rotate_half(x) * sin == x.roll(D/2) * half_signed(sin)``
    (``rotate_half`` as in transformers' Llama)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


class RotaryTables(NamedTuple):
    """The rotary embedding in the form the ranking applies it: made once, sliced per stage.

    Attributes:
        cos: ``(B or 1, 1, n, D)``, the rotary module's cos with a heads axis.
        signed_sin: ``(B or 1, 1, n, D)``, :func:`half_signed` of its sin, with a heads axis.
    ``x * cos + x.roll(D/2) * signed_sin`` is the rotate-half form of Llama, Mistral and Qwen2,
    ``x * cos + rotate_half(x) * sin``, to the bit (negating a factor is exact).
    """

    cos: torch.Tensor
    signed_sin: torch.Tensor

    @classmethod
    def of(cls, position_embeddings: "tuple[torch.Tensor, torch.Tensor] | RotaryTables") -> "RotaryTables":
        """From the rotary module's ``(cos, sin)``, each ``(B or 1, n, D)`` (tables are returned as they are)."""
        if isinstance(position_embeddings, RotaryTables):
            return position_embeddings
        cos, sin = position_embeddings
        return cls(cos[:, None], half_signed(sin)[:, None])

    def head(self, length: int) -> "RotaryTables":
        """The first ``length`` positions (views): a stage whose positions are ``0..length-1``."""
        return RotaryTables(self.cos[:, :, :length], self.signed_sin[:, :, :length])

    def last(self) -> "RotaryTables":
        """The last position (views): the query of every sample when all end in the last slot."""
        return RotaryTables(self.cos[:, :, -1:], self.signed_sin[:, :, -1:])

    def at(self, index: torch.Tensor) -> "RotaryTables":
        """The positions ``index`` ``(B, Q)`` of each sample: ``(B, 1, Q, D)``."""
        batch = index.shape[0]
        return RotaryTables(*(gather_tokens(t[:, 0].expand(batch, -1, -1), index)[:, None]
                              for t in (self.cos, self.signed_sin)))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(B, heads, t, D)`` (``t`` the tables' positions, or 1 to broadcast)."""
        return x * self.cos + x.roll(x.shape[-1] // 2, dims=-1) * self.signed_sin


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, n, ...)`` gathered at ``index`` ``(B, Q)`` -> ``(B, Q, ...)``."""
    if x.dim() == 2:
        return torch.gather(x, 1, index)
    expanded = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)


@torch.no_grad()
def image_token_scores(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: "tuple[torch.Tensor, torch.Tensor] | RotaryTables",
    key_mask: torch.Tensor | None,
    query_index: torch.Tensor | None,
    query_valid: torch.Tensor | None,
    causal: bool = True,
    compiled: bool = False,
) -> torch.Tensor:
    """Attention paid by the query tokens to every token, scored with ``layer``'s projections.

    Args:
        layer: the decoder layer that runs next (``input_layernorm``, ``self_attn.q_proj/k_proj``).
        hidden_states: ``(B, n, d)`` output of the boundary layer; detached here (no gradient).
        position_embeddings: ``(cos, sin)``, each ``(B or 1, n, D)``, at the current position ids, or
            their :class:`RotaryTables` (made once and sliced per stage by the decoder).
        key_mask: ``(B, n)`` bool, True at real (non-padding) tokens; None: no padding.
        query_index: ``(B, Q)`` query positions; None: one query per sample, in the last slot.
        query_valid: ``(B, Q)`` which slots are real; None: all of them.
        causal: mask keys after each query (False when every query is its sample's last token).
        compiled: run :func:`compiled_query_attention` instead of the eager function.
    Returns:
        ``(B, n)`` float32, non-negative: per token, the head-averaged softmax weight averaged over
        the valid queries (0 for samples without queries). Callers read the image-token columns.
    """
    attend = compiled_query_attention() if compiled else query_attention
    probs = attend(layer, hidden_states, position_embeddings, key_mask, query_index, causal)  # (B, Q, n)
    if query_valid is None:  # one query: its row as it is (the mean of one row, without a kernel)
        return probs[:, 0] if probs.shape[1] == 1 else probs.mean(dim=1)
    probs = probs * query_valid[..., None]
    return probs.sum(dim=1) / query_valid.sum(dim=1).clamp(min=1)[:, None]


def query_attention(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: "tuple[torch.Tensor, torch.Tensor] | RotaryTables",
    key_mask: torch.Tensor | None,
    query_index: torch.Tensor | None,
    causal: bool = True,
) -> torch.Tensor:
    """Each query's head-averaged attention over the keys: the rule of :func:`image_token_scores`, per query.

    Differentiable (the focus module's distillation trains through it); :func:`image_token_scores`
    is this under ``no_grad``, averaged over the valid queries. Arguments as there.
    Returns:
        ``(B, Q, n)`` float32 (``Q = 1`` when ``query_index`` is None): a softmax over the allowed keys
        (causal, ``key_mask``), mean over heads; every row sums to 1.
    """
    attn = layer.self_attn
    batch, n, _ = hidden_states.shape
    head_dim = attn.head_dim
    rotary = RotaryTables.of(position_embeddings)
    x = layer.input_layernorm(hidden_states)  # row-wise: the query rows are taken from it
    if query_index is None:
        query_x, query_rotary = x[:, -1:], rotary.last()
    else:
        query_x, query_rotary = gather_tokens(x, query_index), rotary.at(query_index)
    num_queries = query_x.shape[1]
    q = query_rotary.apply(attn.q_proj(query_x).view(batch, num_queries, -1, head_dim).transpose(1, 2))
    k = rotary.apply(attn.k_proj(x).view(batch, n, -1, head_dim).transpose(1, 2))  # (B, G, n, D)
    q = q.reshape(batch, k.shape[1], -1, head_dim)  # (B, G, R*Q, D): head h uses kv head h // R
    with _float32_math(q.device.type):  # the scores in float32 even under bf16/fp16 autocast (the spec)
        logits = torch.matmul(_float32(q), _float32(k).transpose(-1, -2)).view(batch, -1, num_queries, n)
        logits = logits * head_dim**-0.5
        allowed = _allowed_keys(key_mask, query_index, n, causal)
        if allowed is not None:  # the lowest finite value, not -inf: a slot with no allowed key stays finite
            logits = logits.masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
        return torch.softmax(logits, dim=-1).mean(dim=1)  # (B, Q, n)


@functools.cache
def compiled_query_attention():
    """:func:`query_attention` under ``torch.compile``, built on the first call. Experimental, opt-in
    (the model's ``pdrop_compile_ranking``, ``--pdrop_compile_ranking``); not with ZeRO-3.

    The layer's norm and projections are traced with the rest, so the elementwise work of the norm,
    the rotary embedding and the softmax fuses into a few kernels; the projections stay library
    matrix products. Shapes are torch.compile's automatic dynamic ones: the first call of a case
    (inference or training queries, padding or not) compiles for its sizes, the first call with other
    lengths compiles once more with those sizes symbolic, the model's widths staying fixed (seconds
    each; after 8 cases torch.compile runs the rest eagerly). Fused kernels round differently from
    eager ones (about 1e-7 relative here), so near-ties can rank the other way. On a CPU, torch's
    on-disk kernel cache hands a process kernels built under another ``ATEN_CPU_CAPABILITY``
    (importing ``llava.demo`` sets it), which failed or corrupted memory when run: such a process
    needs its own ``TORCHINDUCTOR_CACHE_DIR`` (the tests use one per session).
    """
    return torch.compile(query_attention, dynamic=None)


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _float32_math(device_type: str):
    """Autocast off while it is on (it would run the score matmul in bf16), nothing otherwise."""
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else nullcontext()


def _allowed_keys(key_mask: torch.Tensor | None, query_index: torch.Tensor | None, n: int,
                  causal: bool) -> torch.Tensor | None:
    """``(B, Q or 1, n)`` bool: the keys each query may see (None: all of them)."""
    if causal and query_index is not None:
        positions = torch.arange(n, device=query_index.device)
        before = positions[None, None, :] <= query_index[:, :, None]
        return before if key_mask is None else before & key_mask[:, None, :]
    return None if key_mask is None else key_mask[:, None, :]


# ---------------------------------------------------------------------------------------------- random baseline
def _int64(value: int) -> int:
    """``value`` modulo 2**64 as a signed int64 (tensor arithmetic wraps the same way)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


# 64-bit mixing constants (splitmix64's and two odd multipliers)
_MIX = (_int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB))
_STREAM = (_int64(0x9E3779B97F4A7C15), 0x2545F4914F6CDD1D, 0x5851F42D4C957F2D)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (logical right shifts written as shift + mask)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _MIX[0]
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _MIX[1]
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def random_keys(inputs_embeds: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64: one key per sample from its content, the same whatever batch or padding it is in.

    The key hashes the bits of the sample's text-token embeddings (exact copies of embedding rows)
    with each token's rank among the sample's real tokens; integer sums are exact in any order.
    Image features are left out: a vision tower's floats can differ with the batch size.
    """
    bits = inputs_embeds.detach().float().contiguous().view(torch.int32).long()  # (B, n, d)
    coefficients = _mix64(torch.arange(1, bits.shape[-1] + 1, device=bits.device))
    rank = text_mask.long().cumsum(dim=1)
    per_token = _mix64((bits * coefficients).sum(dim=-1) + _mix64(rank))
    return (per_token * text_mask).sum(dim=1)


def random_scores(keys: torch.Tensor, attention_mask: torch.Tensor, seed: int, boundary: int) -> torch.Tensor:
    """``(B, n)`` float32 uniform draws in [0, 1): a function of the sample's key, the token's rank among
    its real tokens, ``seed`` and ``boundary`` only, so a sample's choice does not depend on its batch."""
    rank = attention_mask.long().cumsum(dim=1)
    x = _mix64(keys[:, None] * _STREAM[0] + rank * _STREAM[1] + _int64((seed * 1009 + boundary) * _STREAM[2]))
    return ((x >> 40) & ((1 << 24) - 1)).float() / (1 << 24)
