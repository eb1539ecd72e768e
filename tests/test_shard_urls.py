"""--shards as webdataset `pipe:` commands and fsspec URLs (file://, memory://; s3:// and gs:// without their
packages): resolved with the index beside the shards, read whole (verified) or in parts, through `wtours inspect`,
the Python loader and a tiny `wtours train`; a hostile index can never make wtours run a command."""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.cli import run_wtours, run_wtours_process
from wtours.clips.augment import MultiCropConfig
from wtours.clips.epoch import ClipConfig, ShardRead
from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
from wtours.clips.spec import read_remote_index, resolve, resolve_sets, spelled_out, split_specs
from wtours.clips.stages import Problems, open_shards, tar_samples
from wtours.errors import WtoursError
from wtours.redact import shown

fsspec = pytest.importorskip("fsspec")

MICRO = ["--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2", "--clip-frames", "2", "--n-local", "2",
         "--workers", "0", "--device", "cpu", "--log-every", "1"]


@pytest.fixture(scope="module")
def shards(canonical_roots, tmp_path_factory) -> Path:
    """A folder with index.json and walk-000000.tar, walk-000001.tar (8 samples each, offsets recorded)."""
    root = canonical_roots.copy("walk-8s", tmp_path_factory.mktemp("urls") / "root")
    return root / "shards" / "walk"


@pytest.fixture
def memory(shards):
    """The same set copied into fsspec's in-process memory file system; removed afterwards."""
    fs = fsspec.filesystem("memory")
    folder = f"/wtours-{uuid.uuid4().hex}/walk"
    for path in shards.iterdir():
        if path.is_file():
            fs.pipe(f"{folder}/{path.name}", path.read_bytes())
    yield f"memory://{folder}"
    fs.rm(folder.rsplit("/", 1)[0], recursive=True)


def pipe_spec(shards: Path) -> str:
    return f"pipe:cat {shlex.quote(str(shards))}/walk-{{000000..000001}}.tar"


def samples_of(refs) -> list[tuple[str, int, tuple]]:
    return [(r.entry.name, r.entry.samples, r.entry.cell_runs) for r in refs]


def test_split_specs_keeps_a_pipe_command_whole():
    assert split_specs("walk pipe:cat /a/x-{000000..000001}.tar :: other b") == [
        "walk", "pipe:cat /a/x-{000000..000001}.tar", "other", "b"]
    assert split_specs(["pipe:curl -s -H 'A: b' https://h/x.tar", "c d"]) == [
        "pipe:curl -s -H 'A: b' https://h/x.tar", "c", "d"]


def test_pipe_and_fsspec_specs_resolve_like_the_folder(shards, memory):
    local = resolve(str(shards))
    piped = resolve(pipe_spec(shards))
    assert samples_of(piped) == samples_of(local)
    assert [r.url for r in piped] == [f"pipe:cat {shards}/walk-00000{i}.tar" for i in (0, 1)]
    assert [r.entry.offsets for r in piped] == [r.entry.offsets for r in local]
    for spec in (f"file://{shards}/walk-{{000000..000001}}.tar", f"file://{shards}/walk-*.tar",
                 f"{memory}/walk-*.tar", f"{memory}/index.json"):
        assert samples_of(resolve(spec)) == samples_of(local), spec
    assert [r.url for r in resolve(f"{memory}/walk-000001.tar")] == [f"{memory}/walk-000001.tar"]
    assert [found.folder for found in resolve_sets(pipe_spec(shards))] == [str(shards)]  # stats reads the folder


