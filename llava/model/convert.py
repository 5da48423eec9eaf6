"""Convert an original-format LLaVA checkpoint (haotian-liu/LLaVA, official PyramidDrop code) to transformers format.

The original layout: a Llama/Mistral/Qwen2 causal LM whose ``config.json`` carries ``mm_*`` keys and
whose weights hold ``model.mm_projector.{0,2}.*`` (``mlp2x_gelu``), optionally ``model.image_newline``
(any-resolution NeXT) and ``model.vision_tower.vision_tower.vision_model.*``. Images are marked by
the id -200 there; here an ``<image>`` token is appended to the vocabulary (padded to a multiple of
64, new rows set to the mean embedding). A ``layer_list`` / ``image_token_ratio_list`` in the
source config becomes the saved PyramidDrop schedule.

Launch::

    python -m llava.model.convert --src ./checkpoints/llava-v1.5-7b-pdrop --dst ./checkpoints/llava-v1.5-7b-pdrop-hf \\
        --vision_tower openai/clip-vit-large-patch14-336
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlavaConfig, LlavaNextConfig

from ..cli import ArgumentParser, cli_main
from ..pdrop.schedule import PDropConfig
from .assemble import SELECT_FEATURE, for_generation, projector_key
from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

TEXT_MODEL_TYPES = {"llava_llama": "llama", "llava": "llama", "llava_mistral": "mistral", "llava_qwen": "qwen2"}
VISION_PREFIX = "model.vision_tower.vision_tower."
MM_KEYS = ("mm_", "image_aspect_ratio", "image_grid_pinpoints", "tune_mm", "freeze_mm", "unfreeze_mm",
           "layer_list", "image_token_ratio_list", "tokenizer_", "use_mm_proj")


def load_original_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``src``'s safetensors (preferred) or ``pytorch_model*.bin`` files; no pickled code runs."""
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    weights = {}
    for file in files:
        weights.update(load_file(file) if file.suffix == ".safetensors" else _load_tensors(file))
    return weights


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict read with ``weights_only=True`` (passed explicitly: torch < 2.6 defaults to False)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error: ")[-1].split("\n")[0]
        raise ValueError(f"{file} holds more than tensors and loading it could run code, so it is refused ({reason}). "
                         "A checkpoint from a source you trust can be re-saved as safetensors first") from None


def build_config(source: dict, vision_config: CLIPVisionConfig):
    model_type = source.get("model_type", "llava_llama")
    if model_type not in TEXT_MODEL_TYPES:
        raise ValueError(f"config model_type={model_type!r} is not an original LLaVA type {sorted(TEXT_MODEL_TYPES)}")
    if source.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise ValueError(f"mm_projector_type={source.get('mm_projector_type')!r}: only mlp2x_gelu maps to transformers' LLaVA")
    feature = source.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURE:
        raise ValueError(f"mm_vision_select_feature={feature!r} is not one of {sorted(SELECT_FEATURE)}")
    text = {k: v for k, v in source.items() if not k.startswith(MM_KEYS) and k not in ("model_type", "architectures")}
    vocab = source["vocab_size"]
    text["vocab_size"] = (vocab + 1 + 63) // 64 * 64
    common = dict(text_config=AutoConfig.for_model(TEXT_MODEL_TYPES[model_type], **text), vision_config=vision_config,
                  image_token_id=vocab, vision_feature_layer=source.get("mm_vision_select_layer", -2),
                  vision_feature_select_strategy=SELECT_FEATURE[feature], projector_hidden_act="gelu")
    anyres = "anyres" in str(source.get("image_aspect_ratio", "")) or "unpad" in str(source.get("mm_patch_merge_type", ""))
    config = LlavaNextConfig(image_grid_pinpoints=source["image_grid_pinpoints"], **common) if anyres else LlavaConfig(**common)
    if "layer_list" in source and "image_token_ratio_list" in source:
        config.pdrop = PDropConfig(source["layer_list"], source["image_token_ratio_list"]).to_dict()
    return config


