"""PyramidDrop: the method as plain tensor functions plus the stage-wise decoder forward.

* :mod:`.schedule`  -- :class:`PDropConfig`, the validated schedule.
* :mod:`.ranking`   -- query positions and the attention scores of the image tokens.
* :mod:`.keep`      -- top-k selection and batch compaction.
* :mod:`.decoder`   -- the stage loop over a transformers decoder, :class:`DropTrace`.
* :mod:`.cache`     -- :class:`PDropCache`, the KV cache with per-stage state.
* :func:`enable_pdrop` -- switch a transformers LLaVA model to PyramidDrop and back.
"""

from .cache import PDropCache
from .decoder import DropTrace, pdrop_decoder_forward
from .enable import enable_pdrop
from .schedule import PDropConfig


def get_kept_positions(model) -> list[list]:
    """Per stage, per sample: input positions of the image tokens kept in the model's last prefill."""
    trace = getattr(model, "pdrop_trace", None)
    if trace is None:
        raise ValueError("no PyramidDrop forward has run on this model yet (or PyramidDrop is off)")
    return [trace.kept_image_positions(s) for s in range(trace.num_stages)]


__all__ = ["PDropConfig", "PDropCache", "DropTrace", "enable_pdrop", "get_kept_positions", "pdrop_decoder_forward"]
