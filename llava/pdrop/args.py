"""The schedule flags: one dialect for every command (train, eval, bench, flops, quicklook, lmms-eval).

==================================================  ===============================================
``--layer_list '[8,16,24]'``                        stage boundaries (the official PyramidDrop flags,
``--image_token_ratio_list '[0.5,0.25,0.125]'``     given together)
``--pdrop_schedule NAME``                           a ``configs/schedules/`` file (name or JSON path)
``--pdrop_lambda 0.5 --pdrop_stages 4``             the paper's shorthand (either one alone: the other
                                                    defaults to 0.5 / 4)
``--pdrop_budget tokens=192`` / ``flops=0.5``        solve lambda for an average image-token count or
                                                    a FLOPs ratio (``--pdrop_stages`` equal stages)
``--pdrop_position_mode compact|original``          positions after a drop
``--drop_method pdrop|fastv|random``, ``--drop_seed``  how tokens are ranked (the baselines)
``--no_pdrop``                                      no drop, whatever the checkpoint saved
==================================================  ===============================================

How they combine (:meth:`ScheduleArguments.resolve`): the lists, the shorthand and the budget are
three ways to say the same thing, so at most one is given; a named schedule supplies every field
that the other flags do not set; without lists, shorthand, budget or name, the command's fallback
applies (a checkpoint's saved schedule, or the benchmark's default); ``--pdrop_position_mode``,
``--drop_method`` and ``--drop_seed`` then override fields of whatever schedule that is.
``--no_pdrop`` with any other schedule flag is refused. The spellings ``--lambda``, ``--stages``,
``--position_mode`` and ``--schedule`` still work, with a deprecation message, until version 0.3.
"""

from __future__ import annotations

import argparse
import typing
import warnings
from dataclasses import dataclass, field, fields, replace

from .flops import ModelShape
from .schedule import METHODS, POSITION_MODES, PDropConfig

DEPRECATED_FLAGS = {"--lambda": "--pdrop_lambda", "--stages": "--pdrop_stages",
                    "--position_mode": "--pdrop_position_mode", "--schedule": "--pdrop_schedule"}
BUDGET_KINDS = {"tokens": "avg_image_tokens", "flops": "flops_ratio"}


