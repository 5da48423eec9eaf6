"""SEED-Bench: accuracy from the chosen letter, overall, per question type and per data type.

Annotations: SEED-Bench's ``SEED-Bench.json``: ``{"question_type": {name: id}, "questions":
[{"question_id", "question", "choice_a".."choice_d", "answer": "A".."D", "question_type_id",
"data_type": "image"|"video", ...}]}``. Answers are matched by ``question_id`` (LLaVA's
``llava-seed-bench.jsonl`` keeps SEED's ids; video questions are asked on one frame).

``split`` (``"image"`` or ``"video"``) scores one data type; answers to the other are then ignored.
The letter is read by :func:`.choice.parse_choice` (LLaVA's converter needs the bare letter; we also
take ``A.``, ``(A)``, ``The answer is A`` or the option's text). ``by_data_type.image`` is the
SEED-Bench image accuracy (SEED-I) LLaVA reports.
"""

from __future__ import annotations

from pathlib import Path

from ..answers import check_ids
from .choice import LETTERS, parse_choice
from .common import field, grouped, load_json, percent, require

CHOICES = ("choice_a", "choice_b", "choice_c", "choice_d")
DATA_TYPES = ("image", "video")


def score(answers: list[dict], annotations_path: str | Path, split: str | None = None) -> dict:
    """Accuracy (%) overall, per question type and per data type (see the module docstring)."""
    data = load_json(annotations_path, "SEED-Bench")
    questions = field(data, "questions", list, annotations_path, "SEED-Bench")
    require(enumerate(questions), ("question_id", "answer", "question_type_id", *CHOICES), annotations_path,
            "SEED-Bench")
    if split is not None and split not in DATA_TYPES:
        raise ValueError(f"SEED-Bench split must be one of {DATA_TYPES}, got {split!r}")
    known = {str(q["question_id"]) for q in questions}
    scored = [q for q in questions if split is None or q.get("data_type", "image") == split]
    answers = [a for a in answers if str(a["question_id"]) not in known - {str(q["question_id"]) for q in scored}]
    by_id = check_ids(answers, [q["question_id"] for q in scored], str(annotations_path))
    type_names = {str(i): name for name, i in (data.get("question_type") or {}).items()}
    hits = [(q, _right(by_id[str(q["question_id"])]["text"], q)) for q in scored]
    return {"accuracy": percent([hit for _, hit in hits]), "n": len(hits),
            "by_data_type": grouped((q.get("data_type", "image"), hit) for q, hit in hits),
            "by_question_type": grouped((type_names.get(str(q["question_type_id"]), str(q["question_type_id"])), hit)
                                        for q, hit in hits)}


def _right(text: str, question: dict) -> float:
    picked = parse_choice(text, [question[c] for c in CHOICES])
    return float(picked is not None and LETTERS[picked] == str(question["answer"]).strip())
