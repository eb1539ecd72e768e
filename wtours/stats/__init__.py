"""Video statistics: lightness, scene transitions and class counts per frame, per video and per corpus."""
