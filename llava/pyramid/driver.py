"""The coarse-to-fine driver: thumbnail, then level by level from coarse to fine, only the focused tiles.

Per sample (batched: every sample walks its own pyramid, the vision tower and the focus pass take
the active samples together; the result equals running them one by one)::

    thumbnail tokens  = projector(vision(thumbnail))                 # g*g tokens, not pooled
    tiles             = every tile of the coarsest level
    for level = coarsest .. min(finest, max_levels):
        local         = pool(projector(vision(tiles)))  laid out row-major, a newline per token row
        scores        = focus pass on [prefix, thumbnail, local, question]   (llava.pyramid.scoring: config.focus)
        kept          = top max(1, floor(N * token_keep_ratio)) local tokens (capped by token_budget)
        if last level: stop
        tiles         = next-level tiles under the kept tokens (at most max_tiles_per_level)
        if no tiles:  stop (the kept tokens lie in padding: the next level adds nothing)
    image embeddings  = thumbnail tokens + kept tokens of the last level, row-major with newlines

Only selected tiles are ever cropped and encoded. Images whose long side fits one tile have no
pyramid (:func:`.geometry.pyramid_applies`): with ``image_processor`` given they get the model's own
any-resolution features, otherwise :class:`PyramidNotApplicable` is raised.

Example::

    config = CoarseToFineConfig(focus_layer=8)
    result = coarse_to_fine(model, "scene.tif", prefix_ids, question_ids, config, PixelNorm.from_processor(processor))
    batch = pack_input_ids(model, [result], [prefix_ids], [question_ids], pad_token_id=tokenizer.pad_token_id)
    model.generate(**batch, max_new_tokens=32)     # image tokens in input_ids, features in mm_encoder_outputs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..pdrop.support import check_decoder_supported
from .config import CoarseToFineConfig
from .focus import focus_scores
from .geometry import Level, pyramid_applies, pyramid_levels, tile_box, tile_token_coords, tokens_per_tile_side
from .image_io import LargeImage, open_image
from .pixels import PixelNorm, padded_tile, thumbnail_tensor
from .scoring import check_focus, focus_decoder, random_focus_scores
from .select import NEWLINE, assemble, choose_next_tiles, encode_images, llava_parts, newline_layout, pool_tokens, \
    top_tokens


class PyramidNotApplicable(ValueError):
    """The image fits in one tile: no pyramid (use the plain any-resolution path)."""


@dataclass
class LevelTrace:
    """What the walk did at one level (for pictures, tests and FLOPs)."""

    level: Level
    tiles: list[tuple[int, int]]  # tiles encoded at this level, row-major
    num_tokens: int  # local tokens scored (newlines not counted)
    kept_coords: torch.Tensor  # (k, 2) long: kept tokens' (row, col) in the level's token grid, row-major
    kept_scores: torch.Tensor  # (k,) float32: their focus scores
    next_tiles: list[tuple[int, int]] = field(default_factory=list)  # tiles chosen at the next level


@dataclass
class CoarseToFineResult:
    """One sample's image embeddings and how they were chosen.

    ``image_embeds`` ``(M, d)`` replace the sample's image in the LLM's input: the thumbnail's
    ``num_thumbnail_tokens`` tokens, then ``num_local_tokens`` kept fine tokens laid out row-major
    with ``num_newline_tokens`` newlines. ``num_vision_images`` crops of the vision tower's size were
    encoded (thumbnail + tiles; the any-resolution crops on the fallback), which vision FLOPs scale with.
    """

    image_embeds: torch.Tensor
    image_size: tuple[int, int]  # (width, height) of the full image
    num_thumbnail_tokens: int
    num_local_tokens: int
    num_newline_tokens: int
    num_vision_images: int
    stop_reason: str  # "full_resolution", "max_levels", "no_next_tiles" or "no_pyramid"
    levels: list[Level] = field(default_factory=list)  # the whole pyramid, coarsest first
    traces: list[LevelTrace] = field(default_factory=list)  # the levels visited, coarsest first

    @property
    def num_image_tokens(self) -> int:
        return self.image_embeds.shape[0]

    @property
    def tiles_per_level(self) -> list[int]:
        return [len(trace.tiles) for trace in self.traces]


@dataclass
class _Walk:
    """One sample's state during the walk."""

    image: LargeImage
    levels: list[Level]
    last: int  # index of the last level to visit
    prefix: torch.Tensor  # (p, d)
    question: torch.Tensor  # (q, d)
    thumbnail: torch.Tensor | None = None  # (g*g, d)
    level: int = 0
    tiles: list[tuple[int, int]] = field(default_factory=list)
    traces: list[LevelTrace] = field(default_factory=list)
    final: tuple[torch.Tensor, torch.Tensor] | None = None  # kept features (k, d), coords (k, 2)
    stop_reason: str = ""
    num_vision_images: int = 0

    @property
    def active(self) -> bool:
        return self.final is None


