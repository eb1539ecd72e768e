"""`wtours viz`: pictures of what DoRA tracks (the teacher's [CLS] attention and per-object masks over time)."""

from __future__ import annotations

from wtours.viz.config import VizConfig

__all__ = ["VizConfig", "visualise"]


def __getattr__(name: str):
    """`visualise` imports torch: only when asked for, so `wtours.viz.config` stays light for the CLI."""
    if name == "visualise":
        from wtours.viz.run import visualise

        return visualise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
