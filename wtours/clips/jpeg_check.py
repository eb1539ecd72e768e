"""Is a sample's JPEG whole? One check of its bytes before any decoder sees them, so that every decoder path
(TurboJPEG 3's clip window, OpenCV's whole frame, nvJPEG on the GPU, PIL in `wtours viz`) counts the same
frames as damaged: decoders alone disagree. A truncated or zero-filled JPEG is refused by TurboJPEG's whole
decode but not by its window decode when the window ends above the damage, and OpenCV may decode it to grey
rows, warning on stderr only (OpenCV 5.1 refuses it).

The check walks the marker segments (SOI first, every segment inside the file, a frame header before the
first scan) and requires each scan's entropy-coded data to end at a marker, the last being EOI as the file's
last two bytes: a file cut short or zero-filled at its end has no EOI there. It costs 3-5 % of decoding one
910x512 frame, once per sample (docs/benchmarks.md). What it cannot see: a bit flipped inside entropy-coded
data. Such a frame decodes without error on every decoder (to wrong pixels; TurboJPEG warns on some, in the
rows it decodes, and those warnings are not counted, so every path decides alike); the index's sha256 catches
it (`wtours verify`; shards from another machine are checked as they are read)."""

from __future__ import annotations

import re

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _EOI = 0xDA, 0xD9
# What ends entropy-coded data: a marker. Inside it FF 00 is a stuffed FF, FF D0-D7 a restart marker, FF FF fill.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_damage(jpg: bytes) -> str | None:
    """Why `jpg` is not a whole JPEG (the module doc says what is checked), or None."""
    size = len(jpg)
    if size < 4 or jpg[:2] != b"\xff\xd8":
        return "no JPEG start marker (SOI)"
    if jpg[-2:] != b"\xff\xd9":
        return "no end marker (EOI) at its end: truncated or overwritten"
    pos, frame = 2, False
    while pos < size - 2:
        if jpg[pos] != 0xFF:
            return f"no marker at byte {pos}"
        marker = jpg[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker == _EOI or 0xD0 <= marker <= 0xD8 or pos + 4 > size:
            return f"marker 0x{marker:02X} out of place at byte {pos}"
        end = pos + 2 + (jpg[pos + 2] << 8 | jpg[pos + 3])
        if end > size - 2 or end < pos + 4:
            return f"segment 0x{marker:02X} at byte {pos} runs past the end"
        frame |= marker in _SOF
        pos = end
        if marker == _SOS:
            if not frame:
                return "a scan before the frame header"
            pos = _MARKER.search(jpg, pos).start()  # type: ignore[union-attr]  # EOI at the end at worst
    return None
