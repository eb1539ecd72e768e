"""Face blurring: `wtours shard --blur-faces` against the authors' route (`deface` over the whole video, then
`wtours shard`) and against plain `wtours shard`, side by side; the detector's frames/s on CPU; and the
recall on small faces of the two ways to find them (the final frame, enlarged or not, vs the 4K frame).

Makes its own videos from a real photograph (skimage's astronaut, NASA, public domain):
  - a 30 fps 1280x720 source, the face crossing a lavfi background (the 5x target: authors' route / ours)
  - a 4K60 source: real street footage (common.street_4k60) with the face overlaid (the 2x target: ours / plain)

    python -m benchmarks.blur_bench [--seconds 10] [--seconds-4k 6]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import DATA, cached_video, header, street_4k60
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.media import ffmpeg_exe
from wtours.privacy.detect import CenterFace
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video
from wtours.system import usable_cpus

FACE_HEIGHT = 120  # px of Eileen Collins' face (chin to hairline) in the 512x512 astronaut


def astronaut_png() -> Path:
    from skimage import data

    path = DATA / "astronaut.png"
    if not path.is_file():
        DATA.mkdir(exist_ok=True)
        Image.fromarray(data.astronaut()).save(path)
    return path


def faces_30fps(seconds: int) -> Path:
    return cached_video(f"faces720p30-{seconds}s.mp4", [
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}", "-loop", "1", "-i",
        str(astronaut_png()), "-filter_complex", "[1]scale=400:400[a];[0][a]overlay=x='40+t*70':y=160:shortest=1",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"])


def faces_4k60(seconds: int) -> Path:
    street = street_4k60(seconds)
    return cached_video(f"faces4k60-{seconds}s.mp4", [
        "-i", str(street), "-loop", "1", "-i", str(astronaut_png()), "-filter_complex",
        "[1]scale=1024:1024[a];[0][a]overlay=x='200+t*150':y=600:shortest=1", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", "120", "-pix_fmt", "yuv420p"])


def timed_shard(video: Path, params: ShardParams, work: Path, name: str) -> float:
    layout = Layout(work / name)
    add_local(video, "walk", layout.root, mode="symlink", say=lambda m: None)
    start = time.perf_counter()
    shard_video(layout, "walk", params, RunOptions(workers=usable_cpus(), progress=False), say=lambda m: None)
    return time.perf_counter() - start


def authors_route(video: Path, work: Path) -> tuple[float, float]:
    """(seconds of deface over the whole video, seconds of sharding its output)."""
    out = work / "anonymized.mp4"
    start = time.perf_counter()
    subprocess.run([shutil.which("deface") or str(Path(sys.executable).parent / "deface"), str(video), "-o", str(out),
                    "--ep", "CPUExecutionProvider"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deface_s = time.perf_counter() - start
    return deface_s, timed_shard(out, ShardParams(), work, "authors")


def detector_rate(detector: CenterFace, size: tuple[int, int], frames: int = 10) -> float:
    rgb = np.asarray(Image.open(astronaut_png()).convert("RGB").resize(size))  # (H, W, 3)
    detector.detect(rgb)  # warm up
    start = time.perf_counter()
    for _ in range(frames):
        detector.detect(rgb)
    return frames / (time.perf_counter() - start)


def small_face_recall() -> list[str]:
    """Faces of 6..32 px (in the final 910x512 frame) pasted into a 4K street frame: recall of detecting on the
    final frame (upscale 1 and 2) and on the 4K frame before the downscale, and each one's seconds per frame."""
    street = street_4k60(6)
    still = DATA / "street4k-frame.png"
    if not still.is_file():
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-ss", "2", "-i", str(street), "-frames:v", "1", str(still)],
                       check=True)
    frame = Image.open(still).convert("RGB")  # 3840x2160
    photo = Image.open(astronaut_png()).convert("RGB")
    ratio = 2160 / 512
    sizes = [6, 8, 11, 16, 24, 32]  # face height in the final frame, px
    truth: list[tuple[int, tuple[float, float, float, float]]] = []
    x = 60
    for final in sizes:
        side = round(512 * final * ratio / FACE_HEIGHT)  # the whole photograph, scaled so the face is `final` px
        pasted = photo.resize((side, side), Image.LANCZOS)
        for row in range(3):
            y = 100 + row * 700
            frame.paste(pasted, (x, y))
            k = side / 512
            truth.append((final, (x + 181 * k, y + 58 * k, x + 270 * k, y + 178 * k)))
        x += side + 60
    big = np.asarray(frame)  # (2160, 3840, 3)
    small = np.asarray(frame.resize((910, 512), Image.BOX))  # (512, 910, 3): as ffmpeg's area scale
    ways = [("final frame, upscale 1", small, 1.0, 910 / 3840), ("final frame, upscale 2", small, 2.0, 910 / 3840),
            ("4K frame (before downscale)", big, 1.0, 1.0)]
    lines = ["| detect on | " + " | ".join(f"{s} px" for s in sizes) + " | s/frame |", "|---" * (len(sizes) + 2) + "|"]
    for label, rgb, upscale, to_px in ways:
        detector = CenterFace(0.2, upscale, providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        found = detector.detect(rgb)
        seconds = time.perf_counter() - start
        hits = {s: 0 for s in sizes}
        for final, (x1, y1, x2, y2) in truth:
            gx, gy = (x1 + x2) / 2 * to_px, (y1 + y2) / 2 * to_px  # truth centre in this frame's pixels
            if any(b[0] <= gx <= b[2] and b[1] <= gy <= b[3] for b in found.boxes):
                hits[final] += 1
        lines.append(f"| {label} | " + " | ".join(f"{hits[s]}/3" for s in sizes) + f" | {seconds:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of the 30 fps source")
    parser.add_argument("--seconds-4k", type=int, default=6, help="length of the 4K60 source")
    args = parser.parse_args()
    print(header("blur_bench"))
    src30, src4k = faces_30fps(args.seconds), faces_4k60(args.seconds_4k)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plain30 = timed_shard(src30, ShardParams(), work, "plain30")
        blur30 = timed_shard(src30, ShardParams(blur_faces=True), work, "blur30")
        deface_s, shard_after = authors_route(src30, work)
        plain4k = timed_shard(src4k, ShardParams(), work, "plain4k")
        blur4k = timed_shard(src4k, ShardParams(blur_faces=True), work, "blur4k")
    authors = deface_s + shard_after
    frames30 = args.seconds * 30
    print(f"\n30 fps source, 1280x720, {args.seconds} s ({frames30} frames); shard defaults (2 fps, 512 px), "
          f"workers {usable_cpus()}\n")
    print("| route | seconds | vs shard --blur-faces |\n|---|---|---|")
    print(f"| authors: deface whole video ({deface_s:.1f} s, {frames30 / deface_s:.1f} frames/s) + shard "
          f"({shard_after:.1f} s) | {authors:.1f} | {authors / blur30:.1f}x |")
    print(f"| shard --blur-faces | {blur30:.1f} | 1.0x |")
    print(f"| plain shard | {plain30:.1f} | {plain30 / blur30:.2f}x |")
    print(f"\n4K60 source (street footage + face), {args.seconds_4k} s; shard defaults, workers {usable_cpus()}\n")
    print("| route | seconds | vs plain shard |\n|---|---|---|")
    print(f"| plain shard | {plain4k:.1f} | 1.0x |")
    print(f"| shard --blur-faces | {blur4k:.1f} | {blur4k / plain4k:.2f}x |")
    one = CenterFace(0.2, 1.0, providers=["CPUExecutionProvider"])
    two = CenterFace(0.2, 2.0, providers=["CPUExecutionProvider"])
    print("\nCenterFace on CPU, one thread (as the shard stage runs it, one session per run):\n")
    print("| frame | frames/s |\n|---|---|")
    print(f"| 910x512 (16:9 at the default --short-side 512) | {detector_rate(one, (910, 512)):.1f} |")
    print(f"| 910x512, --blur-upscale 2 | {detector_rate(two, (910, 512), 4):.1f} |")
    print(f"| 1280x720 (deface's input for a 720p video) | {detector_rate(one, (1280, 720), 4):.1f} |")
    print("\nSmall faces found (3 per size; size = face height in the final 910x512 frame):\n")
    print("\n".join(small_face_recall()))


if __name__ == "__main__":
    main()
