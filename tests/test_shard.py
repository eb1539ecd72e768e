"""`wtours shard`: determinism across workers and nodes, resume after kill -9, blanks, damage, readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import run_wtours
from tests.videos import index_json, make_truncated_video, make_video, make_video_with_black_tail, run_ffmpeg
from wtours.errors import IncompleteError, UsageError, WtoursError
from wtours.fetch.local import add_local
from wtours.layout import TEMPORARY_GLOB, Layout
from wtours.shard.blank import is_blank, luma_spread
from wtours.shard.params import RunOptions, ShardParams, nodes_from_environment
from wtours.shard.plan import output_size
from wtours.shard.run import shard_video

WTOURS = [sys.executable, "-m", "wtours"]
PARAMS = ShardParams(fps=2.0, short_side=120, quality=85, samples_per_shard=8)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))} | {
        "index.json": hashlib.sha256((folder / "index.json").read_bytes()).hexdigest()}


def registered(tmp_path: Path, video: Path, name: str = "walk", allow_damaged: bool = False) -> Layout:
    layout = Layout(tmp_path / "root")
    add_local(video, name, layout.root, mode="symlink", allow_damaged=allow_damaged, say=lambda m: None)
    return layout


def shard(layout: Layout, params: ShardParams = PARAMS, name: str = "walk", **options):
    return shard_video(layout, name, params, RunOptions(progress=False, **options), say=lambda m: None)


def tar_samples(path: Path) -> list[tuple[str, bytes, dict]]:
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        out = []
        for jpg, meta in zip(members[0::2], members[1::2]):
            assert jpg.name.endswith(".jpg") and meta.name == jpg.name[:-4] + ".json"
            out.append((jpg.name[:-4], tar.extractfile(jpg).read(), json.loads(tar.extractfile(meta).read())))
        return out


@pytest.fixture(scope="module")
def walk20(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "walk20.mp4", seconds=20.0, size="320x240", rate=30)


@pytest.mark.slow
def test_workers_1_and_2_give_identical_bytes(walk20, tmp_path):
    one, two = registered(tmp_path / "a", walk20), registered(tmp_path / "b", walk20)
    shard(one, workers=1)
    shard(two, workers=2)
    d1, d2 = digests(one.shard_dir("walk")), digests(two.shard_dir("walk"))
    assert d1 == d2 and len(d1) == 6  # 5 shards + index
    index = index_json(one, "walk")
    assert index["samples"] == 2 * 20 - sum(index["dropped"].values()) == 40
    assert [s["samples"] for s in index["shards"]] == [8] * 5


def test_contract_keys_fields_and_time_order(walk20, tmp_path):
    layout = registered(tmp_path, walk20)
    shard(layout, workers=2)
    index = index_json(layout, "walk")
    previous_end = -1.0
    for entry in index["shards"]:
        samples = tar_samples(layout.shard_dir("walk") / entry["name"])
        assert len(samples) == entry["samples"]
        times = [meta["t"] for _, _, meta in samples]
        assert times == sorted(times) and times[0] > previous_end
        previous_end = times[-1]
        assert (samples[0][2]["frame"], samples[-1][2]["frame"]) == (entry["first_frame"], entry["last_frame"])
        for key, jpg, meta in samples:
            assert key == f"walk-{meta['frame']:08d}" and "." not in key
            assert set(meta) == {"video", "source_id", "frame", "t", "width", "height"}
            assert meta["frame"] == round(meta["t"] * 30)  # 30 fps source
            assert meta["t"] == pytest.approx(meta["frame"] / 30, abs=1e-6)
            image = Image.open(io.BytesIO(jpg))
            assert image.size == (meta["width"], meta["height"]) == (160, 120)
    frames = [m["frame"] for e in index["shards"] for _, _, m in tar_samples(layout.shard_dir("walk") / e["name"])]
    assert frames == list(range(0, 600, 15))  # the first frame of every half-second cell


@pytest.mark.slow
def test_segment_boundaries_do_not_change_samples(tmp_path):
    """Grid sampling is independent of where segments are cut (the seek margin at work) at 29.97 fps."""
    video = tmp_path / "ntsc.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30000/1001", "-t", "12", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p", str(video)])
    few, many = registered(tmp_path / "a", video), registered(tmp_path / "b", video)
    shard(few, ShardParams(fps=3.0, short_side=120, samples_per_shard=1000))
    shard(many, ShardParams(fps=3.0, short_side=120, samples_per_shard=5), workers=2)
    whole = tar_samples(few.shard_dir("walk") / "walk-000000.tar")
    pieces = [s for e in index_json(many, "walk")["shards"] for s in tar_samples(many.shard_dir("walk") / e["name"])]
    digests = [(k, hashlib.sha256(j).digest()) for k, j, _ in whole]
    assert digests == [(k, hashlib.sha256(j).digest()) for k, j, _ in pieces]
    assert len(whole) == 36
    for _, _, meta in whole:  # each sample is the first frame at or after its grid time
        cell = round(meta["t"] * 3 - 0.5 + 1e-9)
        assert meta["t"] >= cell / 3 - 1e-6 and meta["t"] - 1001 / 30000 < cell / 3


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_bytes(tmp_path):
    video = make_video(tmp_path / "big.mp4", seconds=20.0, size="1280x720", rate=30)
    reference = registered(tmp_path / "ref", video)
    shard(reference, ShardParams(fps=2.0, short_side=360, samples_per_shard=4), workers=1)
    expected = digests(reference.shard_dir("walk"))

    layout = registered(tmp_path / "killed", video)
    folder = layout.shard_dir("walk")
    cmd = [*WTOURS, "shard", "--city", "walk", "--root", str(layout.root), "--fps", "2", "--short-side", "360",
           "--samples-per-shard", "4", "--workers", "1", "-q"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(folder.glob("walk-*.tar"))) < 2:
        for path in folder.glob("walk-*.tar"):  # a final name only ever holds a complete shard
            seen.setdefault(path.name, set()).add(hashlib.sha256(path.read_bytes()).hexdigest())
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (folder / "index.json").exists()
    killed_leftovers = set(folder.glob(TEMPORARY_GLOB))  # what the killed run was writing when it died
    for name, hashes in seen.items():
        assert hashes == {expected[name]}, name

    subprocess.run(cmd, check=True, capture_output=True)
    assert digests(folder) == expected  # every final name holds the complete shard, and no other .tar is there
    assert set(folder.glob(TEMPORARY_GLOB)) <= killed_leftovers  # the rerun leaves no temporary of its own


def test_black_tail_is_dropped_and_counted(tmp_path):
    video = make_video_with_black_tail(tmp_path / "tail.mp4", seconds=10.0, tail=5.0)
    layout = registered(tmp_path, video)
    shard(layout, workers=2)
    index = index_json(layout, "walk")
    assert index["dropped"] == {"blank": 10}
    assert index["samples"] == 20
    assert index["blank_stretches"] == [[10.0, 14.5]]
    assert index["shards"][-1]["t_end"] < 10.0
    assert [s["cell_runs"] for s in index["shards"]] == [[[0, 7]], [[8, 15]], [[16, 19]]]
    assert index["complete"]


def test_blank_detection_on_pixels():
    rng = np.random.default_rng(0)
    assert is_blank(np.zeros((64, 64, 3), np.uint8), 3.0)
    assert is_blank(np.full((64, 64, 3), 250, np.uint8), 3.0)
    assert is_blank(np.full((64, 64, 3), (10, 120, 200), np.uint8), 3.0)
    dark_scene = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)  # a dim but textured frame
    assert not is_blank(dark_scene, 3.0) and luma_spread(dark_scene) > 5


@pytest.mark.slow
def test_truncated_video_keeps_what_decodes(tmp_path):
    cut = make_truncated_video(tmp_path)
    with pytest.raises(WtoursError, match="does not decode"):
        add_local(cut, "walk", tmp_path / "r0", say=lambda m: None)
    layout = registered(tmp_path, cut, allow_damaged=True)
    with pytest.raises(IncompleteError) as info:
        shard(layout, ShardParams(fps=2.0, short_side=120, samples_per_shard=4), workers=2)
    assert info.value.exit_code == 3 and "decoding stopped" in info.value.message
    index = index_json(layout, "walk")
    assert not index["complete"] and 2.0 <= index["decoded_until"] <= 8.0
    assert index["errors"] and index["samples"] == sum(s["samples"] for s in index["shards"]) > 0
    for entry in index["shards"]:
        path = layout.shard_dir("walk") / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert len(tar_samples(path)) == entry["samples"]
    result = subprocess.run([*WTOURS, "shard", "--city", "walk", "--root", str(layout.root), "--fps", "2",
                             "--short-side", "120", "--samples-per-shard", "4", "-q"], capture_output=True, text=True)
    assert result.returncode == 3 and "decoding stopped" in result.stderr


@pytest.mark.slow
def test_changed_parameters_are_refused_unless_overwrite(walk20, tmp_path):
    layout = registered(tmp_path, walk20)
    shard(layout)
    with pytest.raises(WtoursError, match="short_side 120 -> 96") as info:
        shard(layout, ShardParams(fps=2.0, short_side=96, quality=85, samples_per_shard=8))
    assert "--overwrite" in info.value.hint
    shard(layout, ShardParams(fps=2.0, short_side=96, quality=85, samples_per_shard=8), overwrite=True)
    assert index_json(layout, "walk")["params"]["short_side"] == 96
    assert len(list(layout.shard_dir("walk").glob("*.tar"))) == 5


@pytest.mark.slow
def test_changed_source_is_refused(walk20, small_video, tmp_path):
    layout = registered(tmp_path, walk20)
    shard(layout)
    add_local(small_video, "walk", layout.root, mode="symlink", say=lambda m: None, force=True)
    with pytest.raises(WtoursError, match="source video changed"):
        shard(layout)


@pytest.mark.slow
def test_nodes_share_the_work_and_the_last_writes_the_index(walk20, tmp_path):
    single, split = registered(tmp_path / "a", walk20), registered(tmp_path / "b", walk20)
    shard(single)
    first = shard(split, num_nodes=2, node_rank=0)
    assert first.index is None and first.missing_segments == 2 and not split.index_path("walk").exists()
    with pytest.raises(WtoursError, match="not done yet"):
        shard(split, finalize_only=True)
    second = shard(split, num_nodes=2, node_rank=1)
    assert second.index is not None
    assert digests(single.shard_dir("walk")) == digests(split.shard_dir("walk"))


def test_overwrite_is_refused_when_machines_share_a_set(tmp_path):
    """Each machine of a multi-node run would clear the set on --overwrite, a late one removing segments the
    others finished: refused before anything is touched, with the way to do it."""
    with pytest.raises(UsageError, match="every machine would clear the set"):
        RunOptions(num_nodes=2, node_rank=1, overwrite=True)
    result = run_wtours(["shard", "--city", "venice", "--root", str(tmp_path), "--num-nodes", "2", "--node-rank", "0",
                         "--overwrite"])
    assert result.exit_code == 2 and "without --overwrite" in result.output and not any(tmp_path.iterdir())


def test_slurm_environment_sets_nodes():
    assert nodes_from_environment({"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "7",
                                   "SLURM_ARRAY_TASK_MIN": "5"}) == (4, 2)
    assert nodes_from_environment({"SLURM_NTASKS": "3", "SLURM_PROCID": "1"}) == (3, 1)
    assert nodes_from_environment({}) == (1, 0)


def test_output_size_keeps_aspect_and_never_upscales():
    assert output_size(3840, 2160, 512) == (910, 512)
    assert output_size(2160, 3840, 512) == (512, 910)
    assert output_size(320, 240, 512) == (320, 240)


def test_missing_video_is_a_clear_error(tmp_path):
    result = run_wtours(["shard", "--city", "venice", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "wtours download --city venice" in result.output


@pytest.mark.slow
def test_rerun_of_a_finished_set_does_nothing(walk20, tmp_path):
    layout = registered(tmp_path, walk20)
    shard(layout)
    before = {p: p.stat().st_mtime_ns for p in layout.shard_dir("walk").glob("*.tar")}
    summary = shard(layout)
    assert summary.segments_done == 0
    assert before == {p: p.stat().st_mtime_ns for p in layout.shard_dir("walk").glob("*.tar")}


# ------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def sharded(walk20, tmp_path_factory):
    layout = registered(tmp_path_factory.mktemp("readers"), walk20)
    shard(layout, workers=2)
    return layout


def test_webdataset_reads_the_shards(sharded):
    import webdataset as wds

    index = index_json(sharded, "walk")
    urls = [str(sharded.shard_dir("walk") / s["name"]) for s in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == index["samples"]
    assert samples[3]["__key__"] == "walk-00000045"
    assert samples[3]["json"]["frame"] == 45 and samples[3]["jpg"].size == (160, 120)


def test_wids_reads_the_descriptor(sharded):
    import wids

    dataset = wids.ShardListDataset(str(sharded.shard_dir("walk") / "walk.wids.json"))
    assert len(dataset) == index_json(sharded, "walk")["samples"]
    sample = dataset[9]
    assert sample["__key__"] == "walk-00000135"
    assert sample[".json"]["t"] == 4.5 and sample[".jpg"].size == (160, 120)


def test_hugging_face_datasets_reads_the_shards(sharded, tmp_path, monkeypatch):
    # Offline for this test only: both libraries read these variables once, at import, so the imported
    # constants are patched too (an import under the variables would leave later tests offline).
    import datasets.config
    import huggingface_hub.constants
    from datasets import load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)

    files = [str(p) for p in sorted(sharded.shard_dir("walk").glob("walk-*.tar"))]
    dataset = load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path))
    assert len(dataset) == index_json(sharded, "walk")["samples"]
    row = dataset[0]
    assert row["__key__"] == "walk-00000000" and row["json"]["frame"] == 0 and row["jpg"].size == (160, 120)
