"""Argument types the benchmark scripts share: a bad value is argparse's one ``error:`` line, not a traceback
or a run that silently does something else."""
from __future__ import annotations

import argparse
import re

WHOLE_NUMBER = re.compile(r"-?\d+")


def _whole_number(text: str, minimum: int, wanted: str) -> int:
    if not WHOLE_NUMBER.fullmatch(text.strip()) or int(text) < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
    return int(text)


def positive_int(text: str) -> int:
    return _whole_number(text, 1, "a positive whole number")


def count_or_zero(text: str) -> int:
    """A count where 0 has a meaning of its own ("all rows", "params.yaml's value", "skip")."""
    return _whole_number(text, 0, "a whole number of 0 or more")


def _comma_separated(text: str, item, wanted: str) -> list[int]:
    try:
        return [item(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {wanted}") from None


def positive_ints(text: str) -> list[int]:
    """Comma-separated positive whole numbers: ``500,1000``."""
    return _comma_separated(text, positive_int, "positive whole numbers")


def counts_or_zero(text: str) -> list[int]:
    """Comma-separated whole numbers of 0 or more: ``0,2,5``."""
    return _comma_separated(text, count_or_zero, "whole numbers of 0 or more")


def seed_range(text: str) -> list[int]:
    """``4`` or an inclusive range ``1-10`` of seeds (whole numbers of 0 or more)."""
    first, dash, last = text.partition("-")
    try:
        low = count_or_zero(first)
        high = count_or_zero(last) if dash else low
    except argparse.ArgumentTypeError:
        low, high = 1, 0  # reported below, with the range's own wording
    if low > high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed or a range of seeds such as 1-10")
    return list(range(low, high + 1))
