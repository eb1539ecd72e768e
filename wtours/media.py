"""ffmpeg and ffprobe: the one place that finds them, probes videos and checks that they decode.

Binaries come from, in order: `$WTOURS_FFMPEG` / `$WTOURS_FFPROBE`; the system PATH; the ffmpeg binary shipped in the
`imageio-ffmpeg` wheel (no root needed). That wheel has no ffprobe, so probing falls back to parsing `ffmpeg -i` and
counting frames with a stream copy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

from wtours.errors import WtoursError

FFMPEG_ENV = "WTOURS_FFMPEG"
FFPROBE_ENV = "WTOURS_FFPROBE"
# Debug/test knob: ignore a system ffmpeg and use the wheel's binary.
WHEEL_ONLY_ENV = "WTOURS_FFMPEG_FROM_WHEEL"

NO_FFMPEG_HINT = (
    "install ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`, macOS: `brew install ffmpeg`), "
    "or without root `pip install imageio-ffmpeg`, or point WTOURS_FFMPEG at an ffmpeg binary"
)


@dataclass(frozen=True)
class Tools:
    ffmpeg: str
    ffprobe: str | None  # None: probe by parsing `ffmpeg -i`
    source: str  # "env", "system" or "wheel"


@cache
def _find_tools(env_ffmpeg: str | None, env_ffprobe: str | None, wheel_only: bool) -> Tools:
    if env_ffmpeg:
        if not (Path(env_ffmpeg).is_file() and os.access(env_ffmpeg, os.X_OK)):
            raise WtoursError(f"{FFMPEG_ENV}={env_ffmpeg} is not an executable file", NO_FFMPEG_HINT)
        return Tools(env_ffmpeg, env_ffprobe or _sibling_ffprobe(env_ffmpeg), "env")
    system = None if wheel_only else shutil.which("ffmpeg")
    if system:
        return Tools(system, env_ffprobe or shutil.which("ffprobe") or _sibling_ffprobe(system), "system")
    try:
        import imageio_ffmpeg

        return Tools(imageio_ffmpeg.get_ffmpeg_exe(), env_ffprobe, "wheel")
    except (ImportError, RuntimeError) as e:
        raise WtoursError("no ffmpeg found on PATH and none shipped by a Python wheel", NO_FFMPEG_HINT) from e


def _sibling_ffprobe(ffmpeg: str) -> str | None:
    candidate = Path(ffmpeg).with_name("ffprobe")
    return str(candidate) if candidate.is_file() else None


def find_tools() -> Tools:
    return _find_tools(os.environ.get(FFMPEG_ENV), os.environ.get(FFPROBE_ENV),
                       os.environ.get(WHEEL_ONLY_ENV, "") not in ("", "0"))


def ffmpeg_exe() -> str:
    return find_tools().ffmpeg


@dataclass(frozen=True)
class ProbeResult:
    duration: float  # seconds
    fps: float  # average frame rate
    fps_fraction: str  # exact rate as "num/den"
    width: int
    height: int
    codec: str
    frames: int
    start_time: float  # first video timestamp, seconds
    container: str

    def to_dict(self) -> dict:
        return asdict(self)


class ProbeError(WtoursError):
    pass


def probe(path: str | os.PathLike) -> ProbeResult:
    """Duration, frame rate, size, codec and frame count of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path} does not exist", "check the path (or run `wtours download` / `wtours add` first)")
    tools = find_tools()
    result = _probe_ffprobe(tools.ffprobe, path) if tools.ffprobe else _probe_ffmpeg(tools.ffmpeg, path)
    if result.duration <= 0 or result.width <= 0 or result.height <= 0:
        raise ProbeError(f"{path} has no usable duration or frame size", "the file may be damaged; download it again")
    return result


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace")


def _not_a_video(path: Path, detail: str) -> ProbeError:
    detail = detail.strip().splitlines()[-1] if detail.strip() else "no video stream"
    return ProbeError(f"{path} is not a readable video ({detail})",
                      "check that the file is a complete video (a download may have been cut short); "
                      "fetch it again or add another copy")


