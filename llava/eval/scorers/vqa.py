"""VQAv2 and TextVQA: soft accuracy against the ten human answers, and the VQAv2 submission file.

Accuracy of an answer, as the official VQA evaluation (and LLaVA's TextVQA evaluator) computes it: with
the answer and every human answer normalised (:func:`.normalize.normalize_answer`), average over the
ten leave-one-out subsets of nine humans of ``min(#humans in the subset who gave the answer / 3, 1)``.
One matching human scores 0.3, two 0.6, three 0.9, four or more 1.0. We use this rather than the
simpler ``min(#humans / 3, 1)`` (1/3, 2/3, 1) because it is what the evaluation servers report and
what published VQAv2 / TextVQA numbers are; a simplified formula would shift them by up to 3.3 points
per question.

Annotations:

- VQAv2: the official ``v2_mscoco_val2014_annotations.json``:
  ``{"annotations": [{"question_id", "answers": [{"answer", ...}, x10], "answer_type", ...}]}``;
  answers are matched by ``question_id``. (test-dev has no public answers: convert, then submit.)
- TextVQA: ``TextVQA_0.5.1_val.json``: ``{"data": [{"question_id", "question", "image_id",
  "answers": [10 strings]}]}``. Answers are matched by TextVQA's ``question_id`` or, for LLaVA's
  ``llava_textvqa_val_v051_ocr.jsonl`` (whose ``question_id`` is the image id, shared by the
  questions of one image), by (image id, question read from the answer's ``prompt``), as LLaVA does.

The VQAv2 submission (``[{"question_id", "answer"}]``, answers normalised) lists every question of
``questions`` (the test2015 question file, LLaVA's ``llava_vqav2_mscoco_test2015.jsonl`` or the
official ``v2_OpenEnded_mscoco_test2015_questions.json``) with ``""`` for those not answered, as the
test-dev server requires; without it, the answered questions only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..answers import check_ids, unique_answers
from .common import field, grouped, load_json, load_records, percent, question_of, require
from .normalize import normalize_answer


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """Soft accuracy in [0, 1]: leave-one-out mean of ``min(matches / 3, 1)`` (module docstring)."""
    predicted = normalize_answer(prediction)
    humans = [normalize_answer(answer) for answer in human_answers]
    matches = humans.count(predicted)
    return sum(min(1.0, (matches - (human == predicted)) / 3) for human in humans) / len(humans)


def score_vqav2(answers: list[dict], annotations_path: str | Path) -> dict:
    """Accuracy (%) overall and per answer type (yes/no, number, other) on VQAv2 annotations."""
    records = field(load_json(annotations_path, "VQAv2"), "annotations", list, annotations_path, "VQAv2")
    require(enumerate(records), ("question_id", "answers"), annotations_path, "VQAv2")
    by_id = check_ids(answers, [r["question_id"] for r in records], str(annotations_path))
    hits = [(r, vqa_accuracy(by_id[str(r["question_id"])]["text"], _human_answers(r, annotations_path)))
            for r in records]
    result = {"accuracy": percent([hit for _, hit in hits]), "n": len(hits)}
    if all("answer_type" in r for r in records):
        result["by_answer_type"] = grouped((r["answer_type"], hit) for r, hit in hits)
    return result


def score_textvqa(answers: list[dict], annotations_path: str | Path) -> dict:
    """Accuracy (%) on TextVQA annotations (matched by question id, or by image id + question)."""
    records = field(load_json(annotations_path, "TextVQA"), "data", list, annotations_path, "TextVQA")
    require(enumerate(records), ("question_id", "question", "image_id", "answers"), annotations_path, "TextVQA")
    question_ids = {str(r["question_id"]) for r in records}
    if not answers or str(answers[0]["question_id"]) in question_ids:
        keys, key = [r["question_id"] for r in records], None
    else:  # LLaVA's question file: question_id is the image id
        keys = [_image_question(r["image_id"], r["question"]) for r in records]
        key = _textvqa_answer_key
    by_key = check_ids(answers, keys, str(annotations_path), **({"key": key} if key else {}))
    hits = [vqa_accuracy(by_key[str(k)]["text"], _human_answers(r, annotations_path)) for k, r in zip(keys, records)]
    return {"accuracy": percent(hits), "n": len(hits)}


def convert_vqav2(answers: list[dict], out_path: str | Path, annotations_path: str | Path | None = None,
                  questions: str | Path | None = None) -> Path:
    """Write the VQAv2 submission JSON ``[{"question_id", "answer"}]`` (see the module docstring)."""
    if questions is None:
        by_id = unique_answers(answers)
        ids = [answer["question_id"] for answer in by_id.values()]
    else:
        ids = _question_ids(questions)
        by_id = check_ids(answers, ids, str(questions), allow_missing=True)
    submission = [{"question_id": qid, "answer": normalize_answer(by_id[str(qid)]["text"]) if str(qid) in by_id else ""}
                  for qid in ids]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(submission))
    return out


def _human_answers(record: dict, path) -> list[str]:
    """The ten human answers of a record: strings (TextVQA) or ``{"answer": ...}`` objects (VQAv2)."""
    humans = record["answers"]
    if not isinstance(humans, list) or not humans:
        raise ValueError(f"{path}: question {record['question_id']!r}: 'answers' must be a non-empty list")
    try:
        return [human["answer"] if isinstance(human, dict) else str(human) for human in humans]
    except KeyError:
        raise ValueError(f"{path}: question {record['question_id']!r}: an entry of 'answers' has no 'answer' "
                         "field") from None


def _question_ids(path: str | Path) -> list:
    """Question ids of a question file: JSONL / a JSON list of records, or ``{"questions": [...]}``."""
    data = load_records(path, "VQAv2 question", key="questions")
    require(enumerate(data), ("question_id",), path, "VQAv2 question")
    return [record["question_id"] for record in data]


def _image_question(image_id, question: str) -> str:
    return f"{image_id}\t{' '.join(question.split()).lower()}"


def _textvqa_answer_key(answer: dict) -> str:
    if "prompt" not in answer:
        raise ValueError(f"answer {answer['question_id']!r} has no 'prompt': LLaVA's TextVQA question ids are "
                         "image ids, the question is read from the prompt")
    return _image_question(answer["question_id"], question_of(answer["prompt"]))
