"""DoRA (Venkataramanan et al., ICLR 2024) as the authors' code computes it: model, tracker, loss."""

from __future__ import annotations


def __getattr__(name: str):
    """`DoRA` imports torch: only when asked for, so `wtours.dora.config` (the settings) stays light for the CLI."""
    if name == "DoRA":
        from wtours.dora.model import DoRA

        return DoRA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
