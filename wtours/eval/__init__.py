"""Measuring a trained encoder: DINO's weighted k-NN on labelled ImageFolder sets, and video object segmentation
on DAVIS-2017 by label propagation (docs/eval.md)."""
