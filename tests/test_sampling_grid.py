"""Issue 14: every written frame is read at every sampling rate.

The decoder gives each frame a grid cell from its time (`frame_time`, `cell_of`); readers (stats, the
clip loader) recompute the cell from the sample's recorded `t` with `sample_cell`. Version 1 wrote `t`
rounded to 6 decimals, and on 30 and 60 fps sources sampled at 3, 6, 12 or 15 fps, where a frame sits
exactly on each cell boundary, the rounded time fell into the cell before: stats skipped those frames
and reported gaps, and the loader broke clips. The property is checked as pure arithmetic over the
exact frame timestamps of all 63 (source rate, sampling rate) pairs, and end to end with real ffmpeg
on formerly failing pairs."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from tests.videos import index_json, make_video
from wtours.layout import Layout
from wtours.shard.plan import cell_of, frame_time, sample_cell
from wtours.shard.run import cell_runs
from wtours.stats.frames import on_grid

# Source rates with the time bases ffmpeg's mp4 muxer gives them (what `ffprobe` reports for our videos).
SOURCES = {"24": (Fraction(24), 12288), "25": (Fraction(25), 12800), "29.97": (Fraction(30000, 1001), 30000),
           "30": (Fraction(30), 15360), "50": (Fraction(50), 12800), "59.94": (Fraction(60000, 1001), 60000),
           "60": (Fraction(60), 15360)}
RATES = [1, 2, 3, 4, 5, 6, 10, 12, 15]
SECONDS = 12


def decoded_samples(source: str, fps: float) -> list[tuple[int, float]]:
    """(cell, t) of the frames the decoder keeps: the first frame of each cell, as ffmpeg's select does."""
    rate, timescale = SOURCES[source]
    time_base = Fraction(1, timescale)
    ticks = timescale / rate  # per frame: whole for these time bases
    kept: list[tuple[int, float]] = []
    for k in range(int(SECONDS * rate)):
        t = frame_time(int(k * ticks), time_base, 0.0)
        cell = cell_of(t, fps)
        if not kept or cell > kept[-1][0]:
            kept.append((cell, t))
    return kept


def recorded(t: float) -> float:
    """What a reader gets back from the sample's json."""
    return json.loads(json.dumps({"t": t}))["t"]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("fps", RATES)
def test_readers_find_the_decoders_cell_for_every_sample(source, fps):
    kept = decoded_samples(source, fps)
    cells = [cell for cell, _ in kept]
    assert cells == list(range(SECONDS * fps))  # every cell has a frame: the sampling rate is below the source's
    assert cell_runs(cells) == ((0, SECONDS * fps - 1),)
    # The clip loader and stats read every sample in the decoder's cell ...
    assert [sample_cell(recorded(t), fps) for _, t in kept] == cells
    # ... and stats, selecting on the grid, keeps every sample the index lists.
    assert len(list(on_grid([recorded(t) for _, t in kept], float(fps), time_of=lambda t: t))) == len(kept)
    # Version-1 shards (t rounded to 6 decimals) are read right too.
    assert [sample_cell(round(t, 6), fps, t_decimals=6) for _, t in kept] == cells


def test_the_old_rounding_loses_frames_where_the_issue_saw_it():
    """The root cause, pinned: rounded `t` and plain `cell_of` lose 24 of 72 frames at 60 -> 6 fps."""
    kept = decoded_samples("60", 6)[:72]
    assert sum(cell_of(round(t, 6), 6) != cell for cell, t in kept) == 24
    assert all(cell_of(round(t, 6), 6) == cell for cell, t in decoded_samples("25", 6))


# ------------------------------------------------------------------ end to end, real ffmpeg


@pytest.mark.slow
@pytest.mark.parametrize("source_rate, fps", [(60, 6), (30, 15), (30, 3), (60, 12)])
def test_shard_stats_and_clips_read_every_frame(tmp_path, source_rate, fps):
    from wtours.clips.epoch import ClipConfig, ShardRead, clip_starts, clips_per_epoch
    from wtours.clips.spec import resolve
    from wtours.clips.stages import Problems, shard_clips
    from wtours.fetch.local import add_local
    from wtours.shard.params import RunOptions, ShardParams
    from wtours.shard.read import iter_video_samples
    from wtours.shard.run import shard_video
    from wtours.stats.params import StatsConfig
    from wtours.stats.run import stats_video

    layout = Layout(tmp_path / "root")
    video = make_video(tmp_path / "v.mp4", seconds=3.0, size="64x36", rate=source_rate)
    add_local(video, "v", layout.root, mode="symlink", say=lambda m: None)
    shard_video(layout, "v", ShardParams(fps=float(fps), short_side=36, samples_per_shard=1000),
                RunOptions(progress=False), say=lambda m: None)
    index = index_json(layout, "v")
    assert index["samples"] == 3 * fps and index["shards"][0]["cell_runs"] == [[0, 3 * fps - 1]]

    summary = stats_video(layout, "v", StatsConfig(classes=False, progress=False), say=lambda m: None).summary
    assert summary["frames"] == index["samples"] and summary["gaps"] == []

    config = ClipConfig(frames=2, stride=1.0)
    refs = resolve("v", layout.root)
    expected = clips_per_epoch(refs, config)  # what `wtours inspect` reports, from the cell runs
    assert expected == 3 * fps - fps
    problems = Problems()
    reads = [ShardRead.whole(ref, clip_starts(ref, config)) for ref in refs]
    clips = list(shard_clips(reads, config, problems))
    assert len(clips) == expected and problems.bad_samples == 0
    assert [s.meta.frame for s in iter_video_samples(layout, "v")] == [c * source_rate // fps for c in range(3 * fps)]