def test_inspect_reads_pipe_and_file_specs_without_running_them(shards, tmp_path):
    marker = tmp_path / "ran"
    base = json.loads(run_wtours(["inspect", str(shards), "--clip-frames", "2", "--json"]).output)
    # inspect needs only the index: the command (which would leave a marker) is never run
    spec = f"pipe:touch {marker} && cat {shards}/walk-{{000000..000001}}.tar"
    for source in (spec, f"file://{shards}/walk-*.tar"):
        result = run_wtours(["inspect", source, "--clip-frames", "2", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == base
    assert not marker.exists()


def epoch_keys(refs, rank: int = 0, world_size: int = 1) -> tuple[list[list[str]], Problems]:
    config = LoaderConfig(batch_size=4, workers=0, clip=ClipConfig(frames=2), multicrop=MultiCropConfig(n_local=1))
    dataset = ClipDataset(refs, config, rank, world_size)
    dataset.set_epoch(0)
    return [batch.keys for batch in make_loader(dataset)], dataset.problems


@pytest.mark.parametrize("world_size", [1, 2])  # 2: each rank reads parts of shards (seek, Range, skipped bytes)
def test_the_loader_reads_the_same_clips_from_every_source(shards, memory, world_size):
    for rank in range(world_size):
        expected, _ = epoch_keys(resolve(str(shards)), rank, world_size)
        assert expected
        for spec in (pipe_spec(shards), f"{memory}/walk-*.tar"):
            keys, problems = epoch_keys(resolve(spec), rank, world_size)
            assert keys == expected, spec
            assert not problems.bad_shards and not problems.bad_samples


def read_part(ref, first: int, stop: int | None) -> tuple[list[int], Problems]:
    problems = Problems()
    samples = tar_samples(open_shards([ShardRead(ref, frozenset(), first, stop)], problems), problems)
    return [s.index for s in samples], problems


def test_parts_of_pipe_and_fsspec_shards_start_at_their_first_sample(shards, memory):
    for spec in (pipe_spec(shards), f"{memory}/walk-*.tar", f"file://{shards}/walk-*.tar"):
        ref = resolve(spec)[1]
        assert read_part(ref, 3, 6)[0] == [3, 4, 5]
        assert read_part(ref, 5, None)[0] == [5, 6, 7]
        assert read_part(ref, 0, None)[0] == list(range(8))


def test_a_replaced_remote_shard_is_not_served(shards, memory):
    fs = fsspec.filesystem("memory")
    path = memory[len("memory://"):] + "/walk-000000.tar"
    data = bytearray(fs.cat(path))
    data[-2000] ^= 0xFF  # a byte of the last sample's image: the tar stays readable
    fs.pipe(path, bytes(data))
    ref = resolve(f"{memory}/walk-000000.tar")[0]
    indexes, problems = read_part(ref, 0, None)  # each sample is checked against its sha256 before it is served
    assert indexes == list(range(7)) and "sample 7's sha256" in problems.bad_shards[ref.url]


def test_a_failing_pipe_command_is_a_bad_shard_and_nothing_unverified_is_served(shards):
    # the command sends the shard up to the middle of sample 3, then fails: the verified samples before it
    ref = resolve(f"pipe:cat {shards}/walk-000000.tar")[0]
    cut = (ref.entry.offsets[3] + ref.entry.offsets[4]) // 2
    ref = resolve(f"pipe:head -c {cut} {shards}/walk-000000.tar; exit 3")[0]
    indexes, problems = read_part(ref, 0, None)
    assert indexes == [0, 1, 2] and "status 3" in problems.bad_shards[shown(ref.url)]  # named as wtours.redact shows it
    ref = resolve(f"pipe:cat {shards}/walk-000000.tar.missing {shards}/walk-000000.tar >/dev/null")[0]
    indexes, problems = read_part(ref, 2, None)  # a part: the stream ends before its first sample
    assert indexes == [] and "status 1" in problems.bad_shards[shown(ref.url)]


@pytest.mark.slow
def test_tiny_train_run_from_a_pipe_command(shards, tmp_path):
    out = tmp_path / "run"
    result = run_wtours(["train", "--shards", pipe_spec(shards), "--out", str(out), "--steps", "2",
                         *MICRO])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "config.json").read_text())["shards"] == [pipe_spec(shards)]
    assert "skipped" not in result.output


