"""Segmentation losses: a registry of factories plus '+'-joined weighted sums (``focal+dice``).

Every loss takes ``y_true`` an integer class map (N, H, W) (or (N, H, W, 1)) and ``y_pred``
softmax probabilities (N, H, W, C), and returns a scalar over the whole batch. Class 0 is
"unlabelled" and the metric ignores it, so focal, dice and tversky drop class-0 pixels;
weighted_ce does the same through a class weight of 0; plain ce keeps every pixel.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from keras import ops

from marsseg import NUM_CLASSES
from marsseg.errors import UserError
from marsseg.params import reject_unknown_keys

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before the log

DEFAULTS: dict[str, Any] = {
    "name": "weighted_ce",
    "class_weights": [0.0, 0.8, 0.9, 0.9, 5.0],
    "focal_gamma": 2.0,
    "focal_weighted": False,  # focal: weight pixels by class_weights as well
    "tversky_alpha": 0.3,  # weight of false positives
    "tversky_beta": 0.7,  # weight of false negatives
    "smooth": 1.0,  # dice / tversky smoothing
    "sum_weights": None,  # one weight per '+'-joined term; None: all 1
}

Loss = Callable[[Any, Any], Any]


def _prepare(y_true, y_pred):
    """-> (one-hot y_true float32, probabilities float32, labelled-pixel mask (N,H,W,1))."""
    num_classes = y_pred.shape[-1]
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    onehot = ops.one_hot(y_true, num_classes, dtype="float32")
    labelled = ops.cast(ops.expand_dims(y_true > 0, -1), "float32")
    return onehot, ops.cast(y_pred, "float32"), labelled


def _weighted_mean(values, weights):
    """Sum of weighted values over the sum of weights (0 when nothing carries weight)."""
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), EPSILON)


def _true_class_log_prob(onehot, probs):
    return ops.sum(onehot * ops.log(ops.clip(probs, EPSILON, 1.0)), axis=-1)


def cross_entropy(cfg: Mapping[str, Any]) -> Loss:
    def ce(y_true, y_pred):
        onehot, probs, _ = _prepare(y_true, y_pred)
        return -ops.mean(_true_class_log_prob(onehot, probs))

    return ce


def weighted_cross_entropy(cfg: Mapping[str, Any]) -> Loss:
    """Pixels weighted by their true class; normalised by the summed pixel weights, so the
    scale does not depend on how much (zero-weight) background a batch holds."""
    class_weights = ops.convert_to_tensor(cfg["class_weights"], dtype="float32")

    def weighted_ce(y_true, y_pred):
        onehot, probs, _ = _prepare(y_true, y_pred)
        pixel_weights = ops.sum(onehot * class_weights, axis=-1)
        return _weighted_mean(-_true_class_log_prob(onehot, probs), pixel_weights)

    return weighted_ce


def focal(cfg: Mapping[str, Any]) -> Loss:
    """Focal loss (Lin et al.) over labelled pixels, optionally class-weighted."""
    gamma = float(cfg["focal_gamma"])
    class_weights = ops.convert_to_tensor(cfg["class_weights"], dtype="float32") if cfg["focal_weighted"] else None

    def focal_loss(y_true, y_pred):
        onehot, probs, labelled = _prepare(y_true, y_pred)
        log_pt = _true_class_log_prob(onehot, probs)
        pt = ops.exp(log_pt)
        weights = labelled[..., 0]
        if class_weights is not None:
            weights = weights * ops.sum(onehot * class_weights, axis=-1)
        return _weighted_mean(-((1.0 - pt) ** gamma) * log_pt, weights)

    return focal_loss


def _confusion_sums(y_true, y_pred):
    """Soft TP, FP, FN per scored class (1..C-1) over the labelled pixels of the batch."""
    onehot, probs, labelled = _prepare(y_true, y_pred)
    truth, pred = (onehot * labelled)[..., 1:], (probs * labelled)[..., 1:]
    axes = tuple(range(len(truth.shape) - 1))
    tp = ops.sum(truth * pred, axis=axes)
    fp = ops.sum(pred, axis=axes) - tp
    fn = ops.sum(truth, axis=axes) - tp
    return tp, fp, fn


def dice(cfg: Mapping[str, Any]) -> Loss:
    """1 - mean soft dice over classes 1..C-1, class-0 pixels left out."""
    smooth = float(cfg["smooth"])

    def dice_loss(y_true, y_pred):
        tp, fp, fn = _confusion_sums(y_true, y_pred)
        return 1.0 - ops.mean((2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth))

    return dice_loss


def tversky(cfg: Mapping[str, Any]) -> Loss:
    """1 - mean Tversky index; alpha weighs false positives, beta false negatives."""
    alpha, beta, smooth = float(cfg["tversky_alpha"]), float(cfg["tversky_beta"]), float(cfg["smooth"])

    def tversky_loss(y_true, y_pred):
        tp, fp, fn = _confusion_sums(y_true, y_pred)
        return 1.0 - ops.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))

    return tversky_loss


LOSSES: dict[str, Callable[[Mapping[str, Any]], Loss]] = {
    "ce": cross_entropy,
    "weighted_ce": weighted_cross_entropy,
    "focal": focal,
    "dice": dice,
    "tversky": tversky,
}


def _fail(key: str, value: Any, allowed: str) -> UserError:
    return UserError(f"params.yaml: loss.{key} is {value!r}; {allowed}")


def _number(key: str, value: Any, minimum: float, allowed: str, strict: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or value < minimum or (strict and value == minimum):
        raise _fail(key, value, allowed)
    return float(value)


def _weights(key: str, value: Any, length: int) -> list[float]:
    allowed = f"expected a list of {length} numbers >= 0, not all 0"
    if not isinstance(value, list) or len(value) != length:
        raise _fail(key, value, allowed)
    weights = [_number(key, w, 0.0, allowed) for w in value]
    if not any(weights):
        raise _fail(key, value, allowed)
    return weights


def validate_loss_params(loss_params: Mapping[str, Any]) -> dict[str, Any]:
    """Return a normalised copy of the ``loss`` section (defaults filled in), or raise UserError."""
    if not isinstance(loss_params, Mapping):
        raise UserError(f"params.yaml: 'loss' must be a mapping of options, got {loss_params!r}")
    reject_unknown_keys("loss", loss_params, DEFAULTS)
    cfg = {**DEFAULTS, **loss_params}
    name = cfg["name"]
    terms = name.split("+") if isinstance(name, str) else []
    if not terms or any(term not in LOSSES for term in terms):
        raise _fail("name", name, f"allowed: {', '.join(LOSSES)}, or names joined by '+' (e.g. focal+dice)")
    cfg["class_weights"] = _weights("class_weights", cfg["class_weights"], NUM_CLASSES)
    cfg["focal_gamma"] = _number("focal_gamma", cfg["focal_gamma"], 0.0, "expected a number >= 0")
    if not isinstance(cfg["focal_weighted"], bool):
        raise _fail("focal_weighted", cfg["focal_weighted"], "expected true or false")
    for key in ("tversky_alpha", "tversky_beta"):
        cfg[key] = _number(key, cfg[key], 0.0, "expected a number >= 0")
    if cfg["tversky_alpha"] + cfg["tversky_beta"] == 0:
        raise _fail("tversky_beta", cfg["tversky_beta"], "tversky_alpha + tversky_beta must be > 0")
    cfg["smooth"] = _number("smooth", cfg["smooth"], 0.0, "expected a number > 0", strict=True)
    if cfg["sum_weights"] is None:
        cfg["sum_weights"] = [1.0] * len(terms)
    else:
        cfg["sum_weights"] = _weights("sum_weights", cfg["sum_weights"], len(terms))
    return cfg


def build_loss(loss_params: Mapping[str, Any]) -> Loss:
    """The ``loss`` section -> ``loss(y_true, y_pred) -> scalar``; sums weight each term."""
    cfg = validate_loss_params(loss_params)
    terms = [(weight, LOSSES[name](cfg)) for name, weight in zip(cfg["name"].split("+"), cfg["sum_weights"])]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]

    def summed(y_true, y_pred):
        total = 0.0
        for weight, term in terms:
            total = total + weight * term(y_true, y_pred)
        return total

    summed.__name__ = cfg["name"].replace("+", "_plus_")
    return summed
