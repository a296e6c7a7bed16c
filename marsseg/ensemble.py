"""Ensemble the best logged models: average their class probabilities, score it with an interval, submit.

    marsseg ensemble [--top K | --runs ID,ID,...] [--tta] [--study NAME] [--output submission/ensemble.csv]
    (or: make ensemble TOP=3)

Members are the K MLflow runs with the best evaluated val mIoU whose models were logged (or the runs
named). They must have been evaluated on the same validation file (same ``val_md5``), and that file
must be the one in this checkout (data/split/val.npz): an ensemble is scored on the members' own
validation images, or not at all. The ensemble's val mIoU comes with its 95% bootstrap interval and a
paired bootstrap difference to its best member on the same images; the competition CSV is written and
checked; the ensemble is recorded as an MLflow run (tag ``marsseg.kind=ensemble``, its members in
``ensemble.members``), so ``marsseg compare`` lists it beside its members.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from marsseg.compare import RunRecord, download_per_image, fetch_records
from marsseg.errors import UserError
from marsseg.metrics import (json_ready, mean_iou, paired_miou_difference, per_image_confusion, percentile_interval,
                             scores_with_intervals)

VAL = Path("data/split/val.npz")
DATASET = Path("data/clean/dataset.npz")
OUTPUT = Path("submission/ensemble.csv")
KIND_TAG = "marsseg.kind"
MEMBERS_TAG = "ensemble.members"


# --------------------------------------------------------------------------- choosing members

def is_ensemble(record: RunRecord) -> bool:
    return record.tags.get(KIND_TAG) == "ensemble"


def choose_members(records: list[RunRecord], logged: dict[str, str], top: int | None = None,
                   run_ids: list[str] | None = None) -> list[RunRecord]:
    """The named runs, or the ``top`` evaluated runs with a logged model, best val mIoU first."""
    if run_ids:
        by_id = {record.run_id: record for record in records}
        members = []
        for run_id in run_ids:
            if run_id not in by_id:
                raise UserError(f"--runs {run_id}: no finished run with that id in the experiment")
            if run_id not in logged:
                raise UserError(f"--runs {run_id}: run '{by_id[run_id].name}' has no logged model to ensemble")
            if math.isnan(by_id[run_id].val_miou):
                raise UserError(f"--runs {run_id}: run '{by_id[run_id].name}' was never evaluated (no val_miou)")
            members.append(by_id[run_id])
        return members
    candidates = [r for r in records if r.run_id in logged and not is_ensemble(r) and not math.isnan(r.val_miou)]
    if not candidates:
        raise UserError("ensemble: no evaluated run with a logged model in the experiment; run the pipeline first")
    return sorted(candidates, key=lambda r: -r.val_miou)[:top]


def check_same_fold(members: list[RunRecord], val_md5: str | None = None, val_path: Path = VAL) -> str:
    """The members' common validation md5 (and this checkout's, if given); one line saying why not otherwise."""
    md5s = {member.val_md5 for member in members}
    if None in md5s:
        unknown = next(m for m in members if m.val_md5 is None)
        raise UserError(f"ensemble: run '{unknown.name}' records no validation file md5 (tag val_md5); re-run its evaluate stage")
    if len(md5s) > 1:
        shown = ", ".join(f"{m.name} {m.val_md5[:8]}" for m in members)
        raise UserError(f"ensemble: members were evaluated on different validation folds ({shown}); "
                        "choose runs of one fold (--runs)")
    common = md5s.pop()
    if val_md5 is not None and val_md5 != common:
        raise UserError(f"{val_path}: md5 {val_md5[:8]} is not the members' validation file ({common[:8]}); "
                        "check out the data they were evaluated on, or choose runs of this fold")
    return common


# --------------------------------------------------------------------------- predicting

def average_model(models):
    """One Keras model whose output is the mean of the members' class probabilities (same input as theirs).

    A subclassed model rather than a functional graph: members of one architecture share a model name,
    which a functional graph refuses.
    """
    import keras
    from keras import ops

    class Average(keras.Model):
        def __init__(self, members):
            super().__init__(name="ensemble")
            self.members = list(members)

        def call(self, x):
            outputs = [member(x) for member in self.members]
            # A model saved with ``outputs=[...]`` returns a one-element list; mixed precision gives float16.
            probabilities = [ops.cast(out[0] if isinstance(out, (list, tuple)) else out, "float32") for out in outputs]
            return ops.mean(ops.stack(probabilities, axis=0), axis=0)

    return Average(models)


def predict_ensemble(models, images: np.ndarray, batch_size: int, tta: bool = False):
    """Class maps of the averaged probabilities (flip TTA on the average if ``tta``), via marsseg.predict."""
    from marsseg.predict import predict_labels

    return predict_labels(average_model(models), images, batch_size, tta).final


def logged_models(experiment_id: str) -> dict[str, str]:
    """Run id -> id of the model it logged (the latest, if several)."""
    import mlflow

    found = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    models = {}
    for model in sorted(found, key=lambda m: m.creation_timestamp or 0):
        if model.source_run_id:
            models[model.source_run_id] = model.model_id
    return models


def load_member(model_id: str, name: str):
    import mlflow.keras

    try:
        return mlflow.keras.load_model(f"models:/{model_id}")
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable artifact; MLflow raises several types
        raise UserError(f"ensemble: the model of run '{name}' could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


# --------------------------------------------------------------------------- the command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--top", type=int, default=3, metavar="K", help="the K best evaluated runs (default 3)")
    choice.add_argument("--runs", metavar="ID,ID", help="these MLflow run ids instead")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation of the averaged probabilities")
    parser.add_argument("--study", metavar="NAME", help="choose among runs tagged search.study=NAME only")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"submission CSV to write (default {OUTPUT})")
    parser.add_argument("--val", type=Path, default=VAL, help=f"validation fold (default {VAL})")
    parser.add_argument("--dataset", type=Path, default=DATASET, help=f"test images (default {DATASET})")


def run(args: argparse.Namespace) -> int:
    from marsseg.config import load_config
    from marsseg.datasets import load_labelled
    from marsseg.identity import file_md5
    from marsseg.submission import check_submission, load_test_images, write_submission

    run_ids = [part.strip() for part in args.runs.split(",") if part.strip()] if args.runs else None
    if not run_ids and args.top < 1:
        raise UserError(f"--top must be a positive integer, got {args.top}")
    cfg = load_config()
    members, model_ids = select_members(cfg, args.top, run_ids, args.study)
    # Cheap checks (files, folds) before any model is loaded.
    val = load_labelled(args.val)
    val_md5 = check_same_fold(members, file_md5(args.val), args.val)
    test_images = load_test_images(args.dataset)
    models = [load_member(model_ids[m.run_id], m.name) for m in members]

    per_image = per_image_confusion(val.masks, predict_ensemble(models, val.images, cfg.evaluate.batch_size, args.tta))
    resamples, seed = cfg.evaluate.bootstrap, cfg.seed
    metrics = {"val_images": len(val), **scores_with_intervals(per_image, resamples, seed, "val_"),
               "bootstrap_resamples": resamples, "ensemble_size": len(members)}
    gain = gain_over_best_member(per_image, members, resamples, seed)
    if gain is not None:
        metrics.update(zip(("gain_over_best_member", "gain_over_best_member_ci_low", "gain_over_best_member_ci_high"), gain))
    metrics = json_ready(metrics)

    write_submission(args.output, predict_ensemble(models, test_images, cfg.submit.batch_size, args.tta))
    summary = check_submission(args.output, expected_rows=len(test_images))
    recorded = record_ensemble(cfg.mlflow, members, args.tta, metrics, per_image, val.index,
                               {"val_md5": val_md5, "submission_md5": summary.md5})
    print(report(members, metrics, gain, args.output, summary.md5, recorded))
    return 0


def select_members(cfg, top: int, run_ids: list[str] | None, study: str | None) -> tuple[list[RunRecord], dict[str, str]]:
    """The member runs and run id -> logged model id."""
    import mlflow

    from marsseg.tracking import tracking_uri

    records = fetch_records(tracking_uri(cfg.mlflow), cfg.mlflow.experiment, study)
    model_ids = logged_models(mlflow.get_experiment_by_name(cfg.mlflow.experiment).experiment_id)
    return choose_members(records, model_ids, top, run_ids), model_ids


def gain_over_best_member(per_image: np.ndarray, members: list[RunRecord], resamples: int,
                          seed: int) -> tuple[float, float, float] | None:
    """Ensemble mIoU minus its best member's, with the paired bootstrap interval on the same images."""
    best = max(members, key=lambda m: m.val_miou)
    with tempfile.TemporaryDirectory(prefix="marsseg-ensemble-") as folder:
        best_images = download_per_image(best.run_id, Path(folder))
    if not resamples or best_images is None or len(best_images) != len(per_image):
        return None
    low, high = percentile_interval(paired_miou_difference(per_image, best_images, resamples, seed))
    return mean_iou(per_image.sum(axis=0)) - mean_iou(best_images.sum(axis=0)), low, high


