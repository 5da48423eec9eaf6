"""Schedules: construction, shorthand, serialisation and every validation error."""

import pytest

from llava.paths import load_schedule
from llava.pdrop import PDropConfig


def test_default_schedule_and_shorthand_agree():
    explicit = PDropConfig([8, 16, 24], [0.5, 0.25, 0.125])
    assert PDropConfig.from_lambda(0.5, 4, 32) == explicit
    assert load_schedule("pdrop-default") == explicit
    assert explicit.stage_layers(32) == [range(0, 8), range(8, 16), range(16, 24), range(24, 32)]
    assert [explicit.keep_count(576, s) for s in range(3)] == [288, 144, 72]


def test_round_trip_through_dict_and_strings():
    config = PDropConfig([2, 5], [0.6, 0.3], "original")
    assert PDropConfig.from_dict(config.to_dict()) == config
    assert PDropConfig.from_strings("[2,5]", "[0.6,0.3]", "original") == config


def test_floor_of_n0_times_ratio():
    assert PDropConfig([1], [0.29]).keep_count(100, 0) == 28  # 100 * 0.29 = 28.999999999999996 in floats
    assert PDropConfig([1], [1.0]).keep_count(7, 0) == 7


@pytest.mark.parametrize(
    "layers, ratios, message",
    [
        ([16, 8, 24], [0.5, 0.25, 0.125], "strictly increasing"),
        ([8, 8], [0.5, 0.25], "strictly increasing"),
        ([0, 8], [0.5, 0.25], "must be >= 1"),
        ([8.5], [0.5], "not an integer"),
        ([8, 16], [0.5, 0.25, 0.125], "one ratio per boundary"),
        ([8], [0.0], "outside (0, 1]"),
        ([8], [1.5], "outside (0, 1]"),
        ([8], [-0.5], "outside (0, 1]"),
        ([8, 16], [0.25, 0.5], "non-increasing"),
        ([8], [float("nan")], "not a number"),
        ([], [], "empty"),
        ("8,16", [0.5, 0.25], "must be a list"),
    ],
)
def test_invalid_schedules_are_refused_naming_the_problem(layers, ratios, message):
    with pytest.raises(ValueError, match="layer_list|image_token_ratio_list") as err:
        PDropConfig(layers, ratios)
    assert message in str(err.value)


def test_invalid_position_mode_and_shorthand():
    with pytest.raises(ValueError, match="position_mode='shifted'"):
        PDropConfig([8], [0.5], "shifted")
    with pytest.raises(ValueError, match="stages=3 does not divide num_hidden_layers=32"):
        PDropConfig.from_lambda(0.5, 3, 32)
    with pytest.raises(ValueError, match="lambda=1.5"):
        PDropConfig.from_lambda(1.5, 4, 32)
    with pytest.raises(ValueError, match="stages=1"):
        PDropConfig.from_lambda(0.5, 1, 32)
    with pytest.raises(ValueError, match="not a JSON list"):
        PDropConfig.from_strings("[8,16", "[0.5]")
    with pytest.raises(ValueError, match="unknown PyramidDrop config keys"):
        PDropConfig.from_dict({"layer_list": [8], "image_token_ratio_list": [0.5], "lambda": 0.5})


def test_boundary_beyond_the_model_is_refused():
    with pytest.raises(ValueError, match=r"boundary 32 .* only 32 layers"):
        PDropConfig([8, 32], [0.5, 0.25]).validate_for(32)
