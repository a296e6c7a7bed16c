"""Architecture registry, derived from the builders themselves.

Each architecture module registers its body builders with ``@architecture(name, forces=...)``:
``(image tensor, ModelConfig) -> full-resolution features``. ``build.py`` adds the shared input stem,
the classifier head and patch-and-compose around whichever body is chosen. ``forces`` names the
``model.*`` options that an architecture switches on for good (attention U-Net is U-Net with attention
gates); the configuration applies them before validation, so what is logged is what is built.

The architecture modules import Keras inside their builders: every stage validates ``params.yaml``
(and so reads this registry), but only train builds a model, and importing Keras costs seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Builder = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Architecture:
    name: str
    body: Builder
    forces: dict[str, Any] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {}


def architecture(name: str, forces: dict[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Register ``body`` under ``name``; adding an architecture is this decorator on one function."""

    def register(body: Builder) -> Builder:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture '{name}' is registered twice")
        ARCHITECTURES[name] = Architecture(name, body, dict(forces or {}))
        return body

    return register


# Importing the modules runs their decorators (the order here is the order users see).
from marsseg.models import unet, unetpp, unet3p  # noqa: E402,F401
