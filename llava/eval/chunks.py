"""Question files in shards, answer files merged back: what multi-GPU evaluation needs.

Launch (what ``scripts/eval/lib/generate.sh`` runs after its per-GPU shards)::

    python -m llava.eval.chunks --out answers.jsonl answers.chunk0.jsonl answers.chunk1.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..jsonl import iter_jsonl


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a malformed line is an error naming the file and line number."""
    return list(iter_jsonl(path))


def chunk_of(items: list, num_chunks: int, chunk_idx: int) -> list:
    """The ``chunk_idx``-th of ``num_chunks`` contiguous shards (sizes differ by at most one)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk_idx={chunk_idx} must be in [0, num_chunks={num_chunks})")
    size = math.ceil(len(items) / num_chunks) if items else 0
    return items[chunk_idx * size:(chunk_idx + 1) * size]


def answer_key(record: dict) -> tuple:
    """What identifies an answer: its question id and prompt (ids repeat in MME and TextVQA, prompts differ)."""
    return (str(record["question_id"]), record.get("prompt"))


def merge(chunk_files: list[Path], out: Path) -> int:
    """Concatenate the chunks' answers in order into ``out``; a question (id and prompt) answered twice is an error."""
    seen, lines = set(), []
    for path in chunk_files:
        for record in read_jsonl(path):
            key = answer_key(record)
            if key in seen:
                raise ValueError(f"{path}: question {record['question_id']!r} is answered in two chunks")
            seen.add(key)
            lines.append(json.dumps(record))
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_suffix(out.suffix + ".tmp")
    staged.write_text("".join(line + "\n" for line in lines))
    staged.replace(out)
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.chunks", description="Merge per-chunk answer files.")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("chunks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(f"{merge(args.chunks, args.out)} answers -> {args.out}")


if __name__ == "__main__":
    from ..cli import cli_main

    cli_main(main, prog="llava.eval.chunks")
