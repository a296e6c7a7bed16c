"""U-Net (Ronneberger et al.) and the two variants that are U-Net with one option forced on."""
from __future__ import annotations

import dataclasses

from keras import layers

from marsseg.models.blocks import decoder_block, encoder, prepare_skip, upsample
from marsseg.models.options import ModelConfig


def unet(x, cfg: ModelConfig):
    """Encoder, then per level: upsample, concatenate the (gated) skip, conv block."""
    features = encoder(x, cfg)
    x = features[-1]
    for level in reversed(range(cfg.depth)):
        skip = prepare_skip(features[level], gating=x, cfg=cfg)
        x = layers.Concatenate()([upsample(x, 2), skip])
        x = decoder_block(x, cfg.filters(level), cfg, cfg.dropout[level])
    return x


def attention_unet(x, cfg: ModelConfig):
    """Attention U-Net (Oktay et al.): U-Net with attention gates on every skip."""
    return unet(x, dataclasses.replace(cfg, attention=True))


def resunet(x, cfg: ModelConfig):
    """Deep Residual U-Net (Zhang et al.): U-Net built from residual conv blocks."""
    return unet(x, dataclasses.replace(cfg, residual=True))
