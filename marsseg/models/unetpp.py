"""U-Net++ (Zhou et al.): nested decoders joined by dense skip connections."""
from __future__ import annotations

from marsseg.models.registry import architecture


@architecture("unetpp")
def unetpp(x, cfg):
    """Node X(i, j) sees every earlier node of its level and the upsampled node X(i+1, j-1)."""
    from keras import layers

    from marsseg.models.blocks import decoder_block, encoder, prepare_skip, upsample

    # nodes[level][column]; column 0 is the encoder.
    nodes = [[feature] for feature in encoder(x, cfg)]
    for column in range(1, cfg.depth + 1):
        for level in range(cfg.depth - column + 1):
            below = nodes[level + 1][column - 1]
            same_level = nodes[level][:column]
            dense_skip = same_level[0] if column == 1 else layers.Concatenate()(same_level)
            skip = prepare_skip(dense_skip, gating=below, cfg=cfg)
            merged = layers.Concatenate()([upsample(below, 2), skip])
            nodes[level].append(decoder_block(merged, cfg.filters(level), cfg, cfg.dropout[level]))
    return nodes[0][cfg.depth]
