"""Batched prediction of class maps, optionally with horizontal-flip test-time augmentation (TTA).

The trained model maps (N,64,128,1) images as stored (grey levels 0-255; it scales them itself) to
softmax (N,64,128,5). Prediction wraps it in a small graph that takes the uint8 images, runs the model (and
its mirror image for TTA: the mean of softmax(x) and flip(softmax(flip(x)))) and returns the argmax
as uint8, so neither a float copy of the inputs nor the 5-channel probabilities ever reach NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.contracts import check_images
from marsseg.errors import UserError

WIDTH_AXIS = 2  # (N, H, W, C): a horizontal flip reverses W


@dataclass
class Predictions:
    """Class maps (N,64,128) uint8 without TTA and, if it was asked for, with it."""

    plain: np.ndarray
    tta: np.ndarray | None = None

    @property
    def final(self) -> np.ndarray:
        """The prediction to use: TTA if computed, else plain."""
        return self.tta if self.tta is not None else self.plain


def _fits(shape: tuple, expected: tuple) -> bool:
    """``shape`` matches ``expected``, a ``None`` (fully convolutional) dimension matching anything."""
    return len(shape) == len(expected) and all(d is None or d == e for d, e in zip(shape, expected))


def load_model(path: str | Path):
    """The trained model, checked to map (N,64,128,1) images to (N,64,128,5) class scores."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the train stage first")
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise UserError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    expected_in, expected_out = (*IMAGE_SHAPE, 1), (*IMAGE_SHAPE, NUM_CLASSES)
    got_in, got_out = tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
    if len(model.inputs) != 1 or len(model.outputs) != 1 or not (_fits(got_in, expected_in) and _fits(got_out, expected_out)):
        raise UserError(f"{path}: model maps {got_in} to {got_out}, expected {expected_in} to {expected_out}")
    return model


def _label_graph(model, tta: bool):
    """uint8 (N,64,128) -> argmax labels (plain and, with ``tta``, flip-averaged), inside one Keras model."""
    import keras
    from keras import ops

    def probabilities_of(x):
        # A model saved with ``outputs=[...]`` returns a one-element list when called.
        out = model(x)
        return ops.cast(out[0] if isinstance(out, (list, tuple)) else out, "float32")

    images = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="images")
    x = ops.expand_dims(ops.cast(images, "float32"), -1)  # the model scales grey levels itself
    probabilities = probabilities_of(x)
    outputs = [ops.cast(ops.argmax(probabilities, axis=-1), "uint8")]
    if tta:
        mirrored = ops.flip(probabilities_of(ops.flip(x, axis=WIDTH_AXIS)), axis=WIDTH_AXIS)
        outputs.append(ops.cast(ops.argmax((probabilities + mirrored) / 2.0, axis=-1), "uint8"))
    return keras.Model(images, outputs, name="labels")


def predict_labels(model, images: np.ndarray, batch_size: int, tta: bool = False) -> Predictions:
    """Class maps of uint8 (N,64,128) images, ``batch_size`` images per forward pass."""
    check_images(images, "predict_labels")
    if len(images) == 0:
        empty = np.zeros((0, *IMAGE_SHAPE), dtype=np.uint8)
        return Predictions(empty, empty.copy() if tta else None)
    outputs = _label_graph(model, tta).predict(images, batch_size=batch_size, verbose=0)
    if not tta:
        return Predictions(np.asarray(outputs[0] if isinstance(outputs, list) else outputs))
    return Predictions(np.asarray(outputs[0]), np.asarray(outputs[1]))
