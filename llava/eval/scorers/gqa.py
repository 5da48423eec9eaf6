"""GQA: exact-match accuracy, overall and per question type, and the official predictions file.

Annotations: the official ``testdev_balanced_questions.json`` (any ``*_questions.json`` of GQA):
``{question_id: {"answer", "types": {"structural", "semantic", "detailed"}, ...}}``.

An answer is normalised as LLaVA's ``convert_gqa_for_eval.py`` does before GQA's official
``eval.py`` sees it (surrounding spaces and trailing periods removed, lower-cased) and must then equal
the gold answer exactly; ``eval.py`` itself compares strings as they are. The full VQA normalisation
(articles, number words) is deliberately not applied: it would change the numbers GQA reports.
Per type: by ``types.structural`` (verify, query, choose, logical, compare) and ``types.semantic``
(obj, attr, rel, cat, global) when the annotations have them.

The predictions file for ``eval.py`` (``testdev_balanced_predictions.json``) is
``[{"questionId", "prediction"}]`` with the normalised answers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..answers import check_ids, unique_answers
from .common import expect_type, grouped, load_json, percent, require

TYPES = ("structural", "semantic")


def gqa_prediction(text: str) -> str:
    """An answer as GQA's evaluation receives it from LLaVA: stripped, no trailing periods, lower case."""
    return text.strip().rstrip(".").strip().lower()


def score(answers: list[dict], annotations_path: str | Path) -> dict:
    """Accuracy (%) overall and per structural / semantic type."""
    questions = expect_type(load_json(annotations_path, "GQA"), dict, annotations_path, "GQA",
                            "an object {question_id: question}")
    require(questions.items(), ("answer",), annotations_path, "GQA")
    by_id = check_ids(answers, questions, str(annotations_path))
    hits = {qid: float(gqa_prediction(by_id[str(qid)]["text"]) == str(q["answer"]).strip().lower())
            for qid, q in questions.items()}
    result = {"accuracy": percent(list(hits.values())), "n": len(hits)}
    for kind in TYPES:
        if all(isinstance(q.get("types"), dict) and kind in q["types"] for q in questions.values()):
            result[f"by_{kind}"] = grouped((q["types"][kind], hits[qid]) for qid, q in questions.items())
    return result


def convert(answers: list[dict], out_path: str | Path, annotations_path: str | Path | None = None) -> Path:
    """Write ``[{"questionId", "prediction"}]`` for GQA's ``eval.py``."""
    predictions = [{"questionId": qid, "prediction": gqa_prediction(a["text"])}
                   for qid, a in unique_answers(answers).items()]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(predictions))
    return out
