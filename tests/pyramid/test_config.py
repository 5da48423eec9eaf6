"""CoarseToFineConfig: every validation error names its field; dict / JSON round trip; configs/pyramid loads."""

from __future__ import annotations

import json

import pytest

from llava.paths import CONFIGS_DIR, load_pyramid_config
from llava.pdrop import PDropConfig
from llava.pyramid import CoarseToFineConfig


@pytest.mark.parametrize("overrides,message", [
    ({"focus_layer": 0}, "focus_layer=0 must be >= 1"),
    ({"focus_layer": 1.5}, "focus_layer=1.5 must be an integer"),
    ({"focus_layer": True}, "focus_layer=True must be an integer"),
    ({"tile_size": 0}, "tile_size=0 must be >= 1"),
    ({"tile_size": "336"}, "tile_size='336' must be an integer"),
    ({"base_long_side": 300}, "base_long_side=300 must be >= tile_size=336"),
    ({"pool": 0}, "pool=0 must be >= 1"),
    ({"pool": 5}, "pool=5 must divide tile_size=336"),
    ({"token_keep_ratio": 0}, r"token_keep_ratio=0 must be a number in \(0, 1\]"),
    ({"token_keep_ratio": 1.5}, r"token_keep_ratio=1.5 must be a number in \(0, 1\]"),
    ({"token_keep_ratio": float("nan")}, r"token_keep_ratio=nan must be a number"),
    ({"token_keep_ratio": "0.25"}, r"token_keep_ratio='0.25' must be a number"),
    ({"max_tiles_per_level": 8}, "max_tiles_per_level=8 is below the 9 tiles the coarsest level can have"),
    ({"max_tiles_per_level": None}, "max_tiles_per_level=None must be an integer"),
    ({"max_levels": 0}, "max_levels=0 must be >= 1"),
    ({"token_budget": 0}, "token_budget=0 must be >= 1"),
    ({"token_budget": 2.0}, "token_budget=2.0 must be an integer"),
    ({"thumbnail_size": -1}, "thumbnail_size=-1 must be >= 1"),
    ({"max_image_pixels": 0}, "max_image_pixels=0 must be >= 1"),
    ({"focus_softmax": "global"}, "focus_softmax='global' is not one of"),
])
def test_every_invalid_field_is_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        CoarseToFineConfig(**{"focus_layer": 8, **overrides})


def test_defaults_are_the_papers():
    config = CoarseToFineConfig(focus_layer=8)
    assert (config.tile_size, config.base_long_side, config.pool, config.token_keep_ratio) == (336, 1008, 2, 0.25)
    assert config.max_levels is None and config.token_budget is None and config.max_image_pixels == 10 ** 9


def test_dict_round_trip_and_named_errors():
    config = CoarseToFineConfig(focus_layer=2, max_levels=3, token_budget=500)
    assert CoarseToFineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown coarse-to-fine config keys: \['tile'\]"):
        CoarseToFineConfig.from_dict({"focus_layer": 2, "tile": 336})
    with pytest.raises(ValueError, match="has no 'focus_layer' \\(required"):
        CoarseToFineConfig.from_dict({"tile_size": 336})
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        CoarseToFineConfig.from_dict([2])
    with pytest.raises(ValueError, match="pool='2' must be an integer"):
        CoarseToFineConfig.from_dict({"focus_layer": 2, "pool": "2"})


def test_keep_count_is_floor_of_the_ratio_at_least_one_capped_by_the_budget():
    config = CoarseToFineConfig(focus_layer=8)
    assert [config.keep_count(n) for n in (0, 1, 3, 4, 7, 8, 1296)] == [0, 1, 1, 1, 1, 2, 324]
    capped = CoarseToFineConfig(focus_layer=8, token_budget=100)
    assert capped.keep_count(1296) == 100 and capped.keep_count(8) == 2


def test_validate_for_the_model_depth_and_the_pdrop_schedule():
    config = CoarseToFineConfig(focus_layer=8)
    config.validate_for(32, PDropConfig([8, 16, 24], [0.5, 0.25, 0.125]))  # at the first boundary: fine
    config.validate_for(9)
    with pytest.raises(ValueError, match="focus_layer=8 needs a next layer to score with.*8 layers.*<= 7"):
        config.validate_for(8)
    with pytest.raises(ValueError, match=r"focus_layer=8 is beyond the first PyramidDrop boundary 4 "
                                         r"\(layer_list=\[4, 16\]\)"):
        config.validate_for(32, PDropConfig([4, 16], [0.5, 0.25]))


def test_validate_vision():
    config = CoarseToFineConfig(focus_layer=8)
    config.validate_vision(336, 14)
    with pytest.raises(ValueError, match="tile_size=336 must equal the vision tower's image_size=224"):
        config.validate_vision(224, 14)
    with pytest.raises(ValueError, match="pool=2 must divide the vision tower's 21 x 21 patch grid"):
        config.validate_vision(336, 16)


@pytest.mark.parametrize("path", sorted((CONFIGS_DIR / "pyramid").glob("*.json")), ids=lambda p: p.stem)
def test_every_pyramid_config_loads(path):
    config = load_pyramid_config(path.stem)
    assert isinstance(config, CoarseToFineConfig)
    assert set(json.loads(path.read_text())) - {"description"} == set(config.to_dict())  # every field written out


def test_unknown_pyramid_config_lists_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no pyramid config 'nope'.*known: \[.*'lrs-default'.*'tiny'"):
        load_pyramid_config("nope")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"focus_layer": 2, "description": "x"}))
    assert load_pyramid_config(str(path)).focus_layer == 2
