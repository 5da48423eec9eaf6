"""A slow, per-sample reference of the coarse-to-fine walk, written independently of ``llava.pyramid``.

Loops and plain arithmetic where the library vectorises: the levels by halving, tiles by pixel
overlap, 2 x 2 pooling as an average of patch blocks, the layout by scanning rows, the focus score
from transformers' own decoder (``output_hidden_states``) and a hand-written q/k/softmax. It shares
nothing with the library but Pillow's ``reduce`` / ``crop`` / ``resize``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def levels_by_halving(width, height, base):
    """[(factor, w, h)] coarsest first: halve (rounding up) until the long side fits ``base``."""
    sizes, factor = [], 1
    while True:
        w, h = math.ceil(width / factor), math.ceil(height / factor)
        sizes.append((factor, w, h))
        if max(w, h) <= base:
            return sizes[::-1]
        factor *= 2


def normalised(image: Image.Image, size: int, left=0, top=0) -> torch.Tensor:
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    canvas[top:top + pixels.shape[0], left:left + pixels.shape[1]] = (pixels - MEAN) / STD
    return torch.from_numpy(canvas).permute(2, 0, 1)


def thumbnail(image: Image.Image, coarsest: Image.Image, size: int) -> torch.Tensor:
    width, height = image.size
    long_side = max(width, height)
    w = max(1, math.floor(width * size / long_side + 0.5))
    h = max(1, math.floor(height * size / long_side + 0.5))
    return normalised(coarsest.resize((w, h), Image.Resampling.BICUBIC), size, (size - w) // 2, (size - h) // 2)


def vision_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """``(n, g*g, d)``: CLIP hidden states of the configured layer, CLS dropped, projected."""
    inner = model.model
    hidden = inner.vision_tower(pixels, output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
    return inner.multi_modal_projector(hidden[:, 1:])


def pooled(features: torch.Tensor, pool: int) -> torch.Tensor:
    """Average of ``pool`` x ``pool`` patch blocks (what 2x bilinear downsampling is)."""
    n, count, d = features.shape
    g = int(math.isqrt(count))
    grid = features.reshape(n, g, g, d)
    t = g // pool
    out = torch.zeros(n, t, t, d)
    for i in range(t):
        for j in range(t):
            out[:, i, j] = grid[:, i * pool:(i + 1) * pool, j * pool:(j + 1) * pool].mean(dim=(1, 2))
    return out


def layout(tokens: dict, newline: torch.Tensor) -> torch.Tensor:
    """``tokens`` {(row, col): feature} row-major, a newline after each row that has tokens."""
    rows = sorted({r for r, _ in tokens})
    out = []
    for r in rows:
        out += [tokens[(r, c)] for c in sorted(c for rr, c in tokens if rr == r)] + [newline]
    return torch.stack(out) if out else torch.zeros(0, newline.shape[0])


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def local_scores(model, sequence: torch.Tensor, local_positions: list[int], focus_layer: int, softmax: str):
    """Score of each local position for the last token: layer ``focus_layer``'s q/k, softmax, mean over heads."""
    decoder = model.model.language_model
    hidden = decoder(inputs_embeds=sequence[None], output_hidden_states=True).hidden_states[focus_layer][0]
    layer = decoder.layers[focus_layer]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    n, head_dim = x.shape[0], attn.head_dim
    q = attn.q_proj(x[-1:]).view(1, -1, head_dim).transpose(0, 1)  # (H, 1, D)
    k = attn.k_proj(x).view(n, -1, head_dim).transpose(0, 1)  # (G, n, D)
    cos, sin = decoder.rotary_emb(x[None], position_ids=torch.arange(n)[None])
    q, k = rotate(q, cos[0, -1:], sin[0, -1:]), rotate(k, cos[0], sin[0])
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    logits = (q.float() @ k.float().transpose(1, 2))[:, 0] / math.sqrt(head_dim)  # (H, n)
    keys = local_positions if softmax == "local" else list(range(n))
    probs = torch.softmax(logits[:, keys], dim=-1).mean(dim=0)
    by_key = dict(zip(keys, probs.tolist()))
    return [by_key[p] for p in local_positions]


