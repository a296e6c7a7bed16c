"""Where training runs: deterministic ops, and the distribution strategy over replicas."""
from __future__ import annotations

import os

from marsseg.errors import UserError


def configure_determinism(seed: int) -> None:
    """Same params and seed give the same metrics on CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def distribution_strategy(name: str):
    """``default`` (one device), ``mirrored`` (all local devices) or ``multiworker`` (TF_CONFIG's cluster)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("train.strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
