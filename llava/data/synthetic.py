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
from dataclasses import asdict, dataclass
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
        draw_shape(draw, shape, (left, top), side, PALETTE[color])
    return image


def draw_shape(draw, shape: str, corner: tuple[int, int], side: int, fill: tuple[int, int, int]) -> None:
    """One ``shape`` (square, circle or triangle) filling the ``side`` x ``side`` box at ``corner`` = (left, top)."""
    left, top = corner
    box = [left, top, left + side - 1, top + side - 1]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(left + side // 2, top), (box[2], box[3]), (left, box[3])], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


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


def make_tokenizer(vocab_size: int = 1024, texts: list[str] | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (default :func:`corpus`; deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus() if texts is None else texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512, padding_side="right",
    )


TINY_TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.05)
TINY_VISION_CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=28, patch_size=7, projection_dim=32)


def make_llm(out: Path, seed: int = 0, text_config: dict | None = None, tokenizer=None) -> Path:
    """A random ``LlamaForCausalLM`` (default: the tiny 4-layer one) and its tokenizer in ``out`` (HF format).

    ``text_config``: Llama config fields (a model preset's ``text_config``); the vocabulary and the
    special token ids always come from ``tokenizer`` (default :func:`make_tokenizer`).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or make_tokenizer()
    fields = {k: v for k, v in (text_config or TINY_TEXT_CONFIG).items() if k not in _TOKENIZER_FIELDS}
    config = LlamaConfig(
        **fields, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


_TOKENIZER_FIELDS = ("model_type", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")


def make_vision_tower(out: Path, seed: int = 1, vision_config: dict | None = None, readable: bool = False) -> Path:
    """A random ``CLIPVisionModel`` (default: the tiny one, 28 px, 7 px patches) and its ``CLIPImageProcessor``.

    The processor's resize and crop size are the tower's ``image_size``. ``readable``: see
    :func:`readable_patch_embeddings`.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    fields = {k: v for k, v in (vision_config or TINY_VISION_CONFIG).items() if k != "model_type"}
    config = CLIPVisionConfig(**fields)
    torch.manual_seed(seed)
    tower = CLIPVisionModel(config)
    if readable:
        readable_patch_embeddings(tower)
    tower.save_pretrained(out)
    side = config.image_size
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(out)
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


# --------------------------------------------------------------------------- the demo's task
DEMO_DATA_VERSION = 1  # bump when the demo's pictures, questions or models change for the same settings
DEMO_COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
               "purple": (150, 60, 200), "white": (240, 240, 240)}


