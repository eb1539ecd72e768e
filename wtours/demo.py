"""`wtours demo`: the whole pipeline, offline, on the built-in synthetic walk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wtours.catalog import catalog, format_table
from wtours.download import add_local
from wtours.layout import Layout
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video
from wtours.synthetic import WalkSpec, make_walk

DEMO_SLUG = "demo-walk"


@dataclass(frozen=True)
class DemoConfig:
    root: Path
    workers: int = 2
    progress: bool = True


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> dict:
    layout = Layout(config.root)
    started = time.monotonic()
    spec = WalkSpec()
    video = layout.root / "inputs" / "synthetic-walk.mp4"
    if not video.is_file():
        say(f"[1] rendering the built-in {spec.duration:.0f} s walk with ffmpeg -> {video}")
        make_walk(video, spec)
    else:
        say(f"[1] reusing {video}")
    say(f"[2] wtours add {video} --name {DEMO_SLUG}")
    add_local(video, DEMO_SLUG, layout.root, mode="link", say=say)
    say(f"[3] wtours shard --city {DEMO_SLUG} --samples-per-shard 20")
    params = ShardParams(samples_per_shard=20)
    summary = shard_video(layout, DEMO_SLUG, params, RunOptions(workers=config.workers, progress=config.progress),
                          say=say)
    index = layout.read_index(DEMO_SLUG)
    say(f"    {index['samples']} frames in {len(index['shards'])} shards under {layout.shard_dir(DEMO_SLUG)}; "
        f"dropped {index['dropped']} in {index['blank_stretches']}")
    say("[4] wtours list")
    say(format_table([r for r in catalog(layout) if r["downloaded"] or r["sharded"]]))
    say(f"demo finished in {time.monotonic() - started:.0f} s; data root: {layout.root}")
    return {"index": index, "summary": summary}
