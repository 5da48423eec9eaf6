"""A synthetic huge-image task for the coarse-to-fine demo: one small coloured object on a large plain ground.

* **Evaluation images** (:func:`make_eval_set`): ``image_size`` x ``image_size`` px (4,000 by default) of
  earthy ground with smooth colour variation, and one object (a square or a disc) of ``object_size`` px
  (84: under 3 px in a 336 px thumbnail, two 42 px patches at full resolution) in one of
  :data:`COLORS`, placed at random. Question: "What color is the object?"; answer: its colour.
* **Training images** (:func:`make_train_set`): ``tile`` x ``tile`` images (336: one vision-tower input)
  of the same ground with one object, each a crop at one of the pyramid's scales (``train_zooms``: a
  ``tile * k`` crop reduced ``k`` times, as level x``k`` shows it), and the same question
  (``finetune.json``) or a caption (``pretrain.json``, the ``plain`` template).

Everything is drawn from ``random.Random`` / ``numpy`` generators seeded by the arguments, so the same
seed writes the same bytes on any machine. JPEG, as aerial photos usually are (and the reader's
reduced-scale decoding applies).

Example::

    task = HugeImageTask(num_train=400, num_eval=8)
    make_train_set(Path("playground/huge-demo/assets/data"), task, seed=0)
    make_eval_set(Path("playground/huge-demo/assets/data"), task, seed=0)   # eval-4000px-0.json + images
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (45, 75, 215), "yellow": (235, 215, 45),
          "purple": (150, 60, 200), "white": (245, 245, 245)}
SHAPES = ("square", "disc")
GROUND = (128, 112, 84)  # mean colour of the ground (dry earth)
QUESTION = "What color is the object?"
DETAIL = 4  # pixels per ground sample (the ground is drawn small and enlarged)


@dataclass(frozen=True)
class HugeImageTask:
    """Sizes and counts of the task (module docstring)."""

    image_size: int = 4000
    """Side of an evaluation image in pixels."""
    object_size: int = 84
    """Side of the object in an evaluation image (px)."""
    tile: int = 336
    """Side of a training image: the vision tower's input."""
    train_object_sizes: tuple[int, int] = (56, 112)
    """Smallest and largest object side in a training crop before its zoom (uniform), in full-resolution px."""
    train_zooms: tuple[int, ...] = (1, 1, 2, 4)
    """A training image is a ``tile * k`` crop reduced ``k`` times, ``k`` drawn from these: the scales at
    which the pyramid's levels show the ground and the object (x1, x2, x4 of a 4,000 px image)."""
    ground_variation: int = 12
    """Largest deviation of the ground's colour from :data:`GROUND`, per channel, at the large scale."""
    texture_variation: int = 6
    """Largest deviation of the fine texture (cells of about 16 px), per channel."""
    num_train: int = 1600
    """Training images."""
    num_eval: int = 16
    """Evaluation images per seed."""
    jpeg_quality: int = 92

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def ground(rng: np.random.Generator, width: int, height: int, task: HugeImageTask) -> Image.Image:
    """Plain ground: :data:`GROUND` plus smooth variation (cells of ~256 px) and a fine texture (~16 px).

    Made at a quarter of the size (4 px per sample: the finest variation is 16 px wide) and enlarged
    bilinearly, so a 4,000 px image takes a fraction of a second.
    """
    w, h = -(-width // DETAIL), -(-height // DETAIL)
    pixels = np.zeros((h, w, 3), dtype=np.int16) + np.array(GROUND, dtype=np.int16)
    for cell, amplitude in ((256 // DETAIL, task.ground_variation), (16 // DETAIL, task.texture_variation)):
        rows, cols = h // cell + 2, w // cell + 2
        noise = rng.integers(-amplitude, amplitude + 1, size=(rows, cols, 3)) + 128
        # the cell grid overhangs the image by one cell; enlarging it bilinearly makes smooth variation
        big = Image.fromarray(noise.astype(np.uint8)).resize((cols * cell, rows * cell), Image.Resampling.BILINEAR)
        pixels += np.asarray(big, dtype=np.int16)[:h, :w] - 128
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return small.resize((w * DETAIL, h * DETAIL), Image.Resampling.BILINEAR).crop((0, 0, width, height))


def draw_object(image: Image.Image, shape: str, color: str, left: int, top: int, side: int) -> None:
    """A ``shape`` (square or disc) of ``side`` px in ``color`` with its top-left corner at ``(left, top)``."""
    draw = ImageDraw.Draw(image)
    box = [left, top, left + side - 1, top + side - 1]
    if shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    elif shape == "disc":
        draw.ellipse(box, fill=COLORS[color])
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def scene(rng: random.Random, size: int, side: int) -> dict:
    """An object of ``side`` px somewhere in a ``size`` px square: ``{shape, color, left, top, side}``."""
    return {"shape": rng.choice(SHAPES), "color": rng.choice(list(COLORS)), "left": rng.randint(0, size - side),
            "top": rng.randint(0, size - side), "side": side}


def render(obj: dict, size: int, task: HugeImageTask, seed: int) -> Image.Image:
    """The ``size`` px image of ``obj`` on ground drawn with ``seed``."""
    image = ground(np.random.default_rng(seed), size, size, task)
    draw_object(image, obj["shape"], obj["color"], obj["left"], obj["top"], obj["side"])
    return image


def make_train_set(out: Path, task: HugeImageTask, seed: int = 0) -> dict[str, Path]:
    """``out/images/train_*.jpg`` and ``out/{pretrain,finetune}.json`` (LLaVA format); returns the paths."""
    rng = random.Random(f"pyramid-train-{seed}")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    pretrain, finetune = [], []
    low, high = task.train_object_sizes
    for i in range(task.num_train):
        zoom = rng.choice(task.train_zooms)
        obj = scene(rng, task.tile * zoom, rng.randint(low, high))
        name = f"train_{i:05d}.jpg"
        image = render(obj, task.tile * zoom, task, seed=rng.getrandbits(32))
        image.reduce(zoom).save(images / name, quality=task.jpeg_quality)
        pretrain.append({"id": f"cap-{i}", "image": name, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture."},
            {"from": "gpt", "value": f"a {obj['color']} {obj['shape']}"}]})
        finetune.append({"id": f"vqa-{i}", "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": obj["color"]}]})
    paths = {"pretrain": out / "pretrain.json", "finetune": out / "finetune.json", "images": images}
    paths["pretrain"].write_text(json.dumps(pretrain, indent=1))
    paths["finetune"].write_text(json.dumps(finetune, indent=1))
    return paths


