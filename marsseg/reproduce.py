"""Rerun the default pipeline from scratch and diff its metrics with the committed ones (CI's check).

Every metric is compared with the value committed in git (``dvc metrics diff``); a move beyond
``ci.tolerance`` fails. Metrics files hold no wall-clock times (those live in ``logs/<stage>.json``, not a
DVC output), so ``ci.ignore`` is left for results that legitimately differ between machines.

    marsseg reproduce                # dvc repro --force, then compare
    marsseg reproduce --compare-only
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time

from marsseg.errors import UserError
from marsseg.config import load_config


def metrics_diff(revision: str) -> dict:
    """``dvc metrics diff --json <revision>``: committed value ("old") against the workspace ("new").

    Only metrics files committed to git at ``revision`` count: a DVC-cached one (the train stage's) has
    no committed value a fresh clone could read.
    """
    result = subprocess.run(["dvc", "metrics", "diff", revision, "--all", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"dvc metrics diff failed: {result.stderr.strip().splitlines()[-1] if result.stderr else ''}")
    committed = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision], capture_output=True, text=True)
    in_git = set(committed.stdout.split())
    return {path: metrics for path, metrics in json.loads(result.stdout or "{}").items() if path in in_git}


def moved_metrics(diff: dict, tolerance: float, ignore: list[str]) -> list[tuple[str, str, object, object]]:
    """(file, metric, committed, reproduced) for each numeric metric that moved beyond the tolerance.

    A metric missing on either side counts as moved: a committed number nobody reproduces proves nothing.
    """
    moved = []
    for path, metrics in sorted(diff.items()):
        for name, values in sorted(metrics.items()):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignore):
                continue
            old, new = values.get("old"), values.get("new")
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
            if numbers and abs(new - old) <= tolerance:
                continue
            if old == new:
                continue
            moved.append((path, name, old, new))
    return moved


def format_table(moved: list[tuple]) -> str:
    rows = [("file", "metric", "committed", "reproduced")] + [tuple(str(v) for v in row) for row in moved]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare-only", action="store_true", help="skip `dvc repro --force`")
    parser.add_argument("--rev", default="HEAD", help="the revision holding the committed metrics")


def run(args) -> None:
    ci = load_config().ci
    if not args.compare_only:
        started = time.perf_counter()
        if subprocess.call(["dvc", "repro", "--force"]) != 0:
            raise UserError("dvc repro --force failed; see the stage output above")
        print(f"reproduce: pipeline took {time.perf_counter() - started:.0f} s")
    moved = moved_metrics(metrics_diff(args.rev), ci.tolerance, ci.ignore)
    if moved:
        print(format_table(moved))
        raise UserError(f"{len(moved)} metric(s) moved beyond ci.tolerance={ci.tolerance} "
                        f"from the values committed at {args.rev}")
    print(f"reproduce: every metric within {ci.tolerance} of the committed values at {args.rev}")


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module("marsseg.reproduce")  # under -m, __name__ is "__main__"
