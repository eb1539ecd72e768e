"""DoRA (Venkataramanan et al., ICLR 2024) as the authors' code computes it: model, tracker, loss."""

from wtours.dora.loss import DoRALoss
from wtours.dora.model import DoRA, Encoder, StepOutput

__all__ = ["DoRA", "DoRALoss", "Encoder", "StepOutput"]