@dataclass(frozen=True)
class DemoTask:
    """The demo's synthetic VQA task: which part of the picture holds the answer is named by the question.

    A grey ``canvas`` x ``canvas`` picture (square: no padding, so each quadrant is a fixed block of
    image tokens) holds one shape in each of ``objects`` quadrants, each in a different colour of
    :data:`DEMO_COLORS`, placed at random inside its quadrant. Two kinds of question:

    - ``where``: "Where is the red shape?" -> "top left" (the colour names the object, the answer is its place);
    - ``color``: "What color is the shape in the top left?" -> "red" (the place names the object).

    Either way the answer is in the few image tokens of one quadrant, and which one only the question says.
    """

    canvas: int = 56
    """Side of the picture in pixels (the demo's vision tower takes it as is)."""
    shape_side: int = 14
    """Side of each shape's box in pixels."""
    cell: int = 14
    """Shapes sit on a grid of this many pixels (the demo's patch size: each covers whole image tokens; with
    ``shape_side`` 14, one token, at one of four places in its quadrant)."""
    objects: int = 4
    """Shapes per held-out picture, one per quadrant (1..4), and the most a training picture has."""
    min_train_objects: int = 4
    """The fewest shapes a training picture has (uniform between this and ``objects``). Four, as at
    evaluation: measured, pictures with fewer shapes taught the small model a shortcut (answer from the
    one shape in sight) that it kept on four-shape pictures (54 % there against 100 % on one shape)."""
    kinds: tuple[str, ...] = ("where", "color")
    """Question kinds asked (see above)."""
    questions_per_image: int = 2
    """Training: questions asked about one picture (turns of one conversation)."""
    num_train: int = 24000
    """Training pictures (the demo's finetuning sees each about once: fewer are learnt by heart)."""
    num_eval: int = 1000
    """Held-out pictures per evaluation seed (one question each; answering 1,000 takes seconds)."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def demo_scene(rng: random.Random, task: DemoTask, objects: int) -> list[dict]:
    """``objects`` shapes: ``{"place", "shape", "color", "corner"}`` each, distinct places and colours."""
    half = task.canvas // 2
    slack = half - task.shape_side
    if slack < 0 or not 1 <= objects <= len(PLACES):
        raise ValueError(f"{task}: shapes must fit a quadrant and a picture holds 1..{len(PLACES)} of them")
    places = rng.sample(PLACES, objects)
    colors = rng.sample(list(DEMO_COLORS), objects)
    scene = []
    for place, color in zip(places, colors):
        left = rng.randrange(0, slack + 1, task.cell) + (half if "right" in place else 0)
        top = rng.randrange(0, slack + 1, task.cell) + (half if "bottom" in place else 0)
        scene.append({"place": place, "shape": rng.choice(SHAPES), "color": color, "corner": (left, top)})
    return scene


def draw_demo_scene(scene: list[dict], task: DemoTask):
    """The picture of :func:`demo_scene`'s ``scene``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (task.canvas, task.canvas), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for obj in scene:
        draw_shape(draw, obj["shape"], tuple(obj["corner"]), task.shape_side, DEMO_COLORS[obj["color"]])
    return image


def demo_question(kind: str, obj: dict) -> tuple[str, str]:
    """(question, answer) of ``kind`` about the object ``obj`` of a scene."""
    if kind == "where":
        return f"Where is the {obj['color']} shape?", obj["place"]
    if kind == "color":
        return f"What color is the shape in the {obj['place']}?", obj["color"]
    raise ValueError(f"unknown question kind {kind!r}; known: where, color")


def demo_token(obj: dict, task: DemoTask) -> int:
    """Row-major index, in the ``canvas / cell`` grid of image tokens, of the token at the top-left cell of
    ``obj``'s box: the one token that holds the shape when ``shape_side == cell`` (the demo's default)."""
    left, top = obj["corner"]
    return (top // task.cell) * (task.canvas // task.cell) + left // task.cell


def demo_kind(question: str) -> str:
    """The kind of a question :func:`demo_question` wrote (an ``<image>`` line before it is allowed)."""
    return "where" if question.split("\n")[-1].startswith("Where is the") else "color"


def demo_answers() -> dict[str, list[str]]:
    """Every answer each question kind can have (chance accuracy is one over their number)."""
    return {"where": list(PLACES), "color": list(DEMO_COLORS)}


def _demo_pictures(rng: random.Random, task: DemoTask, count: int, image_dir: Path, prefix: str,
                   fewest: int) -> list[dict]:
    records = []
    for i in range(count):
        scene = demo_scene(rng, task, rng.randint(fewest, task.objects))
        name = f"{prefix}_{i:05d}.png"
        draw_demo_scene(scene, task).save(image_dir / name)
        records.append({"image": name, "scene": scene})
    return records


def make_demo_train(out: Path, task: DemoTask, seed: int = 0) -> dict[str, Path]:
    """Training pictures and ``pretrain.json`` (captions, ``plain``) + ``finetune.json`` (questions) under ``out``."""
    rng = random.Random(f"demo-train-{seed}")
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    pictures = _demo_pictures(rng, task, task.num_train, image_dir, "train", task.min_train_objects)
    pretrain, finetune = [], []
    for i, picture in enumerate(pictures):
        described = ", ".join(f"{o['color']} {o['shape']} {o['place']}" for o in picture["scene"])
        pretrain.append({"id": f"cap-{i}", "image": picture["image"], "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": described}]})
        turns = []
        for obj in rng.sample(picture["scene"], min(task.questions_per_image, len(picture["scene"]))):
            q, a = demo_question(rng.choice(task.kinds), obj)
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        finetune.append({"id": f"vqa-{i}", "image": picture["image"], "conversations": turns})
    paths = {"pretrain": out / "pretrain.json", "finetune": out / "finetune.json", "images": image_dir}
    paths["pretrain"].write_text(json.dumps(pretrain, indent=1))
    paths["finetune"].write_text(json.dumps(finetune, indent=1))
    return paths