def check_model(model, config: CoarseToFineConfig) -> None:
    """Refuse a model the config cannot drive: tile / thumbnail size, pool, focus layer, decoder."""
    _, _, _, model_config = llava_parts(model)
    vision = model_config.vision_config
    config.validate_vision(vision.image_size, vision.patch_size)
    decoder = model.model.language_model
    config.validate_for(decoder.config.num_hidden_layers, getattr(model, "pdrop_config", None))
    check_decoder_supported(decoder)
    check_focus(model, config)


def coarse_to_fine(model, image, prefix_ids, question_ids, config: CoarseToFineConfig, norm: PixelNorm | None = None,
                   image_processor=None) -> CoarseToFineResult:
    """One sample: see :func:`coarse_to_fine_batch`."""
    return coarse_to_fine_batch(model, [image], [prefix_ids], [question_ids], config, norm, image_processor)[0]


@torch.no_grad()
def coarse_to_fine_batch(model, images: Sequence, prefix_ids: Sequence, question_ids: Sequence,
                         config: CoarseToFineConfig, norm: PixelNorm | None = None,
                         image_processor=None) -> list[CoarseToFineResult]:
    """Walk every sample's pyramid (module docstring); each sample has its own levels and tile counts.

    Args:
        model: a LLaVA-NeXT model (``PDropLlavaNextForConditionalGeneration`` or stock), eval mode.
        images: per sample a path, a PIL image or a :class:`~.image_io.LargeImage`.
        prefix_ids / question_ids: per sample the token ids before / after the image (1D, no image
            token); ``question_ids`` must not be empty: its last token is the focus query.
        norm: the processor's pixel normalisation (default: CLIP's).
        image_processor: LLaVA-NeXT image processor for the fallback of images that fit one tile.
    Returns:
        One :class:`CoarseToFineResult` per sample, in order.
    """
    if not (len(images) == len(prefix_ids) == len(question_ids)):
        raise ValueError(f"got {len(images)} images, {len(prefix_ids)} prefixes and {len(question_ids)} questions")
    check_model(model, config)
    norm = norm or PixelNorm()
    results: list[CoarseToFineResult | None] = [None] * len(images)
    walks: dict[int, _Walk] = {}
    for i, (image, prefix, question) in enumerate(zip(images, prefix_ids, question_ids)):
        large = open_image(image, config.max_image_pixels)
        if pyramid_applies(*large.size, config.tile_size):
            walks[i] = _start(model, large, prefix, question, config)
        else:
            results[i] = plain_result(model, large, image_processor, config)
    if walks:
        _encode_thumbnails(model, list(walks.values()), config, norm)
    while active := [walk for walk in walks.values() if walk.active]:
        _focus_step(model, active, config, norm)
    newline = llava_parts(model)[2]
    for i, walk in walks.items():
        results[i] = _result(walk, newline)
    return results


def _start(model, image: LargeImage, prefix, question, config: CoarseToFineConfig) -> _Walk:
    levels = pyramid_levels(*image.size, config.tile_size, config.base_long_side)
    last = len(levels) - 1 if config.max_levels is None else min(len(levels), config.max_levels) - 1
    first = levels[0]
    tiles = [(r, c) for r in range(first.rows) for c in range(first.cols)]
    return _Walk(image, levels, last, _embed(model, prefix, "prefix_ids", allow_empty=True),
                 _embed(model, question, "question_ids", allow_empty=False), tiles=tiles)


def _embed(model, ids, name: str, allow_empty: bool) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: the prompt has no text after the image, and the coarse-to-fine "
                         "focus needs a question token to score with (its last token is the query)")
    if bool((ids == model.config.image_token_id).any()):
        raise ValueError(f"{name} holds the image token {model.config.image_token_id}: pass the text around "
                         "the image only; the driver places the image embeddings itself")
    embeddings = model.get_input_embeddings()
    return embeddings(ids.to(embeddings.weight.device))


def _encode_thumbnails(model, walks: list[_Walk], config: CoarseToFineConfig, norm: PixelNorm) -> None:
    pixels = []
    for walk in walks:
        coarsest = walk.image.level_rgb(walk.levels[0].factor)
        pixels.append(thumbnail_tensor(coarsest, walk.image.size, config.thumbnail_size, norm))
    features = encode_images(model, torch.stack(pixels))
    for walk, feature in zip(walks, features):
        walk.thumbnail = feature
        walk.num_vision_images += 1