def record_ensemble(mlflow_cfg, members: list[RunRecord], tta: bool, metrics: dict, per_image: np.ndarray,
                    index: np.ndarray, tags: dict) -> str | None:
    """The ensemble as an MLflow run of its own, with evaluate's per-image artifact; returns its id."""
    from marsseg.evaluation import PER_IMAGE_CONFUSION, write_per_image_confusion
    from marsseg.params import params_hash
    from marsseg.tracking import Tracker

    member_ids = [m.run_id for m in members]
    tracker = Tracker(mlflow_cfg)
    name = f"ensemble-{len(members)}{'-tta' if tta else ''}-{params_hash({'members': sorted(member_ids), 'tta': tta})}"
    tags = {KIND_TAG: "ensemble", MEMBERS_TAG: ",".join(member_ids), **tags}
    with tempfile.TemporaryDirectory(prefix="marsseg-ensemble-") as folder, tracker.start(run_name=name, tags=tags) as run:
        tracker.log_params({"ensemble.members": ",".join(member_ids), "ensemble.size": len(members), "ensemble.tta": tta})
        tracker.log_metrics({key: float(value) for key, value in metrics.items() if value is not None})
        path = Path(folder) / PER_IMAGE_CONFUSION
        write_per_image_confusion(path, per_image, index)
        tracker.log_artifact(str(path), artifact_path="evaluate")
    return run.info.run_id if run is not None else None


