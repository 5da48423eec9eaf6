"""FLOPs of a coarse-to-fine run: the vision tower on every crop, the focus passes, the final language-model pass.

Counted in :mod:`llava.pdrop.flops`'s convention (a multiply-add counts once; the paper's
``4 n d^2 + 2 n^2 d + 3 n d m`` per decoder layer), one sample, prefill only:

* **Vision tower**, per crop (thumbnail, tile, or any-resolution crop), ``n = g^2 + 1`` tokens (CLS
  included, ``g = image_size / patch_size``) through every CLIP layer (transformers runs them all, even
  when ``vision_feature_layer=-2`` reads the one before last)::

      clip_layer(n) = 4 n d^2 + 2 n^2 d + 2 n d m        # d, m of the vision tower; its MLP is not gated
      crop          = g^2 * 3 p^2 d  (patch embedding)  +  L_v * clip_layer(g^2 + 1)  +  g^2 (d D + D D)  (projector)

  Most of a huge image's cost is here: ``num_vision_images`` crops of this each.
* **Focus**, per level visited: ``focus_layer`` decoder layers over
  ``text + thumbnail + the level's local tokens + their newlines`` (the scoring projections, like
  PyramidDrop's ranking, are not counted).
* **Language model**: every layer over ``text + final image tokens``, without and with the PyramidDrop
  schedule (:func:`llava.pdrop.flops.llm_flops`; the image tokens are its pool).

:class:`WalkCount` is what the count needs of a walk: from a real run (:meth:`WalkCount.from_result`), or
planned from the image size (:func:`planned_walk`: an upper bound, every level after the coarsest
fetching ``max_tiles_per_level`` tiles), and the two references :func:`full_grid_walk` (every tile of
the full-resolution image, no focus) and :func:`thumbnail_walk`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..pdrop.flops import layer_flops, llm_flops
from ..pdrop.schedule import PDropConfig
from .config import CoarseToFineConfig
from .geometry import pyramid_applies, pyramid_levels, tokens_per_tile_side

MAX_TILES_PER_TOKEN = 4  # a token's area at the next level spans at most 2 tiles per axis (t >= 1)


@dataclass(frozen=True)
class VisionShape:
    """What the count needs of the vision tower and projector."""

    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    image_size: int
    patch_size: int
    text_hidden_size: int  # the projector's output width (the language model's hidden size)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_config(cls, config) -> "VisionShape":
        """A transformers ``LlavaNextConfig`` (or ``LlavaConfig``)."""
        vision = config.vision_config
        return cls(vision.num_hidden_layers, vision.hidden_size, vision.intermediate_size, vision.image_size,
                   vision.patch_size, config.get_text_config().hidden_size)

    @classmethod
    def from_preset(cls, spec: dict[str, Any]) -> "VisionShape":
        """A ``configs/models/`` preset (already loaded)."""
        vision = spec["vision_config"]
        return cls(vision["num_hidden_layers"], vision["hidden_size"], vision["intermediate_size"],
                   vision["image_size"], vision["patch_size"], spec["text_config"]["hidden_size"])


def vision_layer_flops(n: int, hidden_size: int, intermediate_size: int) -> int:
    """One CLIP encoder layer over ``n`` tokens: projections, attention, a two-matrix MLP."""
    d, m = hidden_size, intermediate_size
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def vision_pass_flops(shape: VisionShape) -> int:
    """One crop through the vision tower (patch embedding, every layer) and the ``mlp2x_gelu`` projector."""
    patches, d = shape.grid ** 2, shape.hidden_size
    embedding = patches * 3 * shape.patch_size ** 2 * d
    layers = shape.num_hidden_layers * vision_layer_flops(patches + 1, d, shape.intermediate_size)
    projector = patches * (d * shape.text_hidden_size + shape.text_hidden_size ** 2)
    return embedding + layers + projector


@dataclass(frozen=True)
class LevelCount:
    """One level of a walk: tiles encoded, local tokens scored and the newlines between their rows."""

    factor: int
    tiles: int
    local_tokens: int
    newline_tokens: int


@dataclass(frozen=True)
class WalkCount:
    """A walk as the count sees it: focus passes per level, crops encoded, image tokens given to the LLM."""

    thumbnail_tokens: int
    num_vision_images: int
    num_image_tokens: int
    levels: list[LevelCount] = field(default_factory=list)  # levels visited (a focus pass each), coarsest first

    @classmethod
    def from_result(cls, result, tokens_per_side: int) -> "WalkCount":
        """From a :class:`~.driver.CoarseToFineResult`; ``tokens_per_side`` is ``t`` of :mod:`.geometry`."""
        levels = [LevelCount(trace.level.factor, len(trace.tiles), trace.num_tokens,
                             len({row for row, _ in trace.tiles}) * tokens_per_side) for trace in result.traces]
        return cls(result.num_thumbnail_tokens, result.num_vision_images, result.num_image_tokens, levels)


def planned_walk(width: int, height: int, config: CoarseToFineConfig, patch_size: int) -> WalkCount:
    """The most a walk over a ``width x height`` image can cost (an upper bound on every count).

    The coarsest level is encoded whole; each later level fetches ``min(max_tiles_per_level, its
    tiles, 4 x the tokens kept above)`` tiles, with a newline per token row of every tile row they
    could occupy; the last level reached (``max_levels``) keeps ``keep_count`` tokens, with at most
    one newline each. A real walk may stop earlier or fetch fewer tiles.
    """
    if not pyramid_applies(width, height, config.tile_size):
        raise ValueError(f"a {width} x {height} image fits one {config.tile_size} px tile: no pyramid, the plain "
                         "any-resolution path applies (count it without --coarse_to_fine)")
    t = tokens_per_tile_side(config.tile_size, patch_size, config.pool)
    levels = pyramid_levels(width, height, config.tile_size, config.base_long_side)
    if config.max_levels is not None:
        levels = levels[:config.max_levels]
    counts, tiles = [], levels[0].num_tiles
    for index, level in enumerate(levels):
        if index:
            tiles = min(config.max_tiles_per_level, level.num_tiles, MAX_TILES_PER_TOKEN * kept)
        counts.append(LevelCount(level.factor, tiles, tiles * t * t, min(level.rows, tiles) * t))
        kept = config.keep_count(tiles * t * t)
    thumbnail = (config.thumbnail_size // patch_size) ** 2
    image_tokens = thumbnail + kept + min(kept, counts[-1].newline_tokens)
    return WalkCount(thumbnail, 1 + sum(c.tiles for c in counts), image_tokens, counts)


def full_grid_walk(width: int, height: int, config: CoarseToFineConfig, patch_size: int) -> WalkCount:
    """The reference without focus: the thumbnail and every tile of the full-resolution image, all tokens kept."""
    t = tokens_per_tile_side(config.tile_size, patch_size, config.pool)
    full = pyramid_levels(width, height, config.tile_size, config.base_long_side)[-1]
    thumbnail = (config.thumbnail_size // patch_size) ** 2
    tokens = full.num_tiles * t * t + full.rows * t
    return WalkCount(thumbnail, 1 + full.num_tiles, thumbnail + tokens)


def thumbnail_walk(config: CoarseToFineConfig, patch_size: int) -> WalkCount:
    """The reference of the thumbnail alone."""
    thumbnail = (config.thumbnail_size // patch_size) ** 2
    return WalkCount(thumbnail, 1, thumbnail)


@dataclass(frozen=True)
class CoarseToFineFlops:
    """FLOPs of one sample's run (module docstring); ``llm_pdrop`` None without a schedule."""

    vision: int
    focus: int
    llm_no_drop: int
    llm_pdrop: int | None

    @property
    def total_no_drop(self) -> int:
        return self.vision + self.focus + self.llm_no_drop

    @property
    def total_pdrop(self) -> int | None:
        return None if self.llm_pdrop is None else self.vision + self.focus + self.llm_pdrop

    def to_dict(self) -> dict[str, int | None]:
        return {**asdict(self), "total_no_drop": self.total_no_drop, "total_pdrop": self.total_pdrop}


