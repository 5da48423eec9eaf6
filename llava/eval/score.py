"""Score a model's answers on a benchmark, and/or write the benchmark's submission file.

Prints a table of the metrics and writes them as JSON (``--out``, default ``<answers>.score.json``).
Tasks and what each reads: ``llava/eval/scorers/`` (one module per benchmark).

Launch::

    python -m llava.eval.score --task gqa --answers playground/data/eval/gqa/answers/run.jsonl \\
        --annotations playground/data/eval/gqa/data/testdev_balanced_questions.json
    python -m llava.eval.score --task pope --answers playground/data/eval/pope/answers/run.jsonl \\
        --annotations playground/data/eval/pope/coco --questions playground/data/eval/pope/llava_pope_test.jsonl
    python -m llava.eval.score --task vqav2 --answers playground/data/eval/vqav2/answers/run.jsonl \\
        --questions playground/data/eval/vqav2/llava_vqav2_mscoco_test2015.jsonl \\
        --submission playground/data/eval/vqav2/answers_upload/run.json      # test-dev: convert only
    python -m llava.eval.score --task lrs_vqa --answers playground/data/eval/lrs_vqa/answers/run.jsonl \\
        --annotations playground/data/eval/lrs_vqa/LRS_VQA_merged.jsonl     # the question file holds the answers
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from .answers import read_answers
from .scorers import TASKS, Task, get_task

OPTIONS = ("questions", "split")  # flags passed to the scorer / converter that takes them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.score",
                                     description="Score answers on a benchmark and/or convert them for submission.")
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--answers", required=True, type=Path, help="answers JSONL written by llava.eval.run")
    parser.add_argument("--annotations", type=Path, help="the benchmark's ground truth (file or folder; see the task)")
    parser.add_argument("--questions", type=Path, help="the question file, for tasks that need it (pope, vqav2 "
                        "submission, mmbench test submission)")
    parser.add_argument("--split", help="score one split: pope adversarial|popular|random, sqa test|val, "
                        "seed image|video")
    parser.add_argument("--out", type=Path, help="metrics JSON (default: <answers>.score.json)")
    parser.add_argument("--submission", type=Path, help="also write the benchmark's submission file here")
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    """Score and/or convert; returns the metrics (None when only converting)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    task = get_task(args.task)
    if args.annotations is None and args.submission is None:
        parser.error("give --annotations to score, --submission to convert, or both")
    if args.submission is not None and task.convert is None:
        parser.error(f"task {args.task} has no submission format")
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    used = [fn for fn, wanted in ((task.score, args.annotations), (task.convert, args.submission)) if wanted]
    for name in options:
        if not any(name in inspect.signature(fn).parameters for fn in used):
            parser.error(f"--{name} is not an option of task {args.task}")
    try:
        return _run(task, args, options)
    except (ValueError, FileNotFoundError) as err:
        print(f"score: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(task: Task, args: argparse.Namespace, options: dict) -> dict | None:
    answers = read_answers(args.answers)
    metrics = None
    if args.annotations is not None:
        metrics = task.score(answers, args.annotations, **_taken(task.score, options))
        out = args.out or args.answers.with_suffix(".score.json")
        record = {"task": args.task, "answers": str(args.answers), "annotations": str(args.annotations),
                  "options": {k: str(v) for k, v in options.items()}, "headline": task.headline, "metrics": metrics}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(format_table(args.task, metrics, task.headline))
        print(f"metrics -> {out}")
    if args.submission is not None:
        written = task.convert(answers, args.submission, annotations_path=args.annotations,
                               **_taken(task.convert, options))
        print(f"submission -> {written}")
    return metrics


def _taken(fn, options: dict) -> dict:
    return {name: value for name, value in options.items() if name in inspect.signature(fn).parameters}


def flatten(metrics: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def format_table(task: str, metrics: dict, headline: str) -> str:
    """Two aligned columns, the headline metric first; floats with two decimals."""
    flat = flatten(metrics)
    names = [headline] * (headline in flat) + [name for name in flat if name != headline]
    width = max(map(len, names), default=0)
    lines = [f"{task}", "-" * (width + 10)]
    for name in names:
        value = flat[name]
        lines.append(f"{name:<{width}}  {value:8.2f}" if isinstance(value, float) else f"{name:<{width}}  {value:>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    from ..cli import cli_main

    cli_main(main, prog="llava.eval.score")
