"""Losses against values worked out by hand on a few pixels."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import yaml

from marsseg.config import LossConfig, validate_group
from marsseg.errors import UserError
from marsseg.losses import EPSILON, LOSSES, SUM_PARAMS, build_loss

from conftest import REPO

# params.yaml is the one place defaults live: each test states only what it changes.
PARAMS_YAML = (REPO / "params.yaml").read_text()
LOSS_DEFAULTS = yaml.safe_load(PARAMS_YAML)["loss"]


def loss_params(overrides):
    return {**LOSS_DEFAULTS, **overrides}


def probs(*rows):
    """Pixels of class probabilities -> a (1, 1, W, 5) batch."""
    return np.array([[rows]], dtype=np.float32)


def labels(*values):
    return np.array([[values]], dtype=np.int32)


def value(params, y_true, y_pred):
    return float(build_loss(loss_params(params))(y_true, y_pred))


# Four pixels: soil, soil, bedrock and one unlabelled pixel confidently called big rock.
DICE_TRUE = labels(1, 1, 2, 0)
DICE_PRED = probs(
    [0.0, 0.8, 0.2, 0.0, 0.0],
    [0.0, 0.6, 0.0, 0.4, 0.0],
    [0.0, 0.5, 0.5, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
)
# Soft TP/FP/FN per class 1..4 over the three labelled pixels, by hand:
#   soil:    TP 0.8+0.6=1.4, FP 0.5, FN 0.6     bedrock: TP 0.5, FP 0.2, FN 0.5
#   sand:    TP 0,   FP 0.4, FN 0               big rock: nothing (the unlabelled pixel is masked)
DICE_BY_HAND = 1 - ((2.8 + 1) / 4.9 + 2 / 2.7 + 1 / 1.4 + 1) / 4  # smooth 1
TVERSKY_BY_HAND = 1 - (2.4 / 2.97 + 1.5 / 1.91 + 1 / 1.12 + 1) / 4  # alpha 0.3 (FP), beta 0.7 (FN)
WEIGHTED_CE_BY_HAND = (0.8 * -math.log(0.8) + 0.8 * -math.log(0.6) + 0.9 * -math.log(0.5)) / 2.5


# Lovasz over the same pixels, by hand. Errors |truth - p| per class, sorted decreasing, times the
# increments of the Jaccard loss along the sort (Berman et al., Alg. 1):
#   soil:    errors .5 (bedrock pixel), .4, .2 (soil pixels); Jaccard after each prefix 1/3, 2/3, 1
#            -> increments 1/3 each -> (.5 + .4 + .2) / 3 = 11/30
#   bedrock: errors .5 (its pixel), .2, 0 -> Jaccard 1, 1, 1 -> increments 1, 0, 0 -> .5
#   sand and big rock: no labelled pixel, not averaged in; class 0: never a term
LOVASZ_BY_HAND = (11 / 30 + 0.5) / 2


def test_registry_names():
    assert set(LOSSES) == {"ce", "weighted_ce", "focal", "dice", "tversky", "lovasz"}


def test_registry_and_params_yaml_agree():
    # Every loss.* key of params.yaml is read by build_loss or by some registered loss, and nothing else is.
    read = set(SUM_PARAMS) | {key for spec in LOSSES.values() for key in spec.reads}
    assert read == set(LOSS_DEFAULTS) == set(LossConfig.model_fields)
    # The comment on loss.name lists every registered loss.
    lines = PARAMS_YAML.splitlines()
    name_line = next(line for line in lines[lines.index("loss:"):] if line.strip().startswith("name:"))
    listed = {word.strip() for word in name_line.split("#", 1)[1].split("|")}
    assert set(LOSSES) <= listed, name_line


class Recorder:
    """A LossConfig that notes which params a loss reads."""

    def __init__(self, cfg):
        self.cfg, self.seen = cfg, set()

    def __getattr__(self, key):
        self.seen.add(key)
        return getattr(self.cfg, key)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_reads_exactly_the_params_it_declares(name):
    recorder = Recorder(validate_group("loss", loss_params({"name": name, "focal_weighted": True})))
    LOSSES[name].factory(recorder)(DICE_TRUE, DICE_PRED)
    assert recorder.seen == set(LOSSES[name].reads)


def test_lovasz_by_hand_ignores_class_0():
    assert value({"name": "lovasz"}, DICE_TRUE, DICE_PRED) == pytest.approx(LOVASZ_BY_HAND, rel=1e-5)
    # A perfect prediction costs nothing, whatever the unlabelled pixel is called.
    perfect = probs([0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1])
    assert value({"name": "lovasz"}, DICE_TRUE, perfect) == pytest.approx(0.0, abs=1e-6)


def test_lovasz_in_a_sum_with_weighted_ce():
    assert value({"name": "weighted_ce+lovasz"}, DICE_TRUE, DICE_PRED) == pytest.approx(
        WEIGHTED_CE_BY_HAND + LOVASZ_BY_HAND, rel=1e-5)


def test_lovasz_gradient_reaches_the_probabilities():
    import tensorflow as tf

    y_pred = tf.Variable(DICE_PRED)
    with tf.GradientTape() as tape:
        loss = build_loss(loss_params({"name": "lovasz"}))(DICE_TRUE, y_pred)
    gradient = tape.gradient(loss, y_pred).numpy()
    assert np.abs(gradient[0, 0, :3]).sum() > 0 and np.all(gradient[0, 0, 3] == 0)  # none to the unlabelled pixel


def test_ce_averages_every_pixel():
    y_pred = probs([0.1, 0.6, 0.1, 0.1, 0.1], [0.2] * 5)
    assert value({"name": "ce"}, labels(1, 0), y_pred) == pytest.approx((-math.log(0.6) - math.log(0.2)) / 2, rel=1e-5)


def test_weighted_ce_zero_weight_background_and_normalisation():
    y_pred = probs([0.9, 0.1, 0.0, 0.0, 0.0], [0.1, 0.5, 0.2, 0.1, 0.1], [0.25, 0.25, 0.25, 0.0, 0.25])
    expected = (0.8 * math.log(2) + 5 * math.log(4)) / (0.8 + 5)
    assert value({"name": "weighted_ce"}, labels(0, 1, 4), y_pred) == pytest.approx(expected, rel=1e-5)
    # More (badly predicted) background changes nothing: weight 0 and normalised by the weights.
    more_background = np.concatenate([y_pred, probs(*[[0.0, 0.0, 0.0, 1.0, 0.0]] * 7)], axis=2)
    padded = value({"name": "weighted_ce"}, labels(0, 1, 4, *[0] * 7), more_background)
    assert padded == pytest.approx(expected, rel=1e-5)
    # A batch with nothing but background carries no signal, and no NaN.
    assert value({"name": "weighted_ce"}, labels(0, 0), probs([0.5] * 5, [0.5] * 5)) == 0.0


def test_weighted_ce_with_custom_weights_equals_ce_when_uniform():
    uniform = {"name": "weighted_ce", "class_weights": [2.0] * 5}
    assert value(uniform, DICE_TRUE, DICE_PRED) == pytest.approx(value({"name": "ce"}, DICE_TRUE, DICE_PRED), rel=1e-5)
    assert value({"name": "weighted_ce"}, DICE_TRUE, DICE_PRED) == pytest.approx(WEIGHTED_CE_BY_HAND, rel=1e-5)


def test_focal_ignores_background_and_down_weights_easy_pixels():
    y_pred = probs([0.0, 0.0, 0.0, 0.0, 1.0], [0.1, 0.5, 0.2, 0.1, 0.1])
    assert value({"name": "focal"}, labels(0, 1), y_pred) == pytest.approx(0.5**2 * math.log(2), rel=1e-5)
    # gamma 0 is cross-entropy over the labelled pixels.
    assert value({"name": "focal", "focal_gamma": 0}, labels(0, 1), y_pred) == pytest.approx(math.log(2), rel=1e-5)


def test_focal_class_weighted():
    y_pred = probs([0.1, 0.5, 0.2, 0.1, 0.1], [0.25, 0.25, 0.25, 0.0, 0.25])
    expected = (0.8 * 0.5**2 * math.log(2) + 5 * 0.75**2 * math.log(4)) / 5.8
    assert value({"name": "focal", "focal_weighted": True}, labels(1, 4), y_pred) == pytest.approx(expected, rel=1e-5)


def test_dice_over_labelled_pixels_of_classes_1_to_4():
    assert value({"name": "dice"}, DICE_TRUE, DICE_PRED) == pytest.approx(DICE_BY_HAND, rel=1e-5)


def test_tversky_by_hand_and_dice_at_one_half():
    assert value({"name": "tversky"}, DICE_TRUE, DICE_PRED) == pytest.approx(TVERSKY_BY_HAND, rel=1e-5)
    # With alpha = beta = 1/2 Tversky is dice (up to where the smoothing term sits).
    half = {"name": "tversky", "tversky_alpha": 0.5, "tversky_beta": 0.5, "smooth": 1e-6}
    dice_value = value({"name": "dice", "smooth": 1e-6}, DICE_TRUE, DICE_PRED)
    assert value(half, DICE_TRUE, DICE_PRED) == pytest.approx(dice_value, rel=1e-5)


def test_weighted_sum_of_terms():
    params = {"name": "weighted_ce+dice", "sum_weights": [1.0, 2.0]}
    expected = WEIGHTED_CE_BY_HAND + 2 * DICE_BY_HAND
    assert value(params, DICE_TRUE, DICE_PRED) == pytest.approx(expected, rel=1e-5)
    assert value({"name": "focal+dice"}, DICE_TRUE, DICE_PRED) == pytest.approx(
        value({"name": "focal"}, DICE_TRUE, DICE_PRED) + DICE_BY_HAND, rel=1e-5
    )


def test_zero_probability_is_clipped_not_infinite():
    y_pred = probs([1.0, 0.0, 0.0, 0.0, 0.0])
    assert value({"name": "ce"}, labels(1), y_pred) == pytest.approx(-math.log(EPSILON), rel=1e-3)


def test_channel_last_and_uint8_labels_accepted():
    as_image = DICE_TRUE.astype(np.uint8)[..., None]
    assert value({"name": "focal+dice"}, as_image, DICE_PRED) == pytest.approx(
        value({"name": "focal+dice"}, DICE_TRUE, DICE_PRED), rel=1e-6
    )


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "focal", "dice", "tversky", "lovasz", "weighted_ce+dice"])
def test_keras_reports_the_same_value_in_graph_mode(name):
    # A one-layer model traced by Keras (not eager): the loss works on symbolic tensors and
    # Keras adds no rescaling of its own.
    rng = np.random.default_rng(0)
    images = rng.random((2, 8, 16, 1), dtype=np.float32)
    masks = rng.integers(0, 5, size=(2, 8, 16)).astype(np.uint8)
    model = keras.Sequential([keras.Input((8, 16, 1)), keras.layers.Conv2D(5, 1, activation="softmax")])
    loss = build_loss(loss_params({"name": name}))
    expected = float(loss(masks, model(images)))
    model.compile(optimizer="sgd", loss=loss, run_eagerly=False)
    assert float(model.train_on_batch(images, masks)) == pytest.approx(expected, rel=1e-5)


BAD = [
    ({"name": "bce"}, "loss.name", "'bce'"),
    ({"name": "focal+lovas"}, "loss.name", "lovasz"),
    ({"class_weights": [1, 1, 1]}, "loss.class_weights", "5"),
    ({"class_weights": [0, 0, 0, 0, 0]}, "loss.class_weights", "above 0"),
    ({"name": "focal+dice", "sum_weights": [1.0]}, "loss.sum_weights", "[1.0]"),
    ({"focal_gamma": -1}, "loss.focal_gamma", "-1"),
    ({"smooth": 0}, "loss.smooth", "0"),
    ({"gamma": 2}, "loss.gamma", "focal_gamma"),
]


@pytest.mark.parametrize("params, key, shown", BAD)
def test_bad_loss_params_fail_with_one_clear_line(params, key, shown):
    with pytest.raises(UserError) as caught:
        build_loss(loss_params(params))
    message = str(caught.value)
    assert "\n" not in message and key in message and shown in message
