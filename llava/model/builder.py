"""Build LLaVA models of a preset's shape with random weights (tests, demo, benchmarks).

A preset (``configs/models/NAME.json``) names the architecture (``llava`` or ``llava_next``), the
language model and vision tower configs, and the image/text token counts used by the FLOPs and
benchmark commands. Real checkpoints load with ``PDropLlava...ForConditionalGeneration.from_pretrained``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, LlavaConfig, LlavaNextConfig

from ..paths import load_model_preset
from ..pdrop.schedule import PDropConfig
from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

ARCHITECTURES = {
    "llava": (LlavaConfig, PDropLlavaForConditionalGeneration),
    "llava_next": (LlavaNextConfig, PDropLlavaNextForConditionalGeneration),
}


def _preset(preset: str | dict[str, Any]) -> dict[str, Any]:
    spec = load_model_preset(preset) if isinstance(preset, str) else preset
    if spec.get("architecture", "llava") not in ARCHITECTURES:
        raise ValueError(f"preset architecture {spec.get('architecture')!r} is not one of {sorted(ARCHITECTURES)}")
    return spec


def llava_config_from_preset(preset: str | dict[str, Any]) -> LlavaConfig | LlavaNextConfig:
    """A ``LlavaConfig`` / ``LlavaNextConfig`` from a preset name or an already loaded dict."""
    spec = _preset(preset)
    config_class, _ = ARCHITECTURES[spec.get("architecture", "llava")]
    text, vision = dict(spec["text_config"]), dict(spec["vision_config"])
    extra = {"image_grid_pinpoints": spec["image_grid_pinpoints"]} if "image_grid_pinpoints" in spec else {}
    return config_class(
        text_config=AutoConfig.for_model(text.pop("model_type"), **text),
        vision_config=AutoConfig.for_model(vision.pop("model_type"), **vision),
        image_token_id=spec["image_token_id"],
        projector_hidden_act=spec.get("projector_hidden_act", "gelu"),
        vision_feature_layer=spec.get("vision_feature_layer", -2),
        vision_feature_select_strategy=spec.get("vision_feature_select_strategy", "default"),
        **extra,
    )


def build_random_llava(
    preset: str | dict[str, Any] = "tiny-llava",
    pdrop_config: PDropConfig | None = None,
    attn_implementation: str = "eager",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """A randomly initialised model of the preset's shape, PyramidDrop on if ``pdrop_config`` is given."""
    spec = _preset(preset)
    config = llava_config_from_preset(spec)
    torch.manual_seed(seed)
    model = ARCHITECTURES[spec.get("architecture", "llava")][1](config)
    model.set_attn_implementation(attn_implementation)
    model.set_pdrop_config(pdrop_config)
    return model.to(dtype).eval()


def llava_class(name_or_path: str):
    """Our class for the LLaVA / LLaVA-NeXT checkpoint at ``name_or_path`` (folder or Hub id)."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(name_or_path).model_type
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{name_or_path} is a {model_type!r} model, not a LLaVA / LLaVA-NeXT checkpoint "
                         "(original-format checkpoints convert with python -m llava.model.convert)")
    return ARCHITECTURES[model_type][1]


def load_llava(name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               attn_implementation: str = "sdpa", **kwargs):
    """A released LLaVA / LLaVA-NeXT checkpoint (folder or Hub id) with our class, in eval mode, and its processor.

    The checkpoint's saved schedule applies; ``pdrop_config=`` in ``kwargs`` overrides it (None: off).
    """
    from transformers import AutoProcessor

    model = llava_class(name_or_path).from_pretrained(name_or_path, dtype=dtype, attn_implementation=attn_implementation,
                                                      **kwargs)
    return model.to(device).eval(), AutoProcessor.from_pretrained(name_or_path)