def report(members: list[RunRecord], metrics: dict, gain, output: Path, md5: str, run_id: str | None) -> str:
    def interval(low, high) -> str:
        return "" if low is None or high is None or math.isnan(low) or math.isnan(high) else f"[{low:.4f}, {high:.4f}]"

    width = max([36, *(len(member.name) + 2 for member in members)])
    lines = [f"  {'run':<{width}}{'val mIoU':<8}  95% CI"]
    for member in members:
        lines.append(f"  {member.name:<{width}}{member.val_miou:.4f}    "
                     f"{interval(member.metrics.get('val_miou_ci_low'), member.metrics.get('val_miou_ci_high'))}")
    lines.append(f"  {'ensemble of ' + str(len(members)):<{width}}{metrics['val_miou']:.4f}    "
                 f"{interval(metrics.get('val_miou_ci_low'), metrics.get('val_miou_ci_high'))}")
    if gain is not None:
        verdict = "not distinguishable at 95%" if gain[1] <= 0 <= gain[2] else "distinguishable at 95%"
        lines.append(f"gain over the best member (paired bootstrap, same images): {gain[0]:+.4f} "
                     f"{interval(gain[1], gain[2])}, {verdict}")
    recorded = f"MLflow run {run_id}" if run_id else "not recorded (tracking off)"
    lines.append(f"ensemble: {metrics['val_images']} validation images -> {output} (md5 {md5}, checked); {recorded}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from marsseg.cli import run_module

    run_module("marsseg.ensemble", argv)


if __name__ == "__main__":
    main()
