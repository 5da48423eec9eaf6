"""Kept-token pictures: token geometry against the processor and the model, drawing, the model run, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFont
from transformers import CLIPImageProcessor

from llava.data import build_processor, expand_to_square, num_image_tokens
from llava.data.synthetic import draw_square, make_tokenizer
from llava.eval import pictures
from llava.eval.pictures import PANEL_GAP, Box, draw_kept_tokens, kept_token_picture, token_boxes, token_layout
from llava.model.builder import build_random_llava
from llava.paths import load_model_preset
from llava.pdrop import PDropConfig

PINPOINTS = [[28, 56], [56, 28], [56, 56]]
TINY_SCHEDULE = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])
NEXT_SIZES = [(40, 40), (56, 28), (28, 56), (100, 30), (57, 31)]  # (width, height)


@pytest.fixture(scope="module")
def tokenizer():
    tok = make_tokenizer()
    build_processor(tok, _image_processor(), patch_size=7)  # adds <image>
    return tok


def _image_processor():
    return CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_processor(tokenizer, _image_processor(), patch_size=7)


@pytest.fixture(scope="module")
def next_processor(tokenizer):
    return build_processor(tokenizer, _image_processor(), patch_size=7, image_grid_pinpoints=PINPOINTS)


def tiny_model(tokenizer, preset="tiny-llava", schedule=TINY_SCHEDULE):
    """A tiny preset whose vocabulary and image token are the tokenizer's (the presets' are 128 / 127)."""
    spec = load_model_preset(preset)
    spec["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    spec["image_token_id"] = tokenizer.convert_tokens_to_ids("<image>")
    return build_random_llava(spec, schedule)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def next_model(tokenizer):
    return tiny_model(tokenizer, "tiny-llava-next")


@pytest.fixture(scope="module")
def checkpoint(model, processor, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-llava"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def gradient(width: int, height: int) -> Image.Image:
    """Red grows left to right, green top to bottom, blue 255: a pixel's colour tells where it came from."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 255)], -1).round().astype(np.uint8))


def cell_colours(pixel_values: torch.Tensor, processor, patch: int = 7) -> torch.Tensor:
    """``(P, g*g, 3)``: the mean RGB (0..255) under each patch of each vision input, in the tower's order."""
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1, 1)
    pixels = (pixel_values * std + mean) * 255
    return torch.nn.functional.avg_pool2d(pixels, patch).flatten(2).transpose(1, 2)


def gradient_at(box: Box, width: int, height: int) -> torch.Tensor:
    """The gradient's mean over ``box`` (its value at the box centre: the gradient is linear)."""
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    return torch.tensor([255 * (cx - 0.5) / (width - 1), 255 * (cy - 0.5) / (height - 1), 255.0])


def assert_inside(boxes, width, height):
    for box in boxes:
        if box is not None:
            assert 0 <= box.left < box.right <= width and 0 <= box.top < box.bottom <= height


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("aspect_ratio", ["pad", "square"])
@pytest.mark.parametrize("size", [(40, 40), (56, 28), (28, 56), (100, 30)])
def test_llava_boxes_count_the_features_and_follow_the_pixels(model, processor, aspect_ratio, size):
    width, height = size
    image = gradient(width, height)
    seen = expand_to_square(image, (0, 0, 0)) if aspect_ratio == "pad" else image
    pixel_values = processor.image_processor([seen], return_tensors="pt")["pixel_values"]
    features = model.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    boxes = token_boxes(model.config, (height, width), aspect_ratio)
    assert len(boxes) == features[0].shape[0] == num_image_tokens(processor, (seen.height, seen.width)) == 16
    assert_inside(boxes, width, height)
    checked = 0
    for colour, box in zip(cell_colours(pixel_values, processor)[0], boxes):
        if box is not None and colour[2] > 250:  # a patch wholly inside the image (padding is black)
            torch.testing.assert_close(colour, gradient_at(box, width, height), atol=3.0, rtol=0)
            checked += 1
    assert checked >= (8 if (aspect_ratio, size) != ("pad", (100, 30)) else 0)


