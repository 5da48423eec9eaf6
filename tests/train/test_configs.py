"""The shipped training configs parse without deprecation warnings (transformers renames fields between versions)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from llava.train.train import parse_args

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.json"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_raises_no_deprecation_warning(config, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_args(["--config", str(config), "--use_cpu", "true", "--deepspeed", "", "--output_dir", str(tmp_path)])
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert deprecations == []


def test_the_known_rename_still_reaches_transformers(tmp_path):
    """Silencing the warning must not lose the value: gradient_checkpointing=true still turns it on."""
    config = next(c for c in CONFIGS if c.stem == "llava-1.5-finetune")
    _, _, args = parse_args(["--config", str(config), "--use_cpu", "true", "--deepspeed", "", "--output_dir",
                             str(tmp_path)])
    assert args.gradient_checkpointing is True
