"""Shared benchmark helpers: test clips and a header naming the machine and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

from wtours.media import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench-data"
STREET = REPO / "tests" / "data" / "vtest.mp4"  # 20 s of real street footage, 768x576, 10 fps (tests/data/README.md)


def header(name: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"# {name} | {dt.date.today()} | {os.cpu_count()} cores, {cpu} | ffmpeg {ffmpeg_exe()}"


def cached_video(name: str, args: list[str]) -> Path:
    """bench-data/<name>, made once by `ffmpeg <args> <out>` from the street footage (temporary name, then rename)."""
    out = DATA / name
    if out.is_file():
        return out
    DATA.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp" + out.suffix)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args, str(tmp)], check=True)
    tmp.rename(out)
    return out


def street_4k60(seconds: int = 12) -> Path:
    """Real street footage (tests/data/vtest.mp4) upscaled to 3840x2160 at 60 fps, H.264 at a camera-like bitrate.

    Mild temporal noise brings the bitrate to about 17 Mb/s, near a real 4K60 upload, since an
    upscaled 768x576 source alone compresses unrealistically well."""
    return cached_video(f"street4k60-{seconds}s.mp4", [
        "-stream_loop", "-1", "-i", str(STREET), "-t", str(seconds),
        "-vf", "scale=3840:2160:flags=bicubic,fps=60,noise=alls=6:allf=t", "-c:v", "libx264",
        "-preset", "veryfast", "-crf", "20", "-g", "120", "-pix_fmt", "yuv420p"])