@pytest.mark.parametrize(("scheme", "package"), [("s3", "s3fs"), ("gs", "gcsfs")])
def test_a_missing_fsspec_backend_is_named(scheme, package, tmp_path):
    if package in sys.modules or _importable(package):
        pytest.skip(f"{package} is installed")
    out = tmp_path / "run"
    for args in (["inspect", f"{scheme}://bucket/walk/walk-{{000000..000001}}.tar"],
                 ["train", "--shards", f"{scheme}://bucket/walk/index.json", "--out", str(out), *MICRO]):
        result = run_wtours(args)
        assert result.exit_code == 1, result.output
        assert f"{scheme}:// URLs need the {package} package" in result.output
        assert f"pip install {package}" in result.output and "Traceback" not in result.output
    assert not out.exists()  # refused before anything was written


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_unknown_schemes_and_pipe_specs_without_an_index_say_what_to_pass(shards, tmp_path):
    with pytest.raises(WtoursError, match=r"unsupported URL scheme ftpx://") as info:
        resolve("ftpx://host/walk/walk-000000.tar")
    assert "pipe:COMMAND" in info.value.hint
    with pytest.raises(WtoursError, match="names no .tar file"):
        resolve("pipe:echo hello")
    with pytest.raises(WtoursError, match=r"no index.json in '/elsewhere/walk' on this machine") as info:
        resolve("pipe:ssh host cat /elsewhere/walk/walk-000000.tar")
    assert "copy the set's index.json there" in info.value.hint
    with pytest.raises(WtoursError, match="cannot read the index beside its shards"):
        resolve(f"pipe:curl -s {(tmp_path / 'nothing').as_uri()}/walk-000000.tar")
    with pytest.raises(WtoursError, match="past the last shard of walk"):
        resolve(f"pipe:cat {shards}/walk-000007.tar")
    with pytest.raises(WtoursError, match="'other-000000.tar' not listed in its index.json"):
        resolve(f"pipe:cat {shards}/other-000000.tar")
    with pytest.raises(WtoursError, match="No closing quotation"):
        resolve(f"pipe:cat '{shards}/walk-000000.tar")


