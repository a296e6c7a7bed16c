"""The fit: AdamW (optionally weight-averaged), the configured learning-rate schedule, early stopping on
val mIoU, a checkpoint after every epoch, and the best (or, with ``train.keep: last``, the last) epoch's
weights as the result."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES
from marsseg.errors import UserError
from marsseg.train import data, ema, schedule
from marsseg.train.resume import Checkpoint, ResumableState, stopped_early
from marsseg.train.strategy import distribution_strategy


def iou_metrics():
    """Mean IoU over classes 1-4 plus each class's IoU, class-0 pixels ignored (the competition metric)."""
    import keras

    common = dict(num_classes=NUM_CLASSES, ignore_class=0, sparse_y_true=True, sparse_y_pred=False)
    # keras.metrics.IoU averages over target_class_ids: with 1-4 that is the competition mIoU.
    metrics = [keras.metrics.IoU(target_class_ids=list(SCORED_CLASSES), name="miou", **common)]
    metrics += [keras.metrics.IoU(target_class_ids=[c], name=f"iou_{CLASS_NAMES[c]}", **common) for c in SCORED_CLASSES]
    return metrics


def optimizer(train, steps_per_epoch: int):
    import keras

    return keras.optimizers.AdamW(
        learning_rate=schedule.learning_rate(train, steps_per_epoch), weight_decay=train.weight_decay,
        use_ema=train.ema, ema_momentum=ema.MOMENTUM)


def compiled_model(model_builder, loss, train, steps_per_epoch: int, metrics=None):
    """``model_builder()``'s model compiled with the configured optimizer, whose variables (the averages
    included) already exist: made inside the first traced train step instead, they make TensorFlow trace
    that step twice, half of a tiny run's time; and a resumed run loads its saved values into them."""
    model = model_builder()
    model.compile(optimizer=optimizer(train, steps_per_epoch), loss=loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)
    return model


def inference_model(model):
    """What is saved: the same layers uncompiled, so plain ``keras.models.load_model`` reads it without the
    marsseg loss; single tensors in and out, not one-element lists."""
    import keras

    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


@dataclass
class TrainResult:
    model: object              # the kept epoch's model (train.keep), uncompiled, ready to save
    history: list[dict]
    best_val_miou: float
    best_epoch: int
    kept_val_miou: float       # the kept epoch's val mIoU: the best one's unless train.keep is 'last'
    kept_epoch: int
    epochs_run: int
    resumed_from_epoch: int
    parameters: int
    seconds: float

    @classmethod
    def of(cls, model, saver, resumed_from_epoch: int, started: float) -> "TrainResult":
        """The result of a finished run whose ``model`` holds the kept epoch's weights, as ``saver`` recorded it."""
        return cls(model=inference_model(model), history=saver.history, best_val_miou=float(saver.best_miou),
                   best_epoch=int(saver.best_epoch), kept_val_miou=float(saver.kept["val_miou"]),
                   kept_epoch=int(saver.kept["epoch"]), epochs_run=len(saver.history),
                   resumed_from_epoch=resumed_from_epoch, parameters=int(model.count_params()),
                   seconds=time.perf_counter() - started)


def train(model_builder, loss, train_set, val_set, train, seed: int, checkpoint: ResumableState,
          on_epoch=None) -> TrainResult:
    """Fit the model built by ``model_builder()`` under the ``train`` config; resume from ``checkpoint``
    if it holds a run."""
    import keras

    if train.strategy == "multiworker":  # model.fit cannot run under it: an explicit distributed loop
        from marsseg.train import distributed

        return distributed.train(model_builder, loss, train_set, val_set, train, seed, checkpoint, on_epoch)
    started = time.perf_counter()
    strategy = distribution_strategy(train.strategy)
    print(f"train: strategy '{train.strategy}' over {strategy.num_replicas_in_sync} replica(s)")
    steps = data.steps_per_epoch(len(train_set), train.batch_size)
    with strategy.scope():
        model = compiled_model(model_builder, loss, train, steps, metrics=iou_metrics())

    resumed = checkpoint.load()
    first_epoch = 0
    if resumed:
        model.load_weights(checkpoint.last_weights)
        first_epoch = int(resumed["epochs_done"])
        print(f"train: resuming from checkpoint after epoch {first_epoch} ({checkpoint.folder})")

    stopping = keras.callbacks.EarlyStopping(
        monitor="val_miou", mode="max", patience=train.early_stopping_patience, verbose=1)
    watched = {**schedule.callbacks(train, steps), "stopping": stopping}
    saver = Checkpoint(checkpoint, watched, resumed, on_epoch, keep_last=train.keep == "last")
    averaging = [ema.ValidateAveraged()] if train.ema else []

    if first_epoch < train.epochs and not stopped_early(resumed, train.early_stopping_patience):
        model.fit(
            data.train_dataset(train_set.images, train_set.masks, train.batch_size, seed, first_epoch, train.epochs),
            steps_per_epoch=steps,
            shuffle=False,  # the dataset already holds each epoch's seeded order
            validation_data=data.eval_dataset(val_set.images, val_set.masks, train.batch_size),
            initial_epoch=first_epoch,
            epochs=train.epochs,
            callbacks=[*averaging, *watched.values(), saver],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    if not saver.history:
        raise UserError("training ran no epoch; check train.epochs")
    if checkpoint.best_weights.is_file():
        model.load_weights(checkpoint.best_weights)
    return TrainResult.of(model, saver, resumed_from_epoch=first_epoch, started=started)
