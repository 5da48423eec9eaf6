"""Assemble a LLaVA model from a language model, a CLIP vision tower and a new projector.

What training starts from (``--model_name_or_path`` an LLM, ``--vision_tower`` a CLIP): the LLM's
decoder and head and the CLIP tower are moved, not copied, into transformers' LLaVA (or
LLaVA-NeXT) class, a fresh ``mlp2x_gelu`` projector is created (or loaded from a pretraining
stage's ``mm_projector.bin``), ``<image>`` is added to the tokenizer (embeddings resized to a
multiple of 64) and a transformers processor is built. Either path works, Hub id or local folder.

Launch (to write an assembled, untrained checkpoint; training does this in memory)::

    python -m llava.model.assemble --llm lmsys/vicuna-7b-v1.5 --vision_tower openai/clip-vit-large-patch14-336 \\
        --out checkpoints/vicuna-7b-clip-l-336-init
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    LlavaConfig,
    LlavaNextConfig,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from ..cli import ArgumentParser, check_model_source, cli_main
from .processor import add_image_token, build_processor
from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

LLAVA_MODEL_TYPES = ("llava", "llava_next")
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}
PROJECTOR_TYPES = ("mlp2x_gelu",)
ANYRES_GRID = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))  # LLaVA-NeXT's crop grids, in vision-tower tiles
ORIGINAL_PROJECTOR_INDEX = {"0": "linear_1", "2": "linear_2"}  # LLaVA's nn.Sequential(Linear, GELU, Linear)


@dataclass
class VisionSpec:
    """How the image side is wired: the CLIP tower and what of it the LLM sees."""

    vision_tower: str
    select_layer: int = -2
    select_feature: str = "patch"
    projector_type: str = "mlp2x_gelu"
    patch_merge_type: str = "flat"  # flat (LLaVA-1.5) or spatial_unpad (LLaVA-NeXT)
    image_grid_pinpoints: list[list[int]] | None = None

    def __post_init__(self):
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"mm_projector_type={self.projector_type!r}: only {PROJECTOR_TYPES} maps to "
                             "transformers' LLaVA projector")
        if self.select_feature not in SELECT_FEATURE:
            raise ValueError(f"mm_vision_select_feature={self.select_feature!r} is not one of {sorted(SELECT_FEATURE)}")
        if self.patch_merge_type not in ("flat", "spatial_unpad"):
            raise ValueError(f"mm_patch_merge_type={self.patch_merge_type!r} is not flat or spatial_unpad")

    @property
    def anyres(self) -> bool:
        return self.patch_merge_type == "spatial_unpad"


def is_llava_checkpoint(name_or_path: str) -> bool:
    """True when the path / Hub id holds a whole LLaVA or LLaVA-NeXT (transformers format)."""
    return AutoConfig.from_pretrained(name_or_path).model_type in LLAVA_MODEL_TYPES


def assemble_llava(llm: str, vision: VisionSpec, dtype: torch.dtype = torch.float32,
                   attn_implementation: str = "sdpa", seed: int = 0):
    """A ``PDropLlava[Next]ForConditionalGeneration`` (PyramidDrop off) and its processor.

    The LLM's weights and the CLIP tower are reused as they are; the projector (and NeXT's
    ``image_newline``) are newly initialised with ``seed``.
    """
    tokenizer = AutoTokenizer.from_pretrained(llm, use_fast=True)
    image_token_id = add_image_token(tokenizer)
    language_model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
    tower = CLIPVisionModel.from_pretrained(vision.vision_tower, dtype=dtype)
    image_processor = AutoImageProcessor.from_pretrained(vision.vision_tower)
    config = _llava_config(language_model.config, tower.config, vision, image_token_id)
    model_class = PDropLlavaNextForConditionalGeneration if vision.anyres else PDropLlavaForConditionalGeneration
    with torch.device("meta"):
        model = model_class(config)
    torch.manual_seed(seed)
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    model.model.vision_tower = tower
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    if vision.anyres:
        hidden = config.text_config.hidden_size
        model.model.image_newline = nn.Parameter(torch.randn(hidden, dtype=dtype) / math.sqrt(hidden))
    _check_materialised(model)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    model.generation_config = language_model.generation_config
    model.set_attn_implementation(attn_implementation)
    processor = build_processor(
        tokenizer, image_processor, patch_size=tower.config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_grid_pinpoints=config.image_grid_pinpoints if vision.anyres else None,
    )
    return model, for_generation(processor)


def for_generation(processor):
    """``processor`` (or a bare tokenizer) set to pad on the left, as it is saved with every model.

    Batched generation needs left padding (each row's last token is the prompt's end), and a user
    who batches with the saved processor directly gets it. Training never pads through the
    tokenizer: its collator pads on the right itself.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    return processor


