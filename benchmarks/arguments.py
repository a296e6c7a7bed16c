"""Argument types the benchmark scripts share: a bad value is argparse's one ``error:`` line, not a traceback."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value
