"""Measuring a trained encoder: DINO's weighted k-NN on labelled ImageFolder sets (docs/eval.md)."""
