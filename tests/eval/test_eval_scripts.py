"""The benchmark scripts (scripts/eval/<bench>.sh): dry runs build the right commands, real runs score.

``generate.sh`` is replaced (``GENERATE=``) by a stub that prints its arguments and environment; the
real runs point ``DATA_ROOT`` at a copy of the fixtures, whose answers files stand in for generation.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
D = "playground/data/eval"
BENCHES = {  # script: (task, question file, image folder, score flags, generation flags), paths under DATA_ROOT
    "vqav2": ("vqav2", "vqav2/llava_vqav2_mscoco_test-dev2015.jsonl", "vqav2/test2015",
              ["--questions", "vqav2/llava_vqav2_mscoco_test2015.jsonl",
               "--submission", "vqav2/answers_upload/RUN.json"], ["--max_new_tokens", "128"]),
    "gqa": ("gqa", "gqa/llava_gqa_testdev_balanced.jsonl", "gqa/data/images",
            ["--annotations", "gqa/data/testdev_balanced_questions.json",
             "--submission", "gqa/answers/RUN.predictions.json"], ["--max_new_tokens", "128"]),
    "textvqa": ("textvqa", "textvqa/llava_textvqa_val_v051_ocr.jsonl", "textvqa/train_images",
                ["--annotations", "textvqa/TextVQA_0.5.1_val.json"], ["--max_new_tokens", "128"]),
    "pope": ("pope", "pope/llava_pope_test.jsonl", "pope/val2014",
             ["--annotations", "pope/coco", "--questions", "pope/llava_pope_test.jsonl"], ["--max_new_tokens", "16"]),
    "mme": ("mme", "MME/llava_mme.jsonl", "MME/MME_Benchmark_release_version",
            ["--annotations", "MME/MME_Benchmark_release_version", "--submission", "MME/eval_tool/answers/RUN"],
            ["--max_new_tokens", "16"]),
    "sqa": ("sqa", "scienceqa/llava_test_CQM-A.json", "scienceqa/images/test",
            ["--annotations", "scienceqa/problems.json", "--split", "test"],
            ["--single_pred_prompt", "--max_new_tokens", "16"]),
    "mmbench": ("mmbench", "mmbench/mmbench_dev_20230712.tsv", None,
                ["--questions", "mmbench/mmbench_dev_20230712.tsv",
                 "--submission", "mmbench/answers_upload/mmbench_dev_20230712/RUN.tsv",
                 "--annotations", "mmbench/mmbench_dev_20230712.tsv"],
                ["--single_pred_prompt", "--max_new_tokens", "16"]),
    "seed": ("seed", "seed_bench/llava-seed-bench.jsonl", "seed_bench",
             ["--annotations", "seed_bench/SEED-Bench.json"], ["--max_new_tokens", "16"]),
}
ANSWERS = {"mmbench": "mmbench/answers/mmbench_dev_20230712/RUN.jsonl", "mme": "MME/answers/RUN.jsonl",
           "sqa": "scienceqa/answers/RUN.jsonl", "seed": "seed_bench/answers/RUN.jsonl"}
HEADLINES = {"gqa": ("accuracy", 60.0), "textvqa": ("accuracy", 220 / 3), "pope": ("f1", (50 + 200 / 3 + 40) / 3),
             "mme": ("perception", 125.0), "sqa": ("accuracy", 75.0), "mmbench": ("circular", 100 / 3),
             "seed": ("accuracy", 75.0)}
KEEP_RATIO = re.compile(r"(?<![\d.])0\.(?:5|25|125)(?![\d.])")  # not TextVQA_0.5.1
SCHEDULE = ["--layer_list", "[8,16,24]", "--image_token_ratio_list", "[0.5,0.25,0.125]", "--drop_method", "fastv"]
STUB = """#!/usr/bin/env bash
printf 'GENERATE DRY_RUN=%s CKPT=%s PYTHON=%s' "${DRY_RUN:-}" "${CKPT:-}" "${PYTHON:-}"
printf ' %q' "$@"
echo
"""


@pytest.fixture
def stub(tmp_path) -> Path:
    path = tmp_path / "generate.sh"
    path.write_text(STUB)
    return path


def run_script(bench: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CKPT", "RUN_NAME", "DATA_ROOT", "PYTHON", "GENERATE", "DRY_RUN", "SPLIT")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "eval" / f"{bench}.sh"), *args], cwd=env.pop("cwd", "/"),
                            env={**base, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def commands(result) -> tuple[dict[str, str], list[str], list[str]]:
    """(stub's environment, generation args, score command) of a dry run's output."""
    generate, score = result.stdout.splitlines()
    words = shlex.split(generate)
    assert words[0] == "GENERATE"
    env = dict(word.split("=", 1) for word in words[1:4])
    return env, words[4:], shlex.split(score)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_dry_run_commands(bench, stub):
    task, questions, images, score_flags, gen_flags = BENCHES[bench]
    env, generate, score = commands(run_script(bench, DRY_RUN="1", GENERATE=str(stub)))
    assert env == {"DRY_RUN": "1", "CKPT": "checkpoints/llava-v1.5-7b-pdrop", "PYTHON": "python"}
    answers = f"{D}/" + ANSWERS.get(bench, f"{bench}/answers/RUN.jsonl").replace("RUN", "llava-v1.5-7b-pdrop")
    assert flag(generate, "--question_file") == f"{D}/{questions}"
    assert flag(generate, "--answers_file") == answers
    if images is None:
        assert "--image_folder" not in generate  # MMBench's images are inside its TSV
    else:
        assert flag(generate, "--image_folder") == f"{D}/{images}"
    assert all(f in generate for f in gen_flags)
    assert ("--single_pred_prompt" in generate) == (bench in ("sqa", "mmbench"))
    assert score[:5] == ["python", "-m", "llava.eval.score", "--task", task]
    assert flag(score, "--answers") == answers
    rest = score[7:]
    # values with a slash are paths under DATA_ROOT
    expected = [f"{D}/{v.replace('RUN', 'llava-v1.5-7b-pdrop')}" if v.count("/") else v for v in score_flags]
    assert dict(zip(rest[::2], rest[1::2])) == dict(zip(expected[::2], expected[1::2]))


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_env_overrides_and_extra_args_go_to_generation(bench, stub):
    env, generate, score = commands(run_script(bench, *SCHEDULE, "--batch_size", "4", DRY_RUN="1",
                                               GENERATE=str(stub), CKPT="liuhaotian/llava-v1.5-7b",
                                               DATA_ROOT="/data/eval", PYTHON="/opt/py"))
    assert env["CKPT"] == "liuhaotian/llava-v1.5-7b" and env["PYTHON"] == "/opt/py"
    assert generate[-len(SCHEDULE) - 2:] == [*SCHEDULE, "--batch_size", "4"]  # last: they override the script's
    assert score[0] == "/opt/py" and not set(SCHEDULE) & set(score)
    assert flag(generate, "--answers_file").startswith("/data/eval/")
    assert flag(generate, "--answers_file").endswith("/llava-v1.5-7b.jsonl")  # RUN_NAME: basename of CKPT
    _, generate, score = commands(run_script(bench, DRY_RUN="1", GENERATE=str(stub), RUN_NAME="mine"))
    assert flag(generate, "--answers_file").endswith("/mine.jsonl") and flag(score, "--answers").endswith("/mine.jsonl")


def test_dry_run_reaches_the_real_generate_sh():
    """DRY_RUN goes down to generate.sh: it prints one llava.eval.run per GPU and the merge, runs nothing."""
    lines = run_script("pope", *SCHEDULE, DRY_RUN="1", GPUS="0,1").stdout.splitlines()
    runs = [shlex.split(line) for line in lines if "llava.eval.run" in line]
    assert len(runs) == 2 and all(shlex.join(SCHEDULE) in shlex.join(run) for run in runs)
    assert all(flag(run, "--question_file") == f"{D}/pope/llava_pope_test.jsonl" for run in runs)
    assert all(flag(run, "--model_path") == "checkpoints/llava-v1.5-7b-pdrop" for run in runs)
    assert shlex.split(lines[-1])[:3] == ["python", "-m", "llava.eval.score"]


def test_mmbench_splits(stub):
    _, generate, score = commands(run_script("mmbench", DRY_RUN="1", GENERATE=str(stub),
                                             SPLIT="mmbench_dev_cn_20231003"))
    assert flag(score, "--task") == "mmbench_cn" and flag(generate, "--question_file").endswith("cn_20231003.tsv")
    _, _, score = commands(run_script("mmbench", DRY_RUN="1", GENERATE=str(stub), SPLIT="mmbench_test_20230712"))
    assert "--annotations" not in score and flag(score, "--submission").endswith("mmbench_test_20230712/llava-v1.5-7b-pdrop.tsv")


@pytest.mark.parametrize("script", sorted((REPO / "scripts" / "eval").glob("*.sh")), ids=lambda p: p.name)
def test_scripts_carry_no_schedule_numbers(script):
    code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
    for word in ("layer_list", "image_token_ratio", "pdrop_lambda", "drop_method", "[8"):
        assert not any(word in line for line in code), f"{script.name}: {word}"
    assert not any(KEEP_RATIO.search(line) for line in code), f"{script.name}: a keep ratio"
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and lines[1].startswith("# ") and "set -euo pipefail" in lines


def complete_inputs(data: Path, bench: str) -> None:
    """Stand-ins for the question file and images the fixtures leave out (generation is stubbed; the scripts
    check that they exist before anything runs)."""
    _, questions, images, _, _ = BENCHES[bench]
    for folder in [images, *{"seed": ["seed_bench/SEED-Bench-image"]}.get(bench, [])]:
        if folder:
            (data / folder).mkdir(parents=True, exist_ok=True)
    for path in [questions, *{"vqav2": ["vqav2/llava_vqav2_mscoco_test2015.jsonl"]}.get(bench, [])]:
        if not (data / path).exists():
            (data / path).write_text("")


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_real_run_scores_the_fixture_answers(bench, stub, tmp_path):
    data = tmp_path / "eval"
    shutil.copytree(FIXTURES, data)
    complete_inputs(data, bench)
    result = run_script(bench, DATA_ROOT=str(data), GENERATE=str(stub), RUN_NAME="fixture", PYTHON=sys.executable,
                        CKPT="unused")
    assert result.stdout.startswith("GENERATE DRY_RUN=0 ")
    answers = data / ANSWERS.get(bench, f"{bench}/answers/RUN.jsonl").replace("RUN", "fixture")
    if bench == "vqav2":  # test-dev: the submission only
        upload = json.loads((data / "vqav2" / "answers_upload" / "fixture.json").read_text())
        assert [a["answer"] for a in upload] == ["2", "dog", "", "yes", "yes", "red", ""]
        return
    record = json.loads(answers.with_suffix(".score.json").read_text())
    metric, value = HEADLINES[bench]
    assert record["metrics"][metric] == pytest.approx(value)
