"""MME: per-subtask acc and acc+, perception and cognition scores, and the MME tool's result files.

Annotations: the ``MME_Benchmark_release_version`` folder, one folder per subtask holding, per image,
a ``<image>.txt`` of two lines ``question<TAB>Yes|No`` (beside the images, or in
``questions_answers_YN/`` next to ``images/``).

Answers (LLaVA's ``llava_mme.jsonl``): ``question_id`` is ``<subtask>/<image file>``, the same for
both questions of an image, so a question is found by (subtask, image, question read from the
``prompt``; whitespace, ``<image>``, LLaVA's instructions and "Please answer yes or no." ignored).

As the MME tool (``calculation.py``) reads an answer: lower-cased, "yes"/"no" as they are, else
"yes" (or else "no") when it occurs in the first four characters, else neither (wrong).
Per subtask: ``acc`` = % questions right, ``acc_plus`` = % images with both questions right,
``score`` = acc + acc_plus (MME's points, 0..200). ``perception`` sums the scores of the ten
perception subtasks (0..2000), ``cognition`` of the four cognition subtasks (0..800); a subtask the
annotations do not have counts 0.

The MME tool's input (``convert``): a folder with ``<subtask>.txt`` per subtask, one line per
question ``image<TAB>question<TAB>Yes|No<TAB>answer``, the two questions of an image adjacent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..answers import check_ids
from .common import grouped, question_of

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO = "Please answer yes or no."


@dataclass(frozen=True)
class Question:
    """One MME question: its subtask, image (file stem), text and answer as the annotation writes them."""

    subtask: str
    image: str
    text: str
    answer: str

    @property
    def key(self) -> str:
        return _key(self.subtask, self.image, self.text)


def mme_answer(text: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"``, as the MME tool parses an answer."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def load_questions(root: str | Path) -> list[Question]:
    """Every question of the MME folder, subtask by subtask, image by image (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not MME annotations: expected the MME_Benchmark_release_version folder "
                         "(<subtask>/<image>.txt or <subtask>/questions_answers_YN/<image>.txt), got a file")
    questions = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        qa = folder / "questions_answers_YN"
        for txt in sorted((qa if qa.is_dir() else folder).glob("*.txt")):
            questions += _read_pairs(txt, folder.name)
    if not questions:
        raise ValueError(f"{root}: not MME annotations: no <subtask>/<image>.txt or "
                         "<subtask>/questions_answers_YN/<image>.txt question files")
    return questions


def score(answers: list[dict], annotations_path: str | Path) -> dict:
    """Perception, cognition and per-subtask acc / acc+ / score (see the module docstring)."""
    questions = load_questions(annotations_path)
    by_key = check_ids(answers, [q.key for q in questions], str(annotations_path), key=_answer_key)
    right = {q.key: mme_answer(by_key[q.key]["text"]) == q.answer.lower() for q in questions}
    both_right: dict[tuple[str, str], bool] = {}
    for q in questions:
        both_right[q.subtask, q.image] = both_right.get((q.subtask, q.image), True) and right[q.key]
    acc = grouped((q.subtask, float(right[q.key])) for q in questions)
    acc_plus = grouped((subtask, float(ok)) for (subtask, _), ok in both_right.items())
    count = Counter(q.subtask for q in questions)
    by_subtask = {name: {"acc": acc[name], "acc_plus": acc_plus[name], "score": acc[name] + acc_plus[name],
                         "n": count[name]} for name in acc}
    return {"perception": sum(by_subtask[n]["score"] for n in PERCEPTION if n in by_subtask),
            "cognition": sum(by_subtask[n]["score"] for n in COGNITION if n in by_subtask),
            "by_subtask": by_subtask}


def convert(answers: list[dict], out_path: str | Path, annotations_path: str | Path | None = None) -> Path:
    """Write the MME tool's ``<subtask>.txt`` result files into the folder ``out_path``."""
    if annotations_path is None:
        raise ValueError("MME's result files carry the right answers: give the annotations (the MME folder)")
    questions = load_questions(annotations_path)
    by_key = check_ids(answers, [q.key for q in questions], str(annotations_path), key=_answer_key)
    out = Path(out_path)
    out.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for q in questions:
        answer = by_key[q.key]
        image = str(answer["question_id"]).split("/")[-1]
        text = " ".join(answer["text"].split())
        lines.setdefault(q.subtask, []).append("\t".join((image, q.text, q.answer, text)))
    for subtask, rows in lines.items():
        (out / f"{subtask}.txt").write_text("".join(row + "\n" for row in rows))
    return out


def _read_pairs(txt: Path, subtask: str) -> list[Question]:
    questions = []
    for number, line in enumerate(txt.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or fields[1].strip().lower() not in ("yes", "no"):
            raise ValueError(f"{txt}:{number}: not MME annotations: expected 'question<TAB>Yes|No', got {line!r}")
        questions.append(Question(subtask, txt.stem, fields[0].strip(), fields[1].strip()))
    return questions


def _key(subtask: str, image: str, question: str) -> str:
    return f"{subtask}/{image}\t{' '.join(question.replace(YES_NO, ' ').split()).lower()}"


def _answer_key(answer: dict) -> str:
    qid = str(answer["question_id"])
    if "prompt" not in answer:
        raise ValueError(f"answer {qid!r} has no 'prompt': MME's question ids are shared by the two questions "
                         "of an image, the question is read from the prompt")
    return _key(qid.split("/")[0], Path(qid).stem, question_of(answer["prompt"]))
