"""How the clean stage announces a documented fallback (small input, degenerate features)."""
from __future__ import annotations

import warnings


class CleanWarning(UserWarning):
    """A documented fallback the clean stage took (small input, degenerate features)."""


def announce(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, CleanWarning, stacklevel=stacklevel + 1)
