"""POPE: accuracy, precision, recall, F1 and yes-ratio per split (adversarial / popular / random).

An answer is read as LLaVA's ``eval_pope.py`` reads it: only its first sentence (up to the first
period) counts, commas removed; it is "no" when a word of it is ``no``, ``No`` or ``not``, and "yes"
otherwise. "yes" is the positive class. Precision (recall, F1) is 0 when nothing is predicted
(labelled, ...) positive. Every number is a percentage; ``accuracy`` and ``f1`` at the top are the
means over the splits scored.

Annotations, either

- POPE's label files ``coco_pope_<split>.json`` (one JSON object per line:
  ``{"question_id", "image", "text", "label": "yes"|"no"}``), a folder of them or one file, plus
  ``questions``: the question file the answers come from (LLaVA's ``llava_pope_test.jsonl``, whose
  ``category`` names the split). A question's label is found by (image, first line of its text),
  so its numbering may differ from the label files'; or
- without ``questions``: one file whose records carry the answers' ``question_id`` and a ``label``
  (a ``coco_pope_<split>.json`` used directly as the question file); the split is the record's
  ``category``, else the one in the file name.

``split`` (e.g. ``"random"`` or ``"adversarial,popular"``) scores those splits only; answers to the
other splits' questions are then ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..answers import check_ids
from .common import load_records, percent, require

_SPLIT_IN_NAME = re.compile(r"_pope_(\w+)\.jsonl?$")
NEGATIONS = frozenset({"no", "No", "not"})


def pope_answer(text: str) -> bool:
    """True for a "yes" answer: no ``no``/``No``/``not`` word in the first sentence."""
    words = text.split(".")[0].replace(",", "").split()
    return not NEGATIONS.intersection(words)


def pope_metrics(predictions: list[bool], labels: list[bool]) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio (%) of yes (True) / no predictions."""
    pairs = list(zip(predictions, labels))
    tp = sum(p and y for p, y in pairs)
    fp = sum(p and not y for p, y in pairs)
    fn = sum(not p and y for p, y in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": percent([float(p == y) for p, y in pairs]), "precision": 100 * precision,
            "recall": 100 * recall, "f1": 100 * f1, "yes_ratio": percent([float(p) for p in predictions]),
            "n": len(pairs)}


def score(answers: list[dict], annotations_path: str | Path, questions: str | Path | None = None,
          split: str | None = None) -> dict:
    """Metrics per split and their means (see the module docstring)."""
    truth = _truth(Path(annotations_path), questions)
    splits = sorted({name for name, _ in truth.values()})
    wanted = splits if split is None else [name.strip() for name in split.split(",")]
    unknown = [name for name in wanted if name not in splits]
    if unknown:
        raise ValueError(f"{annotations_path}: no POPE split {unknown[0]!r} (it has {splits})")
    scored = {qid: v for qid, v in truth.items() if v[0] in wanted}
    answers = [a for a in answers if str(a["question_id"]) in scored or str(a["question_id"]) not in truth]
    by_id = check_ids(answers, scored, str(questions or annotations_path))
    by_split = {}
    for name in wanted:
        ids = [qid for qid, (s, _) in scored.items() if s == name]
        by_split[name] = pope_metrics([pope_answer(by_id[qid]["text"]) for qid in ids], [scored[q][1] for q in ids])
    mean = {metric: sum(m[metric] for m in by_split.values()) / len(by_split) for metric in ("accuracy", "f1")}
    return {**mean, "n": len(scored), "by_split": by_split}


def _truth(path: Path, questions: str | Path | None) -> dict[str, tuple[str, bool]]:
    """``{question_id: (split, label is yes)}`` from the annotations (see the module docstring)."""
    if questions is None:
        if path.is_dir():
            raise ValueError(f"{path}: a folder of POPE label files needs the question file too (questions=, "
                             "--questions: LLaVA's llava_pope_test.jsonl) to map question ids to labels")
        records = load_records(path, "POPE")
        require(enumerate(records, 1), ("question_id", "label"), path, "POPE")
        return {str(r["question_id"]): (r.get("category") or _split_of(path), _label(r, path)) for r in records}
    records = load_records(questions, "POPE question")
    require(enumerate(records, 1), ("question_id", "image", "text"), questions, "POPE question")
    tables: dict[Path, dict] = {}
    truth = {}
    for record in records:
        split = record.get("category") or _split_of(path)
        labels_file = path / f"coco_pope_{split}.json" if path.is_dir() else path
        if labels_file not in tables:
            tables[labels_file] = _label_table(labels_file)
        label = tables[labels_file].get((record["image"], _first_line(record["text"])))
        if label is None:
            raise ValueError(f"{questions}: question {record['question_id']!r} ({record['image']}, "
                             f"{_first_line(record['text'])!r}) has no label in {labels_file}")
        truth[str(record["question_id"])] = (split, label)
    return truth


def _label_table(path: Path) -> dict[tuple[str, str], bool]:
    """``{(image, question): label is yes}`` of one POPE label file."""
    if not path.is_file():
        raise ValueError(f"{path}: POPE label file not found")
    records = load_records(path, "POPE")
    require(enumerate(records, 1), ("image", "text", "label"), path, "POPE")
    return {(r["image"], _first_line(r["text"])): _label(r, path) for r in records}


def _label(record: dict, path) -> bool:
    label = str(record["label"]).strip().lower()
    if label not in ("yes", "no"):
        raise ValueError(f"{path}: not POPE annotations: label {record['label']!r} of question "
                         f"{record.get('question_id')!r} is neither yes nor no")
    return label == "yes"


def _split_of(path: Path) -> str:
    match = _SPLIT_IN_NAME.search(Path(path).name)
    return match.group(1) if match else "all"


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()
