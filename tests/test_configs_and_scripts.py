"""Every config loads, every script and the demo entry point run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.demo import main as demo_main
from llava.model.builder import llava_config_from_preset
from llava.paths import CONFIGS_DIR, load_model_preset, load_schedule

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((CONFIGS_DIR / "models").glob("*.json")), ids=lambda p: p.stem)
def test_every_model_preset_loads(path):
    spec = load_model_preset(path.stem)
    assert {"image_tokens", "text_tokens", "text_config", "vision_config", "image_token_id"} <= set(spec)
    if spec["architecture"] == "llava":
        config = llava_config_from_preset(spec)
        vision = config.vision_config
        assert (vision.image_size // vision.patch_size) ** 2 == spec["image_tokens"]


@pytest.mark.parametrize("path", sorted((CONFIGS_DIR / "schedules").glob("*.json")), ids=lambda p: p.stem)
def test_every_schedule_loads(path):
    assert load_schedule(path.stem).num_stages >= 2


def test_demo_runs_and_drops():
    result = demo_main(["--batch_size", "2", "--max_new_tokens", "3"])
    assert result["tokens_per_stage"][0] == [28, 20, 16, 14]
    custom = demo_main(["--layer_list", "[2]", "--image_token_ratio_list", "[0.25]", "--batch_size", "1"])
    assert custom["tokens_per_stage"][0] == [28, 16]


def test_demo_script_runs():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "scripts/demo.sh", "--batch_size", "1", "--max_new_tokens", "2"], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True)
    assert "kept image positions" in out.stdout and "3.82 -> 1.78" in out.stdout
