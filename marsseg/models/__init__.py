"""Model zoo: U-Net family architectures sharing one set of blocks and options.

    ARCHITECTURES   name -> Architecture(body builder, forced options), from ``registry``
    build_model     a ``ModelConfig`` (``cfg.model``) -> keras.Model (softmax probabilities, float32)

``build_model`` is imported on first use: importing Keras takes seconds, and the registry is read by
every stage's parameter check.
"""
from marsseg.models.registry import ARCHITECTURES, architecture


def __getattr__(name):
    if name == "build_model":
        from marsseg.models.build import build_model

        return build_model
    raise AttributeError(f"module 'marsseg.models' has no attribute '{name}'")


__all__ = ["ARCHITECTURES", "architecture", "build_model"]