def make_eval_set(out: Path, task: HugeImageTask, seed: int) -> Path:
    """``out/eval-{size}px-{seed}.json``: ``task.num_eval`` images of ``task.image_size`` px (``out/images/``), one
    question each. Records: ``{"id", "image", "question", "answer", "object"}`` (``object``: shape, colour, box)."""
    rng = random.Random(f"pyramid-eval-{task.image_size}-{seed}")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    tag = f"{task.image_size}px-{seed}"
    records = []
    for i in range(task.num_eval):
        obj = scene(rng, task.image_size, task.object_size)
        name = f"eval-{tag}-{i:03d}.jpg"
        render(obj, task.image_size, task, seed=rng.getrandbits(32)).save(images / name, quality=task.jpeg_quality)
        records.append({"id": f"eval-{tag}-{i}", "image": name, "question": QUESTION, "answer": obj["color"],
                        "object": obj})
    path = out / f"eval-{tag}.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def corpus() -> list[str]:
    """The task's texts (for its tokenizer)."""
    return [QUESTION, "Describe the picture."] + [f"a {color} {shape}" for color in COLORS for shape in SHAPES]


__all__ = ["COLORS", "GROUND", "HugeImageTask", "QUESTION", "SHAPES", "corpus", "draw_object", "ground",
           "make_eval_set", "make_train_set", "render", "scene"]
