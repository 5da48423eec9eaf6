"""Benchmark question files -> question records ``{"question_id", "text", "image"?}``.

- ``.jsonl`` (LLaVA's eval files): one record per line, used as is. LRS-VQA's ``LRS_VQA_merged.jsonl``
  is one: ``question_id``, ``image`` (a huge scene: answer it with ``--coarse_to_fine``), ``text``,
  ``category``, ``ground_truth`` and the source dataset (a ``source`` field or the image path); the
  extra fields stay in the record (``llava.eval.score --task lrs_vqa`` reads them from the same file),
  only ``text`` is asked.
- ``.json`` (LLaVA's ScienceQA ``llava_test_CQM-A.json``): a list of conversation records; the
  question is the first human turn (its ``<image>`` placeholder is kept where it is). A list of
  question records (``text`` and no ``conversations``, e.g. LRS-VQA as JSON) is used as is.
- ``.tsv`` (MMBench): one row per question (circular variants are rows of their own), the image
  base64-encoded in the row; the text is ``hint + question + "A. ..."`` options, as LLaVA asks it.

A record's ``image`` may be a path (relative to ``--image_folder``) or an in-memory PIL image.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from pathlib import Path

from .chunks import read_jsonl

OPTIONS = ("A", "B", "C", "D")


def read_questions(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist")
    if path.suffix == ".jsonl":
        records = read_jsonl(path)
    elif path.suffix == ".json":
        records = [_from_conversation(r, path, i) for i, r in enumerate(json.loads(path.read_text()))]
    elif path.suffix == ".tsv":
        records = _read_mmbench(path)
    else:
        raise ValueError(f"{path}: question files are .jsonl, .json (conversations) or .tsv (MMBench)")
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
            raise ValueError(f"{path}: question {number} has no question_id/text: {str(record)[:200]}")
    return records


def _from_conversation(record: dict, path: Path, index: int) -> dict:
    if isinstance(record, dict) and "conversations" not in record and "text" in record:
        return record  # already a question record (LRS-VQA as a JSON list)
    try:
        human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
    except (KeyError, StopIteration, TypeError):
        raise ValueError(f"{path}: record {index} has no human turn in 'conversations'") from None
    question = {"question_id": record.get("id", index), "text": human}
    if record.get("image"):
        question["image"] = record["image"]
    return question


def _read_mmbench(path: Path) -> list[dict]:
    from PIL import Image

    csv.field_size_limit(sys.maxsize)  # base64 images
    questions = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            options = [f"{key}. {row[key]}" for key in OPTIONS if row.get(key) not in (None, "", "nan")]
            hint = row.get("hint")
            text = "\n".join(([hint] if hint not in (None, "", "nan") else []) + [row["question"], *options])
            image = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
            questions.append({"question_id": int(row["index"]), "text": text, "image": image,
                              "category": row.get("category")})
    return questions
