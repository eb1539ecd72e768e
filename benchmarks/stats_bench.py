"""wtours stats vs PySceneDetect's ContentDetector on the same frames, side by side.

Frames: real street footage (tests/data/vtest.mp4, 20 s) looped to 8 minutes and sharded with the
defaults (2 fps, short side 512: 683x512 JPEGs), about 960 frames. Rows, in frames per second:

  psd_default    ContentDetector as PySceneDetect's SceneManager runs it by default: each frame
                 resized to about 256 px wide (cv2.resize), then HSV deltas to the previous frame
  psd_full       ContentDetector on the full 683x512 frames
  wtours         wtours stats' per-frame stage on the same frames: analysis grid, rgb2lab (lightness
                 mean and 10/50/90th percentiles) and the colour histogram, then the change score, hard
                 cuts and gradual scene changes over the whole sequence
  *_e2e          the same from the shard files: PySceneDetect default after cv2.imdecode of each JPEG,
                 and `wtours stats --no-classes` itself (tar reading, JPEG decoding, resume parts,
                 summary, parquet and plots included)

Decoded frames are held in memory (RGB for wtours, BGR for OpenCV; the conversion is not timed).
Needs the `bench` extra: pip install -e '.[bench]'.

    python -m benchmarks.stats_bench [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import STREET, cached_video, header
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video
from wtours.stats.frames import ShardSource
from wtours.stats.measure import measure
from wtours.stats.params import StatsConfig, TransitionParams
from wtours.stats.run import stats_video
from wtours.stats.transitions import (
    change_scores,
    detect_cuts,
    detect_scene_changes,
    drift_scores,
    gaps,
    normalise,
    shots,
)

SLUG = "street"


def street_loop(loops: int = 24) -> Path:
    return cached_video(f"street-loop{loops}.mp4", [
        "-stream_loop", str(loops - 1), "-i", str(STREET), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-pix_fmt", "yuv420p"])


def psd_default(frames_bgr: list[np.ndarray]) -> int:
    import cv2
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector
    from scenedetect.scene_manager import compute_downscale_factor

    detector, cuts = ContentDetector(), 0
    height, width = frames_bgr[0].shape[:2]
    factor = compute_downscale_factor(width)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    for i, frame in enumerate(frames_bgr):
        small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR) if factor > 1 else frame
        cuts += len(detector.process_frame(FrameTimecode(i, 2.0), small))
    return cuts


def psd_full(frames_bgr: list[np.ndarray]) -> int:
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector

    detector = ContentDetector()
    return sum(len(detector.process_frame(FrameTimecode(i, 2.0), frame)) for i, frame in enumerate(frames_bgr))


def wtours_measure(frames, every: float) -> int:
    params = TransitionParams()
    measured = list(measure(frames, StatsConfig().analysis.analysis_pixels))
    t = np.array([m.row["t"] for m in measured])
    dist = normalise(np.stack([m.hist for m in measured]))
    scores = change_scores(dist)
    cuts = detect_cuts(t, scores, dist, params)
    shot = shots(len(t), cuts, gaps(t, every))
    drift, reference = drift_scores(t, dist, np.array([m.row["lightness"] for m in measured]), shot, params)
    detect_scene_changes(t, drift, reference, params)
    return len(cuts)


def psd_e2e(layout: Layout) -> int:
    import cv2

    jpegs = [np.frombuffer(s.jpg, np.uint8) for s in ShardSource(layout, SLUG, None).samples(None)]
    return psd_default([cv2.imdecode(j, cv2.IMREAD_COLOR) for j in jpegs])


def wtours_e2e(layout: Layout, out: Path) -> int:
    config = StatsConfig(classes=False, progress=False, out=out, overwrite=True)
    return len(stats_video(layout, SLUG, config, say=lambda m: None).summary["cuts"])


def timed(function, *args) -> tuple[float, int]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    video = street_loop()
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(tmp)
        add_local(video, SLUG, layout.root, mode="symlink", say=lambda m: None)
        shard_video(layout, SLUG, ShardParams(), RunOptions(progress=False), say=lambda m: None)
        source = ShardSource(layout, SLUG, None)
        frames = list(source.frames())
        frames_bgr = [np.ascontiguousarray(f.rgb[..., ::-1]) for f in frames]
        height, width = frames[0].rgb.shape[:2]
        print(header("stats_bench"))
        print(f"frames: {len(frames)} shard frames of {video.name} ({width}x{height}, every {source.every:g} s)")
        runs: dict[str, list[float]] = {name: [] for name in
                                        ("psd_default", "psd_full", "wtours", "psd_default_e2e", "wtours_e2e")}
        cuts: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so load on the shared machine hits all alike
            for name, call in (("psd_default", lambda: psd_default(frames_bgr)),
                               ("psd_full", lambda: psd_full(frames_bgr)),
                               ("wtours", lambda: wtours_measure(frames, source.every)),
                               ("psd_default_e2e", lambda: psd_e2e(layout)),
                               ("wtours_e2e", lambda: wtours_e2e(layout, Path(tmp) / "stats"))):
                seconds, cuts[name] = timed(call)
                runs[name].append(seconds)
    rates = {name: len(frames) / statistics.median(times) for name, times in runs.items()}
    for name, rate in rates.items():
        times = ", ".join(f"{t:.3f}s" for t in runs[name])
        print(f"{name:>16}: {rate:8.1f} frames/s  cuts {cuts[name]:>2}  (runs: {times})")
    print(f"ratio wtours / psd_default: {rates['wtours'] / rates['psd_default']:.2f}   (target >= 1)")
    print(f"ratio wtours / psd_full: {rates['wtours'] / rates['psd_full']:.2f}")
    print(f"ratio wtours_e2e / psd_default_e2e: {rates['wtours_e2e'] / rates['psd_default_e2e']:.2f}")


if __name__ == "__main__":
    main()
