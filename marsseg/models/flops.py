"""Analytic FLOP count of a model: 2 x the multiply-accumulates of every Conv2D / Dense layer.

Normalisation, activations, pooling, upsampling and elementwise gates are left out (about 1% of the
total for these models, cross-checked against TensorFlow's profiler in benchmarks/models.py).
"""
from __future__ import annotations

import keras
import numpy as np


def layer_macs(layer) -> int:
    if isinstance(layer, keras.Model):
        return model_macs(layer) * len(layer._inbound_nodes)
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, out_channels = layer.output.shape
        kernel_height, kernel_width, in_per_group, _ = layer.kernel.shape
        return height * width * out_channels * kernel_height * kernel_width * in_per_group
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.output.shape[1:])) * layer.kernel.shape[0]
    return 0


def model_macs(model: keras.Model) -> int:
    return sum(layer_macs(layer) for layer in model.layers)


def forward_gflops_per_image(model: keras.Model) -> float:
    return 2 * model_macs(model) / 1e9
