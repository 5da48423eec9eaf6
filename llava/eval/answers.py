"""A model's answers (the JSONL ``llava.eval.run`` writes), read and matched to a benchmark's questions.

Each record is ``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}``; scorers read
``question_id``, ``text`` (the answer) and, where a benchmark reuses question ids, ``prompt``.
Question ids are compared as strings (``7`` and ``"7"`` are the same question), so an answers file
written from a question file with integer ids matches annotations keyed by strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from .chunks import read_jsonl

REQUIRED = ("question_id", "text")
SHOWN = 5  # ids listed in an error before "... (N in all)"


def read_answers(path: str | Path) -> list[dict]:
    """The answer records of a JSONL file; a malformed line or record (``text`` not a string included) is an error
    naming file and line."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text().splitlines(), start=1) if line.strip()]
    records = read_jsonl(path)  # raises on the first malformed line, with its number
    for (number, _), record in zip(lines, records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: an answer must be a JSON object, got {type(record).__name__}")
        missing = [name for name in REQUIRED if name not in record]
        if missing:
            raise ValueError(f"{path}:{number}: answer has no {missing[0]!r} field")
        if not isinstance(record["text"], str):
            found = "null" if record["text"] is None else f"a {type(record['text']).__name__}"
            raise ValueError(f"{path}:{number}: answer 'text' of question {record['question_id']!r} is {found}, "
                             "expected a string (the model's answer)")
    return records


def answer_id(answer: dict) -> str:
    """The default key of an answer: its question id, as a string."""
    return str(answer["question_id"])


def check_ids(answers: list[dict], expected_ids: Iterable, where: str, key: Callable[[dict], str] = answer_id,
              allow_missing: bool = False) -> dict[str, dict]:
    """Answers by key, when they answer each expected question exactly once.

    Raises ``ValueError`` listing (first few + count) the questions answered twice, those not answered
    (unless ``allow_missing``) and the answers to questions ``where`` does not have.
    """
    expected = [str(i) for i in expected_ids]
    by_key: dict[str, dict] = {}
    twice: list[str] = []
    for answer in answers:
        k = key(answer)
        if k in by_key and k not in twice:
            twice.append(k)
        by_key[k] = answer
    known = set(expected)
    missing = [] if allow_missing else [i for i in expected if i not in by_key]
    extra = [k for k in by_key if k not in known]
    problems = []
    if twice:
        problems.append(f"{len(twice)} question(s) answered more than once: {show_ids(twice)}")
    if missing:
        problems.append(f"{len(missing)} of {len(known)} question(s) not answered: {show_ids(missing)}")
    if extra:
        problems.append(f"{len(extra)} answer(s) to questions not in the annotations: {show_ids(extra)}")
    if problems:
        raise ValueError(f"answers do not match {where}: " + "; ".join(problems))
    return by_key


def show_ids(ids: list[str]) -> str:
    """The first few ids, and how many there are when some are left out."""
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown if len(ids) <= SHOWN else f"{shown}, ... ({len(ids)} in all)"


def unique_answers(answers: list[dict], key: Callable[[dict], str] = answer_id) -> dict[str, dict]:
    """Answers by key, in file order; a question answered twice is an error."""
    return check_ids(answers, dict.fromkeys(key(a) for a in answers), "their own question ids", key=key)
