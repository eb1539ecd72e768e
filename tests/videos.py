"""Small synthetic test videos made on the fly with ffmpeg's lavfi sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

from wtours.media import ffmpeg_exe

# Real street footage in the repository: 20 s of OpenCV's vtest.avi, 768x576, 10 fps, H.264 (tests/data/README.md).
STREET_VIDEO = Path(__file__).resolve().parent / "data" / "vtest.mp4"
STREET_SECONDS = 20.0


def run_ffmpeg(args: list[str]) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_video(path: Path, seconds: float = 3.0, size: str = "320x240", rate: int = 30,
               source: str = "testsrc2", faststart: bool = False, gop: int | None = None) -> Path:
    """An H.264 mp4 of a moving lavfi pattern."""
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if gop:
        args += ["-g", str(gop)]
    if faststart:
        args += ["-movflags", "+faststart"]
    run_ffmpeg([*args, str(path)])
    return path


def make_truncated_video(folder: Path, seconds: float = 10.0, size: str = "320x240") -> Path:
    """`cut.mp4`: the first half of the bytes of a faststart mp4 (index up front, 1 s GOPs), so it
    probes whole but stops decoding midway, as a download cut short does."""
    full = make_video(folder / "full.mp4", seconds=seconds, size=size, faststart=True, gop=30)
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def make_video_with_black_tail(path: Path, seconds: float, tail: float, size: str = "320x240", rate: int = 30) -> Path:
    """testsrc2 for `seconds`, then `tail` seconds of black (a blank tail like the mirror's Venice)."""
    graph = (f"testsrc2=size={size}:rate={rate}:duration={seconds}[a];"
             f"color=c=black:size={size}:rate={rate}:duration={tail}[b];[a][b]concat=n=2:v=1:a=0[v]")
    run_ffmpeg(["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", str(path)])
    return path


def sharded_root(folder: Path, seconds: float = 20.0, samples_per_shard: int = 10, slug: str = "walk") -> Path:
    """A data root holding a small moving test pattern, added as `slug` and sharded at 2 fps, 128 px."""
    from wtours.fetch.local import add_local
    from wtours.layout import Layout
    from wtours.shard.params import RunOptions, ShardParams
    from wtours.shard.run import shard_video

    video = make_video(folder / f"{slug}.mp4", seconds=seconds, size="192x128", rate=10)
    layout = Layout(folder / "root")
    add_local(video, slug, layout.root, mode="symlink", say=lambda m: None)
    shard_video(layout, slug, ShardParams(fps=2.0, short_side=128, samples_per_shard=samples_per_shard),
                RunOptions(workers=2, progress=False), say=lambda m: None)
    return layout.root


def index_json(layout, slug: str) -> dict | None:
    """A set's index.json as JSON data, validated by `ShardIndex` (None when the video is not sharded)."""
    from wtours.shard.index import ShardIndex

    index = ShardIndex.read(layout.index_path(slug))
    return index.to_dict() if index is not None else None
