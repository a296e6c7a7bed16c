"""Submit: predict the competition test images and write a checked submission CSV."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/submit.py`

from marsseg.errors import stage_main
from marsseg.metrics import json_ready
from marsseg.params import load_params, section
from marsseg.predict import check_prediction_params, load_model, predict_labels
from marsseg.reporting import write_json
from marsseg.submission import check_submission, load_test_images, write_submission
from marsseg.tracking import add_to_training_run

MODEL = Path("models/model.keras")
DATASET = Path("data/clean/dataset.npz")
SUBMISSION = Path("submission/submission.csv")
METRICS = Path("metrics/submit.json")


def run(params: dict) -> dict:
    """Predict, write, re-check the written file; returns ``metrics`` and ``artifacts``."""
    settings = check_prediction_params(section(params, "submit"), "submit")
    model = load_model(MODEL)
    images = load_test_images(DATASET)

    started = time.perf_counter()
    labels = predict_labels(model, images, settings["batch_size"], settings["tta"]).final
    predicted = time.perf_counter()
    write_submission(SUBMISSION, labels)
    written = time.perf_counter()
    # Read back what is on disk: the file handed in is checked, not the array it came from.
    summary = check_submission(SUBMISSION, expected_rows=len(images))
    checked = time.perf_counter()

    metrics = json_ready({
        "rows": summary.rows,
        "tta": settings["tta"],
        "class_fraction": summary.class_fractions,
        "predict_seconds": predicted - started,
        "write_seconds": written - predicted,
        "check_seconds": checked - written,
        "seconds": checked - started,
    })
    metrics["md5"] = summary.md5  # a string: equal md5 across runs means an identical file
    write_json(METRICS, metrics)
    return {"metrics": metrics, "artifacts": {"submission": SUBMISSION, "metrics": METRICS}}


@stage_main
def main() -> dict:
    params = load_params()
    results = run(params)
    metrics = results["metrics"]
    # The CSV itself is large (160 MB for the course's test set): MLflow gets its hash, not a copy.
    add_to_training_run(section(params, "mlflow"), "submit", metrics, [METRICS], tags={"submission_md5": metrics["md5"]})
    print(f"submit: {metrics['rows']} rows -> {SUBMISSION} (md5 {metrics['md5']}, checked, {metrics['seconds']:.1f} s)")
    return results


if __name__ == "__main__":
    main()
