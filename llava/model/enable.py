"""``enable_pdrop``: switch a transformers LLaVA model to PyramidDrop in place, or back."""

from __future__ import annotations

from torch import nn

from ..pdrop.schedule import PDropConfig
from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

PDROP_CLASSES = (PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration)
STOCK_TO_PDROP = {cls.stock_class: cls for cls in PDROP_CLASSES}


def enable_pdrop(model: nn.Module, config: PDropConfig | dict | None) -> nn.Module:
    """Turn PyramidDrop on (``config``) or off (``None``) for ``model``, in place; returns ``model``.

    ``model`` is a transformers ``LlavaForConditionalGeneration`` or ``LlavaNextForConditionalGeneration``
    (it becomes our subclass ``PDropLlava...``, same weights and modules) or already one of ours. The
    schedule is written to ``model.config.pdrop`` so ``save_pretrained`` keeps it. ``None`` restores
    the stock class and forward. Raises ``ValueError`` if the schedule does not fit the model.
    """
    if type(model) in STOCK_TO_PDROP:
        if config is None:
            return model
        model.__class__ = STOCK_TO_PDROP[type(model)]
        model._init_pdrop()
        try:
            model.set_pdrop_config(config)
        except Exception:
            model.__class__ = model.stock_class
            raise
        return model
    if not isinstance(model, PDROP_CLASSES):
        supported = ", ".join(cls.__name__ for cls in STOCK_TO_PDROP)
        raise TypeError(f"enable_pdrop supports {supported}; got {type(model).__name__}")
    model.set_pdrop_config(config)
    if config is None and type(model) in PDROP_CLASSES:
        for attr in ("pdrop_config", "pdrop_trace", "_saved_pdrop_error"):
            model.__dict__.pop(attr, None)
        model.__class__ = model.stock_class
    return model
