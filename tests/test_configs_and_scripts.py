"""Every config loads; the quick look runs (the demo's own tests are in tests/test_demo.py)."""

import pytest

from llava.quicklook import main as quicklook_main
from llava.model.builder import llava_config_from_preset
from llava.paths import CONFIGS_DIR, load_model_preset, load_schedule


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
