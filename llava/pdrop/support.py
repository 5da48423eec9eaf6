"""Which decoders the stage loop can drive, the one limit checked at run time (sliding windows), and ZeRO-3."""

from __future__ import annotations

from torch import nn

REQUIRED_DECODER_PARTS = ("embed_tokens", "layers", "norm", "rotary_emb")
REQUIRED_LAYER_PARTS = ("input_layernorm", "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.head_dim")


def check_decoder_supported(decoder: nn.Module) -> None:
    """Refuse a decoder whose layers lack what the ranking and the loop use, naming what is missing."""
    missing = [name for name in REQUIRED_DECODER_PARTS if not hasattr(decoder, name)]
    layer = decoder.layers[0] if hasattr(decoder, "layers") and len(decoder.layers) else None
    if layer is not None:
        for path in REQUIRED_LAYER_PARTS:
            obj = layer
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"layers[i].{path}")
        attn = getattr(layer, "self_attn", None)
        for extra in ("q_norm", "k_norm"):
            if getattr(attn, extra, None) is not None:
                missing.append(f"support for self_attn.{extra} (not implemented in the ranking)")
    if missing:
        raise ValueError(f"PyramidDrop does not support the decoder {type(decoder).__name__}: missing {missing}")


def partitioned_by_zero3(module: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions ``module``'s parameters (they carry ``ds_id``).

    Then every rank must call the same submodules in the same order in each forward (ZeRO-3 records
    the order and checks it across ranks), so no per-batch shortcut may skip a module call.
    """
    first = next(module.parameters(), None)
    return first is not None and hasattr(first, "ds_id")


def sliding_window(config) -> int | None:
    """The attention window some layer of this decoder applies, or None (full attention everywhere).

    Mistral applies ``sliding_window`` in every layer; Qwen2-style configs only in the layers whose
    ``layer_types`` entry is ``"sliding_attention"``.
    """
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return window


def check_window_not_binding(window: int | None, sequence_length: int) -> None:
    """Refuse a sequence long enough for a sliding ``window`` (:func:`sliding_window`) to bind.

    The stage loop builds full causal masks over the kept tokens; while no sequence is longer than
    the window, that is exactly what the windowed model computes.
    """
    if window is not None and sequence_length > window:
        raise ValueError(
            f"the sequence holds {sequence_length} tokens, more than the sliding window of {window} this model "
            "applies; PyramidDrop's stage loop uses full attention and is exact only up to the window: shorten "
            "the input or use a full-attention model"
        )
