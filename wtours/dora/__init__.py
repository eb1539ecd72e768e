"""DoRA (Venkataramanan et al., ICLR 2024) as the authors' code computes it: model, tracker, loss. Lazy
imports: `wtours.dora.config` (the settings) needs no torch, so the CLI reads it cheaply."""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {"DoRA": "wtours.dora.model", "DoRALoss": "wtours.dora.loss", "Encoder": "wtours.dora.model",
            "StepOutput": "wtours.dora.model", "DoRAConfig": "wtours.dora.config", "LossConfig": "wtours.dora.config",
            "SinkhornConfig": "wtours.dora.config"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(import_module(_EXPORTS[name]), name)
