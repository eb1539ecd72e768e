"""Networks: DINO-style ViTs (state-dict compatible with DINO, DoRA and timm) and the DINO head. Lazy
imports: `wtours.models.registry` (names, configs) needs no torch."""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {"DINOHead": "wtours.models.head", "VisionTransformer": "wtours.models.vit",
            "create_vit": "wtours.models.vit", "vit_names": "wtours.models.registry"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(import_module(_EXPORTS[name]), name)
