"""``enable_pdrop``: switch a transformers LLaVA model to PyramidDrop in place, or back."""

from __future__ import annotations

from torch import nn

from .schedule import PDropConfig


def _class_pairs() -> dict[type, type]:
    from ..model.pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

    return {cls.stock_class: cls for cls in (PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration)}


def enable_pdrop(model: nn.Module, config: PDropConfig | dict | None) -> nn.Module:
    """Turn PyramidDrop on (``config``) or off (``None``) for ``model``, in place; returns ``model``.

    ``model`` is a transformers ``LlavaForConditionalGeneration`` or ``LlavaNextForConditionalGeneration``
    (it becomes our subclass ``PDropLlava...``, same weights and modules) or already one of ours. The
    schedule is written to ``model.config.pdrop`` so ``save_pretrained`` keeps it. ``None`` restores
    the stock class and forward. Raises ``ValueError`` if the schedule does not fit the model.
    """
    pairs = _class_pairs()
    pdrop_classes = set(pairs.values())
    if type(model) in pairs:
        if config is None:
            return model
        model.__class__ = pairs[type(model)]
        model._init_pdrop()
        try:
            model.set_pdrop_config(config)
        except Exception:
            model.__class__ = model.stock_class
            raise
        return model
    if not any(isinstance(model, cls) for cls in pdrop_classes):
        supported = ", ".join(cls.__name__ for cls in pairs)
        raise TypeError(f"enable_pdrop supports {supported}; got {type(model).__name__}")
    model.set_pdrop_config(config)
    if config is None and type(model) in pdrop_classes:
        for attr in ("pdrop_config", "pdrop_trace"):
            model.__dict__.pop(attr, None)
        model.__class__ = model.stock_class
    return model
