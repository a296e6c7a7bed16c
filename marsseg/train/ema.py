"""Weight averaging (``train.ema``): the optimiser keeps an exponential moving average of the weights
(Keras ``use_ema``); validation, the best-epoch pick and the saved model all use the averaged weights.

Keras's own ``SwapEMAWeights`` swaps by adding and subtracting in place, which rounds the raw weights a
little at every swap; here the raw weights are copied aside and put back exactly.
"""
from __future__ import annotations

from contextlib import contextmanager

import keras

MOMENTUM = 0.99  # Keras's default: an average over roughly the last 100 steps


def averaging_optimizer(model):
    """The optimiser that holds the averages (inside a loss-scale wrapper under float16), or None."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        return None
    if not getattr(optimizer, "_model_variables_moving_average", None):
        return None  # not built yet: no step taken
    return optimizer


@contextmanager
def averaged_weights(model):
    """Inside the block the model holds the averaged weights (if there are any); after it, its own again."""
    optimizer = averaging_optimizer(model)
    if optimizer is None:
        yield
        return
    variables = optimizer._trainable_variables
    raw = [keras.ops.convert_to_numpy(variable) for variable in variables]
    for variable, average in zip(variables, optimizer._model_variables_moving_average):
        variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


class ValidateAveraged(keras.callbacks.Callback):
    """Validation inside ``fit`` sees the averaged weights."""

    def __init__(self):
        super().__init__()
        self._swap = None

    def on_test_begin(self, logs=None):
        self._swap = averaged_weights(self.model)
        self._swap.__enter__()

    def on_test_end(self, logs=None):
        if self._swap is not None:
            self._swap.__exit__(None, None, None)
            self._swap = None
