"""PyramidDrop: the method as plain tensor functions plus the stage-wise decoder forward.

Read top-down: :mod:`.schedule` (what to keep), :mod:`.ranking` (how tokens are scored),
:mod:`.keep` (choosing and compacting), :mod:`.decoder` (the stage loop: prefill and decode step),
:mod:`.cache` (the KV cache with per-stage state). Around them: :mod:`.flops` (the paper's count,
budgets), :mod:`.args` (the schedule flags of every command), :mod:`.support` (which decoders work).
``enable_pdrop`` lives with the model classes (:mod:`llava.model`).
"""

from .cache import PDropCache
from .decoder import DropTrace, pdrop_decoder_forward
from .schedule import PDropConfig, kept_image_tokens


def get_kept_positions(model) -> list[list]:
    """Per stage, per sample: input positions of the image tokens kept in the model's last prefill."""
    trace = getattr(model, "pdrop_trace", None)
    if trace is None:
        raise ValueError("no PyramidDrop forward has run on this model yet (or PyramidDrop is off, or "
                         "model.pdrop_record_trace is False)")
    return [trace.kept_image_positions(s) for s in range(trace.num_stages)]


__all__ = ["PDropConfig", "PDropCache", "DropTrace", "get_kept_positions", "kept_image_tokens", "pdrop_decoder_forward"]
