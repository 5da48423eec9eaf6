"""Command-line entry: a user's mistake (bad flag value, missing or unreadable file) ends in one line, not a traceback.

``cli_main(main, argv, prog)`` runs ``main(argv)``; a ``ValueError`` or ``OSError`` (which the package
raises with messages that name the problem: a file, a question, a field and its value) is printed as
``prog: error: message`` on one line and the process exits with status 1. Anything else is a bug
and keeps its traceback. ``LLAVA_TRACEBACK=1`` keeps the traceback of every error (for reports).

Used as::

    if __name__ == "__main__":
        cli_main(main, prog="llava.eval.run")
"""

from __future__ import annotations

import os
import sys
from typing import Callable

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
