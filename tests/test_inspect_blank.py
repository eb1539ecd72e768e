"""`wtours inspect` reports blank stretches and a blank tail with their times (the mirror's Venice)."""

from __future__ import annotations

import json

from tests.cli import run_wtours
from tests.videos import make_video_with_black_tail
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video


def test_inspect_reports_a_blank_tail_with_its_times(tmp_path):
    video = make_video_with_black_tail(tmp_path / "tail.mp4", seconds=8.0, tail=6.0, size="160x120", rate=10)
    layout = Layout(tmp_path / "root")
    add_local(video, "venice", layout.root, mode="symlink", say=lambda m: None)
    shard_video(layout, "venice", ShardParams(fps=2.0, short_side=96, samples_per_shard=6),
                RunOptions(workers=1, progress=False), say=lambda m: None)
    result = run_wtours(["inspect", "venice", "--root", str(layout.root), "--clip-frames", "2"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "blank:" in line)
    assert "12 frames dropped in 1 stretch(es), 0:00:06: 0:00:08-0:00:14 (tail, to the end)" in line, line
    assert "shards end at 0:00:08 of 0:00:14 (blank)" in line, line
    info = json.loads(run_wtours(["inspect", "venice", "--root", str(layout.root), "--clip-frames", "2",
                                  "--json"]).stdout)
    blank = info["videos"]["venice"]["blank"]
    assert blank["frames"] == 12 and blank["tail"] == {"start": 8.0, "end": blank["tail"]["end"], "why": "blank"}
    assert abs(blank["tail"]["end"] - 14.0) < 0.05
    assert [(s["start"], s["tail"]) for s in blank["stretches"]] == [(8.0, True)]
    assert abs(blank["stretches"][0]["seconds"] - 6.0) < 0.05


def test_inspect_says_none_when_nothing_is_blank(tmp_path):
    from tests.videos import sharded_root

    root = sharded_root(tmp_path, seconds=6.0, samples_per_shard=6)
    result = run_wtours(["inspect", "walk", "--root", str(root), "--clip-frames", "2"])
    assert "  walk: blank: none" in result.stdout and "shards end at" not in result.stdout, result.stdout
