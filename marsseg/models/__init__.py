"""Model zoo: U-Net family architectures sharing one set of blocks and options.

    ARCHITECTURES          name -> body builder (image tensor, ModelConfig) -> features
    validate_model_params  the ``model`` section -> normalised copy (UserError if invalid)
    build_model            the ``model`` section -> keras.Model (softmax probabilities, float32)
    save_for_inference     save a (compiled) model so plain keras.models.load_model reads it
"""
from marsseg.models.build import build_model, save_for_inference
from marsseg.models.options import DEFAULTS, FORCED_OPTIONS, ModelConfig, model_config, validate_model_params
from marsseg.models.registry import ARCHITECTURES

__all__ = [
    "ARCHITECTURES",
    "DEFAULTS",
    "FORCED_OPTIONS",
    "ModelConfig",
    "build_model",
    "model_config",
    "save_for_inference",
    "validate_model_params",
]
