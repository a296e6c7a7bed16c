"""Training: a tf.data pipeline, AdamW with plateau LR, best-by-val-mIoU checkpoint, resumable runs.

Resume: after every epoch the full training state (weights, optimizer, callback counters, history) is
written to a checkpoint folder keyed by the hash of the training data, params and code. A run that is
killed and started again with the same inputs picks up after the last completed epoch. The folder sits
outside DVC's outputs (``.cache/train/``) so DVC's run-cache keeps working.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES
from marsseg.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker")


def configure_determinism(seed: int) -> None:
    """Same params and seed give the same metrics on CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def validate_train_params(train: dict) -> dict:
    def positive(key, kind=int):
        value = train.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or kind(value) != value:
            raise UserError(f"params.yaml: train.{key} must be a positive {kind.__name__}, got {value!r}")
        return kind(value)

    checked = dict(train)
    for key in ("epochs", "batch_size", "plateau_patience", "early_stopping_patience"):
        checked[key] = positive(key)
    for key in ("learning_rate", "weight_decay"):
        checked[key] = float(train.get(key, 0))
        if checked[key] < 0 or (key == "learning_rate" and checked[key] == 0):
            raise UserError(f"params.yaml: train.{key} must be positive, got {train.get(key)!r}")
    factor = float(train.get("plateau_factor", 0.2))
    if not 0 < factor < 1:
        raise UserError(f"params.yaml: train.plateau_factor must lie in (0, 1), got {factor}")
    checked["plateau_factor"] = factor
    if train.get("strategy", "default") not in STRATEGIES:
        raise UserError(
            f"params.yaml: train.strategy '{train.get('strategy')}' is unknown; choose one of {', '.join(STRATEGIES)}"
        )
    checked["strategy"] = train.get("strategy", "default")
    return checked


def distribution_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("train.strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def use_mixed_precision_if_gpu() -> bool:
    import keras
    import tensorflow as tf

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "float32")
    return on_gpu


def epoch_orders(n_rows: int, seed: int, first_epoch: int, epochs: int) -> np.ndarray:
    """Row order for each epoch, derived from (seed, epoch) alone so a resumed run sees the same batches."""
    return np.stack([np.random.default_rng([seed, epoch]).permutation(n_rows) for epoch in range(first_epoch, epochs)])


def to_model_input(images):
    """uint8 (N,64,128) -> float32 (N,64,128,1) in [0,1]: the model's input convention."""
    import tensorflow as tf

    return tf.expand_dims(tf.cast(images, tf.float32) / 255.0, -1)


