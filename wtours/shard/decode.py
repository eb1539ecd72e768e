"""Decoding one segment with ffmpeg: the grid-sampled frames, scaled, as RGB arrays with timestamps."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, cast

import numpy as np

from wtours.media import ProbeResult, ffmpeg_exe
from wtours.shard.plan import EPS, Segment, cell_of, frame_time

SEEK_MARGIN = 0.25  # seconds decoded before a segment, so its first grid frame is never cut by the seek
_TIME_BASE_RE = re.compile(r"config in time_base: (\d+)/(\d+)")
_SHOWINFO_RE = re.compile(r"\] n:\s*\d+ pts:\s*(-?\d+)")


@dataclass(frozen=True)
class DecodedFrame:
    cell: int  # grid cell (sample slot) the frame fills
    frame: int  # index of the frame in the source video
    t: float  # seconds from the video's first timestamp, as `frame_time` gives it (never rounded)
    rgb: np.ndarray  # (H, W, 3) uint8


_ADDRESS_RE = re.compile(r"\s*@\s*0x[0-9a-fA-F]+")  # "[h264 @ 0x55d0c6f1e2c0]": a pointer, new every run
_HEX_RE = re.compile(r"0x[0-9a-fA-F]{6,}")
_SIGNAL_RE = re.compile(r"received signal (\d+)")


def normalise_log_line(line: str, video: str | None = None) -> str:
    """ffmpeg's error text without what changes from run to run (pointer addresses, the data root's path
    to the video, shown as its file name), so that the index that records it is byte-identical."""
    if video:
        line = line.replace(video, Path(video).name)
    return _HEX_RE.sub("0x?", _ADDRESS_RE.sub("", line)).strip()


@dataclass
class DecodeOutcome:
    last_cell: int | None = None  # the furthest grid cell a frame was decoded for
    returncode: int | None = None
    stopped_early: bool = False  # we ended ffmpeg after the segment's last cell: a clean end
    ended: bool = False  # ffmpeg's output ran to its end (it exited by itself, not stopped by us)
    log_tail: list[str] = field(default_factory=list)
    video: str | None = None  # the input path as ffmpeg prints it

    def errors(self) -> list[str]:
        words = ("error", "invalid", "corrupt", "truncat", "partial file", "missing")
        lines = [normalise_log_line(line, self.video) for line in self.log_tail]
        return [line for line in lines if any(w in line.lower() for w in words)]

    def error_summary(self, limit: int = 5) -> tuple[str, ...]:
        """The distinct error lines, sorted: ffmpeg's decoder threads log in an order that changes from run
        to run, and the index that records them must not."""
        return tuple(sorted(set(self.errors()))[:limit])

    def killed_by(self) -> int | None:
        """The signal that ended ffmpeg from outside (kill, the OOM killer, a Ctrl-C), None when it ended
        by itself or we stopped it: a killed decoder says nothing about the video."""
        if not self.ended or self.stopped_early or self.returncode is None:
            return None
        if self.returncode < 0:
            return -self.returncode
        if self.returncode != 0:  # ffmpeg traps SIGINT/SIGTERM, finishes cleanly and exits 255
            for line in self.log_tail:
                if match := _SIGNAL_RE.search(line):
                    return int(match.group(1))
        return None


def build_command(video: Path, probe: ProbeResult, fps: float, segment: Segment, size: tuple[int, int],
                  hwaccel: str = "none") -> list[str]:
    import ffmpeg  # ffmpeg-python builds the filter graph and escapes it

    seek = max(0.0, segment.t_start(fps) - SEEK_MARGIN)
    duration = segment.t_end(fps) - seek + SEEK_MARGIN
    input_args = {"copyts": None, "t": f"{duration:.6f}"}
    if seek > 0:
        input_args["ss"] = f"{seek:.6f}"
    if hwaccel == "cuda":
        input_args["hwaccel"] = "cuda"
    # select keeps the first frame of each grid cell: its cell (`cell_of`) differs from the previous frame's
    cell = f"floor((({{}})-({probe.start_time!r}))*{fps!r}+{EPS!r})"
    width, height = size
    stream = (ffmpeg.input(str(video), **input_args).video
              .filter("select", f"isnan(prev_t)+gt({cell.format('t')},{cell.format('prev_t')})")
              .filter("scale", width, height, flags="area")
              .filter("showinfo")
              .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
              .global_args("-nostdin", "-hide_banner", "-nostats", "-v", "info"))
    return stream.compile(cmd=ffmpeg_exe())


class SegmentDecoder:
    """Runs ffmpeg for one segment; iterate for frames, then read `outcome`."""

    def __init__(self, video: Path, probe: ProbeResult, fps: float, segment: Segment, size: tuple[int, int],
                 hwaccel: str = "none"):
        self.command = build_command(video, probe, fps, segment, size, hwaccel)
        self.probe, self.fps, self.segment, self.size = probe, fps, segment, size
        self.outcome = DecodeOutcome(video=str(video))

    def __iter__(self) -> Iterator[DecodedFrame]:
        width, height = self.size
        frame_bytes = width * height * 3
        pts_queue: queue.Queue = queue.Queue()
        log: deque[str] = deque(maxlen=40)
        process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout = cast(IO[bytes], process.stdout)
        reader = threading.Thread(target=_read_log, args=(process.stderr, pts_queue, log), daemon=True)
        reader.start()
        try:
            while True:
                data = stdout.read(frame_bytes)  # buffered: blocks for a whole frame, or the end of the stream
                if len(data) < frame_bytes:  # the end (a partial frame at the very end is discarded)
                    self.outcome.ended = True
                    break
                time_base, pts = pts_queue.get(timeout=60)
                t = frame_time(pts, time_base, self.probe.start_time)  # as ffmpeg's select computes it
                cell = cell_of(t, self.fps)
                if cell < self.segment.first_cell:
                    continue  # decoded in the seek margin: belongs to the previous segment
                if cell >= self.segment.end_cell:
                    self.outcome.stopped_early = True
                    break
                self.outcome.last_cell = cell
                exact = Fraction(pts) * time_base - Fraction(self.probe.start_time)
                frame = round(float(exact) * float(Fraction(self.probe.fps_fraction)) + EPS)
                rgb = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
                yield DecodedFrame(cell, frame, t, rgb)  # t unrounded: readers recompute `cell` from it
        finally:
            if process.poll() is None:
                process.kill()
            stdout.close()
            self.outcome.returncode = process.wait()
            reader.join(timeout=10)
            self.outcome.log_tail = list(log)


def _read_log(stderr, pts_queue: queue.Queue, log: deque) -> None:
    """Parse showinfo lines (one per output frame, in order) and keep the rest of the log."""
    time_base = Fraction(1, 1)
    for raw in iter(stderr.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if match := _TIME_BASE_RE.search(line):
            time_base = Fraction(int(match.group(1)), int(match.group(2)))
        elif match := _SHOWINFO_RE.search(line):
            pts_queue.put((time_base, int(match.group(1))))
        elif "Parsed_showinfo" not in line:
            log.append(line)
    stderr.close()