@pytest.mark.parametrize("size", NEXT_SIZES)
def test_next_boxes_count_the_features_and_follow_the_pixels(next_model, next_processor, size):
    width, height = size
    out = next_processor.image_processor([gradient(width, height)], return_tensors="pt")
    features = next_model.model.get_image_features(pixel_values=out["pixel_values"], image_sizes=out["image_sizes"],
                                                   return_dict=True).pooler_output
    layout = token_layout(next_model.config, (height, width), "anyres")
    assert len(layout.boxes) == features[0].shape[0] == num_image_tokens(next_processor, (height, width))
    assert_inside(layout.boxes, width, height)
    # The model's own packing (base image, unpadded crops, newlines) applied to patch colours.
    newline = torch.full((3,), -1000.0)
    packed, _ = next_model.model.pack_image_features([cell_colours(out["pixel_values"][0], next_processor)],
                                                     out["image_sizes"], "default", image_newline=newline)
    checked = 0
    for colour, box in zip(packed[0], layout.boxes):
        assert (box is None) == bool(colour[0] < -999)  # None exactly at the newline tokens
        if box is not None and colour[2] > 250:
            torch.testing.assert_close(colour, gradient_at(box, width, height), atol=1.0, rtol=0)
            checked += 1
    assert checked >= 0.6 * len(layout.boxes)


@pytest.mark.parametrize("size", NEXT_SIZES)
def test_next_newlines_end_every_high_res_row_and_the_base_grid_tiles_the_image(next_model, size):
    width, height = size
    layout = token_layout(next_model.config, (height, width), "anyres")
    (base_name, base), (high_name, high) = layout.groups
    assert (base, base_name) == (range(16), "base image") and high.stop == len(layout.boxes)
    high_boxes = layout.boxes[high.start:]
    newlines = [i for i, box in enumerate(high_boxes) if box is None]
    row = newlines[0] + 1
    assert newlines == list(range(row - 1, len(high_boxes), row))
    assert_tiles([layout.boxes[i] for i in base], 4, width, height)


@pytest.mark.parametrize("aspect_ratio", ["pad", "square"])
def test_square_image_grid_tiles_the_image(model, aspect_ratio):
    assert_tiles(token_boxes(model.config, (40, 40), aspect_ratio), 4, 40, 40)


def assert_tiles(boxes, grid, width, height):
    """Row-major cells of width/grid x height/grid that cover the image exactly."""
    assert len(boxes) == grid * grid
    for i, box in enumerate(boxes):
        r, c = divmod(i, grid)
        expected = (c * width / grid, r * height / grid, (c + 1) * width / grid, (r + 1) * height / grid)
        assert box == pytest.approx(expected)
    assert sum((b.right - b.left) * (b.bottom - b.top) for b in boxes) == pytest.approx(width * height)


def test_pad_tokens_in_the_padding_cover_nothing(model):
    boxes = token_boxes(model.config, (30, 100), "pad")  # 100 x 100 canvas, the image in rows 35..65
    assert [box is None for box in boxes] == [True] * 4 + [False] * 8 + [True] * 4
    assert boxes[4] == pytest.approx((0, 0, 25, 15)) and boxes[8] == pytest.approx((0, 15, 25, 30))


def test_square_crops_the_long_side(model):
    boxes = token_boxes(model.config, (28, 56), "square")  # 56 wide: columns 14..42 are seen
    assert boxes[0] == pytest.approx((14, 0, 21, 7)) and boxes[-1] == pytest.approx((35, 21, 42, 28))


def test_geometry_errors(model, next_model):
    with pytest.raises(ValueError, match="does not fit a 'llava_next' model"):
        token_boxes(next_model.config, (28, 28), "pad")
    with pytest.raises(ValueError, match="does not fit a 'llava' model"):
        token_boxes(model.config, (28, 28), "anyres")
    with pytest.raises(ValueError, match="positive"):
        token_boxes(model.config, (0, 28), "pad")


# --------------------------------------------------------------------------- drawing


def test_panels_size_captions_and_dropped_regions_are_darker(model):
    image = Image.new("RGB", (40, 40), (200, 180, 40))
    boxes = token_boxes(model.config, (40, 40), "pad")
    kept = [set(range(16)), set(range(8)), torch.tensor([0, 1, 2, 3])]
    picture = draw_kept_tokens(image, boxes, kept, tokens_per_stage=[30, 22, 18], legend=False)
    assert picture.width == 3 * 40 + 2 * PANEL_GAP and picture.height > 40

    def centre(stage, token):
        box = boxes[token]
        return sum(picture.getpixel((int(stage * (40 + PANEL_GAP) + (box.left + box.right) / 2),
                                     int((box.top + box.bottom) / 2))))

    assert centre(0, 12) == centre(1, 0) == centre(2, 3) == sum((200, 180, 40))  # kept: untouched
    assert centre(1, 12) < 0.5 * centre(1, 0) and centre(2, 5) < 0.5 * centre(2, 3)  # dropped: darker
    band = picture.crop((0, 40, 40, picture.height)).convert("L")
    assert band.getextrema()[0] < 100  # the caption is written