def _focus_step(model, walks: list[_Walk], config: CoarseToFineConfig, norm: PixelNorm) -> None:
    """Encode the current tiles of every active walk, score them in one focus pass, advance each walk."""
    vision = llava_parts(model)[3].vision_config
    t = tokens_per_tile_side(config.tile_size, vision.patch_size, config.pool)
    crops = [_tile_pixels(walk, config, norm) for walk in walks]
    features = pool_tokens(encode_images(model, torch.cat(crops)), config.pool)
    per_walk = features.split([len(c) for c in crops])
    newline = llava_parts(model)[2]
    sequences, spans = [], []
    for walk, feature in zip(walks, per_walk):
        coords = tile_token_coords(walk.tiles, t)
        layout = newline_layout(coords)
        local = assemble(feature.reshape(-1, feature.shape[-1]), layout, newline)
        sequences.append(torch.cat([walk.prefix, walk.thumbnail, local.to(walk.prefix.dtype), walk.question]))
        spans.append((walk.prefix.shape[0] + walk.thumbnail.shape[0], layout, coords))
        walk.num_vision_images += len(walk.tiles)
    embeds, attention_mask, offsets = left_pad(sequences)
    local_mask = torch.zeros_like(attention_mask)
    for b, (start, layout, _) in enumerate(spans):
        begin = offsets[b] + start
        local_mask[b, begin:begin + len(layout)] = layout != NEWLINE
    decoder = focus_decoder(model, config)  # config.focus: the LLM, the trained focus module, or None (random)
    scores = random_focus_scores(config, attention_mask, crops) if decoder is None else \
        focus_scores(decoder, embeds, attention_mask, local_mask, config.focus_layer, config.focus_softmax)
    token_px = vision.patch_size * config.pool
    for b, (walk, feature, (start, layout, coords)) in enumerate(zip(walks, per_walk, spans)):
        begin = offsets[b] + start
        span_scores = scores[b, begin:begin + len(layout)]
        token_scores = torch.zeros(coords.shape[0], dtype=torch.float32)
        token_scores[layout[layout != NEWLINE]] = span_scores[layout != NEWLINE].cpu()
        _advance(walk, feature.reshape(-1, feature.shape[-1]), coords, token_scores, config, token_px)


def _tile_pixels(walk: _Walk, config: CoarseToFineConfig, norm: PixelNorm) -> torch.Tensor:
    """``(len(walk.tiles), 3, T, T)``: the current level's selected tiles, cropped and padded."""
    level = walk.levels[walk.level]
    return torch.stack([padded_tile(walk.image.tile(level.factor, tile_box(level, r, c, config.tile_size)),
                                    config.tile_size, norm) for r, c in walk.tiles])


def _advance(walk: _Walk, features: torch.Tensor, coords: torch.Tensor, scores: torch.Tensor,
             config: CoarseToFineConfig, token_px: int) -> None:
    """Keep the level's top tokens; choose the next level's tiles or finish the walk."""
    kept = top_tokens(scores, config.keep_count(coords.shape[0]))
    level = walk.levels[walk.level]
    trace = LevelTrace(level, list(walk.tiles), coords.shape[0], coords[kept], scores[kept])
    walk.traces.append(trace)
    if walk.level == walk.last:
        reason = "full_resolution" if walk.level == len(walk.levels) - 1 else "max_levels"
        return _finish(walk, features[kept], coords[kept], reason)
    tiles = choose_next_tiles(coords[kept], scores[kept], token_px, config.tile_size, walk.levels[walk.level + 1],
                              config.max_tiles_per_level)
    if not tiles:
        return _finish(walk, features[kept], coords[kept], "no_next_tiles")
    trace.next_tiles = tiles
    walk.level, walk.tiles = walk.level + 1, tiles


def _finish(walk: _Walk, features: torch.Tensor, coords: torch.Tensor, reason: str) -> None:
    walk.final, walk.stop_reason = (features, coords), reason
    walk.image.close()  # the decoded pixels are no longer needed


def _result(walk: _Walk, newline: torch.Tensor) -> CoarseToFineResult:
    features, coords = walk.final
    layout = newline_layout(coords)
    local = assemble(features, layout, newline).to(walk.thumbnail.dtype)
    return CoarseToFineResult(
        image_embeds=torch.cat([walk.thumbnail, local]), image_size=walk.image.size,
        num_thumbnail_tokens=walk.thumbnail.shape[0], num_local_tokens=coords.shape[0],
        num_newline_tokens=int((layout == NEWLINE).sum()), num_vision_images=walk.num_vision_images,
        stop_reason=walk.stop_reason, levels=walk.levels, traces=walk.traces)


