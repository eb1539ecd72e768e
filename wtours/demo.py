"""`wtours demo`: the whole pipeline, offline, on the built-in synthetic walk.

add -> shard -> stats -> a short DoRA training run (CPU, or GPU when present) -> export -> viz,
ending with a short report. Each step is the library call its command makes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wtours.catalog import catalog, format_table
from wtours.fetch.local import add_local
from wtours.layout import CHECKPOINT_FILE, RUN_CURVES_FILE, RUN_LOG_FILE, Layout
from wtours.shard.index import load_index
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video
from wtours.synthetic import WalkSpec, make_walk

DEMO_SLUG = "demo-walk"


@dataclass(frozen=True)
class DemoConfig:
    root: Path
    workers: int = 2
    steps: int = 30  # training steps
    progress: bool = True


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> dict:
    layout = Layout(config.root)
    started = time.monotonic()
    spec = WalkSpec()
    report: dict = {"root": str(layout.root)}

    video = layout.demo_video_path()
    if not video.is_file():
        say(f"[1/8] rendering the built-in {spec.duration:.0f} s walk (scene cuts at "
            f"{', '.join(f'{t:g}' for t in spec.cut_times())} s, dusk ramp, a blank stretch) -> {video}")
        make_walk(video, spec)
    else:
        say(f"[1/8] reusing {video}")

    say(f"[2/8] wtours add {video} --name {DEMO_SLUG}")
    add_local(video, DEMO_SLUG, layout.root, mode="link", say=say)

    say(f"[3/8] wtours shard --city {DEMO_SLUG} --samples-per-shard 40")
    shard_video(layout, DEMO_SLUG, ShardParams(samples_per_shard=40),
                RunOptions(workers=config.workers, progress=config.progress), say=say)
    index = load_index(layout, DEMO_SLUG)
    say(f"      {index.samples} frames in {len(index.shards)} shards under {layout.shard_dir(DEMO_SLUG)}; "
        f"dropped {index.dropped} in {[list(s) for s in index.blank_stretches]}")
    report["shards"] = str(layout.shard_dir(DEMO_SLUG))

    say(f"[4/8] wtours stats --city {DEMO_SLUG} --no-classes   (the detector needs downloaded weights)")
    report["stats"] = _stats(layout, config, say)

    run = layout.demo_run_dir()
    say(f"[5/8] wtours train --shards {DEMO_SLUG} --out {run} (a short run)")
    report["train"] = _train(layout, run, config, say)

    exported = run / "teacher_backbone.pth"
    say(f"[6/8] wtours export {run / CHECKPOINT_FILE} --out {exported}")
    from wtours.hub.export import export_backbone

    export_backbone(run / CHECKPOINT_FILE, exported)
    report["export"] = str(exported)

    viz_dir = run / "viz"
    say(f"[7/8] wtours viz {run / CHECKPOINT_FILE} --shards {DEMO_SLUG} --clips 2 --frames 4 --out {viz_dir}")
    from wtours.viz import VizConfig, visualise

    viz = visualise(run / CHECKPOINT_FILE, DEMO_SLUG, viz_dir, VizConfig(clips=2, frames=4), root=layout.root,
                    say=say)
    report["viz"] = [str(viz_dir / f) for clip in viz["clips"] for f in (clip["png"], clip["gif"])]

    say("[8/8] the root now holds:")
    say(format_table([r for r in catalog(layout) if r["downloaded"] or r["sharded"]]))
    _report(report, say)
    say(f"demo finished in {time.monotonic() - started:.0f} s")
    return report


def _stats(layout: Layout, config: DemoConfig, say: Callable[[str], None]) -> dict:
    from wtours.stats.params import StatsConfig
    from wtours.stats.run import compare, stats_videos

    stats_videos(layout, [DEMO_SLUG], StatsConfig(classes=False, progress=config.progress), say=say)
    tables = compare(layout, None, say=say)
    summary = json.loads(layout.stats_summary_path(DEMO_SLUG).read_text())
    return {"dir": str(layout.stats_dir(DEMO_SLUG)), "cuts": summary["cuts"],
            "scene_changes": summary["scene_changes"], "lightness": summary["lightness"],
            "corpus_md": str(tables.get("markdown", ""))}


def _train(layout: Layout, run: Path, config: DemoConfig, say: Callable[[str], None]) -> dict:
    import torch

    from wtours.dora.config import DoRAConfig
    from wtours.train.config import TrainConfig
    from wtours.train.run import train

    gpu = torch.cuda.is_available()
    train_config = TrainConfig(
        shards=(DEMO_SLUG,), root=str(layout.root), out=str(run), model=DoRAConfig(
            arch="vit_small" if gpu else "vit_micro", out_dim=4096 if gpu else 1024, n_local=6 if gpu else 2),
        batch_size=8 if gpu else 4, clip_frames=8 if gpu else 4, steps=config.steps, warmup_epochs=0.5, lr=5e-4,
        workers=config.workers, log_every=1, checkpoint_every=config.steps, seed=0, overwrite=True)  # a rerun: afresh
    train(train_config, say=say)
    log = [json.loads(line) for line in (run / RUN_LOG_FILE).read_text().splitlines()]
    curve = run / RUN_CURVES_FILE  # drawn by the run itself
    return {"run": str(run), "steps": len(log), "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"],
            "clips_per_s": log[-1]["clips_per_s"], "loss_curve": str(curve)}


def _report(report: dict, say: Callable[[str], None]) -> None:
    stats, train = report["stats"], report["train"]
    light = stats["lightness"]
    say("")
    say("=== wtours demo report ===")
    say(f"hard cuts found at (s): {', '.join(f'{t:.1f}' for t in stats['cuts']) or 'none'}"
        f"   (rendered at {', '.join(f'{t:g}' for t in WalkSpec().cut_times())}; the blank stretch that starts at"
        " 42 s is not in the shards, so the walk resumes with a cut at 48 s)")
    say(f"gradual scene changes at (s): {', '.join(f'{t:.1f}' for t in stats['scene_changes']) or 'none'}")
    say(f"lightness L*: mean {light['mean']:.1f}, min {light['min']:.1f}, max {light['max']:.1f} (dusk ramp)")
    if stats["corpus_md"]:
        say(Path(stats["corpus_md"]).read_text().rstrip())
    say(f"training: {train['steps']} steps, loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}, "
        f"{train['clips_per_s']:.1f} clips/s")
    say(f"loss curve: {train['loss_curve']}")
    say(f"stats plots: {stats['dir']}")
    say(f"exported teacher backbone: {report['export']}")
    say(f"tracking pictures (frames x [frame, heads' attention, objects]): {', '.join(report['viz'])}")
