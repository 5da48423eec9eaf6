"""Which focus scores a level (``CoarseToFineConfig.focus``): the LLM's own layers, the trained module, or chance.

* ``"model"``: :func:`.focus.focus_scores` on the language model's first ``focus_layer`` layers (training-free).
* ``"trained"``: the same function (the driver calls it) on the checkpoint's
  :class:`~.focus_module.RegionFocusModule` (its ``focus_layer`` must equal the config's, so the FLOPs
  count and the walk agree).
* ``"random"``: uniform draws (:func:`llava.pdrop.ranking.random_scores`), keyed by the bits of the tiles'
  pixels, ``focus_seed`` and each token's rank: the same image and seed draw the same tokens whatever the
  batch. The baseline "random tiles at the same tile count": the walk and its caps are unchanged.
"""

from __future__ import annotations

import torch

from ..pdrop.ranking import random_keys, random_scores
from .config import CoarseToFineConfig
from .focus_module import focus_module_of


def check_focus(model, config: CoarseToFineConfig) -> None:
    """Refuse a trained focus that the model lacks or whose depth is not ``config.focus_layer`` (loads it if saved)."""
    if config.focus != "trained":
        return
    module = focus_module_of(model)
    if module.focus_layer != config.focus_layer:
        raise ValueError(f"focus='trained': the focus module scores after {module.focus_layer} layers, but "
                         f"focus_layer={config.focus_layer}; set --focus_layer {module.focus_layer}")


def focus_decoder(model, config: CoarseToFineConfig):
    """What :func:`.focus.focus_scores` runs for ``config.focus``: the language model (``"model"``), the trained
    module (``"trained"``), or None (``"random"``: :func:`random_focus_scores` instead)."""
    if config.focus == "random":
        return None
    return focus_module_of(model) if config.focus == "trained" else model.model.language_model


def random_focus_scores(config: CoarseToFineConfig, attention_mask: torch.Tensor,
                        tile_pixels: list[torch.Tensor]) -> torch.Tensor:
    """``(B, n)`` float32 uniform draws in [0, 1) (read them at the local tokens).

    Args:
        attention_mask: ``(B, n)`` the focus sequence's mask (a token's draw depends on its rank among
            the real tokens, not on padding).
        tile_pixels: per sample its ``(k, 3, T, T)`` tiles being scored: their bits key the draws.
    """
    keys = torch.stack([tiles_key(pixels) for pixels in tile_pixels])
    return random_scores(keys.to(attention_mask.device), attention_mask.bool(), config.focus_seed, boundary=0)


def tiles_key(pixels: torch.Tensor) -> torch.Tensor:
    """An int64 key of ``(k, 3, T, T)`` tiles: each tile's bits hashed (:func:`random_keys`, one tile at a time, so
    the hash's int64 copies stay small), combined in order with odd multipliers (integer arithmetic wraps)."""
    key = torch.zeros((), dtype=torch.long)
    for index, tile in enumerate(pixels):
        rows = tile.reshape(1, -1, tile.shape[-1])
        key = key + random_keys(rows, torch.ones(rows.shape[:2], dtype=torch.bool))[0] * (2 * index + 1)
    return key
