"""Building blocks shared by every architecture, each a function ``tensor -> tensor``.

Only built-in Keras layers are used (no Lambda, no custom Layer), so a saved model loads with a
plain ``keras.models.load_model`` in a process that never imports marsseg.
"""
from __future__ import annotations

import math

import keras
from keras import layers

from marsseg.config import ModelConfig

SE_REDUCTION = 8  # squeeze-excite bottleneck: channels // 8 (at least 1)


def conv(filters: int, kernel_size: int, cfg: ModelConfig, use_bias: bool = True, **kwargs) -> layers.Conv2D:
    """Every Conv2D of every model comes from here, so ``model.l2`` reaches all of them."""
    regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None
    kwargs.setdefault("kernel_initializer", "he_normal")
    return layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=use_bias, kernel_regularizer=regularizer, **kwargs
    )


def norm(x, cfg: ModelConfig):
    channels = x.shape[-1]
    if cfg.norm == "batch":
        return layers.BatchNormalization()(x)
    if cfg.norm == "instance":
        return layers.GroupNormalization(groups=-1)(x)
    if cfg.norm == "group":
        # Groups must divide the channels; with few channels fall back to fewer groups.
        return layers.GroupNormalization(groups=math.gcd(cfg.norm_groups, channels))(x)
    return x


def conv_norm_relu(x, filters: int, cfg: ModelConfig, kernel_size: int = 3):
    # A bias before a normalisation is cancelled by its mean subtraction.
    x = conv(filters, kernel_size, cfg, use_bias=cfg.norm == "none")(x)
    return layers.Activation("relu")(norm(x, cfg))


def residual_block(x, filters: int, cfg: ModelConfig):
    """Two 3x3 convs plus a shortcut (1x1 projection when the channel count changes)."""
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = norm(conv(filters, 1, cfg, use_bias=cfg.norm == "none")(x), cfg)
    y = conv_norm_relu(x, filters, cfg)
    y = norm(conv(filters, 3, cfg, use_bias=cfg.norm == "none")(y), cfg)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


def conv_block(x, filters: int, cfg: ModelConfig, dropout: float):
    """The encoder/decoder block of every architecture: plain or residual, then dropout."""
    if cfg.residual:
        x = residual_block(x, filters, cfg)
    else:
        x = conv_norm_relu(conv_norm_relu(x, filters, cfg), filters, cfg)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    return x


def squeeze_excite(x, cfg: ModelConfig):
    """Channel reweighting from globally pooled features (Hu et al.)."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = conv(max(1, channels // SE_REDUCTION), 1, cfg, activation="relu")(s)
    s = conv(channels, 1, cfg, activation="sigmoid", kernel_initializer="glorot_uniform")(s)
    return layers.Multiply()([x, s])


def decoder_block(x, filters: int, cfg: ModelConfig, dropout: float):
    x = conv_block(x, filters, cfg, dropout)
    return squeeze_excite(x, cfg) if cfg.se else x


def upsample(x, factor: int):
    return layers.UpSampling2D(factor, interpolation="bilinear")(x) if factor > 1 else x


def downsample(x, factor: int):
    return layers.MaxPooling2D(factor)(x) if factor > 1 else x


def attention_gate(skip, gating, cfg: ModelConfig):
    """Additive attention gate (Oktay et al.): the coarser decoder signal weights each skip pixel."""
    inter = max(1, skip.shape[-1] // 2)
    theta = conv(inter, 1, cfg, use_bias=False)(skip)
    phi = upsample(conv(inter, 1, cfg)(gating), skip.shape[1] // gating.shape[1])
    act = layers.Activation("relu")(layers.Add()([theta, phi]))
    alpha = conv(1, 1, cfg, activation="sigmoid", kernel_initializer="glorot_uniform")(act)
    return layers.Multiply()([skip, alpha])


def prepare_skip(skip, gating, cfg: ModelConfig):
    """Skip handling of every architecture: optional attention gate, then optional trainable gate."""
    if cfg.attention:
        skip = attention_gate(skip, gating, cfg)
    if cfg.skip_gate:
        skip = conv_norm_relu(skip, skip.shape[-1], cfg)
    return skip


def encoder(x, cfg: ModelConfig) -> list:
    """Features per level, full resolution first, the bottleneck (level ``depth``) last."""
    features = []
    for level in range(cfg.depth):
        x = conv_block(x, cfg.filters(level), cfg, cfg.dropout[level])
        features.append(x)
        x = downsample(x, 2)
    features.append(conv_block(x, cfg.filters(cfg.depth), cfg, cfg.dropout[cfg.depth]))
    return features


def denoise_input(x, cfg: ModelConfig):
    """MS-UNet style learnable input filter: a small full-resolution conv stack predicts a
    correction added to the image. The last conv starts at zero, so training starts from identity."""
    y = conv(cfg.base_filters, 3, cfg, activation="relu")(x)
    y = conv(cfg.base_filters, 3, cfg, activation="relu")(y)
    correction = conv(x.shape[-1], 3, cfg, kernel_initializer="zeros")(y)
    return layers.Add()([x, correction])


def classifier_head(x, num_classes: int, cfg: ModelConfig):
    """1x1 conv to class scores; softmax kept in float32 so mixed precision stays stable."""
    logits = conv(num_classes, 1, cfg, kernel_initializer="glorot_uniform")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
