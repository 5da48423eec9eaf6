"""The coarse-to-fine flags: one per config field, which config wins, refusals, the config saved with the model."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from llava.model.pdrop_llava import PDropLlavaNextForConditionalGeneration
from llava.paths import load_pyramid_config
from llava.pyramid import CoarseToFineConfig
from llava.pyramid.args import CoarseToFineRequest, add_coarse_to_fine_args, attach_config, saved_config
from tests.conftest import preset_model


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_coarse_to_fine_args(parser)
    return parser.parse_args(list(flags))


@pytest.fixture(scope="module")
def model():
    return preset_model("tiny-llava-next", schedule=None)


def test_every_config_field_has_a_flag_with_its_docstring_as_help():
    parser = argparse.ArgumentParser()
    add_coarse_to_fine_args(parser)
    helps = {action.dest: action.help for action in parser._actions}
    for field in dataclasses.fields(CoarseToFineConfig):
        assert field.name in helps and len(helps[field.name]) > 20, field.name
    assert "Decoder layers run before scoring" in helps["focus_layer"]


def test_without_the_flag_nothing_is_asked_and_config_flags_are_refused():
    assert CoarseToFineRequest.from_args(parse()) is None
    assert CoarseToFineRequest.from_args(argparse.Namespace()) is None  # callers whose parser lacks the flags
    with pytest.raises(ValueError, match="--focus_layer --max_image_pixels configure coarse-to-fine, which is off: "
                                         "add --coarse_to_fine"):
        CoarseToFineRequest.from_args(parse("--focus_layer", "2", "--max_image_pixels", "5"))
    with pytest.raises(ValueError, match="--pyramid_config configure coarse-to-fine"):
        CoarseToFineRequest.from_args(parse("--pyramid_config", "tiny"))


def test_flags_override_the_named_config_and_none_clears_a_limit(model):
    request = CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--pyramid_config", "tiny", "--focus_layer", "2",
                                                  "--token_keep_ratio", "0.5", "--max_levels", "3",
                                                  "--token_budget", "none", "--focus_softmax", "all"))
    config = request.resolve(model)
    expected = dataclasses.replace(load_pyramid_config("tiny"), focus_layer=2, token_keep_ratio=0.5, max_levels=3,
                                   focus_softmax="all")
    assert config == expected
    budget = dataclasses.replace(load_pyramid_config("tiny"), token_budget=5)
    attach_config(model, budget)
    cleared = CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--token_budget", "none")).resolve(model)
    assert cleared == dataclasses.replace(budget, token_budget=None)


def test_the_saved_config_is_the_default_then_lrs_default(model, tmp_path):
    saved = dataclasses.replace(load_pyramid_config("tiny"), focus_layer=2, max_tiles_per_level=6)
    attach_config(model, saved)
    assert CoarseToFineRequest.from_args(parse("--coarse_to_fine")).resolve(model) == saved
    named = CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--pyramid_config", "tiny")).resolve(model)
    assert named == load_pyramid_config("tiny") and model.config.coarse_to_fine == named.to_dict()  # the one used
    model.config.coarse_to_fine = None
    with pytest.raises(ValueError, match="tile_size=336 must equal the vision tower's image_size=28"):
        CoarseToFineRequest.from_args(parse("--coarse_to_fine")).resolve(model)  # lrs-default: a 336 px CLIP


def test_the_config_used_is_saved_with_the_model(model, tmp_path):
    config = dataclasses.replace(load_pyramid_config("tiny"), focus_layer=2, token_budget=3)
    CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--pyramid_config", "tiny", "--focus_layer", "2",
                                        "--token_budget", "3")).resolve(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["coarse_to_fine"] == config.to_dict()
    loaded = PDropLlavaNextForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    assert saved_config(loaded) == config
    loaded.config.coarse_to_fine = {"focus_layer": 0}
    with pytest.raises(ValueError, match="the checkpoint's config.coarse_to_fine is not a valid coarse-to-fine config: "
                                         "focus_layer=0 must be >= 1"):
        saved_config(loaded)


@pytest.mark.parametrize("flags,message", [
    (["--pyramid_config", "tiny", "--token_keep_ratio", "1.5"], r"token_keep_ratio=1.5 must be a number in \(0, 1\]"),
    (["--pyramid_config", "tiny", "--max_tiles_per_level", "2"],
     "max_tiles_per_level=2 is below the 4 tiles the coarsest level can have"),
    (["--pyramid_config", "nope"], "no pyramid config 'nope'"),
])
def test_bad_values_are_refused_before_any_model_loads(flags, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        CoarseToFineRequest.from_args(parse("--coarse_to_fine", *flags))


def test_bad_flag_syntax_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse("--coarse_to_fine", "--max_levels", "two")
    assert "'two' is not an integer or 'none'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--coarse_to_fine", "--focus_softmax", "global")


def test_focus_layer_against_the_model_and_its_schedule():
    from llava.pdrop import PDropConfig

    model = preset_model("tiny-llava-next", schedule=PDropConfig([1, 2], [0.5, 0.25]))
    with pytest.raises(ValueError, match=r"focus_layer=2 is beyond the first PyramidDrop boundary 1"):
        CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--pyramid_config", "tiny", "--focus_layer",
                                            "2")).resolve(model)
    with pytest.raises(ValueError, match="focus_layer=4 needs a next layer to score with, but the language model has"):
        CoarseToFineRequest.from_args(parse("--coarse_to_fine", "--pyramid_config", "tiny", "--focus_layer",
                                            "4")).resolve(preset_model("tiny-llava-next", schedule=None))
