"""Architecture registry: name -> body builder ``(image tensor, ModelConfig) -> feature tensor``.

Every body returns full-resolution features; ``build.py`` adds the shared input stem, the
classifier head and patch-and-compose around whichever body is chosen.
"""
from __future__ import annotations

from marsseg.models.options import ARCH_NAMES
from marsseg.models.unet import attention_unet, resunet, unet
from marsseg.models.unet3p import unet3p
from marsseg.models.unetpp import unetpp

ARCHITECTURES = {
    "unet": unet,
    "unetpp": unetpp,
    "unet3p": unet3p,
    "attention_unet": attention_unet,
    "resunet": resunet,
}

assert tuple(ARCHITECTURES) == ARCH_NAMES, "options.ARCH_NAMES must list the registry's names"
