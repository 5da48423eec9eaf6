"""The benchmark scorers, by task name: ``TASKS[name].score(answers, annotations_path, **options)``.

Every score is a percentage in [0, 100] (MME: its own points, 0..2000 / 0..800). Each module's
docstring says which annotation files it reads and exactly how it scores; ``headline`` names the
number papers quote (a dotted path into the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import gqa, lrs_vqa, mmbench, mme, pope, scienceqa, seed, vqa


@dataclass(frozen=True)
class Task:
    """A benchmark: how to score answers and, when it has one, how to write its submission file."""

    score: Callable[..., dict]  # (answers, annotations_path, **options) -> metrics
    convert: Callable | None = None  # (answers, out_path, annotations_path=None, **options) -> path written
    headline: str = "accuracy"  # the metric papers quote, a dotted path into the metrics
    description: str = ""


TASKS: dict[str, Task] = {
    "vqav2": Task(vqa.score_vqav2, vqa.convert_vqav2, "accuracy", "VQAv2 soft accuracy (val); test-dev: submission"),
    "textvqa": Task(vqa.score_textvqa, None, "accuracy", "TextVQA soft accuracy (val)"),
    "gqa": Task(gqa.score, gqa.convert, "accuracy", "GQA exact match (testdev balanced)"),
    "pope": Task(pope.score, None, "f1", "POPE F1 / accuracy, mean of the splits"),
    "mme": Task(mme.score, mme.convert, "perception", "MME perception / cognition scores"),
    "sqa": Task(scienceqa.score, None, "by_context.IMG", "ScienceQA accuracy (IMG: the image subset)"),
    "mmbench": Task(mmbench.score, mmbench.convert, "circular", "MMBench CircularEval accuracy (dev)"),
    "mmbench_cn": Task(mmbench.score, mmbench.convert, "circular", "MMBench-CN CircularEval accuracy (dev)"),
    "seed": Task(seed.score, None, "by_data_type.image", "SEED-Bench accuracy (image: SEED-I)"),
    "lrs_vqa": Task(lrs_vqa.score, None, "oa", "LRS-VQA accuracy: OA / AA per source (FAIR, GLH-Bridge, STAR)"),
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is an error listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]
