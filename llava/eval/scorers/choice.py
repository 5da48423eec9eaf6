"""Which option a multiple-choice answer picks (ScienceQA, MMBench, SEED-Bench).

An answer picks option k when, tried in order:

1. it is the letter alone: ``B``, ``B.``, ``(B)``, ``B)``;
2. it starts with the letter and a mark: ``B. a dog``, ``(B) a dog``, ``B) a dog``, ``B: a dog``;
3. it says ``The answer is B`` exactly once (LLaVA's ScienceQA pattern);
4. it is the text of exactly one option (case and a trailing period ignored): ``a dog`` for ``B. A dog``.

A letter past the last option, or anything else, picks none (and counts as wrong). LLaVA's ScienceQA
evaluator accepts 1-3; its SEED-Bench and MMBench converters pass the text on as it is.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

LETTERS = string.ascii_uppercase
_ALONE = re.compile(r"^\(?([A-Z])\)?[.:)]?$")
_LEADING = re.compile(r"^\(?([A-Z])[.:)]\)?\s")
_STATED = re.compile(r"(?i:the answer is)\s*:?\s*\(?([A-Z])\b")


def parse_choice(text: str, options: Sequence[str]) -> int | None:
    """Index of the option ``text`` picks among ``options`` (their texts, in letter order), or None."""
    text = text.strip()
    for pattern in (_ALONE, _LEADING):
        match = pattern.match(text)
        if match:
            return _index(match.group(1), len(options))
    stated = _STATED.findall(text)
    if len(stated) == 1:
        return _index(stated[0], len(options))
    wanted = _plain(text)
    matches = [i for i, option in enumerate(options) if _plain(option) == wanted]
    return matches[0] if len(matches) == 1 else None


def _index(letter: str, count: int) -> int | None:
    index = LETTERS.index(letter)
    return index if index < count else None


def _plain(text: str) -> str:
    return " ".join(str(text).strip().rstrip(".").casefold().split())
