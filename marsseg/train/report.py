"""What the train stage leaves behind: the model, its history, metrics, pictures, and the MLflow record."""
from __future__ import annotations

import io as text_io
from pathlib import Path

import pandas as pd

from marsseg import io
from marsseg.plots import plot_history
from marsseg.reporting import write_metrics
from marsseg.train.loop import TrainResult

def epoch_metrics(row: dict) -> dict[str, float]:
    # ``epoch_`` prefix: the unprefixed names (val_miou, ...) are the evaluated model's, logged by evaluate.
    return {f"epoch_{key}": value for key, value in row.items() if key != "epoch"}


def epoch_logger(tracker):
    """``on_epoch`` for the fit: each epoch's row to MLflow, at its epoch number."""
    return lambda row: tracker.log_metrics(epoch_metrics(row), step=row["epoch"])


def model_summary(model) -> str:
    buffer = text_io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def write_train_outputs(result: TrainResult, model_dir: Path, policy: str, on_gpu: bool,
                        metrics_name: str | None = "train") -> dict:
    """The model and its history into ``model_dir``; the summary into metrics/ and logs/ unless
    ``metrics_name`` is None (a multiworker run's non-chief worker, which writes no pipeline output)."""
    io.save_model(result.model, model_dir / "model.keras")
    history = pd.DataFrame(result.history)
    io.write_csv(model_dir / "history.csv", history, float_format="%.6g")
    plot_history(model_dir / "training_curves.png", history)
    io.write_text(model_dir / "summary.txt", model_summary(result.model))
    summary = {
        "best_val_miou": round(result.best_val_miou, 6),
        "best_epoch": result.best_epoch,
        "kept_epoch": result.kept_epoch,  # train.keep: the best epoch, or the last
        "epochs_run": result.epochs_run,
        "parameters": result.parameters,
        "training_seconds": round(result.seconds, 1),
        "resumed_from_epoch": result.resumed_from_epoch,
        "gpu": on_gpu,
        "precision": policy,  # what train.precision resolved to on this machine
    }
    if metrics_name is not None:
        write_metrics(metrics_name, summary)  # seconds and resume point -> logs/train.json
    return summary


def log_train_run(tracker, result: TrainResult, summary: dict, model_dir: Path) -> None:
    if not tracker.enabled:
        return
    tracker.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    for name in ("history.csv", "training_curves.png", "summary.txt"):
        tracker.log_artifact(str(model_dir / name))
    tracker.log_keras_model(result.model)
