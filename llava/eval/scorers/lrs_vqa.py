"""LRS-VQA (large remote-sensing images, arXiv 2503.07588): accuracy per category, OA and AA per source.

Annotations: LRS-VQA's question file, JSONL (or a JSON list), one record per question with
``question_id``, ``image``, ``text``, ``category``, the gold answer ``ground_truth`` (``answer`` is
accepted too) and the source dataset: a ``source`` (or ``dataset``) field, else the first part of the
``image`` path or of the ``question_id`` that names one (``FAIR1M/...``, ``GLH-Bridge_...``, ``STAR...``).
Sources are FAIR, GLH-Bridge and STAR; other names are kept as they are written.

An answer is right when, after :func:`.normalize.normalize_answer` (lower case, punctuation, number
words as digits, articles dropped), it equals the gold answer, or, when NLTK and its WordNet data
are installed, when some WordNet sense of the one is within path similarity > 0.8 of some sense of
the other (LRS-VQA's synonym rule; multi-word answers are looked up with underscores). NLTK is not
a dependency: without it (or its data) synonyms are not matched and ``synonym_matching`` says why.
The official script only lower-cases before comparing, so its exact matches are a subset of ours.

Metrics (percentages): per source ``oa`` (right / questions), ``aa`` (mean over its categories of
the category accuracy) and ``by_category``; at the top ``oa`` over every question and ``aa`` the
mean of the sources' ``aa``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

from ..answers import check_ids
from .common import load_records, percent, require
from .normalize import normalize_answer

SOURCE_ALIASES = {"fair": "FAIR", "fair1m": "FAIR", "lrs-fair": "FAIR", "glh-bridge": "GLH-Bridge",
                  "glh_bridge": "GLH-Bridge", "bridge": "GLH-Bridge", "lrs-bridge": "GLH-Bridge", "star": "STAR",
                  "lrs-star": "STAR"}
SIMILARITY = 0.8  # LRS-VQA's WordNet path-similarity threshold


def score(answers: list[dict], annotations_path: str | Path) -> dict:
    """OA / AA per source and overall, accuracy per category (see the module docstring)."""
    records = load_records(annotations_path, "LRS-VQA")
    require(enumerate(records, 1), ("question_id", "category"), annotations_path, "LRS-VQA")
    by_id = check_ids(answers, [r["question_id"] for r in records], str(annotations_path))
    synonyms, status = load_synonym_matcher()
    hits: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    synonym_hits = 0
    for record in records:
        gold, predicted = normalize_answer(_gold(record, annotations_path)), normalize_answer(
            str(by_id[str(record["question_id"])]["text"]))
        right = gold == predicted
        if not right and synonyms is not None and gold and predicted and synonyms(gold, predicted):
            right, synonym_hits = True, synonym_hits + 1
        hits[source_of(record, annotations_path)][str(record["category"])].append(float(right))
    by_source = {source: _source_metrics(hits[source]) for source in sorted(hits)}
    every = [hit for categories in hits.values() for values in categories.values() for hit in values]
    return {"oa": percent(every), "aa": sum(m["aa"] for m in by_source.values()) / len(by_source) if by_source else 0.0,
            "n": len(every), "by_source": by_source, "synonym_matching": status, "synonym_matches": synonym_hits}


def _source_metrics(categories: dict[str, list[float]]) -> dict:
    by_category = {name: percent(categories[name]) for name in sorted(categories)}
    every = [hit for values in categories.values() for hit in values]
    return {"oa": percent(every), "aa": sum(by_category.values()) / len(by_category), "n": len(every),
            "by_category": by_category}


def _gold(record: dict, path) -> str:
    for key in ("ground_truth", "answer"):
        if record.get(key) is not None:
            return str(record[key])
    raise ValueError(f"{path}: not LRS-VQA annotations: question {record['question_id']!r} has no 'ground_truth' "
                     "(or 'answer') field")


def source_of(record: dict, path="LRS-VQA") -> str:
    """The source dataset of a question: its ``source`` / ``dataset`` field, else found in ``image`` or the id."""
    for key in ("source", "dataset"):
        if record.get(key):
            name = str(record[key])
            return SOURCE_ALIASES.get(name.lower(), name)
    for text in (record.get("image"), record.get("question_id")):
        for part in str(text or "").replace("\\", "/").replace("_", "/").split("/"):
            found = SOURCE_ALIASES.get(part.lower()) or SOURCE_ALIASES.get(part.lower().split(".")[0])
            if found:
                return found
    raise ValueError(f"{path}: question {record['question_id']!r} names no source dataset: give it a 'source' field "
                     f"(FAIR, GLH-Bridge, STAR); its image {record.get('image')!r} names none either")


def load_synonym_matcher() -> tuple[Callable[[str, str], bool] | None, str]:
    """``(are_synonyms, status)``: WordNet synonym matching, or None with the reason it is off."""
    try:
        from nltk.corpus import wordnet
    except ImportError:
        return None, "off: nltk is not installed (pip install nltk, then python -m nltk.downloader wordnet)"
    try:
        wordnet.synsets("dog")
    except LookupError:
        return None, "off: NLTK's WordNet data is not installed (python -m nltk.downloader wordnet)"

    def are_synonyms(a: str, b: str) -> bool:
        senses_a, senses_b = wordnet.synsets(a.replace(" ", "_")), wordnet.synsets(b.replace(" ", "_"))
        return any((sa.path_similarity(sb) or 0.0) > SIMILARITY for sa in senses_a for sb in senses_b)

    return are_synonyms, "wordnet"