def coarse_to_fine_flops(walk: WalkCount, vision: VisionShape, num_layers: int, hidden_size: int,
                         intermediate_size: int, text_tokens: int, focus_layer: int,
                         schedule: PDropConfig | None = None) -> CoarseToFineFlops:
    """Count ``walk`` on a model of these shapes with ``text_tokens`` prompt tokens (prefix + question)."""
    per_crop = vision_pass_flops(vision)
    focus = sum(focus_layer * layer_flops(text_tokens + walk.thumbnail_tokens + lv.local_tokens + lv.newline_tokens,
                                          hidden_size, intermediate_size) for lv in walk.levels)
    dims = (num_layers, hidden_size, intermediate_size, walk.num_image_tokens, text_tokens)
    return CoarseToFineFlops(walk.num_vision_images * per_crop, focus, llm_flops(*dims),
                             None if schedule is None else llm_flops(*dims, schedule=schedule))


def model_flops(model, result, text_tokens: int, config: CoarseToFineConfig,
                schedule: PDropConfig | None = None) -> CoarseToFineFlops:
    """:func:`coarse_to_fine_flops` of a real run's ``result`` on ``model`` (a LLaVA-NeXT)."""
    vision = VisionShape.from_config(model.config)
    text = model.config.get_text_config()
    t = tokens_per_tile_side(config.tile_size, vision.patch_size, config.pool)
    return coarse_to_fine_flops(WalkCount.from_result(result, t), vision, text.num_hidden_layers, text.hidden_size,
                                text.intermediate_size, text_tokens, config.focus_layer, schedule)


__all__ = ["CoarseToFineFlops", "LevelCount", "VisionShape", "WalkCount", "coarse_to_fine_flops", "full_grid_walk",
           "model_flops", "planned_walk", "thumbnail_walk", "vision_layer_flops", "vision_pass_flops"]
