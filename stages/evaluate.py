"""Evaluate: score the trained model on the validation fold and draw what it gets wrong.

Metrics (plain and, with ``evaluate.tta``, flip-TTA side by side, and TTA's gain), each with a 95% bootstrap
interval over validation images (``evaluate.bootstrap`` resamples) -> metrics/evaluate.json; per-image confusion matrices
(for paired comparisons of runs), confusion counts, DVC plot data and figures -> reports/ (figures drawn
from the TTA prediction if it is on). `--fold i` (the cv_evaluate stages): cross-validation fold i.
"""
import time

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg.config import load_config
from marsseg.datasets import load_labelled
from marsseg.errors import UserError, stage_main
from marsseg.evaluation import PER_IMAGE_CONFUSION, write_per_image_confusion, write_reports
from marsseg.identity import file_md5
from marsseg.layout import Layout, fold_layout
from marsseg.metrics import (background_share, json_ready, paired_miou_difference, per_image_confusion,
                             percentile_interval, scores_with_intervals)
from marsseg.predict import load_model, predict_labels
from marsseg.reporting import METRICS_DIR, write_metrics
from marsseg.tracking import add_to_training_run


def run(cfg, layout: Layout) -> dict:
    """Everything the stage produces: ``metrics`` (JSON-ready numbers) and ``artifacts`` (name -> path)."""
    settings = cfg.evaluate
    model = load_model(layout.model)
    val = load_labelled(layout.val)
    if not (val.masks != 0).any():
        raise UserError(f"{layout.val}: no labelled pixel (all class 0); nothing to score")

    started = time.perf_counter()
    predictions = predict_labels(model, val.images, settings.batch_size, settings.tta)
    seconds = time.perf_counter() - started

    seed, resamples = cfg.seed, settings.bootstrap
    # Per image once; the totals and every bootstrap resample are sums of these.
    plain_images = per_image_confusion(val.masks, predictions.plain)
    metrics = {"val_images": len(val), "val_labelled_pixels": int(plain_images[:, 1:].sum()),
               **scores_with_intervals(plain_images, resamples, seed, "val_"), "bootstrap_resamples": resamples,
               # A scored pixel predicted as class 0 is always a miss: how much an argmax over 1-4 could gain.
               "val_labelled_predicted_background": background_share(plain_images.sum(axis=0))}
    tta_images = None
    if predictions.tta is not None:
        tta_images = per_image_confusion(val.masks, predictions.tta)
        metrics.update(scores_with_intervals(tta_images, resamples, seed, "tta_val_"))
        metrics["tta_gain_miou"] = metrics["tta_val_miou"] - metrics["val_miou"]
        if resamples:  # paired: both predictions scored on the same resampled images
            gain = paired_miou_difference(tta_images, plain_images, resamples, seed)
            metrics["tta_gain_miou_ci_low"], metrics["tta_gain_miou_ci_high"] = percentile_interval(gain)
    metrics = json_ready(metrics)
    metrics_name = layout.metrics_name("evaluate")
    write_metrics(metrics_name, metrics, {"predict_seconds": round(seconds, 3)})

    reports = layout.reports
    artifacts = write_reports(reports, val.images, val.masks, predictions.final, cfg.group_dict("evaluate"), seed)
    artifacts[PER_IMAGE_CONFUSION] = reports / PER_IMAGE_CONFUSION
    write_per_image_confusion(artifacts[PER_IMAGE_CONFUSION], plain_images, val.index, tta_images)
    artifacts["metrics"] = METRICS_DIR / f"{metrics_name}.json"
    return {"metrics": metrics, "artifacts": artifacts, "predict_seconds": seconds, "val_md5": file_md5(layout.val)}


def interval_text(metrics: dict, name: str) -> str:
    """`` [95% CI low, high]`` of a metric's bootstrap interval, or nothing when it is off or undefined."""
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    return f" [95% CI {low:.4f}, {high:.4f}]" if low is not None and high is not None else ""


@stage_main
def main() -> dict:
    layout = fold_layout(__doc__.splitlines()[0])
    cfg = load_config()
    results = run(cfg, layout)
    metrics = results["metrics"]
    # val_md5 names the validation images: runs are compared pairwise (and ensembled) only on the same ones.
    add_to_training_run(cfg.mlflow, "evaluate", metrics, list(results["artifacts"].values()),
                        tags={"val_md5": results["val_md5"]}, model_path=layout.model)
    line = f"evaluate: val mIoU {metrics['val_miou']:.4f}{interval_text(metrics, 'val_miou')} on {metrics['val_images']} images"
    if "tta_val_miou" in metrics:
        line += (f", with flip TTA {metrics['tta_val_miou']:.4f}{interval_text(metrics, 'tta_val_miou')} "
                 f"({metrics['tta_gain_miou']:+.4f}{interval_text(metrics, 'tta_gain_miou')})")
    print(f"{line} ({results['predict_seconds']:.1f} s) -> {results['artifacts']['metrics']}, {layout.reports}/")
    return results


if __name__ == "__main__":
    main()