HOSTILE_NAMES = ["pipe:touch {marker} x-000000.tar", "walk-000000.tar; touch {marker}", "../walk-000000.tar",
                 "walk-000000.tar\n"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_index_never_runs_a_command(shards, tmp_path, name):
    marker = tmp_path / "pwned"
    index = json.loads((shards / "index.json").read_text())
    index["shards"][0]["name"] = name.format(marker=marker)
    fs = fsspec.filesystem("memory")
    remote = f"/hostile-{uuid.uuid4().hex}"
    fs.pipe(f"{remote}/index.json", json.dumps(index).encode())
    local = tmp_path / "walk"
    local.mkdir()
    (local / "index.json").write_text(json.dumps(index))
    try:
        for spec in (f"memory://{remote}/index.json", str(local), f"pipe:cat {local}/walk-000001.tar",
                     f"{(local / 'index.json').as_uri()}"):
            with pytest.raises(WtoursError, match="not a shard name of this set"):
                resolve(spec)
    finally:
        fs.rm(remote, recursive=True)
    with pytest.raises(WtoursError, match="never read by running a command"):
        read_remote_index(f"pipe:touch {marker}; cat {shards}/index.json")
    assert not marker.exists()


def test_closing_a_pipe_early_stops_the_whole_command(shards):
    import os
    import time

    from wtours.streams import open_url

    ref = resolve(f"pipe:cat {shards}/walk-000000.tar && sleep 60 | cat")[0]
    began = time.monotonic()
    assert read_part(ref, 0, 2)[0] == [0, 1]  # the part ends before the command: it is stopped
    stream = open_url(ref.url)
    assert stream.read(512)
    group = stream.process.pid  # type: ignore[attr-defined]
    stream.close()
    assert time.monotonic() - began < 30  # not the command's 60 s: it was stopped

    def group_alive() -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    while group_alive() and time.monotonic() - began < 30:  # the orphans' reaping may take a moment
        time.sleep(0.05)
    assert not group_alive()  # sleep and cat, in the command's process group, are gone


def test_a_bad_pipe_spec_is_a_usage_error_on_the_command_line():
    result = run_wtours(["inspect", "pipe:echo hello"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: SPEC 'pipe:echo ***': the command names no .tar file" in result.output  # (wtours.redact.shown)
    assert "hint: " in result.output


def test_credentials_in_a_failing_pipe_command_stay_out_of_warnings(shards, caplog):
    secret = "hf_abcdefghSECRET42"
    ref = resolve(f"pipe:false -H 'Authorization: Bearer {secret}' {shards}/walk-000000.tar")[0]
    indexes, problems = read_part(ref, 0, None)
    text = " ".join([*problems.bad_shards, *problems.bad_shards.values(), caplog.text])
    assert indexes == [] and "status 1" in text and f"pipe:false *** {shards}/walk-000000.tar" in text
    assert secret not in text and "Bearer" not in text


def test_a_range_past_the_last_shard_names_where_the_set_ends(shards, memory):
    """A two-shard set asked for ten shards: the same usage error for a local path, file://, memory:// and
    pipe:, saying where the set ends (not blaming the index, not silently serving fewer shards)."""
    past = "walk-{000000..000009}.tar"
    for spec in (f"{shards}/{past}", f"file://{shards}/{past}", f"{memory}/{past}", f"pipe:cat {shards}/{past}"):
        result = run_wtours(["inspect", spec])
        assert result.exit_code == 2 and "Traceback" not in result.output, (spec, result.output)
        assert "past the last shard of walk (2 shards: walk-000000.tar..walk-000001.tar)" in result.output, spec
        assert "hint: end the range at 000001" in result.output, spec
    # A range inside the set is unaffected, and a wildcard takes what is there.
    assert len(resolve(f"{shards}/walk-{{000000..000001}}.tar")) == 2
    assert len(resolve(f"{shards}/walk-*.tar")) == 2


@pytest.mark.parametrize("pattern", ["{shards}/walk-{{000000..999999999}}.tar", "file://{shards}/walk-{{0..999999999}}.tar",
                                     "https://example.invalid/walk/walk-{{000000..999999999}}.tar",
                                     "pipe:cat {shards}/{{a,b}}/walk-{{0..99999}}-{{0..9}}.tar"])
def test_a_huge_brace_range_is_refused_before_it_is_spelled_out(shards, pattern):
    """`{0..999999999}` once spelled out a billion names (20 GB, killed): under a 2 GiB address space the
    command ends at once with a usage error naming the SPEC and the count, for local, fsspec, http(s) and pipe:
    SPECs, before any name is built or any server asked."""
    spec = pattern.format(shards=shards)
    began = time.monotonic()
    result = run_wtours_process(["inspect", spec], memory_limit=2 << 30, timeout=60)
    assert result.exit_code == 2 and not result.crashed, result.output
    assert f"error: SPEC {spec!r} spells out" in result.output and "more than the 100000 a SPEC may" in result.output
    assert "hint: end its range at the set's last shard" in result.output
    assert time.monotonic() - began < 30


def test_a_range_of_many_names_within_the_limit_still_ends_at_the_set(shards):
    """20,000 names (under the limit) are spelled out and checked against the index as before."""
    result = run_wtours(["inspect", f"{shards}/walk-{{000000..019999}}.tar"])
    assert result.exit_code == 2 and "past the last shard of walk" in result.output, result.output
    assert spelled_out("walk-{000000..019999}.tar") == 20000 and spelled_out("{x{a,b},y}-{0..10..2}") == 4 * 6


def test_streamed_stats_skip_a_replaced_remote_shard(shards, memory, tmp_path):
    """`wtours stats --shards URL` checks each streamed shard against the index, as the loader does: a
    replaced shard (same size, other bytes) contributes no frame and is named as skipped."""
    fs = fsspec.filesystem("memory")
    folder = memory[len("memory://"):]
    original = fs.cat(f"{folder}/walk-000001.tar")
    fs.pipe(f"{folder}/walk-000001.tar", original.replace(b"walk-", b"wa1k-", 1))
    root = tmp_path / "root"
    result = run_wtours(["stats", "--shards", f"{memory}/index.json", "--root", str(root),
                         "--no-classes", "-q"])
    assert result.exit_code in (0, 3), result.output
    summary = json.loads((root / "stats" / "walk" / "summary.json").read_text())
    skipped = summary["source"]["skipped_shards"]
    assert [s["name"] for s in skipped] == ["walk-000001.tar"] and "sha256" in skipped[0]["reason"], skipped
    assert "push it again" in summary["source"]["notes"][0]
    assert summary["frames"] == 8  # the first shard's samples only


def test_a_folder_url_reads_the_index_in_it(shards, memory):
    """`file:///data/venice` and `memory://.../walk/` name a set's folder, as a local folder does."""
    whole = samples_of(resolve(str(shards)))
    for spec in (shards.as_uri(), shards.as_uri() + "/", memory, memory + "/"):
        assert samples_of(resolve(spec)) == whole, spec
