"""Submit: predict the competition test images and write a checked submission CSV.

metrics/submit.json: the file's rows, md5 and predicted class fractions, each fraction with a 95% bootstrap
interval over the test images (``submit.bootstrap`` resamples, seeded): a model retrained on another CPU
predicts somewhat other fractions, and CI tells noise from a change by these intervals.
"""
import time
from pathlib import Path

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg.errors import stage_main
from marsseg.metrics import class_fraction_intervals, json_ready
from marsseg.config import load_config
from marsseg.predict import load_model, predict_labels
from marsseg.reporting import write_metrics
from marsseg.submission import check_submission, load_test_images, write_submission
from marsseg.tracking import add_to_training_run

MODEL = Path("models/model.keras")
DATASET = Path("data/clean/dataset.npz")
SUBMISSION = Path("submission/submission.csv")
METRICS = Path("metrics/submit.json")


def run(cfg) -> dict:
    """Predict, write, re-check the written file; returns ``metrics`` and ``artifacts``."""
    settings = cfg.submit
    model = load_model(MODEL)
    images = load_test_images(DATASET)

    started = time.perf_counter()
    labels = predict_labels(model, images, settings.batch_size, settings.tta).final
    predicted = time.perf_counter()
    write_submission(SUBMISSION, labels)
    written = time.perf_counter()
    # Read back what is on disk: the file handed in is checked, not the array it came from.
    summary = check_submission(SUBMISSION, expected_rows=len(images))
    checked = time.perf_counter()

    metrics = json_ready({
        "rows": summary.rows,
        "tta": settings.tta,
        "class_fraction": summary.class_fractions,
        **class_fraction_intervals(labels, settings.bootstrap, cfg.seed),
        "predict_seconds": predicted - started,
        "write_seconds": written - predicted,
        "check_seconds": checked - written,
        "seconds": checked - started,
    })
    metrics["md5"] = summary.md5  # a string: equal md5 across runs means an identical file
    write_metrics("submit", metrics)  # the seconds go to logs/submit.json, MLflow gets them all
    return {"metrics": metrics, "artifacts": {"submission": SUBMISSION, "metrics": METRICS}}


@stage_main
def main() -> dict:
    cfg = load_config()
    results = run(cfg)
    metrics = results["metrics"]
    # The CSV itself is large (160 MB for the course's test set): MLflow gets its hash, not a copy.
    add_to_training_run(cfg.mlflow, "submit", metrics, [METRICS], tags={"submission_md5": metrics["md5"]})
    print(f"submit: {metrics['rows']} rows -> {SUBMISSION} (md5 {metrics['md5']}, checked, {metrics['seconds']:.1f} s)")
    return results


if __name__ == "__main__":
    main()