@dataclass(kw_only=True)
class ScheduleArguments:
    """The schedule flags (see the module docstring); every field None / False when not given."""

    layer_list: str | None = field(default=None, metadata={"help": (
        "PyramidDrop stage boundaries (layers run before each drop) as a JSON list, e.g. '[8,16,24]'.")})
    image_token_ratio_list: str | None = field(default=None, metadata={"help": (
        "Fraction of the input image tokens kept after each boundary, e.g. '[0.5,0.25,0.125]'.")})
    pdrop_schedule: str | None = field(default=None, metadata={"help": (
        "A schedule from configs/schedules/ (name or JSON path), e.g. pdrop-default; other flags override its fields.")})
    pdrop_lambda: float | None = field(default=None, metadata={"help": (
        "Shorthand: keep lambda**s of the image tokens after boundary s, boundaries evenly spaced (default 0.5).")})
    pdrop_stages: int | None = field(default=None, metadata={"help": (
        "Number of equal stages for --pdrop_lambda or --pdrop_budget (default 4).")})
    pdrop_budget: str | None = field(default=None, metadata={"help": (
        "Solve lambda for a budget: tokens=N (average image tokens per layer) or flops=R (the paper's image-token "
        "FLOPs over no drop); the achieved figure is logged.")})
    pdrop_position_mode: str | None = field(default=None, metadata={"help": (
        "compact (renumber kept tokens, as the paper's code; the default) or original (keep input positions).")})
    drop_method: str | None = field(default=None, metadata={"help": (
        "How image tokens are ranked: pdrop (the next layer's attention; the default), fastv (the last layer run's), "
        "random (seeded per sample).")})
    drop_seed: int | None = field(default=None, metadata={"help": "Seed of --drop_method random (default 0)."})
    no_pdrop: bool = field(default=False, metadata={"help": "No drop, even if the checkpoint carries a schedule."})

    def __post_init__(self) -> None:
        if self.pdrop_position_mode is not None and self.pdrop_position_mode not in POSITION_MODES:
            raise ValueError(f"--pdrop_position_mode {self.pdrop_position_mode!r} is not one of {POSITION_MODES}")
        if self.drop_method is not None and self.drop_method not in METHODS:
            raise ValueError(f"--drop_method {self.drop_method!r} is not one of {METHODS}")

    def given(self) -> list[str]:
        """The schedule flags set, as ``--name`` (a subclass's own fields, e.g. training's model flags, are not)."""
        return [f"--{f.name}" for f in fields(ScheduleArguments) if getattr(self, f.name) not in (None, False)]

    def uses_fallback(self) -> bool:
        """Whether :meth:`resolve` reads the fallback (no lists, shorthand, budget or name, and not ``--no_pdrop``)."""
        return not self.no_pdrop and all(value is None for value in (
            self.layer_list, self.image_token_ratio_list, self.pdrop_lambda, self.pdrop_stages, self.pdrop_budget,
            self.pdrop_schedule))

    def resolve(self, shape: ModelShape, fallback: PDropConfig | None) -> PDropConfig | None:
        """The schedule these flags ask for on a model of ``shape`` (None: no drop); see the module docstring."""
        if self.no_pdrop:
            others = [flag for flag in self.given() if flag != "--no_pdrop"]
            if others:
                raise ValueError(f"--no_pdrop turns PyramidDrop off, but {others} describe a schedule: give one or the other")
            return None
        named = load_named_schedule(self.pdrop_schedule) if self.pdrop_schedule else None
        base = self._lists(shape, named)
        if base is None:
            base = named or fallback
        overrides = {key: value for key, value in (("position_mode", self.pdrop_position_mode),
                                                   ("method", self.drop_method), ("seed", self.drop_seed))
                     if value is not None}
        if base is None:
            if overrides:
                raise ValueError(f"{self.given()} change a schedule, but there is none to change (the checkpoint has "
                                 "none): pass --layer_list and --image_token_ratio_list (or --pdrop_lambda)")
            return None
        return replace(base, **overrides)

    def _lists(self, shape: ModelShape, named: PDropConfig | None) -> PDropConfig | None:
        """The schedule given by lists, shorthand or budget (None if none is), on top of ``named``'s other fields."""
        lists = self.layer_list is not None or self.image_token_ratio_list is not None
        budget = self.pdrop_budget is not None
        shorthand = self.pdrop_lambda is not None or (self.pdrop_stages is not None and not budget)
        sources = [name for name, given in (("--layer_list/--image_token_ratio_list", lists),
                                            ("--pdrop_lambda/--pdrop_stages", shorthand), ("--pdrop_budget", budget)) if given]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join(sources)} each describe the whole schedule: give one, not both")
        stages = 4 if self.pdrop_stages is None else self.pdrop_stages
        if lists:
            if self.layer_list is None or self.image_token_ratio_list is None:
                raise ValueError("--layer_list and --image_token_ratio_list must be given together")
            schedule = PDropConfig.from_strings(self.layer_list, self.image_token_ratio_list)
        elif shorthand:
            lambda_ = 0.5 if self.pdrop_lambda is None else self.pdrop_lambda
            schedule = PDropConfig.from_lambda(lambda_, stages, shape.num_hidden_layers)
        elif budget:
            schedule = PDropConfig.for_budget(**parse_budget(self.pdrop_budget), num_hidden_layers=shape.num_hidden_layers,
                                              image_tokens=shape.image_tokens, stages=stages,
                                              hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size)
        else:
            return None
        if named is None:
            return schedule
        return replace(named, layer_list=schedule.layer_list, image_token_ratio_list=schedule.image_token_ratio_list)