def make_demo_eval(out: Path, task: DemoTask, seed: int) -> Path:
    """``eval-{seed}.json`` under ``out``: ``task.num_eval`` held-out pictures, one question each, kinds alternating.

    Records: ``{"id", "image", "question", "answer", "kind", "token"}``, ``token`` the image token that holds
    the shape asked about (:func:`demo_token`); a different ``seed`` draws other pictures.
    """
    rng = random.Random(f"demo-eval-{seed}")
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, picture in enumerate(_demo_pictures(rng, task, task.num_eval, image_dir, f"eval{seed}", task.objects)):
        kind = task.kinds[i % len(task.kinds)]
        obj = rng.choice(picture["scene"])
        q, a = demo_question(kind, obj)
        records.append({"id": f"eval{seed}-{i}", "image": picture["image"], "question": q, "answer": a, "kind": kind,
                        "token": demo_token(obj, task)})
    path = out / f"eval-{seed}.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def demo_corpus() -> list[str]:
    """Every text of the demo task, for its tokenizer: the templates' words, the questions, and the answers
    both after a space (``vicuna_v1``) and at the start of a line (``chatml``), so each is one or two tokens."""
    lines = [TEMPLATE_TEXT, "Describe the picture.", "system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    for color in DEMO_COLORS:
        for place in PLACES:
            obj = {"color": color, "place": place}
            lines += [" ".join(demo_question(kind, obj)) for kind in ("where", "color")]
            lines += [f"{color} {shape} {place}," for shape in SHAPES]
    answers = [a for kind in demo_answers().values() for a in kind]
    lines += answers + [f"\n{a}" for a in answers] + list(SHAPES)
    return lines * 4


def make_demo_models(out: Path, preset: dict, seed: int = 0) -> dict[str, Path]:
    """``llm/`` and ``vision/`` under ``out``: random models of the preset's shape, the demo's tokenizer.

    The vision tower's embeddings are made readable (:func:`readable_patch_embeddings`), as a stand-in
    for a pretrained encoder, whose patch features say what is in the patch and where it is.
    """
    tokenizer = make_tokenizer(texts=demo_corpus())
    return {"llm": make_llm(out / "llm", seed, preset["text_config"], tokenizer),
            "vision": make_vision_tower(out / "vision", seed + 1, preset["vision_config"], readable=True)}


def readable_patch_embeddings(tower) -> None:
    """Write a patch's mean colour and its grid cell into a random ``CLIPVisionModel``'s embeddings, in place.

    Channels 0-2 of the patch embedding average the patch's (normalised) R, G and B; the position
    embedding of the patch in row r, column c of the g x g grid is 1 in channel 3 + r and in channel
    3 + g + c (the CLS token's is 0 there). Every other channel keeps its random weights, and the
    encoder layers stay random.
    """
    import torch

    embeddings = tower.embeddings
    weight = embeddings.patch_embedding.weight  # (D, 3, p, p)
    positions = embeddings.position_embedding.weight  # (1 + g * g, D): CLS first
    grid = round((positions.shape[0] - 1) ** 0.5)
    if weight.shape[0] < 3 + 2 * grid:
        raise ValueError(f"the vision tower needs hidden_size >= {3 + 2 * grid} for readable embeddings, "
                         f"has {weight.shape[0]}")
    with torch.no_grad():
        weight[:3 + 2 * grid] = 0.0
        for channel in range(3):
            weight[channel, channel] = 1.0 / weight[0, 0].numel()
        positions[:, :3 + 2 * grid] = 0.0
        for cell in range(grid * grid):
            row, col = divmod(cell, grid)
            positions[1 + cell, 3 + row] = 1.0
            positions[1 + cell, 3 + grid + col] = 1.0


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
