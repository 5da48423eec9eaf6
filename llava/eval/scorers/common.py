"""What every scorer needs: annotation files read and checked, prompts reduced to questions, percentages.

Scores are percentages in [0, 100] everywhere (MME's own points aside, see :mod:`.mme`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..chunks import read_jsonl

# Instructions LLaVA's question files and ``llava.eval.run --single_pred_prompt`` append to a question.
INSTRUCTIONS = ("Answer the question using a single word or phrase.",
                "Answer with the option's letter from the given choices directly.")


def load_json(path: str | Path, kind: str) -> Any:
    """A JSON annotation file; invalid JSON is an error naming the file and the benchmark expected."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, expected a {kind} annotation file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a {kind} annotation file (invalid JSON: {err.msg}, line {err.lineno})") from None


def load_records(path: str | Path, kind: str, key: str | None = None) -> list:
    """Records of a JSON list, a JSONL file (one object per line) or, given ``key``, ``{key: [...]}``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, expected a {kind} file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return read_jsonl(path)  # JSONL, or an error naming the first malformed line
    if key is not None and isinstance(data, dict) and key in data:
        data = data[key]
    return data if isinstance(data, list) else [data]


def require(records: Iterable[tuple[Any, Any]], fields: tuple[str, ...], path: str | Path, kind: str) -> None:
    """Each ``(label, record)`` must be an object with ``fields``; else an error naming the first bad one."""
    for label, record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}: not {kind} annotations: record {label} is {_preview(record)}, not an object")
        missing = [name for name in fields if name not in record]
        if missing:
            raise ValueError(f"{path}: not {kind} annotations: record {label} has no field {missing[0]!r} "
                             f"(it has {sorted(record)[:8]}): {_preview(record)}")


def expect_type(value: Any, expected: type, path: str | Path, kind: str, what: str) -> Any:
    """``value`` when it is an ``expected`` (dict / list); else an error saying ``what`` was expected."""
    if not isinstance(value, expected):
        raise ValueError(f"{path}: not {kind} annotations: expected {what}, got {_preview(value)}")
    return value


def field(data: Any, key: str, expected: type, path: str | Path, kind: str) -> Any:
    """``data[key]``, which must be an ``expected`` (dict / list) inside a JSON object."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, expected):
        raise ValueError(f"{path}: not {kind} annotations: expected an object with a {key!r} "
                         f"{expected.__name__}, got {_preview(data)}")
    return value


def question_of(prompt: str) -> str:
    """The question of an answer's ``prompt``: without ``<image>``, LLaVA's instructions and OCR-token lines."""
    lines = [line.strip() for line in prompt.replace("<image>", " ").splitlines()]
    kept = [line for line in lines if line and line not in INSTRUCTIONS and not line.startswith("Reference OCR token")]
    return " ".join(" ".join(kept).split())


def percent(hits: list[float]) -> float:
    """Mean of per-question scores in [0, 1], as a percentage (0.0 for no questions)."""
    return 100.0 * sum(hits) / len(hits) if hits else 0.0


def grouped(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Percentage per group from ``(group, score in [0, 1])`` pairs; groups sorted by name."""
    groups: dict[str, list[float]] = defaultdict(list)
    for group, hit in pairs:
        groups[str(group)].append(hit)
    return {name: percent(groups[name]) for name in sorted(groups)}


def _preview(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
