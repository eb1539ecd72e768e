"""Networks: DINO-style ViTs (state-dict compatible with DINO, DoRA and timm) and the DINO head. Import from
the modules: `wtours.models.registry` (names, configs) needs no torch, so the CLI reads it cheaply."""
