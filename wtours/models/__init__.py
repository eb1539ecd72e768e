"""Networks: DINO-style ViTs (state-dict compatible with DINO, DoRA and timm) and the DINO head."""

from wtours.models.head import DINOHead
from wtours.models.vit import VisionTransformer, create_vit, vit_names

__all__ = ["DINOHead", "VisionTransformer", "create_vit", "vit_names"]
