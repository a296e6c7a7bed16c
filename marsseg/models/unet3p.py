"""UNet 3+ (Huang et al.): every decoder level gathers all encoder and deeper decoder scales."""
from __future__ import annotations

from marsseg.models.registry import architecture


@architecture("unet3p")
def unet3p(x, cfg):
    """Decoder level i concatenates encoder levels <= i (max-pooled down to i) and decoder levels
    > i (upsampled), each squeezed to ``base_filters`` channels by a 3x3 conv first."""
    from keras import layers

    from marsseg.models.blocks import conv_norm_relu, decoder_block, downsample, encoder, prepare_skip, upsample

    branch_filters = cfg.base_filters
    decoder_filters = branch_filters * (cfg.depth + 1)
    features = encoder(x, cfg)
    decoded = {cfg.depth: features[-1]}
    for level in reversed(range(cfg.depth)):
        gating = decoded[level + 1]
        branches = []
        for source in range(level + 1):
            skip = downsample(features[source], 2 ** (level - source))
            skip = prepare_skip(skip, gating=gating, cfg=cfg)
            branches.append(conv_norm_relu(skip, branch_filters, cfg))
        for source in range(level + 1, cfg.depth + 1):
            deeper = upsample(decoded[source], 2 ** (source - level))
            branches.append(conv_norm_relu(deeper, branch_filters, cfg))
        merged = layers.Concatenate()(branches)
        decoded[level] = decoder_block(merged, decoder_filters, cfg, cfg.dropout[level])
    return decoded[0]
