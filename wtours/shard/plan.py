"""Cutting a video's timeline into segments: one segment is one work unit and one shard.

Sampling uses a fixed grid: cell k covers [k/F, (k+1)/F) seconds from the first timestamp, and its sample is
the first decoded frame whose timestamp falls in it. A segment covers `samples_per_shard` consecutive cells,
so every shard spans the same stretch of time, shard N+1 starts where N ends, and the work can be split over
processes and machines without changing a byte."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from wtours.media import ProbeResult
from wtours.shard.params import ShardParams

EPS = 1e-6  # guards floor() against timestamps a hair under a cell boundary; used identically by ffmpeg


def cell_of(t: float, fps: float) -> int:
    """Grid cell of a time in seconds from the first timestamp (same formula as the ffmpeg select). Exact only
    for the float `frame_time` gives: a value rounded on the way (`t` to 6 decimals, or a rate as `1 / every`)
    can fall a hair under a cell boundary and land in the cell before."""
    return math.floor(t * fps + EPS)


def merge_runs(runs: Iterable[tuple[Any, Any]], gap: float) -> list[tuple[Any, Any]]:
    """(first, last) runs, sorted and joined where one starts within `gap` of the previous one's end: blank
    frame times (first == last) into stretches, segments' stretches across their boundaries, grid cells
    into runs of consecutive cells (gap 1)."""
    merged: list[list[Any]] = []
    for first, last in sorted(runs):
        if merged and first - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [(first, last) for first, last in merged]


def frame_time(pts: int, time_base: Fraction, start_time: float) -> float:
    """A decoded frame's time in seconds from the first timestamp, computed as ffmpeg's select computes
    `t - start`; the decoder takes the frame's cell from it and records it, unrounded, as the sample's `t`,
    so every reader that applies `cell_of` to a recorded `t` finds the decoder's cell, bit for bit."""
    return pts * (time_base.numerator / time_base.denominator) - start_time


def sample_cell(t: float, fps: float, t_decimals: int | None = None) -> int:
    """Grid cell of a stored sample from its recorded `t`: the one rule every reader uses.

    Shards of index version 2 record `t` as `frame_time` gave it, so this is `cell_of`, exactly. Version 1
    rounded `t` to `t_decimals` (6) decimals, up to half a unit low: on a 30 or 60 fps source sampled at 3, 6,
    12 or 15 fps the frame that opens a cell sits exactly on its boundary, and the rounded time fell into the
    cell before. Half a unit is added back for those (exact unless a source frame lies within a microsecond
    before a boundary, which no real time base gives)."""
    slack = 0.5 * 10.0 ** -t_decimals if t_decimals is not None else 0.0
    return cell_of(t + slack, fps)


@dataclass(frozen=True)
class Segment:
    number: int
    first_cell: int
    end_cell: int  # exclusive
    expected_last_cell: int  # the last cell that holds a source frame, per the probe

    def t_start(self, fps: float) -> float:
        return self.first_cell / fps

    def t_end(self, fps: float) -> float:
        return self.end_cell / fps


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is `short_side`, keeping the aspect; never upscale."""
    short = min(width, height)
    if short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def plan_segments(probe: ProbeResult, params: ShardParams) -> list[Segment]:
    fps = params.fps
    end = min(probe.duration, params.end) if params.end is not None else probe.duration
    first = math.ceil(params.start * fps - EPS)
    stop = math.ceil(end * fps - EPS)
    last_frame_t = (probe.frames - 1) / probe.fps if probe.frames and probe.fps else end
    last_source_cell = min(cell_of(last_frame_t, fps), stop - 1)
    n = params.samples_per_shard
    return [Segment(number, a, min(a + n, stop), min(a + n - 1, last_source_cell))  # last_source_cell < stop
            for number, a in enumerate(range(first, stop, n))]
