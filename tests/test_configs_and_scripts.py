"""Every config loads, every script and the demo entry point run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.quicklook import main as quicklook_main
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


def test_quicklook_runs_and_drops():
    result = quicklook_main(["--batch_size", "2", "--max_new_tokens", "3"])
    assert result["tokens_per_stage"][0] == [28, 20, 16, 14]
    custom = quicklook_main(["--layer_list", "[2]", "--image_token_ratio_list", "[0.25]", "--batch_size", "1"])
    assert custom["tokens_per_stage"][0] == [28, 16]


@pytest.mark.integration
def test_demo_script_trains_and_compares_the_drops(tmp_path):
    """The README main job, shortened: a few steps per stage, one process per run."""
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", "scripts/demo.sh", "--out", str(tmp_path), "--pretrain_steps", "2",
                          "--finetune_steps", "3", "--gpus", "1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    settings = [row["setting"] for row in results["rows"]]
    assert settings[0] == "no drop" and len(settings) == 5 and "FastV K=1 (equal FLOPs)" in settings
    ratios = {row["setting"]: row["image_flops_ratio"] for row in results["rows"]}
    assert ratios["no drop"] == 1.0 and all(r < 0.6 for name, r in ratios.items() if name != "no drop")
    assert abs(ratios["FastV K=1 (equal FLOPs)"] - ratios["PyramidDrop (training-free)"]) < 0.05
    assert results["picture"]["kept_per_stage"] == [16, 8, 4, 2]
    assert "accuracy %" in out.stdout and (tmp_path / "kept_tokens.png").is_file()
