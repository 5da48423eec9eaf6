"""MMBench (and MMBench-CN): single-pass and CircularEval accuracy, and the submission TSV.

Annotations: MMBench's TSV (``mmbench_dev_20230712.tsv``, ``mmbench_dev_cn_20231003.tsv``, ...):
columns ``index, question, hint, A, B, C, D, answer, category, l2-category, image, ...`` (images
base64). Its rows already hold the circular variants of each question: the options rotated, at
``index + k * 1_000_000``. Answers are matched by ``question_id == index``, one per row.

- ``single_pass``: % of the questions (rows with ``index < 1_000_000``) answered right;
- ``circular``: % of the questions right in every one of their variants (rows with the same
  ``index % 1_000_000``) -- MMBench's CircularEval, what its leaderboard reports;
- ``circular_by_category`` / ``circular_by_l2_category``: the same per ability, where present.

The chosen option is read by :func:`.choice.parse_choice` (letter, or the option's text); the
official evaluator additionally asks an LLM to match free-form answers, which we do not.

The submission TSV (``convert``): ``index, question, A, B, C, D, [answer,] prediction`` per row, the
answer's text as the prediction (the server reads the choice itself). Its rows come from the
annotations, or from ``questions`` (the same TSV) for a test split without answers.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..answers import check_ids
from .choice import LETTERS, parse_choice
from .common import grouped, percent

CIRCULAR_STRIDE = 1_000_000
OPTIONS = "ABCD"
COLUMNS = ("index", "question", "A", "B")
_FIELD_LIMIT = 2**31 - 1  # base64 images overflow csv's default 128 KiB field limit


def read_tsv(path: str | Path, need_answer: bool = False) -> list[dict]:
    """Rows of an MMBench TSV (column name -> text); an error names a missing column or bad index."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, expected an MMBench TSV")
    previous = csv.field_size_limit(_FIELD_LIMIT)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
            columns = reader.fieldnames or []
    finally:
        csv.field_size_limit(previous)
    for column in COLUMNS + (("answer",) if need_answer else ()):
        if column not in columns:
            hint = " (a test split has no answers: convert it for submission instead)" if column == "answer" else ""
            raise ValueError(f"{path}: not an MMBench TSV: no column {column!r} (columns: {columns[:12]}){hint}")
    for number, row in enumerate(rows, start=2):
        if not row["index"].strip().isdigit():
            raise ValueError(f"{path}:{number}: not an MMBench TSV: index {row['index']!r} is not an integer")
    return rows


def options_of(row: dict) -> list[str]:
    """The texts of a row's options A, B, ... up to the first empty one."""
    options = []
    for letter in OPTIONS:
        text = (row.get(letter) or "").strip()
        if not text or text.lower() == "nan":
            break
        options.append(text)
    return options


def score(answers: list[dict], annotations_path: str | Path) -> dict:
    """Single-pass and circular accuracy (%), circular per category (see the module docstring)."""
    rows = read_tsv(annotations_path, need_answer=True)
    by_id = check_ids(answers, [row["index"].strip() for row in rows], str(annotations_path))
    right: dict[int, bool] = {}
    for row in rows:
        picked = parse_choice(by_id[row["index"].strip()]["text"], options_of(row))
        right[int(row["index"])] = picked is not None and LETTERS[picked] == row["answer"].strip()
    circular: dict[int, bool] = {}
    for index, ok in right.items():
        circular[index % CIRCULAR_STRIDE] = circular.get(index % CIRCULAR_STRIDE, True) and ok
    main = [row for row in rows if int(row["index"]) < CIRCULAR_STRIDE]
    result = {"circular": percent([float(ok) for ok in circular.values()]),
              "single_pass": percent([float(right[int(row["index"])]) for row in main]),
              "n_questions": len(circular), "n_rows": len(rows)}
    for column in ("category", "l2-category"):
        if main and all(row.get(column) for row in main):
            name = f"circular_by_{column.replace('-', '_')}"
            result[name] = grouped((row[column], float(circular[int(row["index"])])) for row in main)
    return result


def convert(answers: list[dict], out_path: str | Path, annotations_path: str | Path | None = None,
            questions: str | Path | None = None) -> Path:
    """Write the submission TSV for the rows of ``annotations_path`` (or ``questions``)."""
    source = annotations_path or questions
    if source is None:
        raise ValueError("the MMBench submission lists the TSV's rows: give the TSV (annotations or questions)")
    rows = read_tsv(source)
    by_id = check_ids(answers, [row["index"].strip() for row in rows], str(source))
    header = ["index", "question", *OPTIONS] + (["answer"] if rows and "answer" in rows[0] else []) + ["prediction"]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            prediction = " ".join(by_id[row["index"].strip()]["text"].split())
            writer.writerow([row.get(column) or "" for column in header[:-1]] + [prediction])
    return out
