"""``--coarse_to_fine`` through ``llava.eval.run`` and ``llava.eval.infer`` on a saved tiny LLaVA-NeXT (28 px CLIP).

Batched == one by one, the plain path for images that fit a tile, the config in the answers' metadata
and in a saved model, and every bad input of issue 10 through the command line: one line on stderr,
exit status 1, no traceback (or the documented fallback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.eval import chunks, infer, run
from llava.eval import coarse_to_fine as c2f_module
from llava.cli import cli_main
from llava.paths import load_pyramid_config
from tests.pyramid.checkpoint import save_tiny_next
from tests.pyramid.conftest import noise_image

REPO = Path(__file__).resolve().parents[2]
TINY = ["--coarse_to_fine", "--pyramid_config", "tiny"]
COMMON = ["--max_new_tokens", "4", "--attn_implementation", "eager", "--device", "cpu"]
SIZES = {"wide.png": (300, 170), "tall.png": (90, 200), "small.png": (20, 20), "dot.png": (1, 1)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_next(tmp_path_factory.mktemp("c2f") / "tiny-next")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for seed, (name, size) in enumerate(SIZES.items()):
        noise_image(*size, seed=seed).save(folder / name)
    return folder


def write_questions(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def evaluate(checkpoint, questions, images, answers, *flags) -> dict:
    run.main(["--model_path", str(checkpoint), "--question_file", str(questions), "--image_folder", str(images),
              "--answers_file", str(answers), *COMMON, *flags])
    return {r["question_id"]: r for r in chunks.read_jsonl(answers)}


QUESTIONS = [{"question_id": "wide", "image": "wide.png", "text": "What color is the roof?"},
             {"question_id": "tall", "image": "tall.png", "text": "How many ships are docked?"},
             {"question_id": "small", "image": "small.png", "text": "Is there a bridge?"},
             {"question_id": "text", "text": "What is two plus three?"},
             {"question_id": "wide-2", "image": "wide.png", "text": "<image>\nWhere is the plane?"}]


@pytest.mark.parametrize("schedule", [[], ["--layer_list", "[2,3]", "--image_token_ratio_list", "[0.5,0.25]"]])
def test_batched_answers_equal_one_by_one(checkpoint, images, tmp_path, monkeypatch, schedule):
    walks = []
    real = c2f_module.coarse_to_fine_batch

    def recording(*args, **kwargs):
        walks.append(real(*args, **kwargs))
        return walks[-1]

    monkeypatch.setattr(c2f_module, "coarse_to_fine_batch", recording)
    questions = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    batched = evaluate(checkpoint, questions, images, tmp_path / "b.jsonl", *TINY, *schedule, "--batch_size", "5")
    assert len(walks) == 1 and len(walks[0]) == 4  # one batched walk: the four image questions
    assert {r.stop_reason for r in walks[0]} == {"full_resolution", "no_pyramid"}
    assert len({len(r.traces) for r in walks[0]}) > 1  # each sample its own pyramid depth
    single = evaluate(checkpoint, questions, images, tmp_path / "s.jsonl", *TINY, *schedule, "--batch_size", "1")
    assert {k: v["text"] for k, v in batched.items()} == {k: v["text"] for k, v in single.items()}
    assert len(batched) == 5 and len(walks) == 1 + 4
    metadata = batched["wide"]["metadata"]
    assert metadata["coarse_to_fine"] == load_pyramid_config("tiny").to_dict()
    assert (metadata["pdrop"] or {}).get("layer_list") == ([2, 3] if schedule else None)


def test_images_that_fit_a_tile_take_the_plain_path(checkpoint, images, tmp_path):
    records = [{"question_id": n, "image": n, "text": "What color is it?"} for n in ("small.png", "dot.png")]
    questions = write_questions(tmp_path / "q.jsonl", records)
    plain = evaluate(checkpoint, questions, images, tmp_path / "p.jsonl")
    pyramid = evaluate(checkpoint, questions, images, tmp_path / "c.jsonl", *TINY)
    assert {k: v["text"] for k, v in plain.items()} == {k: v["text"] for k, v in pyramid.items()}
    assert plain["dot.png"]["metadata"]["coarse_to_fine"] is None


def infer_lines(checkpoint, image, *flags, question="What color is the roof?") -> list[str]:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        infer.main(["--model_path", str(checkpoint), "--image", str(image), "--question", question,
                    "--max_new_tokens", "3", "--attn_implementation", "eager", *flags])
    return out.getvalue().splitlines()


def test_infer_answers_and_tells_the_walk(checkpoint, images):
    lines = infer_lines(checkpoint, images / "wide.png", *TINY, "--layer_list", "[1,2]", "--image_token_ratio_list",
                        "[0.5,0.25]")
    assert lines[1].startswith("coarse-to-fine: 300 x 170 px, levels visited x8 x4 x2 x1 of 4, tiles per level [2, ")
    assert "stop: full_resolution" in lines[1] and lines[2].startswith("image tokens per stage (pdrop): [")
    small = infer_lines(checkpoint, images / "small.png", *TINY)
    assert small[1].startswith("coarse-to-fine: 20 x 20 px fits one tile, plain any-resolution path")


def test_the_config_is_saved_with_the_model_and_read_back(checkpoint, images, tmp_path):
    from llava.model.builder import load_llava

    model, processor = load_llava(str(checkpoint), attn_implementation="eager")
    questions = write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])
    args = run.build_parser().parse_args(["--model_path", str(checkpoint), "--question_file", str(questions),
                                          "--image_folder", str(images), "--answers_file", str(tmp_path / "a.jsonl"),
                                          *COMMON, *TINY, "--focus_layer", "2", "--max_tiles_per_level", "6"])
    run.run(args, model, processor)
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    expected = {**load_pyramid_config("tiny").to_dict(), "focus_layer": 2, "max_tiles_per_level": 6}
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["coarse_to_fine"] == expected
    again = evaluate(tmp_path / "saved", questions, images, tmp_path / "b.jsonl", "--coarse_to_fine")
    assert again["wide"]["metadata"]["coarse_to_fine"] == expected  # the saved config is the default


# ---------------------------------------------------------------------------------------------- bad input
def one_line_error(capsys, main, argv, prog) -> str:
    """Run the command line; it must exit 1 with exactly one error line and no traceback. Returns the message."""
    with pytest.raises(SystemExit) as stop:
        cli_main(main, argv, prog)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert stop.value.code == 1 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def infer_error(capsys, checkpoint, image, *flags, question="What is it?") -> str:
    argv = ["--model_path", str(checkpoint), "--image", str(image), "--question", question, "--max_new_tokens", "2",
            *flags]
    return one_line_error(capsys, infer.main, argv, "llava.eval.infer")


def corrupt_tiff(path: Path) -> Path:
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    return path


def truncated_tiff(path: Path) -> Path:
    noise_image(300, 170, seed=9).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("name,make,message", [
    ("corrupt.tif", corrupt_tiff, "corrupt.tif: cannot read image"),
    ("truncated.tif", truncated_tiff, "truncated.tif: cannot decode image, corrupt or truncated"),
    ("missing.tif", Path, "missing.tif: image file does not exist"),
])
def test_unreadable_images_are_named(checkpoint, tmp_path, capsys, name, make, message):
    line = infer_error(capsys, checkpoint, make(tmp_path / name), *TINY)
    assert message in line and "question cli:" in line


def test_pixel_limit_names_the_flag_that_raises_it(checkpoint, images, capsys):
    line = infer_error(capsys, checkpoint, images / "wide.png", *TINY, "--max_image_pixels", "50000")
    assert "300 x 170 = 51,000 pixels is above max_image_pixels=50,000" in line and "--max_image_pixels" in line
    assert len(infer_lines(checkpoint, images / "wide.png", *TINY, "--max_image_pixels", "51000")) == 2


@pytest.mark.parametrize("question,message", [
    ("What is in the picture? <image>", "no text after <image>: coarse-to-fine selects tiles guided by the question"),
    ("", "no text after <image>"),
    ("<image> and <image>", "needs exactly one <image> in the question, found 2"),
])
def test_a_question_must_follow_the_image(checkpoint, images, capsys, question, message):
    assert message in infer_error(capsys, checkpoint, images / "wide.png", *TINY, question=question)


@pytest.mark.parametrize("flags,message", [
    (["--focus_layer", "4"], "focus_layer=4 needs a next layer to score with, but the language model has 4 layers"),
    (["--focus_layer", "2", "--layer_list", "[1,2]", "--image_token_ratio_list", "[0.5,0.25]"],
     "focus_layer=2 is beyond the first PyramidDrop boundary 1 (layer_list=[1, 2])"),
    (["--token_keep_ratio", "0"], "token_keep_ratio=0.0 must be a number in (0, 1]"),
    ([], "tile_size=336 must equal the vision tower's image_size=28"),  # lrs-default on a 28 px CLIP
])
def test_configs_the_model_cannot_take_are_refused(checkpoint, images, capsys, flags, message):
    base = TINY if flags else ["--coarse_to_fine"]
    assert message in infer_error(capsys, checkpoint, images / "wide.png", *base, *flags)


def test_config_flags_without_coarse_to_fine_are_refused_before_loading(images, capsys, tmp_path):
    line = infer_error(capsys, tmp_path / "no-such-model", images / "wide.png", "--focus_layer", "2")
    assert "--focus_layer configure coarse-to-fine, which is off: add --coarse_to_fine" in line


def test_a_llava_1_5_model_is_refused(images, capsys, tmp_path):
    llava = save_tiny_next(tmp_path / "llava-1.5", preset="tiny-llava")
    line = infer_error(capsys, llava, images / "wide.png", *TINY)
    assert "has no image_newline: coarse-to-fine needs a LLaVA-NeXT model" in line


def test_grayscale_rgba_and_16_bit_images_read_as_documented(checkpoint, tmp_path, monkeypatch):
    """Each answered through infer, with the walk (tiles, kept tokens, embeddings) of its documented RGB conversion."""
    walks = []
    real = c2f_module.coarse_to_fine_batch
    monkeypatch.setattr(c2f_module, "coarse_to_fine_batch", lambda *a, **k: walks.append(real(*a, **k)) or walks[-1])

    def same_answer(image_a: Path, image_b: Path) -> None:
        assert infer_lines(checkpoint, image_a, *TINY) == infer_lines(checkpoint, image_b, *TINY)
        (a,), (b,) = walks[-2:]
        assert a.tiles_per_level == b.tiles_per_level and a.stop_reason == b.stop_reason == "full_resolution"
        torch.testing.assert_close(a.image_embeds, b.image_embeds, atol=1e-6, rtol=0)

    rgb = noise_image(150, 90, seed=11)
    rng = np.random.default_rng(0)
    rgba = Image.merge("RGBA", [*rgb.split(), Image.fromarray(rng.integers(0, 256, (90, 150), dtype=np.uint8))])
    rgba.save(tmp_path / "rgba.png")
    rgb.save(tmp_path / "rgb.png")
    same_answer(tmp_path / "rgba.png", tmp_path / "rgb.png")  # alpha dropped
    gray = rgb.convert("L")
    gray.save(tmp_path / "gray.png")
    Image.merge("RGB", [gray] * 3).save(tmp_path / "gray-rgb.png")
    same_answer(tmp_path / "gray.png", tmp_path / "gray-rgb.png")
    values = rng.integers(0, 65536, (90, 150)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.tif")  # I;16
    with Image.open(tmp_path / "deep.tif") as check:
        assert check.mode.startswith("I;16")
    scaled = ((values.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # v * 255 / 65535, rounded
    Image.fromarray(scaled).convert("RGB").save(tmp_path / "deep-8.png")
    same_answer(tmp_path / "deep.tif", tmp_path / "deep-8.png")


def test_missing_images_stop_the_run_or_are_skipped(checkpoint, images, tmp_path, capsys, caplog):
    questions = write_questions(tmp_path / "q.jsonl", [
        {"question_id": "gone", "image": "gone.tif", "text": "What?"}, QUESTIONS[0]])
    argv = ["--model_path", str(checkpoint), "--question_file", str(questions), "--image_folder", str(images),
            "--answers_file", str(tmp_path / "a.jsonl"), *COMMON, *TINY]
    line = one_line_error(capsys, run.main, argv, "llava.eval.run")
    assert "question gone:" in line and "gone.tif: image file does not exist" in line
    answers = evaluate(checkpoint, questions, images, tmp_path / "b.jsonl", *TINY, "--skip_missing")
    assert set(answers) == {"wide"} and "1 question(s) skipped" in caplog.text


def test_the_real_command_line_exits_with_one_line(checkpoint, images, tmp_path):
    """``python -m llava.eval.run``: the __main__ wiring (no traceback, status 1)."""
    questions = write_questions(tmp_path / "q.jsonl", [{"question_id": 7, "image": "t.tif", "text": "What?"}])
    truncated_tiff(images.parent / "t.tif")
    done = subprocess.run([sys.executable, "-m", "llava.eval.run", "--model_path", str(checkpoint), "--question_file",
                           str(questions), "--image_folder", str(images.parent), "--answers_file",
                           str(tmp_path / "a.jsonl"), *COMMON, *TINY], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "llava.eval.run: error: question 7: ") and "t.tif: cannot decode image, corrupt or truncated" in done.stderr
