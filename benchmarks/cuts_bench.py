"""The two cut detectors of `wtours stats` side by side: the built-in colour-histogram one and TransNetV2.

Videos (made once under bench-data/):
  street_shots  real street footage (tests/data/vtest.mp4) cut into 4 shots of 5 s from distinct times and
                parts of the frame (one mirrored), 10 fps: cuts at 5, 10, 15 s
  street        vtest.mp4 itself: 20 s of one static camera, no cut (every cut found is a false one)
  walk          the rendered synthetic walk (wtours.synthetic, 320x180, 25 fps): cuts at 16, 30, 42, 48 s

Each video is decoded as `wtours stats --from video` does (VideoSource, 512 px short side) at each --every,
the frames held in memory; then, per detector, the cuts and the time their own work takes (decoding excluded):
  builtin    analysis grid -> rgb2lab -> colour histogram per frame, then change scores and hard cuts
  transnetv2 each frame shrunk to 48x27, then the network over the sequence (its per-frame probability) and cuts
Precision and recall against the known cuts, and the agreement of the two, use a tolerance of --tolerance s.
Rows are frames per second of that work; the ratio is builtin / transnetv2.

    python -m benchmarks.cuts_bench [--every 0.5 0.2 0.04] [--device cpu] [--tolerance 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, STREET, cached_video, header
from wtours.media import probe
from wtours.stats.frames import VideoSource
from wtours.stats.lightness import to_lab
from wtours.stats.measure import BATCH, analysis_grid
from wtours.stats.params import DEFAULT_ANALYSIS_PIXELS, TransitionParams
from wtours.stats.transitions import agreement, change_scores, colour_histograms, detect_cuts
from wtours.stats.transnet import cuts_from_probabilities, load_transnet, thumbnail
from wtours.synthetic import WalkSpec, make_walk
from wtours.system import resolve_device

SHOT = 5  # seconds per shot of street_shots


def street_shots() -> Path:
    pieces = ["crop=384:288:0:0", "crop=384:288:384:288,hflip", "crop=384:288:384:0", "crop=384:288:0:288"]
    starts = [0, 14, 6, 10]  # seconds into vtest.mp4: distinct moments of the street
    inputs, chains = [], []
    for i, (start, graph) in enumerate(zip(starts, pieces)):
        inputs += ["-ss", str(start), "-t", str(SHOT), "-i", str(STREET)]
        chains.append(f"[{i}:v]{graph},scale=320:240,setsar=1,fps=10,setpts=PTS-STARTPTS,format=yuv420p[s{i}]")
    joined = "".join(f"[s{i}]" for i in range(len(pieces)))
    graph = ";".join(chains) + f";{joined}concat=n={len(pieces)}:v=1:a=0[v]"
    return cached_video("street-shots.mp4", [*inputs, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264",
                                             "-preset", "fast", "-pix_fmt", "yuv420p"])


def walk() -> Path:
    path = DATA / "walk-320x180-25fps.mp4"
    if not path.is_file():
        DATA.mkdir(exist_ok=True)
        make_walk(path, WalkSpec(width=320, height=180, rate=25))
    return path


def decode(path: Path, every: float) -> list:
    return list(VideoSource(path, probe(path), "-", every).frames())


def builtin_cuts(frames: list, params: TransitionParams) -> tuple[list[float], float]:
    started = time.perf_counter()
    hists = []
    for a in range(0, len(frames), BATCH):
        grid = np.stack([analysis_grid(f.rgb, DEFAULT_ANALYSIS_PIXELS) for f in frames[a:a + BATCH]])
        hists.append(colour_histograms(to_lab(grid)))  # (B, BINS)
    counts = np.concatenate(hists)
    t = np.array([f.t for f in frames])
    cuts = detect_cuts(t, change_scores(counts), counts, params)
    return [float(t[i]) for i in cuts], time.perf_counter() - started


def transnet_cuts(frames: list, model, params: TransitionParams) -> tuple[list[float], float]:
    started = time.perf_counter()
    small = np.stack([thumbnail(f.rgb) for f in frames])  # (N, 27, 48, 3)
    probability = model.probabilities(small)
    t = np.array([f.t for f in frames])
    cuts = cuts_from_probabilities(t, probability, 0.5, params.min_gap)
    return [float(t[i]) for i in cuts], time.perf_counter() - started


def scores(found: list[float], truth: list[float], tolerance: float) -> str:
    hits = len(agreement(found, truth, tolerance).both)
    precision = f"{hits / len(found):.2f}" if found else "-"
    recall = f"{hits / len(truth):.2f}" if truth else "-"
    return f"P {precision} R {recall} ({len(found)} found)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, nargs="+", default=[0.5, 0.2, 0.04])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tolerance", type=float, default=1.0)
    args = parser.parse_args()
    print(header("cuts_bench") + f" | transnetv2 on {args.device}")
    params = TransitionParams()
    model = load_transnet(str(resolve_device(args.device)))
    videos = {"street_shots": (street_shots(), [5.0, 10.0, 15.0]), "street": (STREET, []),
              "walk": (walk(), WalkSpec().cut_times())}
    warm = decode(STREET, 1.0)[:8]  # first calls (imports, kernels) are not timed
    builtin_cuts(warm, params), transnet_cuts(warm, model, params)
    print("video | every (s) | frames | builtin | transnetv2 | both / builtin only / transnetv2 only | "
          "builtin f/s | transnetv2 f/s | ratio")
    for name, (path, truth) in videos.items():
        for every in args.every:
            frames = decode(path, every)
            found_b, seconds_b = builtin_cuts(frames, params)
            found_t, seconds_t = transnet_cuts(frames, model, params)
            agree = agreement(found_b, found_t, args.tolerance)
            print(f"{name} | {every:g} | {len(frames)} | {scores(found_b, truth, args.tolerance)} | "
                  f"{scores(found_t, truth, args.tolerance)} | {len(agree.both)} / {len(agree.first_only)} / "
                  f"{len(agree.second_only)} | {len(frames) / seconds_b:.0f} | {len(frames) / seconds_t:.0f} | "
                  f"{seconds_t / seconds_b:.1f}", flush=True)
            if found_t != found_b:
                print(f"  cuts: builtin {found_b}; transnetv2 {found_t}", flush=True)


if __name__ == "__main__":
    main()
