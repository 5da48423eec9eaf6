"""The benchmark scripts check their data before any model loads and say where it comes from; a failed
generation shard is reported with its cause, and a rerun is offered only when answers were kept to resume."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .test_eval_scripts import BENCHES, REPO, STUB

SOURCES = {  # where each script says the missing files come from
    "vqav2": "images.cocodataset.org/zips/test2015.zip", "gqa": "cs.stanford.edu/people/dorarad/gqa",
    "textvqa": "dl.fbaipublicfiles.com/textvqa", "pope": "github.com/AoiDragon/POPE",
    "mme": "BradyFU/Awesome-Multimodal-Large-Language-Models", "sqa": "github.com/lupantech/ScienceQA",
    "mmbench": "download.openmmlab.com/mmclassification/datasets/mmbench/mmbench_dev_20230712.tsv",
    "seed": "AILab-CVC/SEED-Bench",
}


def run(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CKPT", "RUN_NAME", "DATA_ROOT", "PYTHON", "GENERATE", "DRY_RUN", "SPLIT", "GPUS",
                         "CUDA_VISIBLE_DEVICES")}
    return subprocess.run(["bash", str(script), *args], env={**base, **env}, capture_output=True, text=True,
                          cwd="/")


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_missing_data_stops_before_generation_and_says_where_it_comes_from(bench, tmp_path):
    stub = tmp_path / "generate.sh"
    stub.write_text(STUB)
    result = run(REPO / "scripts" / "eval" / f"{bench}.sh", DATA_ROOT=str(tmp_path / "eval"), GENERATE=str(stub))
    assert result.returncode == 2 and result.stdout == ""  # nothing generated, no model loaded
    (line,) = result.stderr.strip().splitlines()
    question_file = BENCHES[bench][1]
    assert line.startswith(f"{bench}.sh: error: missing {tmp_path}/eval/{question_file}")
    assert SOURCES[bench] in line and "eval.zip" in line
    dry = run(REPO / "scripts" / "eval" / f"{bench}.sh", DATA_ROOT=str(tmp_path / "eval"), GENERATE=str(stub),
              DRY_RUN="1")
    assert dry.returncode == 0 and dry.stderr.startswith(f"{bench}.sh: warning: missing ")  # a dry run still prints


FAKE_PYTHON = """#!/usr/bin/env bash
# llava.eval.run stand-in: writes $ANSWERS answer lines to its --answers_file, then exits as $MODE says
[[ "$2" == llava.eval.run ]] || exit 0
while (($#)); do [[ $1 == --answers_file ]] && out=$2; shift; done
for ((i = 0; i < ${ANSWERS:-0}; i++)); do echo '{"question_id": '$i', "text": "x"}' >> "$out"; done
case $MODE in
    fail) echo "llava.eval.run: error: image folder img does not exist" >&2; exit 1 ;;
    kill) kill -9 $$ ;;
esac
"""


@pytest.mark.parametrize("mode, answers, expected", [
    ("fail", 0, "generate.sh: shard 0 of 1 failed (exit 1): see its error above"),
    ("fail", 2, "generate.sh: shard 0 of 1 failed (exit 1): see its error above; 2 answers are kept: rerun the same "
                "command to resume once the problem is fixed"),
    ("kill", 0, "generate.sh: shard 0 of 1 was killed (signal 9)"),
    ("kill", 3, "generate.sh: shard 0 of 1 was killed (signal 9); 3 answers are kept: rerun the same command to "
                "resume"),
])
def test_a_failed_shard_offers_a_resume_only_with_answers_kept(mode, answers, expected, tmp_path):
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    result = run(REPO / "scripts" / "eval" / "lib" / "generate.sh", "--question_file", "q.jsonl", "--answers_file",
                 str(tmp_path / "a.jsonl"), PYTHON=str(python), CKPT="m", MODE=mode, ANSWERS=str(answers), GPUS="0")
    assert result.returncode == (1 if mode == "fail" else 137)
    assert result.stderr.strip().splitlines()[-1] == expected
    assert ("rerun" in result.stderr) == (answers > 0)
