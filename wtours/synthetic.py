"""A built-in synthetic walking video, made with ffmpeg's lavfi sources (no network, no input).

Moving textured scenes joined by hard cuts, a lighting ramp from day to dusk over the whole video, and a blank (black)
stretch: the properties `wtours stats` measures and `wtours shard` must handle."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wtours.layout import replace_atomically
from wtours.media import ffmpeg_exe


@dataclass(frozen=True)
class Scene:
    source: str  # a lavfi graph producing WxH frames at the video's rate
    seconds: float


@dataclass(frozen=True)
class WalkSpec:
    width: int = 640
    height: int = 360
    rate: int = 30
    dusk_brightness: float = -0.3  # eq brightness reached at the end (0 = unchanged)

    def scenes(self) -> list[Scene]:
        w, h = self.width, self.height
        return [
            # a pan across a large fractal "street"
            Scene(f"mandelbrot=size={2 * w}x{2 * h}:rate={self.rate}:start_scale=2:end_scale=0.5,"
                  f"crop={w}:{h}:x='t*{w / 20:.0f}':y='t*{h / 30:.0f}'", 16),
            # a busy "market": Conway's life with mould colouring, scaled up and drifting
            Scene(f"life=size={w // 4}x{h // 4}:rate={self.rate}:mold=10:ratio=0.3:seed=7:"
                  f"life_color=#d0a060:death_color=#203040:mold_color=#608040,scale={w * 2}:{h * 2}:flags=neighbor,"
                  f"crop={w}:{h}:x='t*{w / 16:.0f}':y='{h / 3:.0f}'", 14),
            # a "square" with strong geometry
            Scene(f"testsrc2=size={w}x{h}:rate={self.rate}", 12),
            # the camera is covered: blank
            Scene(f"color=c=black:size={w}x{h}:rate={self.rate}", 6),
            # back outside, another part of the fractal
            Scene(f"mandelbrot=size={2 * w}x{2 * h}:rate={self.rate}:start_x=-0.75:start_y=0.1:start_scale=1,"
                  f"crop={w}:{h}:x='{w / 2:.0f}-t*{w / 24:.0f}':y='{h / 2:.0f}'", 12),
        ]

    def cut_times(self) -> list[float]:
        """Where one scene ends and the next begins (seconds)."""
        return list(itertools.accumulate((scene.seconds for scene in self.scenes()[:-1]), initial=0.0))[1:]

    @property
    def duration(self) -> float:
        return sum(s.seconds for s in self.scenes())


def make_walk(path: Path, spec: WalkSpec = WalkSpec()) -> Path:
    """Render the synthetic walk to an H.264 mp4 (written under a temporary name, then renamed)."""
    scenes = spec.scenes()
    parts = [f"{scene.source},trim=duration={scene.seconds},setpts=PTS-STARTPTS,format=yuv420p[s{i}]"
             for i, scene in enumerate(scenes)]
    joined = "".join(f"[s{i}]" for i in range(len(scenes)))
    ramp = f"eq=brightness='{spec.dusk_brightness}*t/{spec.duration}':eval=frame"
    graph = ";".join(parts) + f";{joined}concat=n={len(scenes)}:v=1:a=0,{ramp}[v]"
    replace_atomically(path, lambda tmp: subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-filter_complex", graph, "-map", "[v]",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", str(spec.rate * 2), "-pix_fmt", "yuv420p",
         "-movflags", "+faststart", "-f", "mp4", str(tmp)], check=True))
    return path