def _probe_ffprobe(ffprobe: str, path: Path) -> ProbeResult:
    out = _run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                "stream=codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration,start_time"
                ":format=duration,format_name", "-of", "json", str(path)])
    if out.returncode != 0:
        raise _not_a_video(path, out.stderr)
    data = json.loads(out.stdout or "{}")
    streams = data.get("streams") or []
    if not streams:
        raise _not_a_video(path, "no video stream")
    s, fmt = streams[0], data.get("format", {})
    rate = _rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
    duration = _float(s.get("duration")) or _float(fmt.get("duration"))
    frames = int(s["nb_frames"]) if str(s.get("nb_frames", "")).isdigit() else None
    if frames is None:
        # Containers such as webm/mkv carry no frame count: count packets (no decoding, fast).
        counted = _run([ffprobe, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                        "stream=nb_read_packets", "-of", "csv=p=0", str(path)])
        text = counted.stdout.strip().rstrip(",")
        frames = int(text) if text.isdigit() else round((duration or 0.0) * float(rate or 0))
    return ProbeResult(
        duration=duration or 0.0, fps=float(rate or 0), fps_fraction=str(rate or "0/1"),
        width=int(s.get("width") or 0), height=int(s.get("height") or 0), codec=s.get("codec_name", "unknown"),
        frames=frames, start_time=_float(s.get("start_time")) or 0.0, container=fmt.get("format_name", ""),
    )


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_START_RE = re.compile(r"start:\s*(-?\d+(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) fps")
_INPUT_RE = re.compile(r"Input #0, ([\w,]+), from")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")


def _probe_ffmpeg(ffmpeg: str, path: Path) -> ProbeResult:
    """Probe without ffprobe: parse `ffmpeg -i`, count frames with a stream copy to null."""
    info = _run([ffmpeg, "-hide_banner", "-i", str(path)]).stderr  # exits 1 ("no output"): expected
    video = _VIDEO_RE.search(info)
    duration = _DURATION_RE.search(info)
    if not video or not duration:
        raise _not_a_video(path, info)
    h, m, s = duration.groups()
    seconds = int(h) * 3600 + int(m) * 60 + float(s)
    line = info[video.start():].splitlines()[0]
    fps_match = _FPS_RE.search(line)
    fps = float(fps_match.group(1)) * (1000 if fps_match and fps_match.group(2) else 1) if fps_match else 0.0
    counted = _run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                    "-f", "null", "-"])
    frames = [int(x) for x in _FRAME_RE.findall(counted.stderr)]
    start = _START_RE.search(info)
    container = _INPUT_RE.search(info)
    return ProbeResult(
        duration=seconds, fps=fps, fps_fraction=str(Fraction(fps).limit_denominator(1001)),
        width=int(video.group(2)), height=int(video.group(3)), codec=video.group(1),
        frames=frames[-1] if frames else round(seconds * fps), start_time=float(start.group(1)) if start else 0.0,
        container=container.group(1) if container else "",
    )


def verify_decodes(path: str | os.PathLike, duration: float) -> None:
    """Decode one frame at the start and one near the end: catches bodies cut short or damaged."""
    ffmpeg = ffmpeg_exe()
    for at in (0.0, max(0.0, duration - 1.0)):
        out = _run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-stats", "-ss", f"{at:.3f}", "-i",
                    str(path), "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"])
        frames = [int(x) for x in _FRAME_RE.findall(out.stderr)]
        if out.returncode != 0 or not frames or frames[-1] < 1:
            where = "start" if at == 0 else f"{at:.1f} s (near its end)"
            raise ProbeError(f"{path} does not decode at {where}",
                             "the file is probably truncated or damaged; fetch it again (a rerun resumes)")


def _rate(text: str | None) -> Fraction | None:
    try:
        return (Fraction(text) or None) if text else None  # a rate of 0 is no rate
    except (ValueError, ZeroDivisionError):
        return None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@cache
def _hwaccels(ffmpeg: str) -> tuple[str, ...]:
    out = _run([ffmpeg, "-hide_banner", "-hwaccels"])
    return tuple(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


def cuda_decoding_available() -> bool:
    """ffmpeg was built with CUDA decoding and an NVIDIA device is present."""
    return "cuda" in _hwaccels(ffmpeg_exe()) and Path("/dev/nvidia0").exists()
