"""The learning rate over a run: ``plateau`` (today's default), ``cosine`` or ``onecycle``, each with an
optional linear warm-up over ``train.warmup_epochs``.

* plateau: ``ReduceLROnPlateau`` on the training loss (factor, patience from params); during warm-up a
  callback raises the rate linearly to ``train.learning_rate`` first.
* cosine: linear rise from 0 to the peak, then half a cosine down to 0 at the last step.
* onecycle (Smith & Topin): rise from peak / 25 to the peak, cosine down to peak / 25e4 (the optimiser's
  momentum is not cycled: Adam's beta_1 is a constant of its update).

cosine and onecycle are functions of the optimiser's step counter, which the checkpoint holds, so a
resumed run continues on the same curve.
"""
from __future__ import annotations

import math

import keras

ONECYCLE_START_DIVISOR = 25.0      # the rise starts at peak / 25 ...
ONECYCLE_END_DIVISOR = 25.0 * 1e4  # ... and the decay ends at peak / 25e4 (PyTorch's OneCycleLR defaults)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """``start`` -> ``peak`` linearly over ``warmup_steps``, then half a cosine to ``end`` at ``total_steps``."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, start: float = 0.0, end: float = 0.0):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.start, self.end = float(start), float(end)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warmup = max(self.warmup_steps, 1)
        rising = self.start + (self.peak - self.start) * ops.minimum(step + 1.0, warmup) / warmup
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        falling = self.end + (self.peak - self.end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "start": self.start, "end": self.end}


class LinearWarmup(keras.callbacks.Callback):
    """Before each of the first ``warmup_steps`` batches, set the rate to ``peak * (step + 1) / warmup_steps``.

    Reads the step from the optimiser, so it needs no state of its own to resume."""

    def __init__(self, peak: float, warmup_steps: int):
        super().__init__()
        self.peak, self.warmup_steps = float(peak), int(warmup_steps)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step < self.warmup_steps:
            self.model.optimizer.learning_rate = self.peak * (step + 1) / self.warmup_steps


def learning_rate(train, steps_per_epoch: int):
    """The optimiser's ``learning_rate``: a number (plateau) or a per-step schedule (cosine, onecycle)."""
    peak, warmup = train.learning_rate, train.warmup_epochs * steps_per_epoch
    total = train.epochs * steps_per_epoch
    if train.schedule == "cosine":
        return WarmupCosine(peak, total, warmup, start=0.0, end=0.0)
    if train.schedule == "onecycle":
        return WarmupCosine(peak, total, warmup, start=peak / ONECYCLE_START_DIVISOR, end=peak / ONECYCLE_END_DIVISOR)
    return peak


def callbacks(train, steps_per_epoch: int) -> dict[str, keras.callbacks.Callback]:
    """The callbacks the schedule needs, by name (the resume checkpoint saves their counters)."""
    if train.schedule != "plateau":
        return {}
    found = {"plateau": keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=train.plateau_factor, patience=train.plateau_patience, verbose=1)}
    if train.warmup_epochs:
        found["warmup"] = LinearWarmup(train.learning_rate, train.warmup_epochs * steps_per_epoch)
    return found