def _llava_config(text_config, vision_config, vision: VisionSpec, image_token_id: int):
    common = dict(
        text_config=text_config, vision_config=vision_config, image_token_id=image_token_id,
        projector_hidden_act="gelu", vision_feature_layer=vision.select_layer,
        vision_feature_select_strategy=SELECT_FEATURE[vision.select_feature], multimodal_projector_bias=True,
        tie_word_embeddings=getattr(text_config, "tie_word_embeddings", False),
    )
    if not vision.anyres:
        return LlavaConfig(**common)
    size = vision_config.image_size
    pinpoints = vision.image_grid_pinpoints or [[size * h, size * w] for h, w in ANYRES_GRID]
    return LlavaNextConfig(image_grid_pinpoints=pinpoints, **common)


def _check_materialised(model: nn.Module) -> None:
    left = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"assembly left tensors uninitialised: {left[:5]}")


def load_projector(model, path: str | Path) -> None:
    """Load a pretraining stage's projector (ours or original LLaVA's ``mm_projector.bin``) into ``model``.

    Works on a model partitioned by DeepSpeed ZeRO-3 (the parameters are gathered while loading).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrain_mm_mlp_adapter {path} does not exist (run the pretraining stage first)")
    raw = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    state = {projector_key(name): tensor for name, tensor in raw.items()}
    projector = model.get_base_model().model.multi_modal_projector if hasattr(model, "get_base_model") \
        else model.model.multi_modal_projector
    expected = dict(projector.named_parameters())
    if set(state) != set(expected):
        raise ValueError(f"{path}: projector weights {sorted(state)} do not match the model's {sorted(expected)}")
    with gathered_parameters(list(expected.values()), modify=True):
        for name, param in expected.items():
            if tuple(state[name].shape) != tuple(param.shape):
                raise ValueError(f"{path}: {name} has shape {tuple(state[name].shape)}, the model's projector "
                                 f"{tuple(param.shape)} (a projector from another LLM or vision tower?)")
            with torch.no_grad():
                param.copy_(state[name].to(param.dtype))


def projector_key(name: str) -> str:
    """``linear_1.weight`` for any of our or LLaVA's names of a projector weight."""
    for prefix in ("model.multi_modal_projector.", "multi_modal_projector.", "model.mm_projector.", "mm_projector."):
        if name.startswith(prefix):
            name = name.removeprefix(prefix)
            break
    index, _, param = name.partition(".")
    return f"{ORIGINAL_PROJECTOR_INDEX.get(index, index)}.{param}"


def projector_state_dict(model) -> dict[str, torch.Tensor]:
    """The projector's weights under LLaVA's names (``model.mm_projector.{0,2}.*``), as LLaVA saves them."""
    projector = model.model.multi_modal_projector
    original = {v: k for k, v in ORIGINAL_PROJECTOR_INDEX.items()}
    out = {}
    for name, param in projector.named_parameters():
        layer, _, kind = name.partition(".")
        out[f"model.mm_projector.{original[layer]}.{kind}"] = param.detach().cpu().clone()
    return out


def gathered_parameters(params, modify: bool = False):
    """DeepSpeed's GatheredParameters for ZeRO-3 partitioned parameters, else a no-op context.

    Every rank must enter it. With ``modify`` rank 0's changes are scattered back to all ranks on exit.
    """
    import contextlib

    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)
    return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("llava.model.assemble", description="Assemble an untrained LLaVA from an LLM and a CLIP "
                            "vision tower.")
    parser.add_argument("--llm", required=True, help="language model: Hub id or folder")
    parser.add_argument("--vision_tower", required=True, help="CLIP vision tower: Hub id or folder")
    parser.add_argument("--out", required=True, help="folder to write the checkpoint and processor to")
    parser.add_argument("--mm_vision_select_layer", type=int, default=-2)
    parser.add_argument("--mm_vision_select_feature", default="patch", choices=sorted(SELECT_FEATURE))
    parser.add_argument("--mm_patch_merge_type", default="flat", choices=["flat", "spatial_unpad"])
    args = parser.parse_args(argv)
    check_model_source(args.llm, "--llm")
    check_model_source(args.vision_tower, "--vision_tower")
    spec = VisionSpec(args.vision_tower, args.mm_vision_select_layer, args.mm_vision_select_feature,
                      patch_merge_type=args.mm_patch_merge_type)
    model, processor = assemble_llava(args.llm, spec)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli_main(main, prog="llava.model.assemble")
