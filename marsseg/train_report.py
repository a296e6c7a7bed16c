"""What the train stage leaves behind: the model, its history, metrics, pictures, and the MLflow record."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from marsseg.reporting import write_json
from marsseg.training import ResumableState, TrainResult

RUN_ID_FILE = "mlflow_run_id"
METRICS_FILE = Path("metrics/train.json")


def resumable_run_id(checkpoint: ResumableState) -> str | None:
    """A killed run logs on into its own MLflow run when resumed, instead of leaving a stray one."""
    path = checkpoint.folder / RUN_ID_FILE
    return path.read_text().strip() if checkpoint.load() and path.is_file() else None


def remember_run_id(checkpoint: ResumableState, run) -> None:
    if run is not None:
        checkpoint.folder.mkdir(parents=True, exist_ok=True)
        (checkpoint.folder / RUN_ID_FILE).write_text(run.info.run_id)


def epoch_metrics(row: dict) -> dict[str, float]:
    return {key: value for key, value in row.items() if key != "epoch"}


def plot_history(history: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(history.epoch, history["loss"], label="train")
    if "val_loss" in history:
        axes[0].plot(history.epoch, history["val_loss"], label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    for column, label in (("miou", "train"), ("val_miou", "validation")):
        if column in history:
            axes[1].plot(history.epoch, history[column], label=label)
    axes[1].set_title("mean IoU, classes 1-4")
    axes[1].legend()
    axes[2].plot(history.epoch, history["learning_rate"])
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def model_summary(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def write_train_outputs(result: TrainResult, model_dir: Path, on_gpu: bool) -> dict:
    model_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(model_dir / "model.keras")
    history = pd.DataFrame(result.history)
    history.to_csv(model_dir / "history.csv", index=False, float_format="%.6g")
    plot_history(history, model_dir / "training_curves.png")
    (model_dir / "summary.txt").write_text(model_summary(result.model))
    summary = {
        "best_val_miou": round(result.best_val_miou, 6),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "parameters": result.parameters,
        "training_seconds": round(result.seconds, 1),
        "resumed_from_epoch": result.resumed_from_epoch,
        "gpu": on_gpu,
    }
    write_json(METRICS_FILE, summary)
    return summary


def log_train_run(tracker, result: TrainResult, summary: dict, model_dir: Path) -> None:
    if not tracker.enabled:
        return
    tracker.log_metrics({k: float(v) for k, v in summary.items()})
    for name in ("history.csv", "training_curves.png", "summary.txt"):
        tracker.log_artifact(str(model_dir / name))
    tracker.log_keras_model(result.model)
