"""Resuming a killed run: its checkpoint folder and the callback that fills it after every epoch.

After every epoch the full training state (weights and optimiser variables, callback counters, history)
is written to a folder keyed by the hash of the training data, params and code (``identity.RunIdentity``).
A run that is killed and started again with the same inputs picks up after the last completed epoch, and
logs on into its own MLflow run. The folder sits outside DVC's outputs (``.cache/train/``) so DVC's
run-cache keeps working.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras

from marsseg import io
from marsseg.train.ema import averaged_weights

RUN_ID_FILE = "mlflow_run_id"
COUNTERS = ("wait", "best", "cooldown_counter")  # what Keras callbacks reset in on_train_begin


class ResumableState:
    """The checkpoint folder of one training run: last epoch's full state and the best weights."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state_file = folder / "state.json"
        self.last_weights = folder / "last.weights.h5"
        self.best_weights = folder / "best.weights.h5"

    def load(self) -> dict | None:
        if not (self.state_file.is_file() and self.last_weights.is_file()):
            return None
        return json.loads(self.state_file.read_text())

    def _save_weights(self, model, path: Path) -> None:
        # Keras insists on a .weights.h5 name; write-then-rename so a kill never leaves a torn file.
        tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
        model.save_weights(tmp)
        os.replace(tmp, path)

    def save(self, model, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(model, self.last_weights)
        io.write_json(self.state_file, state)  # after the weights: a state file always has its weights

    def save_best(self, model) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(model, self.best_weights)

    def run_id(self) -> str | None:
        """The MLflow run of the run being resumed, if any."""
        path = self.folder / RUN_ID_FILE
        return path.read_text().strip() if self.load() and path.is_file() else None

    def remember_run_id(self, run) -> None:
        if run is not None:
            io.write_text(self.folder / RUN_ID_FILE, run.info.run_id)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def callback_state(callback) -> dict:
    return {key: (None if getattr(callback, key) is None else float(getattr(callback, key)))
            for key in COUNTERS if hasattr(callback, key)}


def restore_callback_state(callback, saved: dict) -> None:
    for key, value in saved.items():
        setattr(callback, key, int(value) if key in ("wait", "cooldown_counter") else value)


class Checkpoint(keras.callbacks.Callback):
    """Saves the full state after each epoch, the kept weights (the averaged ones under ``train.ema``):
    the best-by-val-mIoU epoch's, or with ``keep_last`` every epoch's; and restores the other callbacks'
    counters when resuming.

    List it last among the callbacks so that its ``on_train_begin`` runs after theirs (which reset).
    """

    def __init__(self, state: ResumableState, watched: dict, resumed: dict | None, on_epoch=None,
                 keep_last: bool = False):
        super().__init__()
        self.state, self.watched, self.resumed, self.on_epoch = state, watched, resumed, on_epoch
        self.keep_last = keep_last
        self.history = list(resumed["history"]) if resumed else []
        self.best_miou = resumed["best_miou"] if resumed else -1.0
        self.best_epoch = resumed["best_epoch"] if resumed else -1

    def on_train_begin(self, logs=None):
        if self.resumed:
            for name, callback in self.watched.items():
                restore_callback_state(callback, self.resumed["callbacks"].get(name, {}))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.history.append(row)
        improved = row.get("val_miou", -1.0) > self.best_miou
        if improved:
            self.best_miou, self.best_epoch = row["val_miou"], epoch + 1
        if improved or self.keep_last:
            with averaged_weights(self.model):
                self.state.save_best(self.model)
        self.state.save(self.model, {
            "epochs_done": epoch + 1,
            "history": self.history,
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "callbacks": {name: callback_state(cb) for name, cb in self.watched.items()},
        })
        if self.on_epoch:
            self.on_epoch(row)

    @property
    def kept(self) -> dict:
        """The history row of the epoch whose weights were kept."""
        return self.history[-1] if self.keep_last else self.history[self.best_epoch - 1]


def stopped_early(resumed: dict | None, patience: int) -> bool:
    """A run killed after early stopping ended it but before its outputs were written: nothing to fit."""
    wait = ((resumed or {}).get("callbacks", {}).get("stopping") or {}).get("wait")
    return wait is not None and wait >= patience
