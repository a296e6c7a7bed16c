"""``build_model``: validated options -> a Keras functional model of built-in layers only."""
from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import layers

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.models.blocks import classifier_head, denoise_input
from marsseg.config import ModelConfig, validate_group
from marsseg.models.registry import ARCHITECTURES


def build_model(
    model: ModelConfig | Mapping[str, Any],
    input_shape: tuple[int, int, int] = (*IMAGE_SHAPE, 1),
    num_classes: int = NUM_CLASSES,
    seed: int | None = None,
) -> keras.Model:
    """Raw images (grey levels 0-255) of ``input_shape`` -> per-pixel softmax probabilities (float32).

    ``seed`` (if given) goes to ``keras.utils.set_random_seed`` first, so the initial weights
    are a function of the seed; note that this also reseeds Python, NumPy and TensorFlow.
    """
    cfg = model if isinstance(model, ModelConfig) else validate_group("model", model)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape, name="image")
    # Inside the model, so the saved file takes images as stored (0-255, any dtype) with nothing to repeat.
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    x = denoise_input(x, cfg) if cfg.denoise_input else x
    if cfg.patch:
        tile_net = segmentation_net(cfg, (input_shape[0], cfg.patch, input_shape[2]), num_classes)
        probabilities = compose_tiles(x, tile_net, cfg.patch)
    else:
        probabilities = classifier_head(ARCHITECTURES[cfg.arch].body(x, cfg), num_classes, cfg)
    return keras.Model(inputs, probabilities, name=model_name(cfg))


def segmentation_net(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="tile")
    outputs = classifier_head(ARCHITECTURES[cfg.arch].body(inputs, cfg), num_classes, cfg)
    return keras.Model(inputs, outputs, name="tile_net")


def compose_tiles(x, tile_net: keras.Model, tile_width: int):
    """Cut the image into full-height tiles along the width, run one shared network per tile
    and put the predictions back side by side."""
    width = x.shape[2]
    tiles = []
    for left in range(0, width, tile_width):
        tile = layers.Cropping2D(((0, 0), (left, width - left - tile_width)))(x)
        tiles.append(tile_net(tile))
    if len(tiles) == 1:
        return tiles[0]
    return layers.Concatenate(axis=2, dtype="float32", name="probabilities")(tiles)


def model_name(cfg: ModelConfig) -> str:
    return f"{cfg.arch}_d{cfg.depth}" + (f"_patch{cfg.patch}" if cfg.patch else "")

