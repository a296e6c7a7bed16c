"""U-Net (Ronneberger et al.) and the two variants that are U-Net with one option forced on."""
from __future__ import annotations

from marsseg.models.registry import architecture


@architecture("unet")
def unet(x, cfg):
    """Encoder, then per level: upsample, concatenate the (gated) skip, conv block."""
    from keras import layers

    from marsseg.models.blocks import decoder_block, encoder, prepare_skip, upsample

    features = encoder(x, cfg)
    x = features[-1]
    for level in reversed(range(cfg.depth)):
        skip = prepare_skip(features[level], gating=x, cfg=cfg)
        x = layers.Concatenate()([upsample(x, 2), skip])
        x = decoder_block(x, cfg.filters(level), cfg, cfg.dropout[level])
    return x


# Attention U-Net (Oktay et al.): U-Net with attention gates on every skip.
architecture("attention_unet", forces={"attention": True})(unet)
# Deep Residual U-Net (Zhang et al.): U-Net built from residual conv blocks.
architecture("resunet", forces={"residual": True})(unet)
