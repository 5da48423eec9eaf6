"""A tiny LLaVA-NeXT checkpoint with its processor, saved for the command-line tests (28 px CLIP, 7 px patches)."""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPImageProcessor

from llava.data import build_processor
from llava.data.synthetic import make_tokenizer
from llava.model.builder import build_random_llava
from llava.paths import load_model_preset

PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def tiny_next_processor(anyres: bool = True):
    tokenizer = make_tokenizer()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = build_processor(tokenizer, image_processor, patch_size=7,
                                image_grid_pinpoints=PINPOINTS if anyres else None)
    processor.tokenizer.padding_side = "left"
    return processor


def tiny_next_model(tokenizer, schedule=None, seed=0, preset="tiny-llava-next"):
    """The tiny-llava-next preset with the tokenizer's vocabulary and image token, larger weights (peaked attention)."""
    spec = load_model_preset(preset)
    spec["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               initializer_range=0.2)
    spec["image_token_id"] = tokenizer.convert_tokens_to_ids("<image>")
    if "image_grid_pinpoints" in spec:
        spec["image_grid_pinpoints"] = PINPOINTS
    return build_random_llava(spec, schedule, seed=seed)


def save_tiny_next(path: Path, schedule=None, seed=0, preset="tiny-llava-next") -> Path:
    """Save the model and processor in ``path`` (a standard transformers checkpoint); returns ``path``.

    ``preset="tiny-llava"`` saves a LLaVA-1.5 instead (for the refusals of NeXT-only features).
    """
    processor = tiny_next_processor(anyres=preset != "tiny-llava")
    model = tiny_next_model(processor.tokenizer, schedule, seed, preset)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)
