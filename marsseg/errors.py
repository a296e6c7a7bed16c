"""User-facing failures: one clear line, no traceback."""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A problem the user can fix (bad file, bad parameter, unreachable server).

    The message must name the file or parameter and say what is wrong, in one line.
    """


def stage_main(func):
    """Decorate a stage's ``main``: a ``UserError`` prints ``error: <message>`` and exits 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