def test_overlapping_grids_go_to_rows_and_scale(next_model):
    layout = token_layout(next_model.config, (28, 56), "anyres")
    kept = [set(range(len(layout.boxes))), set(range(10))]
    picture = draw_kept_tokens(Image.new("RGB", (56, 28), "white"), layout.boxes, kept, groups=layout.groups,
                               scale=2.0)
    one_row = draw_kept_tokens(Image.new("RGB", (56, 28), "white"), layout.boxes, kept, scale=2.0)
    assert picture.width == one_row.width == 2 * 112 + PANEL_GAP
    band = one_row.height - 56
    assert picture.height > 2 * (56 + band)  # two rows, each with a (here taller) caption band


def test_regions_no_token_sees_are_washed_out(model):
    boxes = token_boxes(model.config, (28, 56), "square")  # the centre crop sees columns 14..42
    picture = draw_kept_tokens(Image.new("RGB", (56, 28), (100, 100, 100)), boxes, [set(range(16))], legend=False)
    assert picture.getpixel((5, 14))[0] > 150 and picture.getpixel((28, 14)) == (100, 100, 100)


def test_header_and_legend_sit_above_the_panels(model):
    image = Image.new("RGB", (40, 40), (200, 180, 40))
    boxes = token_boxes(model.config, (40, 40), "pad")
    kept = [set(range(16)), set(range(4))]
    bare = draw_kept_tokens(image, boxes, kept, legend=False)
    header = ["Q: What color is the shape in the top left? " * 3, "model: 'red'   ground truth: 'red'"]
    titled = draw_kept_tokens(image, boxes, kept, header=header)
    line = pictures._line_height(ImageFont.load_default())
    assert titled.width == bare.width and titled.height > bare.height + 3 * line  # wrapped title + legend
    top = titled.height - bare.height
    assert titled.crop((0, top, titled.width, titled.height)).tobytes() == bare.tobytes()  # panels just move down
    colours = {colour for _, colour in titled.crop((0, 0, titled.width, top)).getcolors(1 << 16)}
    red = pictures.LEGEND_COLOURS[0]
    dropped_red = pictures._dropped_look(Image.new("RGB", (1, 1), red)).getpixel((0, 0))
    assert red in colours and dropped_red in colours  # the legend shows both looks
    assert len(colours) > 4  # and text


def test_stage_titles_and_header_name_the_layers_and_the_answers(model):
    assert pictures.stage_titles(model) == [f"stage {s}, layer {s}" for s in range(4)]
    wide = tiny_model(make_tokenizer(), schedule=PDropConfig([2], [0.25]))
    assert pictures.stage_titles(wide) == ["stage 0, layers 0-1", "stage 1, layers 2-3"]
    lines = pictures.picture_header("Where is it?", TINY_SCHEDULE, answer="top left", truth="top right")
    assert lines == ["Q: Where is it?", "model: 'top left'   ground truth: 'top right'",
                     "schedule: drop after [1, 2, 3] layers, keep [0.5, 0.25, 0.125] of the image tokens"]
    assert pictures.picture_header("Where?", TINY_SCHEDULE, answer="")[1] == "model: (no answer)"
    fastv = pictures.picture_header("Where?", PDropConfig.fastv(1, 0.75))
    assert fastv[-1].endswith("(fastv ranking)") and len(fastv) == 2


def test_draw_errors(model):
    boxes = token_boxes(model.config, (28, 28), "pad")
    image = Image.new("RGB", (28, 28))
    with pytest.raises(ValueError, match=r"stage 1: kept token indices must lie in \[0, 16\)"):
        draw_kept_tokens(image, boxes, [set(range(16)), {16}])
    with pytest.raises(ValueError, match="titles has 1 entries but kept_per_stage has 2 stages"):
        draw_kept_tokens(image, boxes, [set(range(16)), {1}], titles=["all"])


# --------------------------------------------------------------------------- the model and the CLI

PROMPT = "USER: <image>\nWhat color is the square? ASSISTANT:"


