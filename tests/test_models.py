"""Model zoo: validation, every arch x depth x option training one step, and portable saving of a model
that takes raw images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import yaml

from marsseg.config import validate_group
from marsseg.errors import UserError
from marsseg.losses import build_loss
from marsseg.models import ARCHITECTURES
from marsseg.models import build as build_module

from conftest import REPO

# params.yaml is the one place defaults live: each test states only what it changes.
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def model_params(overrides):
    return {**PARAMS["model"], **overrides}


def build_model(overrides, *args, **kwargs):
    return build_module.build_model(model_params(overrides), *args, **kwargs)


def validated(overrides):
    return validate_group("model", model_params(overrides))

ALL_OPTIONS = {
    "base_filters": 4,
    "norm": "instance",
    "se": True,
    "skip_gate": True,
    "attention": True,
    "residual": True,
    "denoise_input": True,
    "dropout": [0.0, 0.1, 0.2],
}


@pytest.fixture(autouse=True)
def fresh_keras_session():
    yield
    keras.backend.clear_session(free_memory=False)  # the gc pass would cost ~0.4 s per test


def batch(n=2, seed=0):
    """Raw uint8 grey levels, as stored: the model scales them itself."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 64, 128, 1), dtype=np.uint8)
    masks = rng.integers(0, 5, size=(n, 64, 128), dtype=np.uint8)
    return images, masks


