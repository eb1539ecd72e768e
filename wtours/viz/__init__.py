"""`wtours viz`: pictures of what DoRA tracks (the teacher's [CLS] attention and per-object masks over time)."""

from wtours.viz.run import VizConfig, visualise

__all__ = ["VizConfig", "visualise"]