def test_picture_of_the_default_schedule(model, processor, tmp_path):
    out = tmp_path / "kept.png"
    picture, summary = kept_token_picture(model, processor, draw_square("red", "top left", (28, 28)), PROMPT, out)
    assert summary["kept"] == [16, 8, 4, 2] and summary["image_tokens"] == 16
    assert summary["tokens_per_stage"][0] - summary["tokens_per_stage"][-1] == 14
    with Image.open(out) as saved:
        assert saved.format == "PNG" and saved.size == picture.size
    assert picture.width == 4 * pictures.PANEL_SIZE + 3 * PANEL_GAP
    # The kept indices are the kept input positions minus the first image position.
    trace = model.pdrop_trace
    first = int(trace.image_mask[0].nonzero()[0])
    kept = pictures.kept_token_indices(trace, [16])
    assert all(torch.equal(k, trace.kept_image_positions(s)[0] - first) for s, k in enumerate(kept))


def test_picture_of_the_second_of_two_images(model, processor):
    images = [draw_square("red", "top left", (28, 28)), draw_square("blue", "bottom right", (40, 24))]
    prompt = "USER: <image>\n<image>\nAre the two squares the same color? ASSISTANT:"
    _, first = kept_token_picture(model, processor, images, prompt, panel_size=None)
    picture, second = kept_token_picture(model, processor, images, prompt, image_index=1, panel_size=None)
    assert second["image_index"] == 1 and picture.size[0] == 4 * 40 + 3 * PANEL_GAP
    assert [a + b for a, b in zip(first["kept"], second["kept"])] == [32, 16, 8, 4]  # one pool for both images
    with pytest.raises(ValueError, match="image_index 2 is out of range for 2 image"):
        kept_token_picture(model, processor, images, prompt, image_index=2)


def test_next_picture(next_model, next_processor, tmp_path):
    image = draw_square("green", "bottom left", (56, 28))
    picture, summary = kept_token_picture(next_model, next_processor, image, PROMPT, tmp_path / "next.png")
    n0 = num_image_tokens(next_processor, (28, 56))
    assert summary["aspect_ratio"] == "anyres" and summary["kept"] == [n0, n0 // 2, n0 // 4, n0 // 8]
    assert picture.height > 2 * (pictures.PANEL_SIZE // 2)  # two rows of 336 x 168 panels
    assert (tmp_path / "next.png").is_file()
    inputs = pictures.processed_inputs(next_processor, [image], PROMPT, "anyres")
    with pytest.raises(ValueError, match=f"the prompt holds {n0} image tokens but the token geometry gives"):
        kept_token_picture(next_model, next_processor, Image.new("RGB", (40, 40)), inputs)


def test_model_without_schedule_is_refused(tokenizer, processor, tmp_path, capsys):
    plain = tiny_model(tokenizer, schedule=None)
    with pytest.raises(ValueError, match="has no PyramidDrop schedule"):
        kept_token_picture(plain, processor, Image.new("RGB", (28, 28)), PROMPT)
    plain.save_pretrained(tmp_path / "plain")
    processor.save_pretrained(tmp_path / "plain")
    image = tmp_path / "square.png"
    draw_square("red", "top left", (40, 40)).save(image)
    with pytest.raises(SystemExit):
        pictures.main(["--model_path", str(tmp_path / "plain"), "--image", str(image), "--question", "Where?",
                       "--out", str(tmp_path / "kept.png"), "--device", "cpu", "--attn_implementation", "eager"])
    assert "has no saved PyramidDrop schedule: pass --layer_list" in capsys.readouterr().err
    assert not (tmp_path / "kept.png").exists()


def test_cli_end_to_end(checkpoint, tmp_path, capsys):
    image = tmp_path / "square.png"
    draw_square("yellow", "top right", (48, 32)).save(image)
    args = ["--model_path", str(checkpoint), "--image", str(image), "--question", "What color is the square?",
            "--device", "cpu", "--attn_implementation", "eager"]
    summary = pictures.main([*args, "--out", str(tmp_path / "saved.png"), "--truth", "yellow", "--max_new_tokens", "3"])
    assert summary["kept"] == [16, 8, 4, 2] and summary["aspect_ratio"] == "pad"
    assert isinstance(summary["answer"], str)  # a random model's words, written in the title
    assert "image tokens kept per stage 16 -> 8 -> 4 -> 2" in capsys.readouterr().out
    assert Image.open(tmp_path / "saved.png").size[0] == 4 * pictures.PANEL_SIZE + 3 * PANEL_GAP
    summary = pictures.main([*args, "--out", str(tmp_path / "flags.png"), "--layer_list", "[2]",
                             "--image_token_ratio_list", "[0.25]", "--image_aspect_ratio", "square"])
    assert summary["kept"] == [16, 4] and (tmp_path / "flags.png").is_file()
