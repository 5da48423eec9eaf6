"""The schedule flags: one dialect, how flags combine, the budgets, and the deprecated spellings."""

import argparse

import pytest

from llava.pdrop import PDropConfig
from llava.pdrop.args import ScheduleArguments, add_schedule_args, schedule_from_args
from llava.pdrop.flops import ModelShape, budget_figures

from ..conftest import requires_deepspeed

SHAPE = ModelShape(32, 4096, 11008, 576)  # LLaVA-1.5-7B
SAVED = PDropConfig([8, 16, 24], [0.5, 0.25, 0.125])


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_schedule_args(parser)
    return parser.parse_args(list(argv))


def resolve(*argv, fallback=SAVED):
    return schedule_from_args(_parse(*argv), SHAPE, fallback)


def test_without_flags_the_fallback_applies_and_fields_override_it():
    assert resolve() == SAVED and resolve(fallback=None) is None
    assert resolve("--drop_method", "random").method == "random"
    assert resolve("--pdrop_position_mode", "original") == PDropConfig([8, 16, 24], [0.5, 0.25, 0.125], "original")
    assert resolve("--pdrop_stages", "2").layer_list == (16,)
    assert resolve("--pdrop_lambda", "0.25").image_token_ratio_list == (0.25, 0.0625, 0.015625)
    with pytest.raises(ValueError, match="there is none to change"):
        resolve("--drop_method", "fastv", fallback=None)


def test_explicit_fields_override_a_named_schedule():
    named = resolve("--pdrop_schedule", "pdrop-default", "--pdrop_position_mode", "original", fallback=None)
    assert named == PDropConfig([8, 16, 24], [0.5, 0.25, 0.125], "original")  # issue: the flag used to be ignored
    lists = resolve("--pdrop_schedule", "pdrop-default", "--layer_list", "[4]", "--image_token_ratio_list", "[0.3]")
    assert lists == PDropConfig([4], [0.3])
    assert resolve("--pdrop_schedule", "pdrop-default", "--pdrop_lambda", "0.25").image_token_ratio_list[0] == 0.25


@pytest.mark.parametrize("argv, message", [
    (["--no_pdrop", "--drop_method", "fastv"], r"--no_pdrop turns PyramidDrop off, but \['--drop_method'\]"),
    (["--no_pdrop", "--layer_list", "[8]", "--image_token_ratio_list", "[0.5]"], "--no_pdrop turns PyramidDrop off"),
    (["--layer_list", "[8]"], "must be given together"),
    (["--pdrop_lambda", "0.5", "--layer_list", "[8]", "--image_token_ratio_list", "[0.5]"], "not both"),
    (["--pdrop_budget", "tokens=200", "--pdrop_lambda", "0.5"], "not both"),
    (["--pdrop_budget", "tokens=64"], r"reachable range is 144 \.\. 576"),
    (["--pdrop_budget", "speed=2"], "write tokens=N"),
    (["--pdrop_budget", "tokens=many"], "'many' is not a number"),
    (["--pdrop_schedule", "no-such-schedule"], "no schedule config 'no-such-schedule'"),
])
def test_contradictions_and_bad_values_are_refused(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        resolve(*argv)


def test_no_pdrop_alone_turns_it_off():
    assert resolve("--no_pdrop") is None


@pytest.mark.parametrize("budget, key, target", [("tokens=192", "avg_image_tokens", 192), ("flops=0.5", "flops_ratio", 0.5),
                                                  ("tokens:128", "avg_image_tokens", 128)])
def test_budgets_solve_lambda_and_stay_within_it(budget, key, target):
    schedule = resolve("--pdrop_budget", budget, "--pdrop_stages", "8" if target == 128 else "4")
    achieved = budget_figures(schedule, SHAPE)[key]
    assert achieved <= target and achieved > 0.97 * target
    finer = PDropConfig.from_lambda(schedule.image_token_ratio_list[0] + 2e-4, schedule.num_stages, 32)
    assert budget_figures(finer, SHAPE)[key] > target or schedule.image_token_ratio_list[0] == 1.0


def test_the_paper_default_is_what_its_budget_gives():
    default = budget_figures(SAVED, SHAPE)
    assert default["avg_image_tokens"] == 270 and round(default["flops_ratio"], 3) == 0.466
    assert PDropConfig.for_budget(avg_image_tokens=270, num_hidden_layers=32, image_tokens=576).image_token_ratio_list[0] >= 0.5


def test_deprecated_spellings_still_work_with_a_message():
    with pytest.warns(FutureWarning, match="--lambda is deprecated: use --pdrop_lambda"):
        args = _parse("--lambda", "0.25", "--stages", "2", "--position_mode", "original")
    assert schedule_from_args(args, SHAPE, None) == PDropConfig([16], [0.25], "original")


def test_the_training_dataclass_and_argparse_share_the_fields():
    import dataclasses

    from llava.train.arguments import ModelArguments

    train_fields = {f.name for f in dataclasses.fields(ModelArguments)}
    assert {f.name for f in dataclasses.fields(ScheduleArguments)} <= train_fields
    parser = argparse.ArgumentParser()
    add_schedule_args(parser)
    flags = {option for action in parser._actions for option in action.option_strings if action.help != argparse.SUPPRESS}
    assert flags - {"-h", "--help"} == {f"--{f.name}" for f in dataclasses.fields(ScheduleArguments)}


def test_training_flags_beside_no_pdrop_are_not_schedule_flags():
    from llava.train.arguments import ModelArguments

    args = ModelArguments(model_name_or_path="llm", vision_tower="clip", no_pdrop=True)
    assert args.given() == ["--no_pdrop"] and args.resolve(SHAPE, SAVED) is None


def test_the_command_line_beats_a_config_files_schedule():
    from llava.pdrop.args import file_defaults_under_flags

    config = {"pdrop_schedule": "tiny", "pdrop_position_mode": "original", "learning_rate": 0.1}
    assert file_defaults_under_flags(config, ["--no_pdrop"]) == {"learning_rate": 0.1}
    assert file_defaults_under_flags({"no_pdrop": True, "seed": 1}, ["--layer_list", "[1]"]) == {"seed": 1}
    assert file_defaults_under_flags(config, ["--max_steps", "3"]) == config


@requires_deepspeed  # the shipped config names a DeepSpeed config, which TrainingArguments loads
def test_no_pdrop_on_the_command_line_turns_off_a_shipped_configs_schedule(tmp_path):
    from llava.paths import CONFIGS_DIR
    from llava.train.train import parse_args

    model_args, _, _ = parse_args(["--config", str(CONFIGS_DIR / "train" / "tiny-finetune.json"), "--no_pdrop",
                                   "--output_dir", str(tmp_path)])
    assert model_args.pdrop_schedule is None and model_args.resolve(SHAPE, SAVED) is None
    with pytest.raises(ValueError, match="--no_pdrop turns PyramidDrop off"):
        parse_args(["--config", str(CONFIGS_DIR / "train" / "tiny-finetune.json"), "--no_pdrop",
                    "--drop_method", "fastv", "--output_dir", str(tmp_path)])[0].resolve(SHAPE, SAVED)
