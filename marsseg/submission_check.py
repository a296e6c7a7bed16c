"""Check a competition submission CSV: header, row count, ids, one class 0-4 per pixel."""
from __future__ import annotations

import argparse

from marsseg.errors import UserError
from marsseg.submission import PIXELS, check_row_count, check_submission, read_test_array


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="submission CSV")
    expected = parser.add_mutually_exclusive_group()
    expected.add_argument("--rows", type=int, help="expected number of test images")
    expected.add_argument("--dataset", help="npz whose test_images / test_set sets the expected row count")


def run(args) -> None:
    if args.rows is not None and args.rows < 0:
        raise UserError(f"--rows must be a non-negative integer, got {args.rows}")
    # The file named is checked before the data set it is compared with is read.
    summary = check_submission(args.file)
    expected = args.rows if args.rows is not None else (len(read_test_array(args.dataset)[1]) if args.dataset else None)
    check_row_count(args.file, summary.rows, expected)
    fractions = ", ".join(f"{name} {value:.4f}" for name, value in summary.class_fractions.items())
    print(f"OK {args.file}: {summary.rows} rows x {PIXELS} pixels, md5 {summary.md5}")
    print(f"predicted class fractions: {fractions}")


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
