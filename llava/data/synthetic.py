"""The embedded default: a tiny LLM, a tiny CLIP vision tower and a synthetic picture dataset.

Everything the training scripts need on a machine that cannot download: written once to a folder
(``playground/tiny`` by default) in the same formats as the real thing, so the real loading code
runs on it:

- ``llm/``: a random 4-layer Llama (``LlamaForCausalLM``) with a byte-level BPE tokenizer trained
  here on the dataset's text and the conversation templates' markers (no ``<image>`` token: model
  assembly adds it, as it does for Vicuna).
- ``vision/``: a random 2-layer ``CLIPVisionModel`` (28 px, 7 px patches: 16 image tokens) and its
  ``CLIPImageProcessor``.
- ``data/images/*.png``: three shapes (a square, a circle, a triangle) in three of the four
  quadrants of a grey canvas of varied size and aspect ratio: one coloured, two white or black.
- ``data/pretrain.json`` (captions, ``plain`` template), ``data/finetune.json`` (LLaVA-1.5 style
  instructions: one image, multi-turn, two images, text only), ``data/eval.json`` (held-out
  questions with one-word answers).

The question names one object ("What color is the triangle?"): the answer is in that object's
region of the image and nowhere else (a few of the image tokens), so which tokens a model keeps
matters. (A tiny model does not learn to find a region by its name, "the shape in the top left",
in minutes on a CPU: it stayed at chance in our tries; naming the one coloured object it learns.)

Launch::

    python -m llava.data.synthetic --out playground/tiny
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
NEUTRAL = {"white": (240, 240, 240), "black": (20, 20, 20)}  # the distractors' colours, never an answer
SHAPES = ("square", "circle", "triangle")
PLACES = ("top left", "top right", "bottom left", "bottom right")
CANVAS_SIZES = ((48, 48), (64, 40), (40, 64), (72, 36), (36, 72))  # (width, height)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
TEMPLATE_TEXT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: ASSISTANT: system user assistant "
    "You are a helpful assistant. You are a helpful language and vision assistant."
)
PALETTE = {**COLORS, **NEUTRAL}
TEXT_ONLY = [("What is two plus three?", "five"), ("What is one plus one?", "two"),
             ("Name a colour of the sky.", "blue"), ("How many sides has a square?", "four")]


def draw_scene(scene: dict[str, tuple[str, str]], size: tuple[int, int]):
    """A grey ``size`` (width, height) canvas with, per quadrant ``place -> (shape, color)``, one shape."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(image)
    half_w, half_h = width // 2, height // 2
    side = min(half_w, half_h) - 4
    for place, (shape, color) in scene.items():
        left = (half_w - side) // 2 + (half_w if "right" in place else 0)
        top = (half_h - side) // 2 + (half_h if "bottom" in place else 0)
        box = [left, top, left + side - 1, top + side - 1]
        if shape == "square":
            draw.rectangle(box, fill=PALETTE[color])
        elif shape == "circle":
            draw.ellipse(box, fill=PALETTE[color])
        else:
            draw.polygon([(left + side // 2, top), (box[2], box[3]), (left, box[3])], fill=PALETTE[color])
    return image


def draw_square(color: str, place: str, size: tuple[int, int]):
    """One ``color`` square in the quadrant ``place`` (the simplest scene)."""
    return draw_scene({place: ("square", color)}, size)


def _scene_records(rng: random.Random, count: int, image_dir: Path, prefix: str) -> list[dict]:
    """``count`` scenes: three shapes of different kinds in three quadrants, one coloured (the target)."""
    records = []
    for i in range(count):
        places = rng.sample(PLACES, 3)
        shapes = rng.sample(SHAPES, 3)
        target = (shapes[0], rng.choice(list(COLORS)))
        scene = {places[0]: target, places[1]: (shapes[1], "white"), places[2]: (shapes[2], "black")}
        name = f"{prefix}_{i:04d}.png"
        draw_scene(scene, rng.choice(CANVAS_SIZES)).save(image_dir / name)
        records.append({"image": name, "scene": scene, "target": target})
    return records


def caption(scene: dict[str, tuple[str, str]]) -> str:
    return ", ".join(f"{color} {shape} {place}" for place, (shape, color) in scene.items())


def question(shape: str) -> str:
    """The question names the object whose region holds the answer."""
    return f"What color is the {shape}?"


def _finetune_record(rng: random.Random, i: int, rec: dict, other: dict) -> dict:
    shape, color = rec["target"]
    turns = [{"from": "human", "value": f"<image>\n{question(shape)}"}, {"from": "gpt", "value": color}]
    if i % 4 == 1:  # multi-turn
        q, a = TEXT_ONLY[i % len(TEXT_ONLY)]
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    if i % 8 == 3:  # two images
        same = "yes" if other["target"][1] == color else "no"
        return {"id": f"pair-{i}", "image": [rec["image"], other["image"]], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nAre the coloured shapes the same color?"},
            {"from": "gpt", "value": same}]}
    return {"id": f"vqa-{i}", "image": rec["image"], "conversations": turns}


def make_dataset(out: Path, seed: int = 0, num_train: int = 600, num_eval: int = 100) -> dict[str, Path]:
    """Write images and the three LLaVA-format JSON files under ``out``; returns their paths.

    ``eval.json`` holds ``{"id", "image", "question", "answer"}`` records on held-out images.
    """
    rng = random.Random(seed)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    train = _scene_records(rng, num_train, image_dir, "train")
    held_out = _scene_records(rng, num_eval, image_dir, "eval")
    pretrain = [{"id": f"cap-{i}", "image": r["image"], "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": caption(r["scene"])}]} for i, r in enumerate(train)]
    finetune = [_finetune_record(rng, i, r, train[(i + 1) % len(train)]) for i, r in enumerate(train)]
    for i in range(len(train) // 6):  # text-only samples mixed in
        q, a = TEXT_ONLY[i % len(TEXT_ONLY)]
        finetune.append({"id": f"text-{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
    rng.shuffle(finetune)
    evaluation = []
    for i, r in enumerate(held_out):
        shape, color = r["target"]
        evaluation.append({"id": f"eval-{i}", "image": r["image"], "question": question(shape), "answer": color})
    paths = {"pretrain": out / "pretrain.json", "finetune": out / "finetune.json", "eval": out / "eval.json",
             "images": image_dir}
    for name, records in (("pretrain", pretrain), ("finetune", finetune), ("eval", evaluation)):
        paths[name].write_text(json.dumps(records, indent=1))
    return paths


def corpus() -> list[str]:
    """Every text the tiny tokenizer should encode compactly."""
    lines = [TEMPLATE_TEXT, "Describe the picture.", "Are the coloured shapes the same color? yes no"]
    lines += [question(shape) for shape in SHAPES]
    lines += [f"{color} {shape} {place}," for color in PALETTE for shape in SHAPES for place in PLACES]
    lines += [f"{q} {a}" for q, a in TEXT_ONLY]
    return lines * 4


def make_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on :func:`corpus` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512, padding_side="right",
    )


def make_llm(out: Path, seed: int = 0) -> Path:
    """A random tiny ``LlamaForCausalLM`` and its tokenizer in ``out`` (HF format)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.05,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_vision_tower(out: Path, seed: int = 1) -> Path:
    """A random tiny ``CLIPVisionModel`` (28 px, 7 px patches) and its ``CLIPImageProcessor`` in ``out``."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=7, projection_dim=32)
    torch.manual_seed(seed)
    CLIPVisionModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(out)
    return out


def make_tiny_assets(out: str | Path = "playground/tiny", seed: int = 0) -> dict[str, Path]:
    """Write ``llm/``, ``vision/`` and ``data/`` under ``out`` unless already there.

    Written into a temporary sibling folder and renamed, so a reader never sees half of it and
    concurrent writers (several ranks) all end with the same complete folder.
    """
    out = Path(out)
    if not (out / "data" / "eval.json").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if out.parent.exists()
                                        else _mkdir(out.parent)))
        make_llm(staging / "llm", seed)
        make_vision_tower(staging / "vision", seed + 1)
        make_dataset(staging / "data", seed)
        try:
            staging.rename(out)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
            if not (out / "data" / "eval.json").is_file():
                raise
    return {"llm": out / "llm", "vision": out / "vision", "data": out / "data"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llava.data.synthetic",
                                     description="Write the tiny LLM, vision tower and synthetic dataset.")
    parser.add_argument("--out", default="playground/tiny", help="folder to write (skipped if already complete)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in make_tiny_assets(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    from ..cli import cli_main

    cli_main(main, prog="llava.data.synthetic")
