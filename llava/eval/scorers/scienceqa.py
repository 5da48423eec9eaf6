"""ScienceQA: accuracy from the chosen letter, overall and per subject, context modality and grade.

Annotations: ScienceQA's ``problems.json`` (or the folder holding it): ``{problem_id: {"choices":
[...], "answer": index of the right choice, "split", "subject", "hint", "image", "grade", ...}}``.
The problems of ``split`` (default ``"test"``) are scored; answers to other splits' problems are
ignored. The answer's letter is read by :func:`.choice.parse_choice` (LLaVA's rules, plus the option
text itself); an answer that picks no option is wrong.

Groups (ScienceQA's own), where the problems carry the fields:

- ``by_subject``: NAT / SOC / LAN (natural, social, language science);
- ``by_context``: TXT (a non-empty ``hint``), IMG (an ``image``), NO (neither); TXT and IMG overlap.
  ``by_context.IMG`` is the image subset LLaVA and PyramidDrop report as SQA-IMG;
- ``by_grade``: G1-6, G7-12.
"""

from __future__ import annotations

from pathlib import Path

from ..answers import check_ids
from .choice import parse_choice
from .common import expect_type, grouped, load_json, percent, require

SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


def score(answers: list[dict], annotations_path: str | Path, split: str = "test") -> dict:
    """Accuracy (%) overall and per subject / context / grade (see the module docstring)."""
    path = Path(annotations_path)
    path = path / "problems.json" if path.is_dir() else path
    problems = expect_type(load_json(path, "ScienceQA"), dict, path, "ScienceQA", "an object {problem_id: problem}")
    require(problems.items(), ("choices", "answer", "split"), path, "ScienceQA")
    scored = {pid: p for pid, p in problems.items() if p["split"] == split}
    if not scored:
        raise ValueError(f"{path}: no ScienceQA problems in split {split!r}")
    answers = [a for a in answers if str(a["question_id"]) in scored or str(a["question_id"]) not in problems]
    by_id = check_ids(answers, scored, str(path))
    hits = {pid: float(parse_choice(by_id[pid]["text"], p["choices"]) == p["answer"]) for pid, p in scored.items()}
    result = {"accuracy": percent(list(hits.values())), "n": len(hits)}
    groups = {"by_subject": _subject, "by_context": _contexts, "by_grade": _grade}
    for name, of in groups.items():
        labelled = [(label, hits[pid]) for pid, p in scored.items() for label in of(p)]
        if labelled:
            result[name] = grouped(labelled)
    return result


def _subject(problem: dict) -> list[str]:
    subject = SUBJECTS.get(problem.get("subject", ""))
    return [subject] if subject else []


def _contexts(problem: dict) -> list[str]:
    if "hint" not in problem and "image" not in problem:
        return []
    contexts = (["TXT"] if problem.get("hint") else []) + (["IMG"] if problem.get("image") else [])
    return contexts or ["NO"]


def _grade(problem: dict) -> list[str]:
    grade = str(problem.get("grade", "")).removeprefix("grade")
    return [("G1-6" if int(grade) <= 6 else "G7-12")] if grade.isdigit() else []