def file_defaults_under_flags(defaults: dict, argv: list[str]) -> dict:
    """A config file's values give way to the command line as a whole for the schedule: ``--no_pdrop`` on
    the command line drops the file's schedule fields, and a schedule flag there drops its ``no_pdrop``.

    (Both given on the command line is still a contradiction, refused by :meth:`ScheduleArguments.resolve`.)
    """
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    names = {f"--{f.name}" for f in fields(ScheduleArguments)} | set(DEPRECATED_FLAGS)
    if "--no_pdrop" in flags:
        return {key: value for key, value in defaults.items() if f"--{key}" not in names - {"--no_pdrop"}}
    if flags & (names - {"--no_pdrop"}):
        return {key: value for key, value in defaults.items() if key != "no_pdrop"}
    return defaults


def parse_budget(text: str) -> dict[str, float]:
    """``tokens=192`` -> ``{"avg_image_tokens": 192.0}``; ``flops=0.5`` -> ``{"flops_ratio": 0.5}`` (``:`` works too)."""
    kind, _, value = text.replace(":", "=", 1).partition("=")
    if kind.strip() not in BUDGET_KINDS:
        raise ValueError(f"--pdrop_budget {text!r}: write tokens=N (average image tokens) or flops=R (FLOPs ratio)")
    try:
        return {BUDGET_KINDS[kind.strip()]: float(value)}
    except ValueError:
        raise ValueError(f"--pdrop_budget {text!r}: {value!r} is not a number") from None


def load_named_schedule(name_or_path: str) -> PDropConfig:
    from ..paths import load_schedule  # the configs folder is found by the top-level paths helper

    return load_schedule(name_or_path)


# ---------------------------------------------------------------------------------------------- argparse
class _DeprecatedFlag(argparse.Action):
    """Stores into the new flag's destination and says the old spelling is going away."""

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated: use {DEPRECATED_FLAGS[option_string]} (the old spelling is "
                      "accepted until version 0.3)", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_schedule_args(parser: argparse.ArgumentParser, no_pdrop: bool = True) -> None:
    """Add the schedule flags (fields of :class:`ScheduleArguments`) and the deprecated spellings to ``parser``."""
    hints = typing.get_type_hints(ScheduleArguments)
    group = parser.add_argument_group("PyramidDrop schedule (llava/pdrop/args.py)")
    for f in fields(ScheduleArguments):
        if f.name == "no_pdrop":
            if no_pdrop:
                group.add_argument("--no_pdrop", action="store_true", help=f.metadata["help"])
            continue
        kind = next(t for t in typing.get_args(hints[f.name]) if t is not type(None))
        choices = {"pdrop_position_mode": POSITION_MODES, "drop_method": METHODS}.get(f.name)
        group.add_argument(f"--{f.name}", type=kind, default=None, choices=choices, help=f.metadata["help"])
    add_deprecated_aliases(parser)


def add_deprecated_aliases(parser: argparse.ArgumentParser) -> None:
    """The old spellings, hidden from ``--help``, writing to the new flags' fields (also for HfArgumentParser)."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    for old, new in DEPRECATED_FLAGS.items():
        if new in actions and old not in actions:
            parser.add_argument(old, dest=actions[new].dest, type=actions[new].type, action=_DeprecatedFlag,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def schedule_arguments(args: argparse.Namespace) -> ScheduleArguments:
    """The schedule fields of a parsed ``argparse`` namespace (``no_pdrop`` may be absent)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(ScheduleArguments)}
    values["no_pdrop"] = bool(values["no_pdrop"])
    return ScheduleArguments(**values)


def schedule_from_args(args: argparse.Namespace, shape: ModelShape, fallback: PDropConfig | None) -> PDropConfig | None:
    """:meth:`ScheduleArguments.resolve` for a parsed ``argparse`` namespace."""
    return schedule_arguments(args).resolve(shape, fallback)
