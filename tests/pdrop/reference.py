"""A slow, independent reference of shared/docs/pdrop-spec.md, one sample at a time.

Written from the spec, not from llava/pdrop: full (n x n) attention matrices over every position,
explicit repeat of key heads, Python loops over samples and boundaries, torch.topk for the choice.
Used only by tests to check the batched implementation token for token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_causal_mask


@dataclass
class ReferenceResult:
    kept: list[list[torch.Tensor]] = field(default_factory=list)  # [sample][stage] input positions of image tokens
    logits: list[torch.Tensor] = field(default_factory=list)  # [sample] (n_final, V)
    token_positions: list[torch.Tensor] = field(default_factory=list)  # [sample] input positions of final tokens
    loss_sum: float = 0.0
    loss_count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.loss_count


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def reference_scores(layer, rotary, hidden, positions, queries):
    """(n,) mean over queries of the head-averaged attention row, computed with full matrices."""
    attn = layer.self_attn
    n, d = hidden.shape
    x = layer.input_layernorm(hidden)
    q = attn.q_proj(x).view(n, -1, attn.head_dim).transpose(0, 1)  # (H, n, D)
    k = attn.k_proj(x).view(n, -1, attn.head_dim).transpose(0, 1)  # (G, n, D)
    cos, sin = rotary(hidden[None], positions[None])
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    scores = (q.float() @ k.float().transpose(1, 2)) / math.sqrt(attn.head_dim)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1).mean(dim=0)  # (n, n)
    return probs[queries].mean(dim=0)


def _run_layer(model, layer, hidden, positions):
    lm = model.model.language_model
    mask = create_causal_mask(lm.config, hidden[None], torch.ones(1, hidden.shape[0], dtype=torch.long), None, positions[None])
    emb = lm.rotary_emb(hidden[None], positions[None])
    return layer(hidden[None], attention_mask=mask, position_embeddings=emb)[0]


@torch.no_grad()
def reference_forward(model, schedule, input_ids, attention_mask, pixel_values, labels=None, position_ids=None,
                      image_sizes=None):
    """Per sample: stock embedding merge, then layers with drops exactly as the spec states."""
    llava = model.model
    lm = llava.language_model
    embeds = llava.get_input_embeddings()(input_ids)
    image_mask = input_ids == model.config.image_token_id
    if pixel_values is not None:
        features = llava.get_image_features(pixel_values=pixel_values, image_sizes=image_sizes, return_dict=True)
        feats = torch.cat(list(features.pooler_output))
        embeds = embeds.masked_scatter(image_mask[..., None], feats)
    result = ReferenceResult()
    for b in range(input_ids.shape[0]):
        real = attention_mask[b].bool()
        where = real.nonzero().squeeze(1)
        hidden = embeds[b, real]
        is_image = image_mask[b, real]
        lab = None if labels is None else labels[b, real]
        pos = torch.arange(hidden.shape[0]) if position_ids is None else position_ids[b, real]
        n0 = int(is_image.sum())
        kept_per_stage = [where[is_image]]
        for i, layer in enumerate(lm.layers):
            if i in schedule.layer_list:
                s = schedule.layer_list.index(i)
                if lab is None:
                    queries = torch.tensor([hidden.shape[0] - 1])
                else:
                    queries = torch.tensor([t for t in range(len(lab) - 1) if lab[t] == -100 and lab[t + 1] != -100],
                                           dtype=torch.long)
                keep_images = math.floor(n0 * schedule.image_token_ratio_list[s])
                if len(queries) and keep_images < int(is_image.sum()):
                    scores = reference_scores(layer, lm.rotary_emb, hidden, pos, queries)
                    image_idx = is_image.nonzero().squeeze(1)
                    top = image_idx[torch.topk(scores[image_idx], keep_images).indices]
                    keep = ~is_image
                    keep[top] = True
                    hidden, is_image, where = hidden[keep], is_image[keep], where[keep]
                    lab = None if lab is None else lab[keep]
                    pos = torch.arange(hidden.shape[0]) if schedule.position_mode == "compact" else pos[keep]
                kept_per_stage.append(where[is_image])
            hidden = _run_layer(model, layer, hidden, pos)
        logits = model.lm_head(lm.norm(hidden))
        result.kept.append(kept_per_stage)
        result.logits.append(logits)
        result.token_positions.append(where)
        if lab is not None:
            targets = lab[1:]
            valid = targets != -100
            result.loss_sum += float(F.cross_entropy(logits[:-1][valid].float(), targets[valid], reduction="sum"))
            result.loss_count += int(valid.sum())
    return result
