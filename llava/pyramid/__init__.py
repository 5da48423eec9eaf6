"""Coarse-to-fine, text-guided tile selection for huge images on LLaVA-NeXT (LRS-VQA, arXiv 2503.07588).

The method, as implemented here (the focus uses the LLM's own first layers, or a trained focus module):

* **Dynamic Image Pyramid** (:mod:`.geometry`): levels at scales 1, 1/2, 1/4, ... of the image down
  to a base whose long side is <= ``base_long_side`` (1008 px, 3 x 3 tiles), each cut into
  ``tile_size`` tiles (336, the CLIP input; the last row / column padded); plus a global thumbnail.
* **Tokens** (:mod:`.select`): the thumbnail keeps the vision tower's g x g tokens (576); a tile's
  tokens are pooled ``pool`` x ``pool`` (bilinear, 144 a tile), laid out row-major over the level
  with LLaVA-NeXT's newline token after each token row.
* **Region focus** (:mod:`.focus`): ``[prefix, thumbnail, level tokens, question]`` runs through the
  first ``focus_layer`` decoder layers; PyramidDrop's ranking (next layer's q/k, RoPE, float32
  softmax over the local tokens, mean over heads) scores each local token for the last question token.
  ``focus="trained"``: the same pass on LRS-VQA's Region Focus Module (:mod:`.focus_module`), copies of
  the LLM's first layers distilled from the full LLM's attention (:mod:`.distill`, ``--train_focus_module``);
  ``focus="random"``: the baseline (:mod:`.scoring`).
* **Coarse to fine** (:mod:`.driver`): keep the top ``token_keep_ratio`` tokens, map each to the
  tiles of the next (2x finer) level, fetch and encode only those (at most ``max_tiles_per_level``),
  repeat down to full resolution (or ``max_levels``); the last level's kept tokens (at most
  ``token_budget``) follow the thumbnail in the LLM's input, where PyramidDrop may cut further.
* **Huge files** (:mod:`.image_io`): read lazily (Pillow ``reduce`` / ``draft``, crops on demand),
  refused above ``max_image_pixels``; only tiles become float tensors (:mod:`.pixels`).

Configs: :class:`CoarseToFineConfig`, ``configs/pyramid/*.json`` (``llava.paths.load_pyramid_config``).
Command-line flags (one set for every command): :mod:`.args`; FLOPs of a run (vision tower, focus passes,
LLM): :mod:`.flops`. Answering with it: ``llava.eval.coarse_to_fine`` (``llava.eval.run / infer --coarse_to_fine``).
"""

from .config import CoarseToFineConfig
from .driver import (CoarseToFineResult, LevelTrace, PyramidNotApplicable, check_model, coarse_to_fine,
                     coarse_to_fine_batch, pack_input_ids, pack_inputs)
from .geometry import Level, pyramid_applies, pyramid_levels
from .image_io import ImageReadError, LargeImage, open_image
from .pixels import PixelNorm

__all__ = ["CoarseToFineConfig", "CoarseToFineResult", "ImageReadError", "LargeImage", "Level", "LevelTrace",
           "PixelNorm", "PyramidNotApplicable", "check_model", "coarse_to_fine", "coarse_to_fine_batch",
           "open_image", "pack_input_ids", "pack_inputs", "pyramid_applies", "pyramid_levels"]
