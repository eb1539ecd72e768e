"""Durations and sizes as people read them: the one format of every table, card and progress line."""

from __future__ import annotations


def format_duration(seconds: float, always_hours: bool = True) -> str:
    """3:05:09, or 4:02 without `always_hours` when under an hour (a countdown's ETA)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours or always_hours else f"{minutes}:{secs:02d}"


def format_size(nbytes: int) -> str:
    """Decimal units, as disks and the Hub count: 0 B, 512 B, 1.5 KB ... 3.2 TB."""
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