def train_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """Shuffled batches for epochs ``first_epoch..epochs-1``, gathered from in-memory tensors."""
    import tensorflow as tf

    images_t, masks_t = tf.constant(images), tf.constant(masks)
    orders = epoch_orders(len(images), seed, first_epoch, epochs).astype(np.int32)

    def gather(rows):
        return to_model_input(tf.gather(images_t, rows)), tf.cast(tf.gather(masks_t, rows), tf.int32)

    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .batch(batch_size)
        .map(lambda x, y: (to_model_input(x), tf.cast(y, tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


def iou_metrics():
    """Mean IoU over classes 1-4 plus each class's IoU, class-0 pixels ignored (the competition metric)."""
    import keras

    common = dict(num_classes=NUM_CLASSES, ignore_class=0, sparse_y_true=True, sparse_y_pred=False)
    # keras.metrics.IoU averages over target_class_ids: with 1-4 that is the competition mIoU.
    metrics = [keras.metrics.IoU(target_class_ids=list(SCORED_CLASSES), name="miou", **common)]
    metrics += [keras.metrics.IoU(target_class_ids=[c], name=f"iou_{CLASS_NAMES[c]}", **common) for c in SCORED_CLASSES]
    return metrics


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

    def save(self, model, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a kill mid-save never leaves a torn checkpoint.
        tmp_weights = self.folder / "last.tmp.weights.h5"
        model.save_weights(tmp_weights)
        os.replace(tmp_weights, self.last_weights)
        tmp_state = self.folder / "state.tmp.json"
        tmp_state.write_text(json.dumps(state))
        os.replace(tmp_state, self.state_file)

    def save_best(self, model) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        model.save_weights(self.best_weights)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _callback_state(callback) -> dict:
    return {key: (None if getattr(callback, key) is None else float(getattr(callback, key)))
            for key in ("wait", "best", "cooldown_counter") if hasattr(callback, key)}


def _restore_callback_state(callback, saved: dict) -> None:
    for key, value in saved.items():
        setattr(callback, key, int(value) if key in ("wait", "cooldown_counter") else value)


def make_checkpoint_callback(state: ResumableState, watched: dict, resumed: dict | None, on_epoch=None):
    """Saves the full state after each epoch and restores callback counters when resuming.

    Listed last among the callbacks so that its ``on_train_begin`` runs after theirs (which reset).
    """
    import keras

    class Checkpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = list(resumed["history"]) if resumed else []
            self.best_miou = resumed["best_miou"] if resumed else -1.0
            self.best_epoch = resumed["best_epoch"] if resumed else -1

        def on_train_begin(self, logs=None):
            if resumed:
                for name, callback in watched.items():
                    _restore_callback_state(callback, resumed["callbacks"][name])

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.history.append(row)
            if row.get("val_miou", -1.0) > self.best_miou:
                self.best_miou, self.best_epoch = row["val_miou"], epoch + 1
                state.save_best(self.model)
            state.save(self.model, {
                "epochs_done": epoch + 1,
                "history": self.history,
                "best_miou": self.best_miou,
                "best_epoch": self.best_epoch,
                "callbacks": {name: _callback_state(cb) for name, cb in watched.items()},
            })
            if on_epoch:
                on_epoch(row)

    return Checkpoint()


@dataclass
class TrainResult:
    model: object              # the best-by-val-mIoU model, uncompiled, ready to save
    history: list[dict]
    best_val_miou: float
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int
    parameters: int
    seconds: float


def train(model_builder, loss, train_set, val_set, train_params: dict, seed: int, checkpoint: ResumableState,
          on_epoch=None) -> TrainResult:
    """Fit the model built by ``model_builder()``; resume from ``checkpoint`` if it holds a run."""
    import keras

    started = time.perf_counter()
    strategy = distribution_strategy(train_params["strategy"])
    print(f"train: strategy '{train_params['strategy']}' over {strategy.num_replicas_in_sync} replica(s)")
    with strategy.scope():
        model = model_builder()
        optimizer = keras.optimizers.AdamW(
            learning_rate=train_params["learning_rate"], weight_decay=train_params["weight_decay"])
        model.compile(optimizer=optimizer, loss=loss, metrics=iou_metrics())

    resumed = checkpoint.load()
    first_epoch = 0
    if resumed:
        # Build optimizer variables before loading their saved values.
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint.last_weights)
        first_epoch = int(resumed["epochs_done"])
        print(f"train: resuming from checkpoint after epoch {first_epoch} ({checkpoint.folder})")

    epochs = train_params["epochs"]
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=train_params["plateau_factor"], patience=train_params["plateau_patience"], verbose=1)
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_miou", mode="max", patience=train_params["early_stopping_patience"], verbose=1)
    saver = make_checkpoint_callback(checkpoint, {"plateau": plateau, "stopping": stopping}, resumed, on_epoch)

    if first_epoch < epochs and not (resumed and resumed.get("stopped_early")):
        batch_size = train_params["batch_size"]
        model.fit(
            train_dataset(train_set.images, train_set.masks, batch_size, seed, first_epoch, epochs),
            steps_per_epoch=-(-len(train_set) // batch_size),
            shuffle=False,  # the dataset already holds each epoch's seeded order
            validation_data=eval_dataset(val_set.images, val_set.masks, batch_size),
            initial_epoch=first_epoch,
            epochs=epochs,
            callbacks=[plateau, stopping, saver],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    if not saver.history:
        raise UserError("training ran no epoch; check train.epochs")
    if checkpoint.best_weights.is_file():
        model.load_weights(checkpoint.best_weights)
    # Uncompiled, so it loads without the custom loss; single tensors in and out, not one-element lists.
    best = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    return TrainResult(
        model=best,
        history=saver.history,
        best_val_miou=float(saver.best_miou),
        best_epoch=int(saver.best_epoch),
        epochs_run=len(saver.history),
        resumed_from_epoch=first_epoch,
        parameters=int(model.count_params()),
        seconds=time.perf_counter() - started,
    )
