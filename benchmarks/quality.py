"""Quality per CPU-minute: named configurations trained on the shared AI4Mars file, one table.

    .venv/bin/python benchmarks/quality.py [--configs default cosine ...] [--epochs 10] [--limit 0]
                                           [--base PRESET] [--scratch DIR] [--set key=value ...] [--list]

Each configuration is a set of params overrides, run as a DVC experiment (``dvc exp run -S ...``) in a
scratch copy of this working tree (nothing here changes): ``data.source=npz``, ``data.path`` the absolute
path of ``../shared/data/ai4mars64x128.npz``, the light augmentation of the README's real-data runs
(1 copy per image, 4-6 per big-rock image), flip TTA scored beside the plain prediction, then the
``--base`` preset if given, then the configuration's own overrides (a preset's included), then ``--set``.
With ``--base cpu-best``, ``base`` is that preset and ``weighted-ce``, ``plateau``, ``no-ema`` and
``default-augment`` each undo one of its levers: a leave-one-out ablation. Runs go one after the other from the
same params file, so the ingest/clean/split stages of equal data settings run once and are reused.

Prints one markdown table: config, train minutes, epochs run (best epoch), val mIoU (and with flip TTA),
per-class IoU, and the gain in val mIoU over the first configuration run (``default`` unless left out).
This is how the README's real-data numbers are made; every row names its overrides below the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from marsseg import CLASS_NAMES, SCORED_CLASSES
from marsseg.config import read_params, validate
from marsseg.errors import UserError, stage_main
from marsseg.params import flatten
from marsseg.presets import merged, set_param_args

from ai4mars import DEFAULT_DATA
from arguments import count_or_zero, positive_int
from scratch import LIGHT_AUGMENTATION, REPO, read_json, run_logged, scratch_copy

PRESETS = REPO / "presets"

# What every configuration shares (a configuration's own overrides win).
COMMON = {"augment": LIGHT_AUGMENTATION, "evaluate": {"tta": True}}


def preset(name: str) -> dict:
    return yaml.safe_load((PRESETS / f"{name}.yaml").read_text()) or {}


NO_ROTATIONS = {"rotate90": 0.0, "rotate": 0.0, "affine": 0.0}
NO_PHOTOMETRIC = {"brightness_contrast": 0.0, "gamma": 0.0, "emboss": 0.0, "sharpen": 0.0}

# name -> (params overrides, what it tests). Levers are changed one at a time against the default (or --base).
CONFIGS: dict[str, tuple] = {
    "default": (lambda: {}, "params.yaml as committed (U-Net d3, 8 filters, weighted CE, plateau)"),
    "strongest": (lambda: preset("strongest"), "presets/strongest.yaml (UNet 3+)"),
    "cpu-best": (lambda: preset("cpu-best"), "presets/cpu-best.yaml"),
    "bf16": (lambda: {"train": {"precision": "bfloat16"}}, "mixed bfloat16 (speed; quality must hold)"),
    "cosine": (lambda: {"train": {"schedule": "cosine", "warmup_epochs": 1}}, "warm-up 1 epoch + cosine to 0"),
    "onecycle": (lambda: {"train": {"schedule": "onecycle", "warmup_epochs": 1}}, "one-cycle, 1-epoch rise"),
    "ema": (lambda: {"train": {"ema": True}}, "weight averaging (use_ema, 0.99) picked and saved"),
    "lovasz": (lambda: {"loss": {"name": "weighted_ce+lovasz"}}, "weighted CE + Lovasz-softmax"),
    "dice": (lambda: {"loss": {"name": "weighted_ce+dice"}}, "weighted CE + soft dice"),
    "no-rotations": (lambda: {"augment": {"p": NO_ROTATIONS}}, "augmentation without rotations / affine"),
    "no-photometric": (lambda: {"augment": {"p": NO_PHOTOMETRIC}}, "augmentation without photometric transforms"),
    "flips-cutmix": (lambda: {"augment": {"p": {**NO_ROTATIONS, **NO_PHOTOMETRIC, "crop": 0.0, "cutmix": 0.3}}},
                     "flips and CutMix only"),
    "width16": (lambda: {"model": {"base_filters": 16}}, "twice the filters"),
    "depth4": (lambda: {"model": {"depth": 4, "dropout": [0.0, 0.0, 0.0, 0.1]}}, "one pooling more"),
    # Leave-one-out against a preset that changed several levers at once (``--base cpu-best``): each undoes one.
    "base": (lambda: {}, "the --base preset itself"),
    "weighted-ce": (lambda: {"loss": {"name": "weighted_ce"}}, "weighted CE alone (no IoU term)"),
    "plateau": (lambda: {"train": {"schedule": "plateau", "warmup_epochs": 0, "learning_rate": 1.0e-3}},
                "plateau schedule at the default 1e-3 (no warm-up, no annealing)"),
    "no-ema": (lambda: {"train": {"ema": False}}, "raw weights instead of their moving average"),
    "default-augment": (lambda: {"augment": {"p": default_params()["augment"]["p"]}},
                        "the transform probabilities of params.yaml (vertical flips, rotations, photometric)"),
}


def default_params() -> dict:
    return read_params(REPO / "params.yaml")  # the stages' own reader: what is checked here is what they will read


def parse_set(pairs: list[str]) -> dict:
    """``["train.epochs=3"]`` -> ``{"train": {"epochs": 3}}`` (values parsed as YAML)."""
    nested: dict = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UserError(f"--set {pair}: use KEY=VALUE, e.g. train.epochs=3")
        *groups, last = key.split(".")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
        node[last] = yaml.safe_load(value)
    return nested


def run_config(root: Path, name: str, overrides: dict, params_text: str, log: Path) -> dict:
    (root / "params.yaml").write_text(params_text)  # every run starts from the same file
    started = time.perf_counter()
    status, last_line = run_logged(root, ["dvc", "exp", "run", "-n", f"q-{name}", *set_param_args(overrides)], log)
    row = {"config": name, "ok": status == 0, "wall_minutes": (time.perf_counter() - started) / 60}
    if status != 0:
        row["error"] = last_line
        return row
    train = {**read_json(root / "metrics/train.json"), **read_json(root / "logs/train.json")}
    row.update(train_minutes=train.get("training_seconds", float("nan")) / 60, epochs=train.get("epochs_run"),
               best_epoch=train.get("best_epoch"), precision=train.get("precision", ""))
    row.update({key: value for key, value in read_json(root / "metrics/evaluate.json").items()
                if key.startswith(("val_miou", "val_iou_", "tta_val_miou"))})
    return row


def table(rows: list[dict]) -> str:
    classes = [CLASS_NAMES[c] for c in SCORED_CLASSES]
    baseline = next((row.get("val_miou") for row in rows if row.get("ok")), None)
    lines = ["| config | train min | epochs (best) | val mIoU | with flip TTA | "
             + " | ".join(classes) + " | gain over " + (rows[0]["config"] if rows else "-") + " |",
             "|---" * (6 + len(classes)) + "|"]
    for row in rows:
        if not row.get("ok"):
            lines.append(f"| {row['config']} | failed: {row.get('error', '')} |" + " |" * (4 + len(classes)))
            continue

        def number(key, digits=3):
            value = row.get(key)
            return "-" if value is None else f"{value:.{digits}f}"

        gain = row["val_miou"] - baseline if baseline is not None and "val_miou" in row else None
        lines.append(
            f"| {row['config']} | {row['train_minutes']:.1f} | {row['epochs']} ({row['best_epoch']}) | "
            f"{number('val_miou')} | {number('tta_val_miou')} | "
            + " | ".join(number(f"val_iou_{c}") for c in classes)
            + f" | {'-' if gain is None else f'{gain:+.3f}'} |")
    return "\n".join(lines)


@stage_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "strongest", "cpu-best", "bf16", "cosine",
                                                           "onecycle", "ema", "lovasz"],
                        help=f"from: {', '.join(CONFIGS)}")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=count_or_zero, default=0, help="data.limit: a seeded subset of training rows (0: all)")
    parser.add_argument("--epochs", type=positive_int, help="train.epochs for every configuration (default: its own)")
    parser.add_argument("--base", metavar="PRESET", help="a preset under presets/ applied before every "
                        "configuration, for leave-one-out runs (e.g. --base cpu-best --configs base weighted-ce)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every run")
    parser.add_argument("--scratch", type=Path, help="folder for the copy and logs (default: a new temp dir)")
    parser.add_argument("--list", action="store_true", help="list the configurations and stop")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_, what) in CONFIGS.items():
            print(f"{name:16} {what}")
        return 0
    unknown = [name for name in args.configs if name not in CONFIGS]
    if unknown:
        print(f"error: unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    if args.base and not (PRESETS / f"{args.base}.yaml").is_file():
        known = ", ".join(sorted(path.stem for path in PRESETS.glob("*.yaml")))
        print(f"error: --base {args.base}: no presets/{args.base}.yaml; known: {known}", file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (the AI4Mars benchmark file lives outside the repository)")
        return 0

    common = merged(COMMON, {"data": {"source": "npz", "path": str(args.data.resolve()), "limit": args.limit}})
    common = merged(common, preset(args.base)) if args.base else common
    last = {"train": {"epochs": args.epochs}} if args.epochs else {}
    last = merged(last, parse_set(args.set))
    overrides = {name: merged(merged(common, CONFIGS[name][0]()), last) for name in args.configs}
    defaults = default_params()
    for name, own in overrides.items():  # every configuration's params checked before anything runs
        validate(merged(defaults, own), f"params.yaml with configuration {name!r}")

    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="marsseg-quality-"))).resolve()
    root = scratch_copy(scratch / "repo")
    params_text = (root / "params.yaml").read_text()
    print(f"quality: {len(args.configs)} configuration(s) in {root}; data {args.data} (limit {args.limit or 'all'})"
          + (f"; each on top of presets/{args.base}.yaml" if args.base else ""))

    rows, used = [], {}
    for name in args.configs:
        used[name] = flatten(overrides[name])
        row = run_config(root, name, overrides[name], params_text, scratch / f"{name}.log")
        rows.append(row)
        (scratch / "quality.json").write_text(json.dumps(rows, indent=2))  # what is done survives a stop
        status = f"val mIoU {row['val_miou']:.4f}" if row.get("ok") else f"FAILED ({row.get('error')})"
        print(f"quality: {name}: {status}, {row['wall_minutes']:.1f} min (log {scratch / (name + '.log')})", flush=True)

    print()
    print(table(rows))
    print()
    shared = {key: value for key, value in used[args.configs[0]].items()
              if all(flat.get(key) == value for flat in used.values())}
    print("every run: " + " ".join(f"{key}={json.dumps(value)}" for key, value in shared.items()))
    for name in args.configs:
        own = {key: value for key, value in used[name].items() if key not in shared}
        print(f"{name}: " + (" ".join(f"{key}={json.dumps(value)}" for key, value in own.items()) or "(nothing else)"))
    (scratch / "quality.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(row.get("ok") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
