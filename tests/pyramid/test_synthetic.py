"""The huge-image demo's task: where the object is, what the thumbnail keeps of it, seeds, training crops."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from llava.pyramid.synthetic import COLORS, GROUND, QUESTION, HugeImageTask, make_eval_set, make_train_set

SMALL = HugeImageTask(image_size=1200, num_train=12, num_eval=3)


def far_from(color, pixels: np.ndarray) -> bool:
    """Every pixel at least 40 levels (per channel, somewhere) away from ``color``: the colour is absent."""
    return bool((np.abs(pixels.astype(int) - np.array(color)).max(axis=-1) >= 40).all())


def test_the_object_is_where_the_record_says_in_its_colour_and_nowhere_else(tmp_path):
    records = json.loads(make_eval_set(tmp_path, SMALL, seed=0).read_text())
    assert len(records) == 3 and all(r["question"] == QUESTION for r in records)
    for record in records:
        obj = record["object"]
        pixels = np.asarray(Image.open(tmp_path / "images" / record["image"]).convert("RGB"))
        assert pixels.shape == (1200, 1200, 3) and record["answer"] == obj["color"] in COLORS
        centre = pixels[obj["top"] + obj["side"] // 2, obj["left"] + obj["side"] // 2]
        assert np.abs(centre.astype(int) - COLORS[obj["color"]]).max() < 12  # JPEG keeps the colour
        outside = pixels.copy()
        outside[obj["top"] - 4:obj["top"] + obj["side"] + 4, obj["left"] - 4:obj["left"] + obj["side"] + 4] = GROUND
        assert far_from(COLORS[obj["color"]], outside)
        assert np.abs(outside.reshape(-1, 3).mean(0) - GROUND).max() < 6  # plain ground


def test_the_default_object_is_a_few_pixels_in_the_thumbnail_and_two_patches_at_full_resolution():
    task = HugeImageTask()
    assert task.object_size * 336 / task.image_size < 8  # 84 px -> 7 px of a 336 px thumbnail (42 px patches)
    assert task.object_size == 2 * 42  # one 2 x 2 pooled token at full resolution


def test_seeds_fix_the_bytes_and_evaluation_seeds_draw_other_images(tmp_path):
    first, again = make_eval_set(tmp_path / "a", SMALL, 0), make_eval_set(tmp_path / "b", SMALL, 0)
    assert first.read_text() == again.read_text()
    image = "images/eval-1200px-0-001.jpg"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()
    other = json.loads(make_eval_set(tmp_path / "a", SMALL, 1).read_text())
    assert [r["object"] for r in other] != [r["object"] for r in json.loads(first.read_text())]
    assert first.name == "eval-1200px-0.json" and other[0]["image"] == "eval-1200px-1-000.jpg"


def test_training_crops_are_tile_sized_at_the_pyramid_scales_with_llava_records(tmp_path):
    paths = make_train_set(tmp_path, SMALL, seed=0)
    finetune, pretrain = json.loads(paths["finetune"].read_text()), json.loads(paths["pretrain"].read_text())
    assert len(finetune) == len(pretrain) == 12
    for record, caption in zip(finetune, pretrain):
        assert Image.open(paths["images"] / record["image"]).size == (336, 336)
        question, answer = record["conversations"]
        assert question["value"] == f"<image>\n{QUESTION}" and answer["value"] in COLORS
        assert caption["conversations"][1]["value"].startswith(f"a {answer['value']} ")
    assert make_train_set(tmp_path / "again", SMALL, seed=0)["finetune"].read_text() == paths["finetune"].read_text()
