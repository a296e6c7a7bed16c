"""``train.strategy: multiworker``: the fit as an explicit distributed loop.

Keras 3's ``model.fit`` cannot run under ``MultiWorkerMirroredStrategy`` ("Attempt to convert a value
(PerReplica...) to a Tensor", keras-team/keras#20585), so here each step is ``strategy.run`` of a replica
step whose gradients the optimiser all-reduces across the workers, and every number a decision depends on
(the training loss, the validation confusion matrix) is all-reduced too: all workers see the same logs,
so the schedule and early stopping decide the same on every worker and none waits for a step its peers
skip. The same Keras callbacks as ``loop.train`` (plateau, warm-up, early stopping, the best-epoch
checkpoint) are driven by hand.

Differences from the single-process fit:
* ``train.batch_size`` is the global batch, split over all replicas of all workers; each epoch's last
  partial batch is dropped (a replica with no images would put NaN into the batch-norm statistics).
* validation reports ``val_miou`` and the class IoUs, not ``val_loss`` or training IoUs.
* no resume: a killed run starts again from epoch 1 (the workers would have to agree on one checkpoint).
* not ``train.ema`` nor float16 (the loss scaling Keras adds in ``fit``): refused by the config.
"""
from __future__ import annotations

import time

import numpy as np

from marsseg import NUM_CLASSES
from marsseg.errors import UserError
from marsseg.train import data, schedule
from marsseg.train.resume import Checkpoint, ResumableState
from marsseg.train.strategy import distribution_strategy


class BestOnly(ResumableState):
    """Keeps the best epoch's weights but no resumable state: a rerun never picks up a multiworker run."""

    def save(self, model, state: dict) -> None:
        pass


def check_batches(batch_size: int, n_train: int, replicas: int) -> int:
    """Steps per epoch (whole global batches); refuses a batch that leaves a replica without images."""
    if batch_size < replicas:
        raise UserError(f"train.batch_size ({batch_size}) must be at least the {replicas} replicas of the "
                        "multiworker cluster: it is the global batch, split over all of them")
    if n_train < batch_size:
        raise UserError(f"train.batch_size ({batch_size}) exceeds the {n_train} training images: multiworker "
                        "training drops each epoch's partial batch, so it would run no step")
    return n_train // batch_size


def validation_logs(matrix: np.ndarray, iou_metrics: list) -> dict[str, float]:
    """``val_miou`` and the class IoUs from the all-reduced confusion matrix, by the very metrics
    (``loop.iou_metrics``) the single-process fit validates with: their confusion matrix is set, not fed."""
    logs = {}
    for metric in iou_metrics:
        metric.total_cm.assign(matrix.astype(metric.total_cm.dtype))
        logs[f"val_{metric.name}"] = float(metric.result())
    return logs


def train(model_builder, loss, train_set, val_set, train, seed: int, checkpoint: ResumableState, on_epoch=None):
    import keras
    import tensorflow as tf

    from marsseg.train.loop import TrainResult, compiled_model, iou_metrics

    started = time.perf_counter()
    strategy = distribution_strategy("multiworker")
    replicas = strategy.num_replicas_in_sync
    print(f"train: strategy 'multiworker' over {replicas} replica(s)")
    steps = check_batches(train.batch_size, len(train_set), replicas)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        raise UserError(f"train.precision '{train.precision}' resolves to float16 here, which train.strategy "
                        "'multiworker' does not support (no loss scaling): use float32 or bfloat16")
    best = BestOnly(checkpoint.folder)

    with strategy.scope():
        model = compiled_model(model_builder, loss, train, steps)

    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = iter(strategy.experimental_distribute_dataset(data.train_dataset(
        train_set.images, train_set.masks, train.batch_size, seed, 0, train.epochs, drop_remainder=True,
    ).with_options(sharding)))
    val_batches = strategy.experimental_distribute_dataset(
        data.eval_dataset(val_set.images, val_set.masks, train.batch_size).with_options(sharding))

    def replica_step(images, masks):
        count = tf.cast(tf.shape(images)[0], tf.float32)
        share = count / tf.distribute.get_replica_context().all_reduce("SUM", count)
        with tf.GradientTape() as tape:
            predicted = model(images, training=True)
            # This replica's share of the global batch mean; regularisation split evenly over replicas.
            value = tf.cast(loss(masks, predicted), tf.float32) * share
            if model.losses:
                value += tf.add_n([tf.cast(term, tf.float32) for term in model.losses]) / replicas
        gradients = tape.gradient(value, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return value

    def replica_confusion(images, masks):
        predicted = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
        labelled = tf.cast(tf.reshape(masks, [-1]) != 0, tf.float32)  # class 0 is not scored
        # float32 counts are exact per batch (far below 2**24 pixels); batches are summed in int64 below.
        return tf.math.confusion_matrix(tf.reshape(masks, [-1]), tf.reshape(predicted, [-1]),
                                        num_classes=NUM_CLASSES, weights=labelled, dtype=tf.float32)

    @tf.function
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    @tf.function
    def confusion_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_confusion, args=batch), axis=None)

    validation = iou_metrics()
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_miou", mode="max", patience=train.early_stopping_patience, verbose=1)
    watched = {**schedule.callbacks(train, steps), "stopping": stopping}
    saver = Checkpoint(best, watched, None, on_epoch, keep_last=train.keep == "last")
    callbacks = keras.callbacks.CallbackList([*watched.values(), saver], model=model)

    callbacks.on_train_begin()
    for epoch in range(train.epochs):
        callbacks.on_epoch_begin(epoch)
        total = 0.0
        for step in range(steps):
            callbacks.on_train_batch_begin(step)
            total += float(train_step(next(batches)))
        matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        for batch in val_batches:
            matrix += confusion_step(batch).numpy().astype(np.int64)
        logs = {"loss": total / steps, **validation_logs(matrix, validation)}
        print(f"epoch {epoch + 1}/{train.epochs}: loss {logs['loss']:.4f}, val_miou {logs['val_miou']:.4f}")
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()

    model.load_weights(best.best_weights)
    return TrainResult.of(model, saver, resumed_from_epoch=0, started=started)
