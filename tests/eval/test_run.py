"""The evaluator: batched == one by one, resumable, sharded + merged, clear errors, the one-shot CLI."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import chunks, infer, run
from llava.eval.loading import add_model_args, load_for_eval
from llava.eval.answers import read_answers
from tests.conftest import TINY_SCHEDULE, save_assembled_llava

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(assets, tmp_path_factory):
    """An assembled (untrained) tiny LLaVA with the tiny schedule, saved with its processor."""
    return save_assembled_llava(assets, tmp_path_factory.mktemp("ckpt") / "tiny-llava", TINY_SCHEDULE)


@pytest.fixture(scope="module")
def questions(assets, tmp_path_factory):
    records = json.loads((assets["data"] / "eval.json").read_text())[:7]
    lines = [{"question_id": r["id"], "image": r["image"], "text": r["question"]} for r in records]
    lines.append({"question_id": "text-only", "text": "What is two plus three?"})
    path = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def evaluate(checkpoint, questions, assets, answers, *flags):
    run.main(["--model_path", str(checkpoint), "--question_file", str(questions), "--image_folder",
              str(assets["data"] / "images"), "--answers_file", str(answers), "--max_new_tokens", "4",
              "--attn_implementation", "eager", "--device", "cpu", *flags])
    return {r["question_id"]: r for r in chunks.read_jsonl(answers)}


def test_batched_answers_equal_one_by_one_and_records_are_complete(checkpoint, questions, assets, tmp_path):
    batched = evaluate(checkpoint, questions, assets, tmp_path / "b.jsonl", "--batch_size", "3")
    single = evaluate(checkpoint, questions, assets, tmp_path / "s.jsonl", "--batch_size", "1")
    assert len(batched) == 8
    assert {k: v["text"] for k, v in batched.items()} == {k: v["text"] for k, v in single.items()}
    record = batched["eval-0"]
    assert set(record) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert record["model_id"] == "tiny-llava" and record["metadata"]["pdrop"]["layer_list"] == [1, 2, 3]
    assert record["prompt"].startswith("<image>\n")


def test_a_killed_run_resumes_without_answering_twice(checkpoint, questions, assets, tmp_path):
    answers = tmp_path / "a.jsonl"
    evaluate(checkpoint, questions, assets, answers, "--batch_size", "4")
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[:3]) + "\n")
    evaluate(checkpoint, questions, assets, answers, "--batch_size", "4")
    ids = [r["question_id"] for r in chunks.read_jsonl(answers)]
    assert len(ids) == len(set(ids)) == 8


def test_a_torn_last_line_is_dropped_with_a_warning_and_answered_again(checkpoint, questions, assets, tmp_path,
                                                                        caplog):
    answers = tmp_path / "a.jsonl"
    evaluate(checkpoint, questions, assets, answers, "--batch_size", "4")
    lines = answers.read_text().splitlines()
    torn = lines[3][: len(lines[3]) // 2]  # a kill in the middle of writing the fourth answer
    answers.write_text("\n".join(lines[:3]) + "\n" + torn)
    with caplog.at_level(logging.WARNING, logger="llava.eval.run"):
        evaluate(checkpoint, questions, assets, answers, "--batch_size", "4")
    question = json.loads(lines[3])["question_id"]
    assert f"its last line (question \"{question}\") is incomplete" in caplog.text
    records = chunks.read_jsonl(answers)
    assert sorted(r["question_id"] for r in records) == sorted(json.loads(line)["question_id"] for line in lines)


def test_a_second_process_on_the_same_answers_file_is_refused(checkpoint, questions, assets, tmp_path):
    answers = tmp_path / "a.jsonl"
    with answers.open("a") as other:  # another evaluation holds the file
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="a.jsonl is being written by another evaluation process"):
            evaluate(checkpoint, questions, assets, answers)
    assert answers.read_text() == ""
    assert len(evaluate(checkpoint, questions, assets, answers)) == 8  # free again once the other one ends


def test_an_answer_whose_text_is_null_is_named(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "yes"}\n{"question_id": 2, "text": null}\n')
    with pytest.raises(ValueError, match="answers.jsonl:2: answer 'text' of question 2 is null, expected a string"):
        read_answers(path)


def test_chunks_cover_every_question_once_and_merge(checkpoint, questions, assets, tmp_path):
    parts = [tmp_path / f"c{i}.jsonl" for i in range(3)]
    for i, part in enumerate(parts):
        evaluate(checkpoint, questions, assets, part, "--num_chunks", "3", "--chunk_idx", str(i))
    assert chunks.merge(parts, tmp_path / "all.jsonl") == 8
    whole = evaluate(checkpoint, questions, assets, tmp_path / "whole.jsonl")
    merged = {r["question_id"]: r["text"] for r in chunks.read_jsonl(tmp_path / "all.jsonl")}
    assert merged == {k: v["text"] for k, v in whole.items()}
    with pytest.raises(ValueError, match="answered in two chunks"):
        chunks.merge([parts[0], parts[0]], tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match="chunk_idx=3"):
        chunks.chunk_of([1, 2], 3, 3)


def test_schedule_flags_override_the_saved_schedule(checkpoint, questions, assets, tmp_path):
    fastv = evaluate(checkpoint, questions, assets, tmp_path / "f.jsonl", "--drop_method", "fastv")
    assert fastv["eval-0"]["metadata"]["pdrop"]["method"] == "fastv"
    assert fastv["eval-0"]["metadata"]["pdrop"]["layer_list"] == [1, 2, 3]
    off = evaluate(checkpoint, questions, assets, tmp_path / "o.jsonl", "--no_pdrop")
    assert off["eval-0"]["metadata"]["pdrop"] is None
    custom = evaluate(checkpoint, questions, assets, tmp_path / "c.jsonl", "--layer_list", "[2]",
                      "--image_token_ratio_list", "[0.5]")
    assert custom["eval-0"]["metadata"]["pdrop"]["layer_list"] == [2]


def test_compile_ranking_flag_reaches_the_model(checkpoint):
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    for flags, expected in (([], False), (["--pdrop_compile_ranking"], True)):
        model, _ = load_for_eval(parser.parse_args(["--model_path", str(checkpoint), "--device", "cpu", *flags]))
        assert model.pdrop_compile_ranking is expected


@pytest.mark.integration
def test_compiled_ranking_answers_as_the_eager_one(checkpoint, questions, assets, tmp_path):
    eager = evaluate(checkpoint, questions, assets, tmp_path / "e.jsonl", "--batch_size", "3")
    compiled = evaluate(checkpoint, questions, assets, tmp_path / "c.jsonl", "--batch_size", "3",
                        "--pdrop_compile_ranking")
    assert {k: r["text"] for k, r in compiled.items()} == {k: r["text"] for k, r in eager.items()}


def test_missing_image_is_named_or_skipped_and_counted(checkpoint, assets, tmp_path, caplog):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": "q-missing", "image": "nope.png", "text": "What?"}) + "\n")
    with pytest.raises(ValueError, match="q-missing.*nope.png"):
        evaluate(checkpoint, questions, assets, tmp_path / "a.jsonl")
    answers = evaluate(checkpoint, questions, assets, tmp_path / "b.jsonl", "--skip_missing")
    assert answers == {} and "1 question(s) skipped" in caplog.text


def test_bad_question_file_names_the_line(checkpoint, assets, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 1, "text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2"):
        evaluate(checkpoint, questions, assets, tmp_path / "a.jsonl")


def test_one_shot_cli_answers_and_reports_the_stages(checkpoint, assets, capsys):
    infer.main(["--model_path", str(checkpoint), "--image", str(assets["data"] / "images" / "eval_0000.png"),
                "--question", "What color is the square?", "--max_new_tokens", "3", "--attn_implementation", "eager"])
    assert "image tokens per stage (pdrop): [16, 8, 4, 2]" in capsys.readouterr().out


def test_generate_script_shards_and_merges(checkpoint, questions, assets, tmp_path):
    env = {**os.environ, "CKPT": str(checkpoint), "PYTHON": sys.executable, "GPUS": ""}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    flags = ["--question_file", str(questions), "--image_folder", str(assets["data"] / "images"),
             "--answers_file", str(tmp_path / "answers.jsonl"), "--max_new_tokens", "2", "--device", "cpu"]
    done = subprocess.run(["bash", "scripts/eval/lib/generate.sh", *flags], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(chunks.read_jsonl(tmp_path / "answers.jsonl")) == 8
    dry = subprocess.run(["bash", "scripts/eval/lib/generate.sh", *flags], cwd=REPO, capture_output=True, text=True,
                         env={**env, "GPUS": "0,1", "DRY_RUN": "1"})
    lines = dry.stdout.strip().splitlines()
    assert lines[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and lines[1].startswith("CUDA_VISIBLE_DEVICES=1 ")
    assert "--num_chunks 2 --chunk_idx 1" in lines[1] and "llava.eval.chunks" in lines[2]


def test_repeated_ids_with_different_questions_are_all_answered_and_resumed(checkpoint, assets, tmp_path):
    """MME asks two questions per image under one id; TextVQA's ids are image ids."""
    questions = tmp_path / "mme.jsonl"
    lines = [{"question_id": "color/eval_0000.png", "image": "eval_0000.png", "text": f"Is it {c}? Answer yes or no."}
             for c in ("red", "blue")]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    answers = tmp_path / "a.jsonl"
    evaluate(checkpoint, questions, assets, answers)
    evaluate(checkpoint, questions, assets, answers)  # resuming answers nothing twice
    records = chunks.read_jsonl(answers)
    assert len(records) == 2 and {r["prompt"].split("Is it ")[1][:3] for r in records} == {"red", "blu"}
    assert chunks.merge([answers], tmp_path / "m.jsonl") == 2


