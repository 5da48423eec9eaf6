"""Fixtures for the data tests: tokenizers, processors, data files (the tiny ``assets`` come from tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoImageProcessor, AutoTokenizer

from llava.data import add_image_token, build_processor

PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def load_tokenizer(assets):
    """A fresh tiny tokenizer, without the ``<image>`` token."""
    return AutoTokenizer.from_pretrained(assets["llm"])


@pytest.fixture(scope="session")
def tokenizer(assets):
    """The tiny tokenizer with ``<image>`` added (shared: do not modify it)."""
    tok = load_tokenizer(assets)
    add_image_token(tok)
    return tok


@pytest.fixture(scope="session")
def image_processor(assets):
    return AutoImageProcessor.from_pretrained(assets["vision"])


@pytest.fixture(scope="session")
def processor(tokenizer, image_processor):
    """LLaVA-1.5 processor of the tiny CLIP (28 px, patch 7: 16 tokens per image)."""
    return build_processor(tokenizer, image_processor, patch_size=7)


@pytest.fixture(scope="session")
def next_processor(tokenizer, image_processor):
    """LLaVA-NeXT processor of the tiny CLIP with crop grids up to 2x2."""
    return build_processor(tokenizer, image_processor, patch_size=7, image_grid_pinpoints=PINPOINTS)


def write_records(folder: Path, records: list, name: str = "data.json") -> str:
    """Write ``records`` as a .json list or, for a .jsonl name, one record a line; return the path."""
    path = Path(folder) / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return str(path)


def turns(*values: str) -> list[dict]:
    """LLaVA turns alternating human / gpt."""
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]