def map_weights(weights: dict[str, torch.Tensor], new_vocab: int) -> dict[str, torch.Tensor]:
    """Original names -> ``PDropLlava...`` names; the vocabulary grows to ``new_vocab`` rows."""
    mapped = {}
    for name, tensor in weights.items():
        if name.startswith(VISION_PREFIX):
            continue
        if name.startswith("model.mm_projector."):
            mapped[f"model.multi_modal_projector.{projector_key(name)}"] = tensor
        elif name == "model.image_newline":
            mapped["model.image_newline"] = tensor
        elif name == "lm_head.weight":
            mapped[name] = _grow_rows(tensor, new_vocab)
        elif name.startswith("model."):
            grown = _grow_rows(tensor, new_vocab) if name == "model.embed_tokens.weight" else tensor
            mapped["model.language_model." + name.removeprefix("model.")] = grown
        else:
            raise ValueError(f"unexpected weight {name!r} in an original LLaVA checkpoint")
    if "lm_head.weight" not in mapped:
        mapped["lm_head.weight"] = mapped["model.language_model.embed_tokens.weight"]  # tied embeddings
    return mapped


def _grow_rows(matrix: torch.Tensor, rows: int) -> torch.Tensor:
    extra = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype).expand(rows - matrix.shape[0], -1)
    return torch.cat([matrix, extra], dim=0)


def load_vision_tower(weights: dict[str, torch.Tensor], vision_tower: str | None, source: dict) -> CLIPVisionModel:
    """The CLIP tower: from ``--vision_tower`` (dir or Hub id), else from weights saved in the checkpoint."""
    name = vision_tower or source.get("mm_vision_tower")
    if name is None:
        raise ValueError("no vision tower: pass --vision_tower (a CLIP directory or Hub id)")
    embedded = {k.removeprefix(VISION_PREFIX): v for k, v in weights.items() if k.startswith(VISION_PREFIX)}
    if not embedded:
        return CLIPVisionModel.from_pretrained(name)
    config = CLIPVisionConfig.from_pretrained(name)
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in embedded.items()}, Path(tmp) / "model.safetensors")
        return CLIPVisionModel.from_pretrained(tmp)


def convert(src: str | Path, dst: str | Path, vision_tower: str | None = None):
    """Write a transformers-format checkpoint of ``src`` to ``dst``; returns the loaded model."""
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (is this an original-format LLaVA checkpoint directory?)")
    source = json.loads((src / "config.json").read_text())
    weights = load_original_weights(src)
    tower = load_vision_tower(weights, vision_tower, source)
    config = build_config(source, tower.config)
    model_class = PDropLlavaNextForConditionalGeneration if isinstance(config, LlavaNextConfig) \
        else PDropLlavaForConditionalGeneration
    model = model_class(config)
    missing, unexpected = model.load_state_dict(map_weights(weights, config.text_config.vocab_size), strict=False)
    missing = [k for k in missing if not k.startswith("model.vision_tower.")]
    if missing or unexpected:
        raise ValueError(f"weights do not match the converted model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.save_pretrained(dst)
    if (src / "tokenizer_config.json").exists():
        tokenizer = for_generation(AutoTokenizer.from_pretrained(src))
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        if tokenizer.convert_tokens_to_ids("<image>") != config.image_token_id:
            raise ValueError(f"the tokenizer gives <image> id {tokenizer.convert_tokens_to_ids('<image>')}, "
                             f"expected {config.image_token_id} (vocab_size of the source config)")
        tokenizer.save_pretrained(dst)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("llava.model.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="original-format checkpoint directory")
    parser.add_argument("--dst", required=True, help="output directory (transformers format)")
    parser.add_argument("--vision_tower", help="CLIP vision tower directory or Hub id (default: config mm_vision_tower)")
    args = parser.parse_args(argv)
    model = convert(args.src, args.dst, args.vision_tower)
    print(f"wrote {type(model).stock_class.__name__} checkpoint to {args.dst} (schedule: {model.config.pdrop})")


if __name__ == "__main__":
    cli_main(main, prog="llava.model.convert")
