"""Local shard sets that must not be misread: the runs that read a set (stats, train, verify, viz, push, the
source of blur-faces) and the runs that write, replace or repair it (shard, shard --overwrite, verify --repair,
pull, blur-faces --out) exclude each other, naming the holder (real processes, real flock, a real read-only
mount); and a video name is the set under --root, never a folder of the current directory (`./NAME` is)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli import run_wtours, start_wtours
from tests.cli import run_wtours_process as wtours
from tests.test_faults_data import assert_clean_failure, remount, shard_digests, tmpfs, wait_for_lock
from wtours.layout import Layout
from wtours.locks import LOCK_FILE, RANKS, READERS, FolderBusyError, folder_lock, reading
from wtours.shard.blur_set import source_folder

SLUG = "walk"
SHARD = ["shard", "--city", SLUG, "--fps", "2", "--short-side", "128", "--samples-per-shard", "10", "--workers", "1",
         "-q"]  # the canonical sets' parameters (tests/conftest.py)
STATS = ["stats", "--city", SLUG, "--no-classes", "-q"]
TINY_TRAIN = ["train", "--shards", SLUG, "--arch", "vit_micro", "--out-dim", "64", "--batch-size", "2",
              "--clip-frames", "2", "--n-local", "2", "--workers", "0", "--steps", "400", "--device", "cpu"]
DEADLINE = 300  # a hang guard: a refusal comes at once, a command that waited for a stopped holder never ends


@pytest.fixture
def root(canonical_roots, tmp_path) -> Path:
    return canonical_roots.copy("walk-20s", tmp_path / "root")


def stopped_holder(args: list[str], folder: Path) -> subprocess.Popen:
    """A real wtours process, stopped (SIGSTOP) once it holds `folder`'s lock: it holds it until killed."""
    process = start_wtours(args)
    try:
        wait_for_lock(folder, process.pid, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    os.kill(process.pid, signal.SIGSTOP)
    return process


def kill(process: subprocess.Popen) -> None:
    process.kill()  # SIGKILL works on a stopped process too
    process.wait(timeout=DEADLINE)


# ---------------------------------------------------------------- the lock's groups (in this process: flock is per
# open file, so a second holder here is refused as another process would be)


def test_readers_share_a_set_and_exclude_writers_and_the_ranks_of_a_multi_node_shard(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    with folder_lock(folder, "shard set", READERS), reading([folder, folder]):  # three readers at once
        with pytest.raises(FolderBusyError, match=rf"in use by pid {os.getpid()} .*, reading, since") as refused:
            with folder_lock(folder, "shard folder of walk"):
                pass
        assert "never read while a run writes" in refused.value.hint
        with pytest.raises(FolderBusyError, match="reading"), folder_lock(folder, "shard folder of walk", RANKS):
            pass
    with folder_lock(folder, "shard folder of walk", RANKS), folder_lock(folder, "shard folder of walk", RANKS):
        with pytest.raises(FolderBusyError, match="shard set"), reading([folder]):
            pass
        with pytest.raises(FolderBusyError), folder_lock(folder, "shard folder of walk"):
            pass
    with folder_lock(folder, "shard folder of walk"):
        with pytest.raises(FolderBusyError, match="mix their outputs|never read"), reading([folder]):
            pass
    with reading([folder]), reading([folder]):  # every holder gone: free again
        pass


def test_a_reader_never_creates_the_set_folder(tmp_path):
    with reading([tmp_path / "nothing"]):
        pass
    assert not (tmp_path / "nothing").exists()


def test_a_set_on_a_read_only_mount_is_read_with_or_without_lock_files(canonical_roots, tmp_path):
    with tmpfs(tmp_path / "disk", 64 << 20) as disk:
        root = canonical_roots.copy("walk-8s", disk / "root")
        set_folder = Layout(root).shard_dir(SLUG)
        remount(disk, "ro")  # the copy holds no lock files: nothing can make them now
        result = run_wtours(["verify", SLUG, "--root", root])
        assert result.returncode == 0, result.output
        remount(disk, "rw")
        with reading([set_folder]):  # makes the lock files
            pass
        remount(disk, "ro")
        probe = os.open(set_folder / LOCK_FILE, os.O_RDONLY)
        try:
            with reading([set_folder]), reading([set_folder]):  # its lock files opened read-only: still held
                with pytest.raises(BlockingIOError):
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)


@pytest.mark.parametrize("command", [
    [*STATS], ["verify", SLUG], ["blur-faces", SLUG, "--out", "{tmp}/blurred"], ["push", "--city", SLUG, "--repo",
                                                                                   "me/walk", "--dry-run"]])
def test_every_reader_is_refused_while_a_writer_holds_the_set(root, tmp_path, command):
    folder = Layout(root).shard_dir(SLUG)
    with folder_lock(folder, "shard folder of walk"):  # as `shard --overwrite` holds it (flock: per open file)
        result = run_wtours([*(a.format(tmp=tmp_path) for a in command), "--root", root])
    assert_clean_failure(result, f"shard set {folder} is in use by pid {os.getpid()}", code=1)
    assert not (tmp_path / "blurred").exists() and not Layout(root).stats_dir(SLUG).exists()


@pytest.mark.parametrize("command", [
    [*SHARD, "--overwrite"], ["verify", SLUG, "--repair"], ["blur-faces", "{tmp}/source", "--out", "{folder}",
                                                            "--overwrite"]])
def test_every_writer_is_refused_while_a_reader_holds_the_set(canonical_roots, root, tmp_path, command):
    folder = Layout(root).shard_dir(SLUG)
    canonical_roots.copy("walk-8s", tmp_path / "other")
    shutil.move(Layout(tmp_path / "other").shard_dir(SLUG), tmp_path / "source")
    with open(folder / "walk-000002.tar", "r+b") as f:  # a bad shard: --repair must take the set to redo it
        f.truncate(1000)
    before = shard_digests(folder)
    with reading([folder]):
        result = run_wtours([*(a.format(tmp=tmp_path, folder=folder) for a in command), "--root", root])
    assert_clean_failure(result, f"{folder} is in use by pid {os.getpid()}", ", reading, since", code=1)
    assert shard_digests(folder) == before


# ---------------------------------------------------------------- real processes


@pytest.mark.slow
def test_shard_overwrite_during_stats_is_refused_at_once_and_the_reverse(root, tmp_path):
    layout = Layout(root)
    folder, before = layout.shard_dir(SLUG), shard_digests(layout.shard_dir(SLUG))
    reader = stopped_holder([*STATS, "--root", root], folder)  # reading the set
    try:
        writer = wtours([*SHARD, "--root", root, "--overwrite"], timeout=DEADLINE)
        assert_clean_failure(writer, f"shard folder of walk {folder} is in use by pid {reader.pid}",
                             "(wtours stats, reading, since", code=1)
        assert shard_digests(folder) == before  # nothing replaced under the reader
        other = wtours(["verify", SLUG, "--root", root], timeout=DEADLINE)  # a second reader runs beside it
        assert other.returncode == 0, other.stderr
    finally:
        kill(reader)
    shutil.rmtree(layout.stats_dir(SLUG), ignore_errors=True)  # whatever the stopped reader wrote

    writer = stopped_holder([*SHARD, "--root", root, "--overwrite"], folder)  # mid-replacement
    try:
        refused = wtours([*STATS, "--root", root], timeout=DEADLINE)
        assert_clean_failure(refused, f"shard set {folder} is in use by pid {writer.pid}", "(wtours shard, since",
                             "never read while a run writes", code=1)
        assert not layout.stats_summary_path(SLUG).exists()
        checked = wtours(["verify", SLUG, "--root", root], timeout=DEADLINE)
        assert_clean_failure(checked, f"in use by pid {writer.pid}", code=1)
    finally:
        kill(writer)
    again = wtours([*SHARD, "--root", root, "--overwrite"], timeout=DEADLINE)  # the killed holders' locks are gone
    assert again.returncode == 0, again.stderr
    assert shard_digests(folder) == before
    assert wtours([*STATS, "--root", root], timeout=DEADLINE).returncode == 0


@pytest.mark.slow
def test_training_on_a_local_set_holds_it_for_the_whole_run(root, tmp_path):
    folder = Layout(root).shard_dir(SLUG)
    trainer = stopped_holder([*TINY_TRAIN, "--root", root, "--out", tmp_path / "run"], folder)
    try:
        refused = wtours([*SHARD, "--root", root, "--overwrite"], timeout=DEADLINE)
        assert_clean_failure(refused, f"is in use by pid {trainer.pid}", "(wtours train, reading, since", code=1)
        repair = wtours(["verify", SLUG, "--root", root, "--repair"], timeout=DEADLINE)  # nothing bad: reads only
        assert repair.returncode == 0, repair.stderr
    finally:
        kill(trainer)
    writer = stopped_holder([*SHARD, "--root", root, "--overwrite"], folder)
    try:
        late = wtours([*TINY_TRAIN, "--root", root, "--out", tmp_path / "late"], timeout=DEADLINE)
        assert_clean_failure(late, f"is in use by pid {writer.pid}", "(wtours shard, since", code=1)
        assert not (tmp_path / "late").exists()  # a refused start leaves nothing
    finally:
        kill(writer)


# ---------------------------------------------------------------- a video name vs a folder of the current directory


@pytest.fixture
def shadowed(canonical_roots, root, tmp_path) -> Path:
    """A current folder holding `walk/`: another set (2 shards, one damaged) named like the root's (4 shards)."""
    here = tmp_path / "here"
    other = canonical_roots.copy("walk-8s", tmp_path / "other")
    here.mkdir()
    os.replace(Layout(other).shard_dir(SLUG), here / SLUG)
    with open(here / SLUG / "walk-000001.tar", "r+b") as f:
        f.truncate(1000)
    return here


def test_a_video_name_is_the_set_under_root_even_beside_a_folder_of_that_name(root, shadowed):
    ours = run_wtours(["verify", SLUG, "--root", root], cwd=shadowed)
    assert ours.returncode == 0, ours.output
    assert "walk: 4 shards ok" in ours.stdout
    note = f"note: 'walk' is the shard set walk under the data root ({Layout(root).shard_dir(SLUG)}), not the folder " \
           "./walk here: pass ./walk for that folder"
    assert note in ours.stderr and ours.stderr.count("\n") == 1
    theirs = run_wtours(["verify", "./walk", "--root", root], cwd=shadowed)
    assert_clean_failure(theirs, "walk-000001.tar", code=1)
    assert "note:" not in theirs.stderr

    inspect = ["inspect", "--root", root, "--json", "--clip-frames", "2"]
    described = run_wtours([*inspect, SLUG], cwd=shadowed)
    assert described.returncode == 0 and note in described.stderr, described.output
    assert json.loads(described.stdout)["shards"] == 4
    assert json.loads(run_wtours([*inspect, "./walk"], cwd=shadowed).stdout)["shards"] == 2


def test_blur_faces_takes_a_video_name_from_the_root_and_a_path_from_the_current_folder(root, shadowed, monkeypatch,
                                                                                         capsys):
    monkeypatch.chdir(shadowed)
    assert source_folder(SLUG, str(root)) == Layout(root).shard_dir(SLUG)
    assert "pass ./walk for that folder" in capsys.readouterr().err
    assert source_folder("./walk", str(root)) == Path("walk")
    monkeypatch.chdir(Layout(root).shards_base())  # the current folder is the root's: one set, nothing to say
    assert source_folder(SLUG, str(root)) == Layout(root).shard_dir(SLUG)
    assert capsys.readouterr().err == ""


def test_a_video_name_missing_under_root_is_not_taken_from_the_current_folder(root, shadowed, tmp_path):
    empty = tmp_path / "empty-root"
    result = run_wtours(["inspect", SLUG, "--root", empty], cwd=shadowed)  # the root holds no set of that name
    assert_clean_failure(result, "SPEC 'walk' names no video", code=2)
    assert "pass ./walk for that folder" in result.stderr
