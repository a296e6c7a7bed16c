"""Segmentation losses: a self-describing registry plus '+'-joined weighted sums (``weighted_ce+lovasz``).

Every loss takes ``y_true`` an integer class map (N, H, W) (or (N, H, W, 1)) and ``y_pred``
softmax probabilities (N, H, W, C), and returns a scalar over the whole batch. Class 0 is
"unlabelled" and the metric ignores it, so focal, dice, tversky and lovasz drop class-0 pixels;
weighted_ce does the same through a class weight of 0; plain ce keeps every pixel.

Each loss registers itself next to its function with ``@register(name, reads=(...))``: its name and
the ``loss.*`` params it reads. Adding a loss is that function and that line; the configuration checks
``loss.name`` against this registry and a test checks ``reads`` against ``params.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from marsseg.config import LossConfig, validate_group

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before the log
# Read by ``build_loss`` itself, whichever terms the sum has.
SUM_PARAMS = ("name", "sum_weights")

Loss = Callable[[Any, Any], Any]


class _LazyOps:
    """``keras.ops`` on first use: every stage validates params.yaml (and so reads this registry), only
    train computes a loss, and importing Keras costs seconds."""

    def __getattr__(self, name):
        from keras import ops as keras_ops

        return getattr(keras_ops, name)


ops = _LazyOps()


@dataclass(frozen=True)
class LossSpec:
    name: str
    factory: Callable[[LossConfig], Loss]
    reads: tuple[str, ...]  # the loss.* params the factory uses


LOSSES: dict[str, LossSpec] = {}


def register(name: str, reads: tuple[str, ...] = ()) -> Callable:
    """Register ``factory(cfg: LossConfig) -> loss(y_true, y_pred)`` under ``name``."""

    def add(factory):
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        LOSSES[name] = LossSpec(name, factory, tuple(reads))
        return factory

    return add


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


@register("ce")
def cross_entropy(cfg: LossConfig) -> Loss:
    def ce(y_true, y_pred):
        onehot, probs, _ = _prepare(y_true, y_pred)
        return -ops.mean(_true_class_log_prob(onehot, probs))

    return ce


@register("weighted_ce", reads=("class_weights",))
def weighted_cross_entropy(cfg: LossConfig) -> Loss:
    """Pixels weighted by their true class; normalised by the summed pixel weights, so the
    scale does not depend on how much (zero-weight) background a batch holds."""
    class_weights = ops.convert_to_tensor(cfg.class_weights, dtype="float32")

    def weighted_ce(y_true, y_pred):
        onehot, probs, _ = _prepare(y_true, y_pred)
        pixel_weights = ops.sum(onehot * class_weights, axis=-1)
        return _weighted_mean(-_true_class_log_prob(onehot, probs), pixel_weights)

    return weighted_ce


@register("focal", reads=("focal_gamma", "focal_weighted", "class_weights"))
def focal(cfg: LossConfig) -> Loss:
    """Focal loss (Lin et al.) over labelled pixels, optionally class-weighted."""
    gamma = float(cfg.focal_gamma)
    class_weights = ops.convert_to_tensor(cfg.class_weights, dtype="float32") if cfg.focal_weighted else None

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


@register("dice", reads=("smooth",))
def dice(cfg: LossConfig) -> Loss:
    """1 - mean soft dice over classes 1..C-1, class-0 pixels left out."""
    smooth = float(cfg.smooth)

    def dice_loss(y_true, y_pred):
        tp, fp, fn = _confusion_sums(y_true, y_pred)
        return 1.0 - ops.mean((2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth))

    return dice_loss


@register("tversky", reads=("tversky_alpha", "tversky_beta", "smooth"))
def tversky(cfg: LossConfig) -> Loss:
    """1 - mean Tversky index; alpha weighs false positives, beta false negatives."""
    alpha, beta, smooth = float(cfg.tversky_alpha), float(cfg.tversky_beta), float(cfg.smooth)

    def tversky_loss(y_true, y_pred):
        tp, fp, fn = _confusion_sums(y_true, y_pred)
        return 1.0 - ops.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))

    return tversky_loss


def _lovasz_gradient(truth_sorted):
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order
    (Berman et al., Alg. 1): the Jaccard loss after each prefix, differenced along the sort."""
    total = ops.sum(truth_sorted, axis=0)
    intersection = total - ops.cumsum(truth_sorted, axis=0)
    union = total + ops.cumsum(1.0 - truth_sorted, axis=0)
    jaccard = 1.0 - intersection / ops.maximum(union, EPSILON)
    return ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


@register("lovasz")
def lovasz(cfg: LossConfig) -> Loss:
    """Lovasz-softmax (Berman et al. 2018): a convex surrogate of 1 - IoU, averaged over the classes
    1..C-1 present in the batch's labelled pixels; the batch is one image (not per-image), as in the
    paper's default. Class-0 pixels carry no error and class 0 is not a term."""

    def lovasz_softmax(y_true, y_pred):
        onehot, probs, labelled = _prepare(y_true, y_pred)
        classes = probs.shape[-1]
        truth = ops.reshape(onehot * labelled, (-1, classes))[:, 1:]
        errors = ops.abs(truth - ops.reshape(probs, (-1, classes))[:, 1:]) * ops.reshape(labelled, (-1, 1))
        order = ops.argsort(-errors, axis=0)
        errors_sorted = ops.take_along_axis(errors, order, axis=0)
        truth_sorted = ops.take_along_axis(truth, order, axis=0)
        per_class = ops.sum(errors_sorted * ops.stop_gradient(_lovasz_gradient(truth_sorted)), axis=0)
        present = ops.cast(ops.sum(truth, axis=0) > 0, "float32")
        return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)

    return lovasz_softmax


def loss_config(loss_params: LossConfig | Mapping[str, Any]) -> LossConfig:
    return loss_params if isinstance(loss_params, LossConfig) else validate_group("loss", loss_params)


def build_loss(loss_params: LossConfig | Mapping[str, Any]) -> Loss:
    """The ``loss`` group -> ``loss(y_true, y_pred) -> scalar``; sums weight each term."""
    cfg = loss_config(loss_params)
    terms = [(weight, LOSSES[name].factory(cfg)) for name, weight in zip(cfg.terms, cfg.term_weights)]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]

    def summed(y_true, y_pred):
        total = 0.0
        for weight, term in terms:
            total = total + weight * term(y_true, y_pred)
        return total

    summed.__name__ = cfg.name.replace("+", "_plus_")
    return summed
