"""How sure is a number: a small search, its interval widths, an ensemble, seeds and folds on the real data.

    .venv/bin/python benchmarks/trust.py [--limit 1500] [--epochs 4] [--trials 6] [--seeds 1 2] [--folds 3]
                                         [--scratch DIR] [--data PATH]

In a scratch copy of this working tree (``benchmarks/scratch.py``), on a seeded subset of the AI4Mars file
with the README's light augmentation and a short training (the CPU budget), one step after the other:

1. ``marsseg search``: an Optuna study (``trust``) over the small space ``SPACE`` below; every trial is a
   DVC experiment and an MLflow run. Its leaderboard is the README's example study.
2. ``marsseg compare --study trust``: each trial's evaluated val mIoU, its 95% bootstrap interval and the
   paired difference to the best trial on the same validation images.
3. ``marsseg ensemble --study trust --top 3``: the three best trials' averaged probabilities against the
   best of them, paired on the same images.
4. The best trial again (``marsseg exp trust-best``, restored from DVC's run-cache) and then with other
   seeds (``dvc exp run -S seed=...``): a seed changes the subset, the split, the augmentation and the
   initial weights, so the spread is how much luck alone moves a score.
5. k-fold cross-validation of the best trial (``split.folds``, ``marsseg cv``): the spread over folds
   beside the bootstrap interval of one fold.

Every command's output is printed; a summary table closes. Nothing in this checkout changes.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from marsseg.config import read_params, validate
from marsseg.errors import stage_main

from ai4mars import DEFAULT_DATA
from arguments import count_or_zero, positive_int
from scratch import LIGHT_AUGMENTATION, REPO, commit, environment, read_json, scratch_copy

STUDY = "trust"
SPACE = {
    "params": {
        "model.arch": ["unet", "unet3p"],
        "model.base_filters": [8, 12],
        "loss.name": ["weighted_ce", "weighted_ce+lovasz"],
        "train.schedule": ["plateau", "cosine"],
        "train.ema": [False, True],
        "train.learning_rate": {"low": 5.0e-4, "high": 3.0e-3, "log": True},
    },
}


def fold_count(text: str) -> int:
    folds = count_or_zero(text)
    if folds == 1:
        raise argparse.ArgumentTypeError("'1' is not a number of folds: use 0 (no cross-validation) or at least 2")
    return folds


def step(root: Path, title: str, *command: str) -> str:
    """Run a command in the scratch copy, print its output under a title; stop the benchmark if it fails."""
    print(f"\n## {title}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(list(command), cwd=root, env=environment(), capture_output=True, text=True)
    shown = [line for line in result.stdout.splitlines() if not line.startswith(("Running stage", "Stage '", "Updating lock"))]
    print("\n".join(shown[-40:]))
    print(f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"trust: `{' '.join(command)}` failed (exit {result.returncode})")
    return result.stdout


def evaluated(root: Path) -> dict:
    return read_json(root / "metrics" / "evaluate.json")


def ensemble_gain(output: str) -> str:
    match = re.search(r"gain over the best member[^:]*: (\S+ \[[^]]+\])", output)
    return match.group(1) if match else "-"


@stage_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=count_or_zero, default=1500, help="data.limit: a seeded subset of training rows (0: all)")
    parser.add_argument("--epochs", type=positive_int, default=4, help="train.epochs of every run")
    parser.add_argument("--trials", type=positive_int, default=6, help="trials of the study")
    parser.add_argument("--seeds", type=count_or_zero, nargs="+", default=[1, 2], help="seeds besides params.yaml's")
    parser.add_argument("--folds", type=fold_count, default=3, help="k of the cross-validation (0: skip it)")
    parser.add_argument("--scratch", type=Path, help="folder for the copy (default: a new temp dir)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (the AI4Mars benchmark file lives outside the repository)")
        return 0

    params = read_params(REPO / "params.yaml")
    params["data"].update(source="npz", path=str(args.data.resolve()), limit=args.limit)
    params["augment"].update(LIGHT_AUGMENTATION)
    params["train"]["epochs"] = args.epochs
    validate(params, "params.yaml with trust.py's settings")  # before anything is copied or run

    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="marsseg-trust-"))).resolve()
    root = scratch_copy(scratch / "repo")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "search" / f"{STUDY}.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    print(f"trust: {root}; data {args.data} (limit {args.limit or 'all'}), {args.epochs} epochs per training")

    step(root, "data stages once, shared by every trial", "dvc", "repro", "augment")
    commit(root, "real-data settings for the trust benchmark")
    step(root, f"search: {args.trials} trials", "marsseg", "search", "--space", f"search/{STUDY}.yaml",
         "--trials", str(args.trials), "--study", STUDY)
    step(root, "the study's trials, compared", "marsseg", "compare", "--study", STUDY, "--markdown")
    ensemble = step(root, "ensemble of the 3 best trials", "marsseg", "ensemble", "--study", STUDY, "--top", "3")

    step(root, "the best trial as a preset (restored from the run-cache)", "marsseg", "exp", f"{STUDY}-best")
    best = evaluated(root)
    scores = {params["seed"]: best["val_miou"]}
    for seed in args.seeds:
        step(root, f"the best trial with seed {seed}", "dvc", "exp", "run", "-S", f"seed={seed}")
        scores[seed] = evaluated(root)["val_miou"]
    step(root, "the best trial's seeds, one row", "marsseg", "compare", "--markdown")

    folds = {}
    if args.folds >= 2:
        ids = ",".join(str(fold) for fold in range(args.folds))
        step(root, f"{args.folds}-fold cross-validation of the best trial", "dvc", "exp", "run", "-S", f"seed={params['seed']}",
             "-S", f"split.folds={args.folds}", "-S", f"split.cv_folds=[{ids}]")
        step(root, "cross-validation summary", "marsseg", "cv")
        folds = read_json(root / "reports" / "cv.json")

    width = best["val_miou_ci_high"] - best["val_miou_ci_low"]
    spread = statistics.stdev(scores.values()) if len(scores) > 1 else float("nan")
    print("\n## summary\n")
    print("| measure | value |\n|---|---|")
    print(f"| best trial's val mIoU [95% bootstrap interval] | {best['val_miou']:.4f} "
          f"[{best['val_miou_ci_low']:.4f}, {best['val_miou_ci_high']:.4f}] (width {width:.4f}) |")
    print(f"| the same configuration over seeds {', '.join(map(str, scores))} | "
          + ", ".join(f"{score:.4f}" for score in scores.values()) + f" (sd {spread:.4f}) |")
    print(f"| ensemble of the 3 best trials minus its best member [95%] | {ensemble_gain(ensemble)} |")
    if folds:
        print(f"| {args.folds}-fold val mIoU, mean ± sd over folds | {folds['val_miou_mean']:.4f} ± {folds['val_miou_std']:.4f} |")
        print(f"| a fold's bootstrap interval width, mean over folds | {folds['val_miou_bootstrap_width_mean']:.4f} |")
    print(f"\nscratch copy: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
