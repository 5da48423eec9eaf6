"""LLaVA's command-line dialect: its flags and template names, rewritten into ours before parsing.

LLaVA's (and the official PyramidDrop code's) scripts call ``llava.eval.model_vqa_loader`` with
hyphenated flags and train with ``--version v1 --mm_use_im_start_end False --lazy_preprocess True``.
A table of :class:`Rule` per entry point says what each of those flags becomes here: renamed, its
value mapped, dropped (it has no effect here, e.g. data is always read lazily) or refused with a
message naming what to do instead. :func:`translate` applies a table to ``argv`` before the
command's own parser sees it; flags no rule names pass through unchanged (ours, and the many that
LLaVA and we share). The tables live in ``llava/eval/llava_compat.py`` (evaluation) and
``llava/train/llava_compat.py`` (training); the conversation-template names both use are here
(:data:`CONV_MODES`). :func:`describe` renders a table for ``--help`` and the README.

This module imports nothing heavy: the training launcher's settings check uses it too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

LOG = logging.getLogger(__name__)

OUR_TEMPLATES = ("plain", "vicuna_v1", "llama_3", "chatml", "chat_template")
CHAT_TEMPLATE_HINT = "the tokenizer's own chat template may match: --conv_mode/--version chat_template"
# LLaVA's (and LLaVA-NeXT's) conversation-template names -> ours; a (None, why) entry is refused
CONV_MODES: dict[str, tuple[str | None, str]] = {
    "v1": ("vicuna_v1", "same template"),
    "vicuna_v1": ("vicuna_v1", "same template"),
    "llava_v1": ("vicuna_v1", "same template (LLaVA-1.5's system prompt and USER/ASSISTANT roles)"),
    "plain": ("plain", "same template"),
    "llava_llama_3": ("llama_3", "same template and system prompt"),
    "qwen_1_5": ("chatml", "same template and system prompt"),
    "qwen_2": ("chatml", "same template and system prompt"),
    "chatml_direct": ("chatml", "ChatML with our system prompt 'You are a helpful assistant.' (LLaVA's: "
                                "'Answer the questions.')"),
    "v0": (None, "LLaVA-1.0's ###-separated template is not implemented"),
    "default": (None, "LLaVA-1.0's ###-separated template is not implemented"),
    "llava_v0": (None, "LLaVA-1.0's ###-separated template is not implemented"),
    "v0_plain": (None, "use plain"),
    "v0_mmtag": (None, "image tags (<Image>...</Image>) are not implemented"),
    "v1_mmtag": (None, "image tags (<Image>...</Image>) are not implemented"),
    "llava_llama_2": (None, CHAT_TEMPLATE_HINT),
    "llama_2": (None, CHAT_TEMPLATE_HINT),
    "mistral_instruct": (None, CHAT_TEMPLATE_HINT),
    "mistral_direct": (None, CHAT_TEMPLATE_HINT),
    "mpt": (None, "MPT language models are not supported"),
}


def template_name(name: str) -> str:
    """Our template for ``name`` (ours, or LLaVA's name for one of ours); ValueError naming ours otherwise."""
    if name in OUR_TEMPLATES:
        return name
    ours, why = CONV_MODES.get(name, (None, "not a template name"))
    if ours is None:
        raise ValueError(f"conversation template {name!r} (LLaVA's) has no equivalent here: {why}; "
                         f"ours are {', '.join(OUR_TEMPLATES)}")
    if not why.startswith("same template"):
        LOG.warning("conversation template %r (LLaVA's) is taken as %r: %s", name, ours, why)
    return ours


def is_true(value: str) -> bool:
    """HF's boolean spellings: true/false, yes/no, 1/0 (any case)."""
    text = value.strip().lower()
    if text in ("true", "yes", "1", "t", "y"):
        return True
    if text in ("false", "no", "0", "f", "n"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true or false)")


@dataclass(frozen=True)
class Rule:
    """One of LLaVA's flags and what it becomes here.

    ``ours``: the flag it becomes (None: dropped). ``value``: maps the value (None: the flag is dropped;
    ValueError: refused); without it the value is kept. ``refused``: why the flag is refused (what to do
    instead). ``kind``: ``"value"`` (takes one), ``"switch"`` (takes none) or ``"bool"`` (an optional
    true/false, as HF's parser takes). ``means``: the mapping in words, for ``--help`` and the README.
    """

    flag: str
    ours: str | None
    means: str
    value: Callable[[str], str | None] | None = None
    refused: str | None = None
    kind: str = "value"


def translate(argv: list[str], rules: list[Rule]) -> list[str]:
    """``argv`` with every flag a rule names rewritten (``--flag value`` and ``--flag=value`` alike)."""
    by_flag = {rule.flag: rule for rule in rules}
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, eq, inline = arg.partition("=")
        rule = by_flag.get(name) if arg.startswith("--") else None
        if rule is None:
            out.append(arg)
            continue
        if rule.refused:
            raise ValueError(f"{name} (LLaVA's flag) is not supported here: {rule.refused}")
        value = inline if eq else None
        if value is None and rule.kind == "value":
            if i == len(argv):
                raise ValueError(f"{name} needs a value")
            value, i = argv[i], i + 1
        elif value is None and rule.kind == "bool" and i < len(argv) and not argv[i].startswith("--"):
            value, i = argv[i], i + 1
        if rule.kind == "bool" and value is None:
            value = "true"
        out += _rewritten(rule, value)
    return out


def _rewritten(rule: Rule, value: str | None) -> list[str]:
    """The arguments ``rule`` turns ``value`` into (none when the flag is dropped)."""
    if rule.value is not None:
        try:
            value = rule.value(value)
        except ValueError as err:
            raise ValueError(f"{rule.flag} {value}: {err}") from None
        if value is None:
            return []
    if rule.ours is None:
        return []
    return [rule.ours] if rule.kind == "switch" else [rule.ours, value]


def describe(rules: list[Rule]) -> str:
    """The table as text: one line per LLaVA flag, what it becomes."""
    width = max(len(rule.flag) for rule in rules)
    return "\n".join(f"  {rule.flag:<{width}}  {rule.means}" for rule in rules)


# ---------------------------------------------------------------------------------------------- value maps
def conv_mode(value: str) -> str:
    """A ``--conv-mode`` / ``--version`` value: LLaVA's template name -> ours (ValueError naming ours)."""
    return template_name(value)


def only_false(why: str) -> Callable[[str], None]:
    """Dropped when false (our behaviour already); refused with ``why`` when true."""

    def check(value: str) -> None:
        if is_true(value):
            raise ValueError(why)
        return None

    return check


def dropped(value: str) -> None:
    """Dropped whatever its value (it has no effect here)."""
    return None


def only(*accepted: str, why: str) -> Callable[[str], None]:
    """Dropped when the value is one of ``accepted`` (what we do anyway); refused with ``why`` otherwise."""

    def check(value: str) -> None:
        if value not in accepted:
            raise ValueError(why)
        return None

    return check
