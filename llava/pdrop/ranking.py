"""Ranking image tokens at a stage boundary: the attention that the query tokens pay them.

Everything here is a plain tensor function; shapes use ``B`` batch, ``n`` current sequence length,
``Q`` query slots per sample (padded), ``H`` query heads, ``G`` key/value heads, ``D`` head dim.

The rule (``shared/docs/pdrop-spec.md``): with the *next* decoder layer, ``x = input_layernorm(h)``,
``q = q_proj(x)`` at the query positions only, ``k = k_proj(x)`` everywhere, rotary embedding at the
current position ids, key heads repeated to the query heads; scores ``q k^T / sqrt(D)`` under the
causal and padding masks, softmax over keys in float32, mean over heads, mean over the query
positions. The attention kernel is never asked for weights, so any kernel works.
"""

from __future__ import annotations

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


def query_slots(query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a boolean query mask into padded index slots.

    Args:
        query_mask: ``(B, n)`` bool.
    Returns:
        ``index`` ``(B, Q)`` long positions of the queries in order (0 in empty slots) and
        ``valid`` ``(B, Q)`` bool, with ``Q = max`` queries per sample (at least 1).
    """
    counts = query_mask.sum(dim=1)
    num_slots = max(int(counts.max()), 1) if counts.numel() else 1
    order = torch.argsort((~query_mask).to(torch.int8), dim=1, stable=True)[:, :num_slots]
    valid = torch.arange(num_slots, device=query_mask.device)[None, :] < counts[:, None]
    return torch.where(valid, order, 0), valid


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half form, as Llama, Mistral and Qwen2). ``x`` ``(B, heads, t, D)``, cos/sin ``(B, t, D)``."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, n, ...)`` gathered at ``index`` ``(B, Q)`` -> ``(B, Q, ...)``."""
    expanded = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)


@torch.no_grad()
def image_token_scores(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    key_mask: torch.Tensor,
    query_index: torch.Tensor,
    query_valid: torch.Tensor,
) -> torch.Tensor:
    """Attention paid by the query tokens to every token, scored with ``layer``'s projections.

    Args:
        layer: the decoder layer that runs next (``input_layernorm``, ``self_attn.q_proj/k_proj``).
        hidden_states: ``(B, n, d)`` output of the boundary layer; detached here (no gradient).
        position_embeddings: ``(cos, sin)``, each ``(B or 1, n, D)``, at the current position ids.
        key_mask: ``(B, n)`` bool, True at real (non-padding) tokens.
        query_index: ``(B, Q)`` query positions; ``query_valid``: ``(B, Q)`` which slots are real.
    Returns:
        ``(B, n)`` float32: per token, the head-averaged softmax weight averaged over the valid
        queries (0 for samples without queries). Callers read the image-token columns.
    """
    attn = layer.self_attn
    batch, n, _ = hidden_states.shape
    head_dim = attn.head_dim
    hidden_states = hidden_states.detach()
    cos, sin = (t.expand(batch, -1, -1) for t in position_embeddings)

    query_hidden = gather_tokens(hidden_states, query_index)  # (B, Q, d)
    q = attn.q_proj(layer.input_layernorm(query_hidden)).view(batch, query_index.shape[1], -1, head_dim)
    k = attn.k_proj(layer.input_layernorm(hidden_states)).view(batch, n, -1, head_dim)
    q = apply_rotary(q.transpose(1, 2), gather_tokens(cos, query_index), gather_tokens(sin, query_index))
    k = apply_rotary(k.transpose(1, 2), cos, sin)

    num_kv_heads = k.shape[1]
    q = q.reshape(batch, num_kv_heads, -1, query_index.shape[1], head_dim)  # head h uses kv head h // rep
    logits = torch.einsum("bgrqd,bgkd->bgrqk", q.float(), k.float()) * head_dim**-0.5

    positions = torch.arange(n, device=hidden_states.device)
    allowed = key_mask[:, None, :] & (positions[None, None, :] <= query_index[:, :, None])  # (B, Q, n)
    logits = logits.masked_fill(~allowed[:, None, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1).mean(dim=(1, 2))  # (B, Q, n)
    probs = probs.nan_to_num(0.0) * query_valid[..., None]
    return probs.sum(dim=1) / query_valid.sum(dim=1).clamp(min=1)[:, None]
