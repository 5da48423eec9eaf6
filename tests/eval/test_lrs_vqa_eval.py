"""LRS-VQA end to end: its question file read, answered with ``llava.eval.run --coarse_to_fine``, scored by
``llava.eval.score --task lrs_vqa``; ``scripts/eval/lrs_vqa.sh`` (data checked first, dry run, a real run).

The end-to-end numbers are fixed by hand: the gold answers of two questions are set to what the model
answered, the other two to a word it cannot say, so FAIR (count right, color wrong) has OA = AA = 50,
GLH-Bridge (existence right) 100, STAR (reasoning wrong) 0; overall OA 2/4 = 50, AA (50 + 100 + 0) / 3 = 50.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import chunks, run
from llava.eval import score as score_cli
from llava.eval.questions import read_questions
from tests.pyramid.checkpoint import save_tiny_next
from tests.pyramid.conftest import noise_image

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "lrs_vqa"
SCRIPT = REPO / "scripts" / "eval" / "lrs_vqa.sh"
QUESTIONS = [
    {"question_id": "FAIR1M_1_0", "image": "FAIR1M/1.tif", "text": "How many planes are there?", "category": "count"},
    {"question_id": "FAIR1M_1_1", "image": "FAIR1M/1.tif", "text": "What color is the hangar?", "category": "color"},
    {"question_id": 6, "image": "GLH-Bridge/b1.png", "text": "Is there a bridge?", "category": "existence"},
    {"question_id": "s9", "image": "scenes/P0009.png", "source": "STAR", "text": "What is parked there?",
     "category": "reasoning"},
]
RIGHT = {"FAIR1M_1_0", "6"}


def test_the_question_file_is_read_with_its_fields():
    records = read_questions(FIXTURE / "LRS_VQA_merged.jsonl")
    assert len(records) == 10 and [r["question_id"] for r in records][:6] == [
        "FAIR1M_1_0", "FAIR1M_1_1", "FAIR1M_2_0", "FAIR1M_2_1", "FAIR1M_3_0", 6]
    assert records[8] == {"question_id": "s9", "image": "scenes/P0009.png", "source": "STAR",
                          "text": "What is parked next to the building?", "category": "reasoning",
                          "ground_truth": "car"}


def test_a_json_list_of_questions_is_read_as_is(tmp_path):
    path = tmp_path / "lrs.json"
    path.write_text(json.dumps(QUESTIONS))
    assert read_questions(path) == QUESTIONS


def write_scenes(root: Path) -> None:
    for seed, (name, size) in enumerate({"FAIR1M/1.tif": (320, 200), "GLH-Bridge/b1.png": (150, 260),
                                         "scenes/P0009.png": (200, 90)}.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        noise_image(*size, seed=seed).save(root / name)


def test_answered_coarse_to_fine_and_scored(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # exact match only, whatever is installed
    checkpoint = save_tiny_next(tmp_path / "tiny-next")
    write_scenes(tmp_path / "image")
    questions = tmp_path / "LRS_VQA_merged.jsonl"
    questions.write_text("".join(json.dumps({**q, "ground_truth": "unknown"}) + "\n" for q in QUESTIONS))
    answers = tmp_path / "answers.jsonl"
    run.main(["--model_path", str(checkpoint), "--question_file", str(questions), "--image_folder",
              str(tmp_path / "image"), "--answers_file", str(answers), "--coarse_to_fine", "--pyramid_config", "tiny",
              "--batch_size", "2", "--max_new_tokens", "3", "--attn_implementation", "eager", "--device", "cpu"])
    said = {str(r["question_id"]): r["text"] for r in chunks.read_jsonl(answers)}
    assert set(said) == {str(q["question_id"]) for q in QUESTIONS}
    gold = [{**q, "ground_truth": said[str(q["question_id"])] if str(q["question_id"]) in RIGHT else "zqxjv"}
            for q in QUESTIONS]
    annotations = tmp_path / "annotations.jsonl"
    annotations.write_text("".join(json.dumps(g) + "\n" for g in gold))
    metrics = score_cli.main(["--task", "lrs_vqa", "--answers", str(answers), "--annotations", str(annotations)])
    assert metrics["by_source"]["FAIR"] == {"oa": 50.0, "aa": 50.0, "n": 2,
                                            "by_category": {"color": 0.0, "count": 100.0}}
    assert metrics["by_source"]["GLH-Bridge"]["oa"] == 100.0 and metrics["by_source"]["STAR"]["aa"] == 0.0
    assert (metrics["oa"], metrics["aa"], metrics["n"]) == (50.0, 50.0, 4)


# ---------------------------------------------------------------------------------------------- the script
def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CKPT", "RUN_NAME", "DATA_ROOT", "PYTHON", "GENERATE",
                                                              "DRY_RUN", "COARSE_TO_FINE", "IMAGE_FOLDER")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd="/", env={**base, **env}, capture_output=True, text=True)


@pytest.fixture
def stub(tmp_path) -> Path:
    """Stands in for generate.sh: prints its arguments."""
    path = tmp_path / "generate.sh"
    path.write_text("#!/usr/bin/env bash\nprintf 'GENERATE'; printf ' %q' \"$@\"; echo\n")
    return path


def test_dry_run_commands(stub):
    result = run_script("--focus_layer", "4", DRY_RUN="1", GENERATE=str(stub))
    assert result.returncode == 0, result.stderr
    generate, score = (shlex.split(line) for line in result.stdout.splitlines())
    d = "playground/data/eval/LRS_VQA"
    answers = f"{d}/answers/llava-v1.6-vicuna-7b-hf.jsonl"
    assert generate[1:] == ["--question_file", f"{d}/LRS_VQA_merged.jsonl", "--image_folder", f"{d}/image",
                            "--answers_file", answers, "--coarse_to_fine", "--batch_size", "1", "--max_new_tokens",
                            "128", "--focus_layer", "4"]  # the caller's flags last: they override the script's
    assert score == ["python", "-m", "llava.eval.score", "--task", "lrs_vqa", "--answers", answers, "--annotations",
                     f"{d}/LRS_VQA_merged.jsonl"]
    plain = run_script(DRY_RUN="1", GENERATE=str(stub), COARSE_TO_FINE="0", IMAGE_FOLDER="/data/lrs")
    assert "--coarse_to_fine" not in plain.stdout and "--image_folder /data/lrs " in plain.stdout


def test_missing_data_is_reported_before_the_model_loads(stub, tmp_path):
    result = run_script(DATA_ROOT=str(tmp_path), GENERATE=str(stub))
    assert result.returncode == 2 and result.stdout == ""  # generation never started
    assert f"{tmp_path}/LRS_VQA/LRS_VQA_merged.jsonl is missing: download the Hugging Face dataset ll-13/LRS-VQA" \
        in result.stderr
    (tmp_path / "LRS_VQA").mkdir()
    shutil.copy(FIXTURE / "LRS_VQA_merged.jsonl", tmp_path / "LRS_VQA")
    result = run_script(DATA_ROOT=str(tmp_path), GENERATE=str(stub))
    assert result.returncode == 2 and f"{tmp_path}/LRS_VQA/image is missing" in result.stderr


def test_real_run_scores_the_fixture_answers(stub, tmp_path):
    data = tmp_path / "LRS_VQA"
    shutil.copytree(FIXTURE, data)
    (data / "image").mkdir()
    result = run_script(DATA_ROOT=str(tmp_path), GENERATE=str(stub), RUN_NAME="fixture", PYTHON=sys.executable,
                        CKPT="unused")
    assert result.returncode == 0, result.stderr
    record = json.loads((data / "answers" / "fixture.score.json").read_text())["metrics"]
    wordnet = record["synonym_matching"] == "wordnet"
    assert record["oa"] == (70.0 if wordnet else 50.0)  # tests/eval/test_lrs_vqa.py works these out by hand
