"""The benchmark scripts' shared argument types (benchmarks/ is on pytest's path)."""
from __future__ import annotations

import argparse

import pytest

from arguments import positive_int


@pytest.mark.parametrize("text, value", [("1", 1), ("512", 512)])
def test_positive_int_accepts_whole_numbers_from_one(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "x", ""])
def test_positive_int_refuses_anything_else_with_a_message_naming_the_value(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"{text!r} is not a positive whole number"):
        positive_int(text)


def test_a_bad_count_is_one_argparse_error_line_not_a_traceback():
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--rounds", type=positive_int, default=2)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--rounds", "0"])
    assert stopped.value.code == 2
