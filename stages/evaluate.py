"""Evaluate: score the trained model on the validation fold and draw what it gets wrong.

Metrics (plain and, with ``evaluate.tta``, flip-TTA side by side) -> metrics/evaluate.json;
confusion counts, DVC plot data and figures -> reports/ (drawn from the TTA prediction if it is on).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/evaluate.py`

from marsseg.datasets import load_labelled
from marsseg.errors import UserError, stage_main
from marsseg.evaluation import validate_evaluate_params, write_reports
from marsseg.metrics import Scores, json_ready
from marsseg.params import load_params, section, seed_of
from marsseg.predict import load_model, predict_labels
from marsseg.reporting import write_json
from marsseg.tracking import add_to_training_run

MODEL = Path("models/model.keras")
VAL = Path("data/split/val.npz")
METRICS = Path("metrics/evaluate.json")
REPORTS = Path("reports")


def run(params: dict) -> dict:
    """Everything the stage produces: ``metrics`` (JSON-ready numbers) and ``artifacts`` (name -> path)."""
    settings = validate_evaluate_params(section(params, "evaluate"))
    model = load_model(MODEL)
    val = load_labelled(VAL)
    if not (val.masks != 0).any():
        raise UserError(f"{VAL}: no labelled pixel (all class 0); nothing to score")

    started = time.perf_counter()
    predictions = predict_labels(model, val.images, settings["batch_size"], settings["tta"])
    seconds = time.perf_counter() - started

    plain = Scores.of(val.masks, predictions.plain)
    metrics = {"val_images": len(val), "val_labelled_pixels": plain.labelled_pixels, **plain.as_dict("val_")}
    if predictions.tta is not None:
        with_tta = Scores.of(val.masks, predictions.tta)
        metrics.update(with_tta.as_dict("tta_val_"))
        metrics["tta_gain_miou"] = with_tta.miou - plain.miou
    metrics = json_ready(metrics)
    write_json(METRICS, metrics)

    artifacts = write_reports(REPORTS, val.images, val.masks, predictions.final, settings, seed_of(params))
    artifacts["metrics"] = METRICS
    return {"metrics": metrics, "artifacts": artifacts, "predict_seconds": seconds}


@stage_main
def main() -> dict:
    params = load_params()
    results = run(params)
    metrics = results["metrics"]
    add_to_training_run(section(params, "mlflow"), "evaluate", metrics, list(results["artifacts"].values()))
    line = f"evaluate: val mIoU {metrics['val_miou']:.4f} on {metrics['val_images']} images"
    if "tta_val_miou" in metrics:
        line += f", with flip TTA {metrics['tta_val_miou']:.4f} ({metrics['tta_gain_miou']:+.4f})"
    print(f"{line} ({results['predict_seconds']:.1f} s) -> {METRICS}, {REPORTS}/")
    return results


if __name__ == "__main__":
    main()
