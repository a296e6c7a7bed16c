"""tf.data input of the train stage: raw uint8 images (the model scales them) and int32 masks."""
from __future__ import annotations

import numpy as np


def epoch_orders(n_rows: int, seed: int, first_epoch: int, epochs: int) -> np.ndarray:
    """Row order for each epoch, derived from (seed, epoch) alone so a resumed run sees the same batches."""
    return np.stack([np.random.default_rng([seed, epoch]).permutation(n_rows) for epoch in range(first_epoch, epochs)])


def _pair(images, masks):
    """uint8 (N,64,128) images and masks -> the model's (N,64,128,1) input and int32 targets."""
    import tensorflow as tf

    return tf.expand_dims(images, -1), tf.cast(masks, tf.int32)


def train_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int,
                  drop_remainder: bool = False):
    """Shuffled batches for epochs ``first_epoch..epochs-1``, gathered from in-memory tensors;
    ``drop_remainder``: without each epoch's last partial batch."""
    import tensorflow as tf

    images_t, masks_t = tf.constant(images), tf.constant(masks)
    orders = epoch_orders(len(images), seed, first_epoch, epochs).astype(np.int32)
    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder))
        .map(lambda rows: _pair(tf.gather(images_t, rows), tf.gather(masks_t, rows)),
             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images, masks))
        .batch(batch_size)
        .map(_pair, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)
