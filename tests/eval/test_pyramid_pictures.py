"""Pictures of a coarse-to-fine walk: boxes worked out by hand, the drawn pixels, the ``pictures --coarse_to_fine`` CLI.

The image is 300 x 170 px; config ``tiny``: 28 px tiles, 14 px tokens (7 px patches pooled 2 x 2). Levels:
x8 38 x 22 px (1 x 2 tiles), x4 75 x 43 (2 x 3), x2 150 x 85 (4 x 6), x1 300 x 170 (7 x 11).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llava.eval import pictures
from llava.cli import cli_main
from llava.eval.pyramid_pictures import (CAPTION, DARKENED, GAP, TILE_COLOUR, background_factor, draw_panel, draw_walk,
                                         tile_boxes, token_boxes)
from llava.paths import load_pyramid_config
from llava.pyramid import LargeImage, LevelTrace, pyramid_levels
from tests.pyramid.checkpoint import save_tiny_next
from tests.pyramid.conftest import noise_image

LEVELS = pyramid_levels(300, 170, 28, 56)
SIZE = (300, 170)


def trace(level, tiles, kept):
    return LevelTrace(level, tiles, len(tiles) * 4, torch.tensor(kept, dtype=torch.long).reshape(-1, 2),
                      torch.ones(len(kept)))


def test_levels_of_the_example():
    assert [(lv.factor, lv.width, lv.height, lv.rows, lv.cols) for lv in LEVELS] == [
        (8, 38, 22, 1, 2), (4, 75, 43, 2, 3), (2, 150, 85, 4, 6), (1, 300, 170, 7, 11)]


def test_boxes_by_hand():
    x4 = trace(LEVELS[1], [(0, 0), (1, 1)], [[0, 1], [2, 3]])
    # token (0, 1) at x4: level px (14, 0, 28, 14) -> x4 -> (56, 0, 112, 56)
    # token (2, 3): (42, 28, 56, 42) -> (168, 112, 224, 168)
    assert token_boxes(x4, 14, SIZE) == [(56, 0, 112, 56), (168, 112, 224, 168)]
    # tile (1, 1) at x4: (28, 28, 56, 43) (the level is 43 px high) -> (112, 112, 224, 172) -> clipped at 170
    assert tile_boxes(x4, 28, SIZE) == [(0, 0, 112, 112), (112, 112, 224, 170)]
    x8 = trace(LEVELS[0], [(0, 1)], [[1, 2]])
    # tile (0, 1) at x8: (28, 0, 38, 22) -> (224, 0, 304, 176) -> clipped (224, 0, 300, 170)
    # token (1, 2): (28, 14, 42, 28) -> (224, 112, 336, 224) -> clipped (224, 112, 300, 170)
    assert tile_boxes(x8, 28, SIZE) == [(224, 0, 300, 170)] and token_boxes(x8, 14, SIZE) == [(224, 112, 300, 170)]


@pytest.mark.parametrize("factor,panel,expected", [(8, 30, 8), (8, 64, 4), (8, 76, 2), (8, 1000, 1), (2, 64, 2)])
def test_a_panel_is_never_drawn_finer_than_it_needs(factor, panel, expected):
    # 300 px: x8 -> 38 px, x4 -> 75, x2 -> 150; the coarsest reduction still >= the panel, never past the level's own
    assert background_factor(factor, SIZE, panel) == expected


def test_panel_pixels_kept_tokens_lit_tiles_outlined():
    config = load_pyramid_config("tiny")
    grey = Image.new("RGB", SIZE, (200, 200, 200))
    with LargeImage(grey) as image:
        panel = draw_panel(image, trace(LEVELS[1], [(0, 0), (1, 1)], [[2, 3]]), config, 14, panel_size=300)
    assert panel.size == SIZE  # 300 px panel: 1 panel px = 1 image px
    dark = round(200 * DARKENED)
    assert panel.getpixel((196, 140)) == (200, 200, 200)  # inside kept token (168, 112, 224, 168)
    assert panel.getpixel((150, 60)) == (dark,) * 3 and panel.getpixel((260, 20)) == (dark,) * 3  # elsewhere
    assert panel.getpixel((112, 140)) == TILE_COLOUR and panel.getpixel((50, 0)) == TILE_COLOUR  # tile edges


def test_the_walk_picture_has_a_panel_per_level_and_refuses_no_pyramid():
    config = load_pyramid_config("tiny")
    result = type("Result", (), {"traces": [trace(lv, [(0, 0)], [[0, 0]]) for lv in LEVELS] + [
        trace(LEVELS[-1], [(0, 1)], [[0, 2]])]})()
    with LargeImage(noise_image(*SIZE)) as image:
        picture = draw_walk(image, result, config, patch_size=7, panel_size=100, header="Q: what?")
    panel_w, panel_h = 100, round(170 * 100 / 300)
    assert picture.size == (GAP + 4 * (panel_w + GAP), GAP + 14 + 2 * (panel_h + CAPTION + GAP))  # 5 panels: 4 + 1
    assert picture.getpixel((picture.width - GAP - panel_w // 2, picture.height - GAP - 5)) == (255, 255, 255)
    result.traces = []
    with LargeImage(noise_image(20, 20)) as image, pytest.raises(ValueError, match="fits one 28 px tile: no pyramid"):
        draw_walk(image, result, config, patch_size=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_next(tmp_path_factory.mktemp("pictures") / "tiny-next")


def test_pictures_command_draws_the_walk(checkpoint, tmp_path, capsys):
    noise_image(*SIZE, seed=3).save(tmp_path / "scene.png")
    out = tmp_path / "walk.png"
    summary = pictures.main(["--coarse_to_fine", "--pyramid_config", "tiny", "--model_path", str(checkpoint),
                             "--image", str(tmp_path / "scene.png"), "--question", "Where is the ship?",
                             "--out", str(out), "--panel_size", "100", "--attn_implementation", "eager"])
    levels = len(summary["tiles_per_level"])  # one panel per level visited (the walk may stop before x1)
    assert 1 <= levels <= 4 and summary["tiles_per_level"][0] == 2  # the coarsest level whole
    assert Image.open(out).size == (GAP + levels * (100 + GAP), GAP + 14 + round(170 / 3) + CAPTION + GAP)
    assert f"wrote {out}: tiles per level {summary['tiles_per_level']}" in capsys.readouterr().out
    noise_image(20, 20).save(tmp_path / "small.png")
    with pytest.raises(SystemExit):
        cli_main(pictures.main, ["--coarse_to_fine", "--pyramid_config", "tiny", "--model_path", str(checkpoint),
                                 "--image", str(tmp_path / "small.png"), "--question", "What?", "--out",
                                 str(tmp_path / "small-walk.png")], "llava.eval.pictures")
    err = capsys.readouterr().err
    assert "llava.eval.pictures: error: question picture: " in err and "fits one 28 px tile: no pyramid" in err
    assert not (tmp_path / "small-walk.png").exists()
