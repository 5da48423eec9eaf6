"""Build LLaVA models of a preset's shape with random weights (tests, demo, benchmarks).

Real checkpoints load with ``PDropLlavaForConditionalGeneration.from_pretrained(hub_id_or_dir)``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, LlavaConfig

from ..paths import load_model_preset
from ..pdrop.schedule import PDropConfig
from .pdrop_llava import PDropLlavaForConditionalGeneration


def llava_config_from_preset(preset: str | dict[str, Any]) -> LlavaConfig:
    """A ``LlavaConfig`` from a preset name (``configs/models/NAME.json``) or an already loaded dict."""
    spec = load_model_preset(preset) if isinstance(preset, str) else preset
    if spec.get("architecture", "llava") != "llava":
        raise ValueError(f"preset architecture {spec.get('architecture')!r}: only 'llava' models can be built here")
    text = dict(spec["text_config"])
    vision = dict(spec["vision_config"])
    return LlavaConfig(
        text_config=AutoConfig.for_model(text.pop("model_type"), **text),
        vision_config=AutoConfig.for_model(vision.pop("model_type"), **vision),
        image_token_id=spec["image_token_id"],
        projector_hidden_act=spec.get("projector_hidden_act", "gelu"),
        vision_feature_layer=spec.get("vision_feature_layer", -2),
        vision_feature_select_strategy=spec.get("vision_feature_select_strategy", "default"),
    )


def build_random_llava(
    preset: str | dict[str, Any] = "tiny-llava",
    pdrop_config: PDropConfig | None = None,
    attn_implementation: str = "eager",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> PDropLlavaForConditionalGeneration:
    """A randomly initialised model of the preset's shape, PyramidDrop on if ``pdrop_config`` is given."""
    config = llava_config_from_preset(preset)
    torch.manual_seed(seed)
    model = PDropLlavaForConditionalGeneration(config)
    model.set_attn_implementation(attn_implementation)
    model.set_pdrop_config(pdrop_config)
    return model.to(dtype).eval()
