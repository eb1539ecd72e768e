"""The on-disk contract: names, keys, the one atomic writer, the typed shard index (v1 to v4) and the sample json."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from tests.cli import run_wtours
from tests.videos import sharded_root
from wtours.errors import WtoursError
from wtours.layout import (
    Layout,
    replace_atomically,
    sample_key,
    validate_shard_name,
    write_json_atomic,
)
from wtours.shard.index import INDEX_VERSION, ShardIndex, load_index, read_segment_record
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.read import iter_shard
from wtours.shard.run import shard_video
from wtours.shard.writer import SampleMeta, ShardSample, write_shard


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Layout:
    """8 s at 2 fps, 6 samples per shard: three shards, written by the real ffmpeg and tar writer."""
    return Layout(sharded_root(tmp_path_factory.mktemp("walk"), seconds=8.0, samples_per_shard=6))


# ---------------------------------------------------------------- names and keys


@pytest.mark.parametrize("name", ["../../../x.tar", "walk-000000.tar/../../x.tar", "/etc/walk-000000.tar",
                                  "other-000000.tar", "walk-0.tar", "walk-000000.json", ".walk-000000.tar", 7])
def test_shard_names_from_outside_are_refused(name):
    with pytest.raises(WtoursError) as error:
        validate_shard_name(name, "walk")
    assert "is not a shard name" in error.value.message and error.value.hint


@pytest.mark.parametrize("name", ["venice\n", "../venice", "venice/..", "Venice", "ven ice", "", ".venice", "a" * 64])
def test_video_names_from_outside_are_refused(name, tmp_path):
    """A trailing newline too: a `$`-anchored pattern would let "venice\n" become a folder name."""
    with pytest.raises(WtoursError) as error:
        Layout(tmp_path).shard_dir(name)
    assert "is not a valid video name" in error.value.message


def test_trailing_newlines_never_pass_as_shard_names():
    with pytest.raises(WtoursError):
        validate_shard_name("walk-000000.tar\n", "walk")


def test_a_valid_shard_name_passes_and_builds_the_path(tmp_path):
    assert validate_shard_name("walk-000012.tar", "walk") == "walk-000012.tar"
    assert Layout(tmp_path).shard_file("walk", "walk-000012.tar") == tmp_path / "shards" / "walk" / "walk-000012.tar"
    assert Layout(tmp_path).shard_path("walk", 12) == tmp_path / "shards" / "walk" / "walk-000012.tar"


def test_sample_keys_have_no_dot_and_eight_digit_frames():
    assert [sample_key(slug, frame) for slug, frame in [("walk", 0), ("my-walk-2", 123456), ("v", 10**9)]] \
        == ["walk-00000000", "my-walk-2-00123456", "v-1000000000"]


def test_every_shard_folder_file_is_named_by_the_layout(tmp_path):
    layout = Layout(tmp_path)
    folder = tmp_path / "shards" / "walk"
    assert layout.plan_path("walk") == folder / "plan.json"
    assert layout.wids_path("walk") == folder / "walk.wids.json"
    assert layout.segment_record_path("walk", 3) == folder / "_segments" / "walk-000003.json"
    assert layout.source_path("walk") == folder / "source.json"
    assert layout.stats_summary_path("walk") == tmp_path / "stats" / "walk" / "summary.json"
    assert layout.stats_dir("walk", tmp_path / "out") == tmp_path / "out" / "walk"


# ---------------------------------------------------------------- the atomic writer


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_atomically(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


# ---------------------------------------------------------------- the index model


def test_index_round_trips_byte_for_byte(walk):
    raw = walk.index_path("walk").read_bytes()
    index = load_index(walk, "walk")
    assert index.version == INDEX_VERSION == 4 and len(index.shards) == 3
    assert index.to_bytes() == raw
    assert all(len(s.offsets) == len(s.sample_sha256) == s.samples for s in index.shards)


def test_sample_sha256_covers_each_samples_bytes_to_the_next_and_the_last_to_the_end(walk):
    for entry in load_index(walk, "walk").shards:
        data = walk.shard_file("walk", entry.name).read_bytes()
        bounds = (*entry.offsets, entry.bytes)
        assert entry.sample_sha256 == tuple(hashlib.sha256(data[a:b]).hexdigest() for a, b in zip(bounds, bounds[1:]))


def test_offsets_point_at_each_samples_first_tar_header(walk):
    """Seek to each recorded offset in the real shard: a valid USTAR header naming `<key>.jpg`."""
    index = load_index(walk, "walk")
    checked = 0
    for entry in index.shards:
        with open(walk.shard_file("walk", entry.name), "rb") as f:
            names = [m.name for m in tarfile.open(fileobj=f, mode="r:") if m.name.endswith(".jpg")]
            for offset, name in zip(entry.offsets, names, strict=True):
                f.seek(offset)
                header = tarfile.TarInfo.frombuf(f.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
                assert header.name == name
                checked += 1
    assert checked == index.samples


def test_version_1_indexes_are_still_read(walk, tmp_path):
    data = json.loads(walk.index_path("walk").read_text())
    data["version"] = 1
    for shard in data["shards"]:
        del shard["offsets"], shard["sample_sha256"]
    index = ShardIndex.from_dict(data, "old/index.json")
    assert index.version == 1 and all(s.offsets is None for s in index.shards)
    assert json.loads(index.to_bytes()) == data


@pytest.mark.parametrize("damage, expected", [
    (lambda d: d.pop("shards"), "shards is missing"),
    (lambda d: d.update(version=9), "version 9"),
    (lambda d: d.update(format="other"), "'format'"),
    (lambda d: d["shards"][0].update(samples="many"), "shards[0].samples is a string, not an integer"),
    (lambda d: d["shards"][0].update(bytes=True), "shards[0].bytes is a boolean, not an integer"),
    (lambda d: d["shards"][0].update(offsets=[0]), "'offsets' must be"),
    (lambda d: d["shards"][0].update(sample_sha256=d["shards"][0]["sample_sha256"][1:]), "'sample_sha256' must be"),
    (lambda d: d["shards"][0].update(sample_sha256=["x" * 64] * d["shards"][0]["samples"]), "'sample_sha256' must"),
    (lambda d: d["shards"][0].pop("offsets"), "'sample_sha256' must be"),
    (lambda d: d.update(samples=1), "'samples' is 1"),
    (lambda d: d["shards"][1].update(name="../x.tar"), "is not a shard name"),
    # hostile or damaged numbers: absurd plans, seeks outside the shard, infinities, malformed lists
    (lambda d: d["shards"][0].update(cell_runs=[[0, 10**10]], samples=10**10 + 1), "cannot fit in"),
    (lambda d: d["shards"][0].update(cell_runs=[[5, 2]]), "'cell_runs' must be ascending"),
    (lambda d: d["shards"][0].update(offsets=[-512, *d["shards"][0]["offsets"][1:]]), "'offsets' must be"),
    (lambda d: d["shards"][0].update(offsets=[*d["shards"][0]["offsets"][:-1], 10**12]), "'offsets' must be"),
    (lambda d: d["video"].update(fps=float("inf")), "video.fps is inf, not a finite number"),
    (lambda d: d["video"].update(fps=0), "finite positive"),
    (lambda d: d["params"].update(fps=float("inf")), "params.fps is inf, not a finite number"),
    (lambda d: d["params"].update(quality=0), "--quality 0 is out of range"),
    (lambda d: d["params"].update(blur_faces=True, blur_threshold="high"), "params.blur_threshold is a string"),
    (lambda d: d.update(blank_stretches=[1]), "not a valid wtours shard index"),
])
def test_a_wrong_structure_is_a_clear_error_naming_the_file(walk, tmp_path, damage, expected):
    data = json.loads(walk.index_path("walk").read_text())
    damage(data)
    path = tmp_path / "index.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WtoursError) as error:
        ShardIndex.read(path)
    assert str(path) in error.value.message and expected in error.value.message and error.value.hint


def test_invalid_json_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "index.json"
    path.write_text('{"format": "wtours-shards", ')
    with pytest.raises(WtoursError) as error:
        ShardIndex.read(path)
    assert str(path) in error.value.message and "not valid JSON" in error.value.message
    with pytest.raises(WtoursError) as error:
        ShardIndex.parse(b"\xff\xfe", "https://host/set/index.json")
    assert "https://host/set/index.json" in error.value.message


def test_add_with_move_places_the_file_atomically_and_then_removes_the_original(tmp_path):
    from tests.videos import make_video
    from wtours.fetch.local import add_local

    video = make_video(tmp_path / "walk.mp4", seconds=1.0, size="64x36")
    data = video.read_bytes()
    layout = Layout(tmp_path / "root")
    add_local(video, "walk", layout.root, mode="move", say=lambda m: None)
    assert not video.exists()
    placed = [p for p in layout.video_dir("walk").iterdir() if p.suffix == ".mp4"]
    assert len(placed) == 1 and placed[0].read_bytes() == data
    assert not list(layout.video_dir("walk").glob(".*.tmp-*"))


# ---------------------------------------------------------------- the sample json (version 4: one type per field)


def test_each_sample_json_field_has_one_type_and_source_id_is_never_null(walk):
    """`datasets` infers a schema from the first shard it reads: a field that is null in one set and a string in
    another fails to load ("Couldn't cast array of type string to null"), so no field is ever null."""
    kinds = {"str": str, "int": int, "float": float}
    hints = {name: kinds[hint] for name, hint in SampleMeta.__annotations__.items()}
    shards = walk.shard_files("walk")
    for path in shards:
        with tarfile.open(path) as tar:
            for member in (m for m in tar.getmembers() if m.name.endswith(".json")):
                sample = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                assert sorted(sample) == sorted(hints)
                assert all(type(sample[name]) is kind for name, kind in hints.items()), sample
                assert sample["source_id"] == ""  # an added video: no corpus id
    assert len(shards) == 3


def test_a_set_from_before_version_4_is_read_and_a_rerun_reshards_it(canonical_roots, tmp_path):
    """Version 3 wrote a null `source_id` for a video from outside the corpus: readers take it as "", and a rerun
    of `wtours shard` redoes every segment of such a set (records without a version), so no set mixes both."""
    old = tmp_path / "old-000000.tar"
    write_shard(old, [ShardSample("old-00000000", b"\xff\xd8", SampleMeta("old", None, 0, 0.0, 4, 2))])  # type: ignore[arg-type]
    with tarfile.open(old) as tar:
        assert json.loads(tar.extractfile("old-00000000.json").read())["source_id"] is None  # type: ignore[union-attr]
    assert [s.meta.source_id for s in iter_shard(old)] == [""]

    layout = Layout(canonical_roots.copy("walk-8s", tmp_path / "root"))
    for record in layout.segments_dir("walk").glob("*.json"):
        data = json.loads(record.read_text())
        assert data.pop("version") == INDEX_VERSION
        record.write_text(json.dumps(data))  # as version 3 wrote it
    index = json.loads(layout.index_path("walk").read_text())
    layout.index_path("walk").write_text(json.dumps({**index, "version": 3}))
    assert load_index(layout, "walk").version == 3
    for command in (["verify", "--city", "walk"], ["inspect", "walk", "--clip-frames", "2"]):  # still read
        result = run_wtours([*command, "--root", str(layout.root)])
        assert result.returncode == 0, result.stderr
    said: list[str] = []
    shard_video(layout, "walk", ShardParams(fps=2.0, short_side=128, samples_per_shard=8),
                RunOptions(workers=1, progress=False), say=said.append)
    assert not any("already done" in line for line in said), said  # every segment redone
    assert load_index(layout, "walk").version == INDEX_VERSION
    records = list(layout.segments_dir("walk").glob("*.json"))
    assert records and all(json.loads(r.read_text())["version"] == INDEX_VERSION for r in records)


def test_a_corpus_videos_version_3_segments_are_kept(canonical_roots, tmp_path):
    """A corpus video (a YouTube id) wrote the same sample bytes in version 3 as now: its records stay valid, so
    an upgrade does not redo hours of 4K decoding; without an id (null in version 3) they are redone."""
    layout = Layout(canonical_roots.copy("walk-8s", tmp_path / "root"))
    numbers = []
    for record in layout.segments_dir("walk").glob("*.json"):
        data = json.loads(record.read_text())
        data.pop("version")
        record.write_text(json.dumps(data))  # as version 3 wrote it
        numbers.append(data["segment"]["number"])
    assert numbers
    for number in numbers:
        assert read_segment_record(layout, "walk", number) is None
        assert read_segment_record(layout, "walk", number, "") is None
        kept = read_segment_record(layout, "walk", number, "dQw4w9WgXcQ")
        assert kept is not None and kept.version == 3
