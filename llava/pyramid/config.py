"""The coarse-to-fine schedule: pyramid shape, focus layer, how many tokens and tiles each level keeps.

One frozen dataclass, :class:`CoarseToFineConfig`, validated at construction; every error names the
field and the value. ``to_dict`` / ``from_dict`` round-trip it through JSON (``configs/pyramid/``,
``llava.paths.load_pyramid_config``) and a checkpoint's config. :meth:`CoarseToFineConfig.validate_for`
checks it against a model: the focus layer must exist and must not lie beyond the first PyramidDrop
boundary (the focus pass runs the undropped sequence).

Example::

    config = CoarseToFineConfig(focus_layer=8, max_tiles_per_level=16)
    config.validate_for(num_hidden_layers=32, pdrop_schedule=PDropConfig([8, 16, 24], [0.5, 0.25, 0.125]))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

FOCUS_SOFTMAX = ("local", "all")
FOCUS = ("model", "trained", "random")
DEFAULT_MAX_IMAGE_PIXELS = 1_000_000_000  # ~1 gigapixel: 4 GB as Pillow's 32-bit RGB


@dataclass(frozen=True)
class CoarseToFineConfig:
    """A validated coarse-to-fine (Dynamic Image Pyramid + Region Focus) schedule."""

    focus_layer: int
    """Decoder layers run before scoring (>= 1); the next layer's q/k score the local tokens (PyramidDrop's ranking)."""
    tile_size: int = 336
    """Side of a square tile in pixels: the vision tower's input size (checked against the model)."""
    base_long_side: int = 1008
    """The coarsest level is the first power-of-two reduction whose long side is <= this (1008: 3 x 3 tiles)."""
    pool: int = 2
    """Each tile's patch grid is pooled ``pool`` x ``pool`` (bilinear): 24 x 24 -> 12 x 12 at 2; 1 = no pooling."""
    token_keep_ratio: float = 0.25
    """Fraction of a level's local tokens kept: ``max(1, floor(n * ratio))`` (then capped by ``token_budget``)."""
    max_tiles_per_level: int = 16
    """Most tiles fetched and encoded at any level after the coarsest (which is encoded whole)."""
    max_levels: int | None = None
    """Most pyramid levels visited, coarsest first; None walks down to full resolution."""
    token_budget: int | None = None
    """Most local tokens kept at any level (so at most this many fine tokens reach the LLM); None: no cap."""
    thumbnail_size: int = 336
    """The global thumbnail: long side resized to this, padded to a square (checked against the model)."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Images with more pixels are refused before decoding (``--max_image_pixels`` raises it)."""
    focus_softmax: str = "local"
    """Scores are a softmax over the ``"local"`` image tokens only (the paper) or over ``"all"`` keys (PyramidDrop)."""
    focus: str = "model"
    """What scores a level: ``"model"`` (the LLM's own first ``focus_layer`` layers, training-free), ``"trained"``
    (the checkpoint's focus module from ``--train_focus_module``, whose depth must equal ``focus_layer``) or
    ``"random"`` (uniform draws: the baseline at the same tile and token counts)."""
    focus_seed: int = 0
    """Seed of ``focus="random"``; with the pixels of the tiles scored it fixes the draws (batch-independent)."""

    def __post_init__(self) -> None:
        for name in ("tile_size", "base_long_side", "pool", "focus_layer", "max_tiles_per_level", "thumbnail_size",
                     "max_image_pixels"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("max_levels", "token_budget"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        ratio = self.token_keep_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
                or not 0 < ratio <= 1:
            raise ValueError(f"token_keep_ratio={ratio!r} must be a number in (0, 1]")
        object.__setattr__(self, "token_keep_ratio", float(ratio))
        if self.focus_softmax not in FOCUS_SOFTMAX:
            raise ValueError(f"focus_softmax={self.focus_softmax!r} is not one of {FOCUS_SOFTMAX}")
        if self.focus not in FOCUS:
            raise ValueError(f"focus={self.focus!r} is not one of {FOCUS}")
        _check_int("focus_seed", self.focus_seed, minimum=0)
        if self.base_long_side < self.tile_size:
            raise ValueError(f"base_long_side={self.base_long_side} must be >= tile_size={self.tile_size}")
        if self.tile_size % self.pool:
            raise ValueError(f"pool={self.pool} must divide tile_size={self.tile_size}")
        base_tiles = math.ceil(self.base_long_side / self.tile_size) ** 2
        if self.max_tiles_per_level < base_tiles:
            raise ValueError(f"max_tiles_per_level={self.max_tiles_per_level} is below the {base_tiles} tiles the "
                             f"coarsest level can have (base_long_side={self.base_long_side}, "
                             f"tile_size={self.tile_size})")

    # ------------------------------------------------------------------ dict round trip
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoarseToFineConfig":
        """Inverse of :meth:`to_dict`: ``focus_layer`` is required, other missing keys take their defaults,
        unknown keys are refused; each error names the key."""
        if not isinstance(data, dict):
            raise ValueError(f"a coarse-to-fine config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown coarse-to-fine config keys: {unknown} (known: {sorted(known)})")
        if "focus_layer" not in data:
            raise ValueError("coarse-to-fine config has no 'focus_layer' (required: decoder layers run before scoring)")
        return cls(**data)

    # ------------------------------------------------------------------ against a model
    def validate_for(self, num_hidden_layers: int, pdrop_schedule=None) -> None:
        """Refuse a focus layer that a model with ``num_hidden_layers`` layers (and its schedule) cannot have.

        ``focus_layer`` counts layers run before scoring, like a PyramidDrop boundary: it needs a next
        layer to score with (``<= num_hidden_layers - 1``) and must not be beyond the first boundary of
        ``pdrop_schedule`` (a ``PDropConfig`` or None), whose ranking expects every image token there.
        """
        if self.focus_layer > num_hidden_layers - 1:
            raise ValueError(f"focus_layer={self.focus_layer} needs a next layer to score with, but the language "
                             f"model has {num_hidden_layers} layers (focus_layer must be <= {num_hidden_layers - 1})")
        if pdrop_schedule is not None and self.focus_layer > pdrop_schedule.layer_list[0]:
            raise ValueError(f"focus_layer={self.focus_layer} is beyond the first PyramidDrop boundary "
                             f"{pdrop_schedule.layer_list[0]} (layer_list={list(pdrop_schedule.layer_list)})")

    def validate_vision(self, image_size: int, patch_size: int) -> None:
        """Refuse tiles / thumbnails the vision tower cannot take, and a pool that does not divide its grid."""
        for name in ("tile_size", "thumbnail_size"):
            if getattr(self, name) != image_size:
                raise ValueError(f"{name}={getattr(self, name)} must equal the vision tower's image_size={image_size}")
        grid = image_size // patch_size
        if grid % self.pool:
            raise ValueError(f"pool={self.pool} must divide the vision tower's {grid} x {grid} patch grid")

    def keep_count(self, num_tokens: int) -> int:
        """Local tokens kept out of ``num_tokens``: ``max(1, floor(n * ratio))``, capped by ``token_budget``."""
        if num_tokens <= 0:
            return 0
        keep = max(1, math.floor(num_tokens * self.token_keep_ratio))
        return keep if self.token_budget is None else min(keep, self.token_budget)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