def all_layers(model):
    """Layers of ``model`` including those inside nested models (the patch tile network)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def infer(model, images):
    # A direct call runs eagerly; model.predict would first trace a graph (seconds per model).
    return keras.ops.convert_to_numpy(model(images, training=False))


def train_one_step(model):
    # Eager: tracing the train graph costs 10-40 s per model on 2 CPU cores; eager takes ~1 s.
    model.compile(optimizer="adam", loss=build_loss({**PARAMS["loss"], "name": "weighted_ce+dice"}), run_eagerly=True)
    images, masks = batch()
    return float(model.train_on_batch(images, masks)), images


# --- validation --------------------------------------------------------------------------

BAD_PARAMS = [
    ({"arch": "segnet"}, "model.arch", "'segnet'", "unetpp"),
    ({"norm": "layer"}, "model.norm", "'layer'", "instance"),
    ({"depth": 2}, "model.depth", "2", "3, 4, 5"),
    ({"depth": 6}, "model.depth", "6", "3, 4, 5"),
    ({"depth": "4"}, "model.depth", "'4'", "integer"),
    ({"patch": 48}, "model.patch", "48", "8, 16, 32, 64, 128"),
    ({"patch": 8, "depth": 4}, "model.patch", "8", "16, 32, 64, 128"),
    ({"l2": -1e-4}, "model.l2", "-0.0001", "greater than or equal to 0"),
    ({"dropout": [0.1, 1.0]}, "model.dropout", "1.0", "less than 1"),
    ({"dropout": -0.2}, "model.dropout", "-0.2", "greater than or equal to 0"),
    ({"se": "yes"}, "model.se", "'yes'", "boolean"),
    ({"base_filters": 0}, "model.base_filters", "0", "greater than or equal to 1"),
    ({"dept": 4}, "model.dept", "unknown key", "depth"),
]


@pytest.mark.parametrize("params, key, value, allowed", BAD_PARAMS)
def test_bad_params_fail_with_one_line_before_building(monkeypatch, params, key, value, allowed):
    def no_building(*args, **kwargs):
        raise AssertionError("a model was being built before validation failed")

    monkeypatch.setattr(build_module.keras, "Input", no_building)
    for call in (validated, build_model):
        with pytest.raises(UserError) as caught:
            call(params)
        message = str(caught.value)
        assert "\n" not in message
        assert key in message and value in message and allowed in message


def test_normalised_copy_pads_dropout_and_forces_variant_options():
    given = {"arch": "attention_unet", "depth": 4, "dropout": [0.1, 0.2], "attention": False}
    normalised = validated(given)
    assert given["attention"] is False and given["dropout"] == [0.1, 0.2]  # input left alone
    assert normalised.attention is True
    assert normalised.dropout == [0.1, 0.2, 0.2, 0.2, 0.2]
    assert validated({"depth": 3, "dropout": [0.1, 0.2, 0.3, 0.4, 0.5]}).dropout == [0.1, 0.2, 0.3, 0.4]
    assert validated({"arch": "resunet"}).residual is True


# --- every architecture trains ------------------------------------------------------------

TRAIN_CASES = [(arch, depth, 0) for arch in ARCHITECTURES for depth in (3, 4, 5)] + [
    ("unet", 3, 32),
    ("unetpp", 4, 64),
    ("unet3p", 3, 64),
]


@pytest.mark.parametrize("arch, depth, patch", TRAIN_CASES)
def test_every_arch_depth_with_all_options_trains_one_step(arch, depth, patch):
    model = build_model({**ALL_OPTIONS, "arch": arch, "depth": depth, "patch": patch}, seed=1)
    loss, images = train_one_step(model)
    probabilities = infer(model, images)
    assert np.isfinite(loss) and loss > 0
    assert probabilities.shape == (2, 64, 128, 5) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    # Every arch pools exactly ``depth`` times: its coarsest feature map is 64 / 2**depth high.
    pooled = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.MaxPooling2D)]
    coarsest = min(layer.output.shape[1] for layer in pooled)
    assert coarsest == 64 // 2**depth


def test_fits_a_batch_beyond_what_class_frequencies_explain():
    # Class = brightness band, five equally likely bands: guessing from class frequencies alone
    # cannot beat ln 5, so getting well below it shows gradients reach the whole network.
    model = build_model({**ALL_OPTIONS, "arch": "unet", "dropout": 0.0}, seed=5)
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss=build_loss({**PARAMS["loss"], "name": "ce"}),
                  run_eagerly=True)
    images, _ = batch(seed=6)
    masks = np.minimum(images[..., 0] / 256 * 5, 4).astype(np.uint8)
    losses = [float(model.train_on_batch(images, masks)) for _ in range(10)]
    assert losses[-1] < 0.85 * np.log(5), losses


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_option_changes_every_arch(arch):
    base = {"arch": arch, "base_filters": 4}
    plain = build_model(base).count_params()
    for option in ("se", "skip_gate", "attention", "residual", "denoise_input"):
        with_option = build_model({**base, option: True}).count_params()
        forced = getattr(validated(base), option)  # attention_unet / resunet have theirs on already
        assert (with_option == plain) if forced else (with_option > plain), option


def test_variants_are_unet_with_their_option_forced():
    def size(params):
        return build_model({"base_filters": 4, **params}).count_params()

    assert size({"arch": "attention_unet"}) == size({"arch": "unet", "attention": True})
    assert size({"arch": "resunet"}) == size({"arch": "unet", "residual": True})


@pytest.mark.parametrize(
    "norm, layer_type, groups",
    [("batch", "BatchNormalization", None), ("instance", "GroupNormalization", "channels"),
     ("group", "GroupNormalization", 4), ("none", None, None)],
)
def test_norm_choice(norm, layer_type, groups):
    # base_filters 4: 'group' asks for 8 groups but must fall back to 4 on 4-channel layers.
    model = build_model({"base_filters": 4, "norm": norm, "norm_groups": 8})
    norms = [layer for layer in model.layers if "Normalization" in type(layer).__name__]
    if layer_type is None:
        assert not norms
        return
    assert norms and {type(layer).__name__ for layer in norms} == {layer_type}
    first = norms[0]
    if groups == "channels":
        assert first.groups == first.input.shape[-1] == 4
    elif groups:
        assert first.groups == groups


def test_l2_reaches_every_conv_including_the_tile_network():
    options = {**ALL_OPTIONS, "patch": 64, "l2": 3e-4}
    convs = [layer for layer in all_layers(build_model(options)) if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) > 20
    assert all(np.isclose(float(conv.kernel_regularizer.l2), 3e-4) for conv in convs)
    unregularised = build_model({**options, "l2": 0.0})
    assert all(layer.kernel_regularizer is None for layer in all_layers(unregularised)
               if isinstance(layer, keras.layers.Conv2D))


def test_dropout_rates_follow_levels_shallow_to_deep():
    model = build_model({"base_filters": 4, "depth": 4, "dropout": [0.0, 0.1, 0.3]})
    rates = sorted((layer.input.shape[1], layer.rate) for layer in model.layers
                   if isinstance(layer, keras.layers.Dropout))
    # Encoder and decoder blocks of levels 1..3 plus the bottleneck (level 4); level 0 has 0.
    assert rates == [(4, 0.3), (8, 0.3), (8, 0.3), (16, 0.3), (16, 0.3), (32, 0.1), (32, 0.1)]


def test_same_seed_same_weights():
    first = build_model({"base_filters": 4}, seed=7).get_weights()
    second = build_model({"base_filters": 4}, seed=7).get_weights()
    other = build_model({"base_filters": 4}, seed=8).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_patch_runs_one_shared_network_per_tile_and_recomposes_along_width():
    model = build_model({"base_filters": 4, "patch": 32, "depth": 3}, seed=3)
    tile_net = model.get_layer("tile_net")
    assert tile_net.input.shape[1:] == (64, 32, 1)
    assert model.count_params() == tile_net.count_params()  # one set of weights for all 4 tiles
    images, _ = batch(seed=4)
    composed = infer(model, images)
    for left in range(0, 128, 32):
        tile = infer(tile_net, images[:, :, left:left + 32] / np.float32(255))  # tiles see scaled images
        np.testing.assert_allclose(composed[:, :, left:left + 32], tile, atol=1e-5)


def test_denoise_input_starts_as_identity():
    model = build_model({"base_filters": 4, "denoise_input": True})
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    denoised = keras.Model(model.input, adds[0].output)
    images, _ = batch()
    np.testing.assert_allclose(infer(denoised, images), images / 255, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_still_outputs_float32_probabilities(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model({**ALL_OPTIONS, "patch": 64})
        loss, images = train_one_step(model)
        assert model.output.dtype == "float32" and np.isfinite(loss)
        assert infer(model, images).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- portable saving: the saved model takes raw images -----------------------------------------

LOADER = textwrap.dedent(
    """
    import json, sys

    class NoMarsseg:  # the package is installed into this environment: hide it
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "marsseg":
                raise ImportError("marsseg is hidden from this process")

    sys.meta_path.insert(0, NoMarsseg())
    import numpy as np, keras
    images = np.load("images.npy")  # uint8 (N, 64, 128), as stored
    assert images.dtype == np.uint8
    worst, labels = {}, {}
    for name in json.load(open("names.json")):
        model = keras.models.load_model(name + ".keras")
        predicted = model.predict(images[..., None], verbose=0)
        worst[name] = float(np.abs(predicted - np.load(name + ".npy")).max())
        np.save(name + ".labels.npy", predicted.argmax(-1).astype(np.uint8))
    assert "marsseg" not in sys.modules
    print(json.dumps(worst))
    """
)


def test_saved_models_predict_raw_uint8_images_with_plain_keras_without_marsseg(tmp_path):
    from marsseg.io import save_model
    from marsseg.predict import load_model, predict_labels
    from marsseg.train.loop import inference_model

    images = batch(n=3)[0][..., 0]
    names = []
    for arch in ARCHITECTURES:
        patch = 64 if arch == "unet3p" else 0
        model = build_model({**ALL_OPTIONS, "arch": arch, "patch": patch, "norm": "batch"}, seed=2)
        # Compiled with a marsseg loss, as in the train stage; saved as the train stage saves it.
        model.compile(optimizer="adam", loss=build_loss({**PARAMS["loss"], "name": "focal+lovasz"}))
        save_model(inference_model(model), tmp_path / f"{arch}.keras")
        np.save(tmp_path / f"{arch}.npy", infer(model, images[..., None]))
        names.append(arch)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "names.json").write_text(json.dumps(names))
    (tmp_path / "load.py").write_text(LOADER)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", "load.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    worst = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(worst) == set(names)
    assert max(worst.values()) < 1e-5, worst
    # The bare prediction is the pipeline's prediction.
    for name in names:
        pipeline = predict_labels(load_model(tmp_path / f"{name}.keras"), images, batch_size=2)
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.labels.npy"), pipeline.plain)
