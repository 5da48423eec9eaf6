"""What every command line shares: one-line user errors, ``python -m`` usage lines, ``--json PATH``.

- :func:`cli_main` runs a command's ``main(argv)``; a ``ValueError`` or ``OSError`` (which the package
  raises with messages that name the problem: a file, a question, a field and its value) is printed as
  ``prog: error: message`` on one line and the process exits with status 1. Anything else is a bug and
  keeps its traceback. ``LLAVA_TRACEBACK=1`` keeps the traceback of every error (for reports).
- :class:`ArgumentParser` is argparse's, with ``prog`` written as the user types it
  (``python -m llava.eval.run``), errors on one line (:class:`OneLineErrors`, exit status 2) and
  unknown flags answered with the closest known ones.
- :func:`add_json_arg` / :func:`emit`: ``--json PATH`` writes the results as JSON to PATH (the table is
  still printed); ``--json -`` prints the JSON instead of the table. The same in every command.

Used as::

    def main(argv=None):
        parser = ArgumentParser("llava.bench.flops", description=...)
        ...

    if __name__ == "__main__":
        cli_main(main, prog="llava.bench.flops")
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

USER_ERRORS = (ValueError, OSError)


def cli_main(main: Callable, argv: list[str] | None = None, prog: str | None = None):
    """``main(argv)``, with user errors turned into one line on stderr and exit status 1."""
    try:
        return main(argv)
    except USER_ERRORS as err:
        if os.environ.get("LLAVA_TRACEBACK") == "1":
            raise
        message = " ".join(str(err).split("\n")) or type(err).__name__
        print(f"{prog or 'llava'}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def unknown_flags_message(unknown: list[str], known: list[str], hints: dict[str, str] | None = None) -> str:
    """``unrecognized arguments: --lerning_rate 1 (did you mean --learning_rate?)``; ``hints`` maps a flag to a
    fuller answer. Values stay with their flag; suggestions are the closest known underscore spellings."""
    known = [flag for flag in known if "-" not in flag[2:]] or known  # HF's parser adds --a-b next to --a_b
    groups: list[list[str]] = []
    for arg in unknown:
        if arg.startswith("-") or not groups:
            groups.append([arg])
        else:
            groups[-1].append(arg)
    parts = []
    for group in groups:
        flag = group[0].split("=", 1)[0]
        answer = (hints or {}).get(flag)
        if answer is None and flag.startswith("--"):
            spelt = "--" + flag[2:].replace("-", "_")  # LLaVA's hyphens
            close = difflib.get_close_matches(spelt, known, n=2, cutoff=0.75)
            answer = f"did you mean {' or '.join(close)}?" if close else None
        parts.append(" ".join(group) + (f" ({answer})" if answer else ""))
    return "unrecognized arguments: " + ", ".join(parts)


class OneLineErrors:
    """argparse's errors as one line, ``MODULE: error: message``, exit status 2 (no usage dump)."""

    def error(self, message: str):
        name = self.prog.removeprefix("python -m ")
        about_flags = message.startswith(("argument ", "the following arguments", "unrecognized arguments"))
        self.exit(2, f"{name}: error: {message}{' (--help lists the flags)' if about_flags else ''}\n")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse with ``prog="python -m MODULE"``, one-line errors and suggestions for misspelt flags."""

    def __init__(self, module: str, **kwargs):
        kwargs.setdefault("prog", f"python -m {module}")
        super().__init__(**kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(unknown_flags_message(unknown, self.known_flags()))
        return parsed

    def require_positive(self, args: argparse.Namespace, *names: str) -> None:
        """Refuse (one line, exit 2) any of the integer flags ``names`` below 1."""
        for name in names:
            if getattr(args, name) < 1:
                self.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    def known_flags(self) -> list[str]:
        """Every ``--flag`` this parser takes (hidden ones included)."""
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]


def check_model_source(path: str, what: str) -> None:
    """A model given as a folder must exist; ``org/name`` without a local folder is left to the Hub.

    Anything that cannot be a Hub id (an absolute or ``./`` path, more than one ``/``, or a first
    component that is a local folder, e.g. ``checkpoints/run``) is a local path: FileNotFoundError
    naming ``what`` when it is missing, before anything loads.
    """
    text = str(path)
    if Path(text).expanduser().exists():
        return
    first = text.split("/", 1)[0]
    local = text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or ("/" in text and Path(first).is_dir())
    if local:
        raise FileNotFoundError(f"{what} {text} does not exist (not a folder here, and not a Hub id org/name)")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """``--json PATH``: also write the results as JSON to PATH; ``-``: print the JSON instead of the table."""
    parser.add_argument("--json", metavar="PATH", help=(
        "also write the results as JSON to PATH ('-': print the JSON on stdout instead of the table)"))


def check_json_path(path: str | None) -> None:
    """Before any work: ``--json PATH`` must be writable (its folder exists and is not a file)."""
    if path in (None, "-"):
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--json {path} is a folder: give a file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"--json {path}: folder {target.parent} does not exist")


def emit(table: str, data: Any, json_path: str | None) -> None:
    """Print ``table``, and write ``data`` as JSON to ``json_path`` (``-``: print the JSON instead of the table)."""
    text = json.dumps(data, indent=2)
    if json_path == "-":
        print(text)
        return
    print(table)
    if json_path:
        Path(json_path).write_text(text + "\n")
        print(f"results written to {json_path}")