def walk(model, image: Image.Image, prefix_ids, question_ids, cfg):
    """The reference walk of one sample: ``{"tiles": [...per level], "kept": [...], "embeds": (M, d)}``."""
    vision = model.config.vision_config
    T, patch = cfg.tile_size, vision.patch_size
    t, token_px = T // patch // cfg.pool, patch * cfg.pool
    levels = levels_by_halving(*image.size, cfg.base_long_side)
    if cfg.max_levels is not None:
        levels = levels[:cfg.max_levels]
    images = [image.reduce(f) if f > 1 else image for f, _, _ in levels]
    embed = model.get_input_embeddings()
    prefix, question = embed(torch.tensor(prefix_ids)), embed(torch.tensor(question_ids))
    newline = model.model.image_newline.detach()
    thumb = vision_features(model, thumbnail(image, images[0], cfg.thumbnail_size)[None])[0]
    _, w0, h0 = levels[0]
    tiles = [(r, c) for r in range(math.ceil(h0 / T)) for c in range(math.ceil(w0 / T))]
    record = {"tiles": [], "kept": []}
    for index, (_, w, h) in enumerate(levels):
        record["tiles"].append(list(tiles))
        crops = torch.stack([normalised(images[index].crop((c * T, r * T, min(c * T + T, w), min(r * T + T, h))), T)
                             for r, c in tiles])
        feats = pooled(vision_features(model, crops), cfg.pool) if cfg.pool > 1 else \
            vision_features(model, crops).reshape(len(tiles), t, t, -1)
        tokens = {(r * t + i, c * t + j): feats[n, i, j] for n, (r, c) in enumerate(tiles) for i in range(t)
                  for j in range(t)}
        local = layout(tokens, newline)
        seq = torch.cat([prefix, thumb, local, question])
        start = prefix.shape[0] + thumb.shape[0]
        order = [key for r in sorted({r for r, _ in tokens}) for key in
                 [(r, c) for c in sorted(c for rr, c in tokens if rr == r)] + [None]]
        positions = [start + i for i, key in enumerate(order) if key is not None]
        scores = local_scores(model, seq, positions, cfg.focus_layer, cfg.focus_softmax)
        keys = [key for key in order if key is not None]
        k = max(1, math.floor(len(keys) * cfg.token_keep_ratio))
        if cfg.token_budget is not None:
            k = min(k, cfg.token_budget)
        ranked = sorted(range(len(keys)), key=lambda i: (-scores[i], i))[:k]
        kept = sorted(keys[i] for i in ranked)
        record["kept"].append(kept)
        kept_score = {keys[i]: scores[i] for i in ranked}
        if index == len(levels) - 1:
            break
        tiles = next_tiles(kept, kept_score, token_px, T, levels[index + 1], cfg.max_tiles_per_level)
        if not tiles:
            break
    final = layout({key: tokens[key] for key in kept}, newline)
    record["embeds"] = torch.cat([thumb, final])
    return record


def next_tiles(kept, kept_score, token_px, T, next_level, max_tiles):
    """Tiles of the next level whose pixels overlap a kept token's (2x) footprint; best summed score first."""
    _, w, h = next_level
    priority = {}
    for (r, c) in kept:
        top, bottom, left, right = 2 * r * token_px, 2 * (r + 1) * token_px, 2 * c * token_px, 2 * (c + 1) * token_px
        for tr in range(math.ceil(h / T)):
            for tc in range(math.ceil(w / T)):
                if tr * T < bottom and top < (tr + 1) * T and tc * T < right and left < (tc + 1) * T:
                    priority[(tr, tc)] = priority.get((tr, tc), 0.0) + kept_score[(r, c)]
    best = sorted(priority, key=lambda tile: (-priority[tile], tile))[:max_tiles]
    return sorted(best)
