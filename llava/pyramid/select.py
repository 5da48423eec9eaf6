"""Tensor-level pieces of the coarse-to-fine walk: tile features, token layout, selection, next tiles.

Shapes: ``n`` images (tiles), ``g`` patches per side of the vision tower, ``t = g / pool`` tokens per
tile side, ``d`` the language model's hidden size, ``N`` local tokens of a level, ``k`` kept tokens.
A token is named by its ``(row, col)`` in its level's token grid (:mod:`.geometry`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import Level, next_level_tiles

NEWLINE = -1  # a layout entry that is LLaVA-NeXT's image_newline embedding, not a token


def llava_parts(model):
    """``(vision_tower, projector, image_newline, config)`` of a (PyramidDrop or stock) LLaVA-NeXT model."""
    inner = model.model
    newline = getattr(inner, "image_newline", None)
    if newline is None:
        raise ValueError(f"{type(model).__name__} has no image_newline: coarse-to-fine needs a LLaVA-NeXT model")
    return inner.vision_tower, inner.multi_modal_projector, newline, model.config


@torch.no_grad()
def encode_images(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Vision tower + projector of square crops, as LLaVA-NeXT encodes each of its crops.

    Args:
        pixel_values: ``(n, 3, S, S)`` normalised crops, ``S`` the vision tower's image size.
    Returns:
        ``(n, g * g, d)``: the ``vision_feature_layer`` hidden states (CLS dropped: strategy
        ``"default"``), projected to the language model's width; row-major patch order.
    """
    tower, projector, _, config = llava_parts(model)
    if config.vision_feature_select_strategy != "default":
        raise ValueError(f"vision_feature_select_strategy={config.vision_feature_select_strategy!r}: coarse-to-fine "
                         "needs 'default' (CLS dropped), so each tile's tokens form a square patch grid")
    dtype = next(tower.parameters()).dtype
    device = next(tower.parameters()).device
    out = tower(pixel_values.to(device, dtype), output_hidden_states=True, return_dict=True)
    layer = config.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer)
    hidden = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
    return projector(hidden[:, 1:])


def pool_tokens(features: torch.Tensor, pool: int) -> torch.Tensor:
    """``(n, g * g, d)`` -> ``(n, t * t, d)``, ``t = g / pool``: bilinear resize of each tile's grid.

    At ``pool = 2`` bilinear resizing (``align_corners=False``) samples between each 2 x 2 block, so
    every token is the mean of its 2 x 2 patches. ``pool = 1`` returns the features unchanged.
    """
    if pool == 1:
        return features
    n, count, d = features.shape
    g = int(round(count ** 0.5))
    if g * g != count or g % pool:
        raise ValueError(f"cannot pool {count} tokens ({g} x {g}?) by {pool}")
    grid = features.transpose(1, 2).reshape(n, d, g, g)
    pooled = F.interpolate(grid.float(), size=(g // pool, g // pool), mode="bilinear", align_corners=False)
    return pooled.to(features.dtype).flatten(2).transpose(1, 2)


def newline_layout(coords: torch.Tensor) -> torch.Tensor:
    """Row-major order of tokens with a newline after each token row, as LLaVA-NeXT lays out an image.

    Args:
        coords: ``(N, 2)`` long, (row, col) of each token in the level's token grid (any order, unique).
    Returns:
        ``(N + R,)`` long: indices into ``coords`` sorted by (row, col), with :data:`NEWLINE` after the
        last token of each of the ``R`` distinct rows. Tokens [(1, 0), (0, 3), (0, 1)] -> [2, 1, -1, 0, -1].
    """
    if coords.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    key = coords[:, 0] * (int(coords[:, 1].max()) + 1) + coords[:, 1]
    order = torch.argsort(key, stable=True)
    rows = coords[order, 0]
    row_ends = torch.ones_like(rows, dtype=torch.bool)
    row_ends[:-1] = rows[1:] != rows[:-1]
    out = []
    for index, end in zip(order.tolist(), row_ends.tolist()):
        out.append(index)
        if end:
            out.append(NEWLINE)
    return torch.tensor(out, dtype=torch.long)


def assemble(features: torch.Tensor, layout: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` token features laid out by ``layout`` (:func:`newline_layout`) -> ``(len(layout), d)``."""
    is_newline = layout == NEWLINE
    out = features[layout.clamp(min=0)]
    return torch.where(is_newline[:, None], newline.to(features.dtype)[None], out)


def top_tokens(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest ``scores`` ``(N,)``, ascending (the tokens' order); ties to the earlier."""
    order = torch.argsort(scores.float(), descending=True, stable=True)
    return torch.sort(order[:k]).values


def choose_next_tiles(kept_coords: torch.Tensor, kept_scores: torch.Tensor, token_px: int, tile_size: int,
                      next_level: Level, max_tiles: int) -> list[tuple[int, int]]:
    """The next level's tiles under the kept tokens, at most ``max_tiles``, row-major.

    Each kept token ``(k, 2)`` points at the tiles its pixels fall in (:func:`.geometry.next_level_tiles`);
    a tile's priority is the sum of the scores ``(k,)`` of the tokens pointing at it. When more than
    ``max_tiles`` are pointed at, the highest priorities win (ties: row-major order).
    """
    priority: dict[tuple[int, int], float] = {}
    for tiles, score in zip(next_level_tiles(kept_coords, token_px, tile_size, next_level), kept_scores.tolist()):
        for tile in tiles:
            priority[tile] = priority.get(tile, 0.0) + float(score)
    ranked = sorted(priority, key=lambda tile: (-priority[tile], tile))[:max_tiles]
    return sorted(ranked)
