"""The coarse-to-fine flags: one set for every command (``llava.eval.run``, ``infer``, ``pictures``, ``bench.flops``).

==========================================  ===================================================================
``--coarse_to_fine``                        answer huge images coarse to fine (LLaVA-NeXT models only)
``--pyramid_config NAME|PATH``              a ``configs/pyramid/`` file (``lrs-default``, ``tiny``) or a JSON path
``--focus_layer 8`` ``--token_keep_ratio``  one flag per :class:`~.config.CoarseToFineConfig` field, overriding
``--max_tiles_per_level`` ... ``--max_image_pixels``  the config it is applied to; ``none`` clears
                                            ``--max_levels`` / ``--token_budget``
==========================================  ===================================================================

Which config (:meth:`CoarseToFineRequest.resolve`): the field flags override ``--pyramid_config``; without
it, the checkpoint's saved config (``model.config.coarse_to_fine``), else ``lrs-default``. Field flags or
``--pyramid_config`` without ``--coarse_to_fine`` are refused (they would silently do nothing). The config
used is written to ``model.config.coarse_to_fine`` (:func:`attach_config`), so a model saved afterwards
carries it, and commands put it in their results' metadata.

Example::

    parser = argparse.ArgumentParser(); add_coarse_to_fine_args(parser)
    request = CoarseToFineRequest.from_args(parser.parse_args(["--coarse_to_fine", "--focus_layer", "2"]))
    config = request.resolve(model)          # CoarseToFineConfig, validated against the model
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .config import FOCUS_SOFTMAX, CoarseToFineConfig

DEFAULT_CONFIG = "lrs-default"
CLEARED = "none"  # --max_levels none / --token_budget none: the field set to None


def field_flags() -> list[str]:
    """The field names that have a flag (every field of :class:`CoarseToFineConfig`)."""
    return [f.name for f in fields(CoarseToFineConfig)]


def _optional_int(text: str) -> int | str:
    if text.strip().lower() in (CLEARED, "null"):
        return CLEARED
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer or 'none'") from None


def _flag_type(name: str):
    hint = typing.get_type_hints(CoarseToFineConfig)[name]
    options = [t for t in typing.get_args(hint) if t is not type(None)]
    if options:  # int | None
        return _optional_int
    return hint


def add_coarse_to_fine_args(parser: argparse.ArgumentParser) -> None:
    """``--coarse_to_fine``, ``--pyramid_config`` and one flag per config field (defaults None: not given)."""
    group = parser.add_argument_group("coarse-to-fine for huge images (llava/pyramid/args.py)")
    group.add_argument("--coarse_to_fine", action="store_true",
                       help="select and encode only the tiles the question points at, level by level (LLaVA-NeXT)")
    group.add_argument("--pyramid_config", default=None,
                       help=f"configs/pyramid/ name or JSON path (default: the checkpoint's saved one, else "
                            f"{DEFAULT_CONFIG}); the flags below override its fields")
    docs = _field_docs()
    for name in field_flags():
        extra = {"choices": FOCUS_SOFTMAX} if name == "focus_softmax" else {}
        clearable = " ('none': no limit)" if _flag_type(name) is _optional_int else ""
        group.add_argument(f"--{name}", type=_flag_type(name), default=None, help=docs.get(name, "") + clearable,
                           **extra)


def _field_docs() -> dict[str, str]:
    """Each field's docstring (the string after it in config.py), for ``--help``."""
    import ast
    import inspect

    from . import config as config_module

    tree = ast.parse(inspect.getsource(config_module.CoarseToFineConfig))
    body, docs = tree.body[0].body, {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = str(after.value.value).replace("%", "%%")
    return docs


@dataclass
class CoarseToFineRequest:
    """What the flags ask for, checked before a model is loaded; :meth:`resolve` finishes it against the model."""

    named: CoarseToFineConfig | None = None  # --pyramid_config, loaded
    overrides: dict[str, Any] = field(default_factory=dict)  # field flags given (None where 'none')

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "CoarseToFineRequest | None":
        """None without ``--coarse_to_fine``; ValueError for field flags given without it, or bad values."""
        given = {name: getattr(args, name) for name in field_flags() if getattr(args, name, None) is not None}
        if not getattr(args, "coarse_to_fine", False):
            flags = [f"--{name}" for name in given] + (["--pyramid_config"] if getattr(args, "pyramid_config", None)
                                                       else [])
            if flags:
                raise ValueError(f"{' '.join(flags)} configure coarse-to-fine, which is off: add --coarse_to_fine")
            return None
        named = load_named_config(args.pyramid_config) if args.pyramid_config else None
        overrides = {name: None if value == CLEARED else value for name, value in given.items()}
        request = cls(named, overrides)
        if named is not None:
            request.apply(named)  # field errors before the model loads
        return request

    def apply(self, base: CoarseToFineConfig) -> CoarseToFineConfig:
        """``base`` with the field flags applied (validated by the config; errors name the field)."""
        return replace(base, **self.overrides) if self.overrides else base

    def resolve(self, model) -> CoarseToFineConfig:
        """The config for ``model``: flags over ``--pyramid_config`` / the saved config / ``lrs-default``;
        checked against the model (:func:`~.driver.check_model`) and written into ``model.config``."""
        from .driver import check_model

        base = self.named or saved_config(model) or load_named_config(DEFAULT_CONFIG)
        config = self.apply(base)
        check_model(model, config)
        attach_config(model, config)
        return config


def load_named_config(name_or_path: str) -> CoarseToFineConfig:
    from ..paths import load_pyramid_config  # the configs folder is found by the top-level paths helper

    return load_pyramid_config(name_or_path)


def saved_config(model) -> CoarseToFineConfig | None:
    """The config saved in ``model.config.coarse_to_fine`` (None when there is none)."""
    data = getattr(model.config, "coarse_to_fine", None)
    if data is None:
        return None
    try:
        return CoarseToFineConfig.from_dict(dict(data))
    except ValueError as err:
        raise ValueError(f"the checkpoint's config.coarse_to_fine is not a valid coarse-to-fine config: "
                         f"{err}") from None


def attach_config(model, config: CoarseToFineConfig | None) -> None:
    """Write ``config`` into ``model.config.coarse_to_fine`` (a plain dict), so ``save_pretrained`` keeps it."""
    model.config.coarse_to_fine = None if config is None else config.to_dict()


__all__ = ["CLEARED", "DEFAULT_CONFIG", "CoarseToFineRequest", "add_coarse_to_fine_args", "attach_config",
           "field_flags", "load_named_config", "saved_config"]