def test_scienceqa_json_and_mmbench_tsv_question_files(checkpoint, assets, tmp_path):
    import base64
    import io

    from PIL import Image

    sqa = tmp_path / "llava_test_CQM-A.json"
    sqa.write_text(json.dumps([
        {"id": "4", "image": "eval_0001.png", "conversations": [
            {"from": "human", "value": "<image>\nContext: a picture.\nWhich color?\nA. red\nB. blue"},
            {"from": "gpt", "value": "A"}]},
        {"id": "9", "conversations": [{"from": "human", "value": "Which is a number?\nA. two\nB. dog"},
                                      {"from": "gpt", "value": "A"}]}]))
    answered = evaluate(checkpoint, sqa, assets, tmp_path / "sqa.jsonl", "--single_pred_prompt")
    assert set(answered) == {"4", "9"}
    assert answered["4"]["prompt"].startswith("<image>\nContext") and answered["4"]["prompt"].endswith("directly.")
    buffer = io.BytesIO()
    Image.open(assets["data"] / "images" / "eval_0002.png").save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    rows = ["index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage",
            f"7\tWhat color?\tnan\tred\tblue\tnan\tnan\tA\tcolor\t{image}",
            f"1000007\tWhat color?\tnan\tblue\tred\tnan\tnan\tB\tcolor\t{image}"]
    tsv = tmp_path / "mmbench_dev.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    answered = evaluate(checkpoint, tsv, assets, tmp_path / "mmb.jsonl", "--single_pred_prompt")
    assert set(answered) == {7, 1000007}
    assert "What color?\nA. red\nB. blue\n" in answered[7]["prompt"] and "C." not in answered[7]["prompt"]
