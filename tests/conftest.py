"""Shared fixtures: tiny random LLaVA models and batches built by hand (no downloads)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass

import pytest
import torch

from llava.model.builder import build_random_llava
from llava.paths import load_model_preset
from llava.pdrop import PDropConfig

IMAGE_TOKEN = 127
PAD = 0
N_IMAGE = 16  # tiny preset: (28 / 7) ** 2 patches, CLS dropped
TINY_SCHEDULE = PDropConfig([1, 2, 3], [0.5, 0.25, 0.125])

# torch.compile's on-disk cache, private to this test session: a kernel another process compiled with
# other CPU settings (importing llava.demo pins ATEN_CPU_CAPABILITY=avx2) failed when reused here
INDUCTOR_CACHE = tempfile.mkdtemp(prefix="pdrop-tests-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = INDUCTOR_CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(INDUCTOR_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """``llm``, ``vision`` and ``data`` folders of the tiny assets (written once per session)."""
    from llava.data.synthetic import make_tiny_assets

    return make_tiny_assets(tmp_path_factory.mktemp("tiny") / "assets")


HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
requires_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="DeepSpeed is in the `train` extra")
HAS_WANDB = importlib.util.find_spec("wandb") is not None  # LLaVA's --report_to wandb; in the `train` extra


def save_assembled_llava(assets: dict, path, schedule: PDropConfig | None = None):
    """The tiny assets' LLM + CLIP assembled (untrained projector, eager attention), with ``schedule``, saved with
    its processor in ``path``; returns ``path``."""
    from llava.model.assemble import VisionSpec, assemble_llava

    model, processor = assemble_llava(str(assets["llm"]), VisionSpec(str(assets["vision"])),
                                      attn_implementation="eager")
    if schedule is not None:
        model.set_pdrop_config(schedule)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def no_deepspeed_config_left_behind():
    """transformers keeps a global DeepSpeed config once TrainingArguments names one (even when DeepSpeed is
    missing and parsing fails): clear it after every test, so no later model is built for ZeRO-3."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory):
    """Keep the records index that ``datasets`` caches out of the user's cache folder."""
    try:
        import datasets.config
    except ImportError:  # a machine without it (the GPU check) runs no data test
        yield
        return

    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets")
    yield
    datasets.config.HF_DATASETS_CACHE = saved


def preset_model(name, schedule=TINY_SCHEDULE, attn="eager", seed=0, **text_overrides):
    """A tiny preset with larger random weights, so attention is peaked and positions matter."""
    spec = load_model_preset(name)
    spec["text_config"].update(initializer_range=0.2, **text_overrides)
    return build_random_llava(spec, schedule, attn_implementation=attn, seed=seed)


def tiny_model(schedule=TINY_SCHEDULE, attn="eager", seed=0):
    return preset_model("tiny-llava", schedule, attn, seed)


@dataclass
class Sample:
    before: list[int]  # text before the image
    after: list[int]  # text after the image (the prompt end)
    has_image: bool = True
    answer: list[int] | None = None  # training: answer tokens appended after `after`
    extra_spans: tuple[tuple[int, int], ...] = ()  # more labelled [start, end) ranges of ids() (multi-turn)
    image_tokens: tuple[int, ...] = (N_IMAGE,)  # tokens of each image (several images: one pool)

    def ids(self) -> list[int]:
        image = []
        if self.has_image:
            for i, count in enumerate(self.image_tokens):
                image += ([99] if i else []) + [IMAGE_TOKEN] * count  # a text token between two images
        return self.before + image + self.after + (self.answer or [])

    def labels(self) -> list[int]:
        ids = self.ids()
        prompt = len(ids) - len(self.answer or [])
        labels = [-100] * prompt + list(self.answer or [])
        for start, end in self.extra_spans:
            labels[start:end] = ids[start:end]
        return labels


def make_batch(samples: list[Sample], padding_side: str = "left", seed: int = 0) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / pixel_values (/ labels when any sample has an answer)."""
    rows = [s.ids() for s in samples]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for b, (row, sample) in enumerate(zip(rows, samples)):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        ids[b, span] = torch.tensor(row)
        mask[b, span] = 1
        labels[b, span] = torch.tensor(sample.labels())
    gen = torch.Generator().manual_seed(seed)
    n_images = sum(len(s.image_tokens) for s in samples if s.has_image)
    batch = {"input_ids": ids, "attention_mask": mask}
    if n_images:
        batch["pixel_values"] = torch.randn(n_images, 3, 28, 28, generator=gen)
    if any(s.answer or s.extra_spans for s in samples):
        batch["labels"] = labels
    return batch


def position_ids_for(mask: torch.Tensor) -> torch.Tensor:
    """What generate() computes: 0..n-1 over the real tokens of each row."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@pytest.fixture
def model():
    return tiny_model()