def plain_result(model, image: LargeImage, image_processor, config: CoarseToFineConfig) -> CoarseToFineResult:
    """The fallback for an image that fits one tile: the model's own any-resolution features."""
    if image_processor is None:
        raise PyramidNotApplicable(
            f"{image.name}: {image.size[0]} x {image.size[1]} px fits in one {config.tile_size} px tile, so there is "
            "no pyramid; use the plain any-resolution path (or pass image_processor= to have it done here)")
    processed = image_processor(images=[image.level_rgb(1)], return_tensors="pt")
    inner = model.model
    pixel_values = processed["pixel_values"].to(inner.vision_tower.device, inner.vision_tower.dtype)
    features = inner.get_image_features(pixel_values=pixel_values, image_sizes=processed["image_sizes"],
                                        return_dict=True).pooler_output[0]
    image.close()
    return CoarseToFineResult(image_embeds=features, image_size=image.size, num_thumbnail_tokens=0,
                              num_local_tokens=features.shape[0], num_newline_tokens=0,
                              num_vision_images=int(pixel_values.shape[1]), stop_reason="no_pyramid")


def left_pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(B, n, d)`` embeddings padded with zeros on the left, ``(B, n)`` bool mask, each row's start."""
    n = max(s.shape[0] for s in sequences)
    first = sequences[0]
    embeds = first.new_zeros(len(sequences), n, first.shape[-1])
    mask = torch.zeros(len(sequences), n, dtype=torch.bool, device=first.device)
    offsets = []
    for b, seq in enumerate(sequences):
        embeds[b, n - seq.shape[0]:] = seq
        mask[b, n - seq.shape[0]:] = True
        offsets.append(n - seq.shape[0])
    return embeds, mask, offsets


@torch.no_grad()
def pack_inputs(model, results: Sequence[CoarseToFineResult], prefix_ids: Sequence,
                question_ids: Sequence) -> dict[str, torch.Tensor]:
    """The LLM's input for a batch: ``[prefix, image_embeds, question]`` per sample, left-padded.

    Returns ``inputs_embeds`` ``(B, n, d)``, ``attention_mask`` ``(B, n)`` long and ``image_mask``
    ``(B, n)`` bool (True at the image embeddings: PyramidDrop's pool). Ready for ``generate``.
    """
    sequences, spans = [], []
    for result, prefix, question in zip(results, prefix_ids, question_ids, strict=True):
        before = _embed(model, prefix, "prefix_ids", allow_empty=True)
        after = _embed(model, question, "question_ids", allow_empty=False)
        sequences.append(torch.cat([before, result.image_embeds.to(before), after]))
        spans.append((before.shape[0], result.image_embeds.shape[0]))
    embeds, mask, offsets = left_pad(sequences)
    image_mask = torch.zeros_like(mask)
    for b, (start, length) in enumerate(spans):
        image_mask[b, offsets[b] + start:offsets[b] + start + length] = True
    return {"inputs_embeds": embeds, "attention_mask": mask.long(), "image_mask": image_mask}


def pack_input_ids(model, results: Sequence[CoarseToFineResult], prefix_ids: Sequence, question_ids: Sequence,
                   pad_token_id: int) -> dict:
    """``generate`` / ``forward`` inputs that carry the results as transformers' pre-encoded image features.

    ``input_ids`` ``(B, n)``: ``[prefix, image token x M_b, question]`` per sample, left-padded with
    ``pad_token_id``; ``attention_mask`` ``(B, n)``; ``mm_encoder_outputs={"image": ...}`` whose
    ``pooler_output`` holds each sample's ``image_embeds`` (transformers' LLaVA-NeXT and our
    PyramidDrop classes place them in the image-token slots, which then form PyramidDrop's pool).
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    image_token = model.config.image_token_id
    rows = []
    for result, prefix, question in zip(results, prefix_ids, question_ids, strict=True):
        _embed(model, prefix, "prefix_ids", allow_empty=True)  # the same checks as the walk
        _embed(model, question, "question_ids", allow_empty=False)
        rows.append([*map(int, prefix), *[image_token] * result.num_image_tokens, *map(int, question)])
    width = max(map(len, rows))
    device = model.get_input_embeddings().weight.device
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        input_ids[b, width - len(row):] = torch.tensor(row, device=device)
        attention_mask[b, width - len(row):] = 1
    features = [result.image_embeds for result in results]
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}}
