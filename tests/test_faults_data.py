"""Local data faults end in one `error:` + `hint:` (no traceback), lose nothing, and a rerun completes
byte-identical to an uninterrupted run: `add` over a registered name, concurrent and killed `shard` /
`stats` runs (real processes, real flock), a full and a read-only disk (a real small tmpfs), a killed
ffmpeg child, Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (as SLURM preempts),
damaged shards in `stats`, invalid indexes in `inspect`, and `wtours verify [--repair]`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli import CliResult, assert_clean_error
from tests.cli import run_wtours_process as wtours  # faults injected for real: in processes
from tests.cli import start_wtours as start
from tests.http_server import FileServer
from tests.videos import make_truncated_video, make_video
from wtours.fetch.local import add_local
from wtours.layout import TEMPORARY_GLOB, Layout, sha256_file
from wtours.locks import LOCK_FILE
from wtours.shard.decode import normalise_log_line
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video

SLUG = "walk"
PARAMS = ShardParams(fps=2.0, short_side=128, quality=90, samples_per_shard=4)
SHARD_ARGS = ["--fps", "2", "--short-side", "128", "--quality", "90", "--samples-per-shard", "4"]


# ------------------------------------------------------------------ helpers


def assert_clean_failure(result: CliResult, *phrases: str, code: int | None = None) -> str:
    """Non-zero (`code` when given), `error:` and `hint:` lines, no traceback; returns stderr."""
    assert result.returncode != 0, result.output
    err = assert_clean_error(result, result.returncode if code is None else code)
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in: {err}"
    return err


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob(TEMPORARY_GLOB))


def shard_digests(folder: Path) -> dict[str, str]:
    """sha256 of every shard, index and wids descriptor (what a finished set is)."""
    files = sorted(folder.glob("*.tar")) + [p for p in (folder / "index.json", folder / f"{SLUG}.wids.json")
                                            if p.exists()]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def register(root: Path, video: Path, name: str = SLUG, **kwargs) -> Layout:
    layout = Layout(root)
    add_local(video, name, layout.root, mode="symlink", say=lambda m: None, **kwargs)
    return layout


def shard_here(layout: Layout, params: ShardParams = PARAMS) -> None:
    shard_video(layout, SLUG, params, RunOptions(workers=1, progress=False), say=lambda m: None)


def records(layout: Layout) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(layout.segments_dir(SLUG).glob("*.json"))]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def wait_for_lock(folder: Path, pid: int, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until `pid` holds the folder's lock (its record is in the lock file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((folder / LOCK_FILE).read_text() or "{}").get("pid") == pid:
                return
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} never took the lock of {folder}")


@contextlib.contextmanager
def tmpfs(path: Path, size: int):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "short": make_video(folder / "short.mp4", seconds=8.0, size="192x128", rate=10),  # 4 shards
        "other": make_video(folder / "other.mp4", seconds=4.0, size="64x36", rate=10, source="mandelbrot"),
        "long": make_video(folder / "long.mp4", seconds=40.0, size="192x128", rate=25),  # 20 shards
    }


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """Uninterrupted runs: the bytes every interrupted or repaired run must end with."""
    out = {}
    for name in ("short", "long"):
        layout = register(tmp_path_factory.mktemp(f"ref-{name}") / "root", videos[name])
        shard_here(layout)
        out[name] = shard_digests(layout.shard_dir(SLUG))
    return out


# ------------------------------------------------------------------ 1. add never replaces silently


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["link", "copy", "symlink", "move"])
def test_add_refuses_to_replace_a_registered_video_without_force(videos, tmp_path, mode):
    root = tmp_path / "root"
    first = tmp_path / "first.mp4"
    first.write_bytes(videos["short"].read_bytes())
    assert wtours(["add", str(first), "--name", SLUG, "--root", str(root), "--mode", "move", "-q"]).returncode == 0
    assert not first.exists()  # moved: the root now holds the user's only copy
    registered = root / "videos" / SLUG / f"{SLUG}.mp4"
    before = hashlib.sha256(registered.read_bytes()).hexdigest()
    info_before = (root / "videos" / SLUG / "info.json").read_bytes()
    other = tmp_path / "other.mp4"
    other.write_bytes(videos["other"].read_bytes())

    result = wtours(["add", str(other), "--name", SLUG, "--root", str(root), "--mode", mode])
    assert_clean_failure(result, "already registered", "--force", code=2)
    assert hashlib.sha256(registered.read_bytes()).hexdigest() == before  # the earlier video is intact
    assert (root / "videos" / SLUG / "info.json").read_bytes() == info_before
    assert other.is_file()  # nothing the user named is touched either
    assert not temporaries(root)

    forced = wtours(["add", str(other), "--name", SLUG, "--root", str(root), "--mode", mode, "--force", "-q"])
    assert forced.returncode == 0, forced.stderr
    info = json.loads((root / "videos" / SLUG / "info.json").read_text())
    assert info["sha256"] == hashlib.sha256(videos["other"].read_bytes()).hexdigest()
    assert other.exists() == (mode != "move")  # only the file the user named, and only with move


@pytest.mark.slow
def test_adding_the_same_video_again_needs_no_force(videos, tmp_path):
    root = tmp_path / "root"
    for _ in range(2):
        result = wtours(["add", str(videos["short"]), "--name", SLUG, "--root", str(root), "--mode", "copy", "-q"])
        assert result.returncode == 0, result.stderr


def large_video(path: Path, size: int) -> Path:
    """A playable mp4 of `size` bytes, nearly all of them a sparse `free` box at its end (no disk space
    used): large enough that a copy of it takes a while."""
    make_video(path, seconds=2.0, size="64x48", faststart=True)
    with open(path, "ab") as f:
        f.write((1).to_bytes(4, "big") + b"free" + (size - path.stat().st_size).to_bytes(8, "big"))
    os.truncate(path, size)
    return path


def start_copying_add(source: Path, root: Path) -> tuple[subprocess.Popen, Path]:
    """A real `wtours add --mode copy` process, once its temporary copy has begun: (process, temporary)."""
    process = start(["add", str(source), "--name", SLUG, "--root", str(root), "--mode", "copy", "-q"])
    folder, deadline = root / "videos" / SLUG, time.monotonic() + 600
    while time.monotonic() < deadline:
        found = [p for p in temporaries(folder) if p.name.startswith(f".{SLUG}.mp4.tmp-") and p.stat().st_size]
        if found:
            return process, found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.001)
    raise AssertionError("no temporary copy appeared")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_add_killed_mid_copy_leaves_no_temporary_after_the_rerun(tmp_path, signum):
    """kill -9 of a real `wtours add` copying 512 MiB: its temporary stays (nothing can remove it then)
    and the rerun removes it, then copies and verifies the file. Ctrl-C: removed at once, exit 130."""
    source, root = large_video(tmp_path / "big.mp4", 512 << 20), tmp_path / "root"
    try:
        process, temporary = start_copying_add(source, root)
        process.send_signal(signum)
        out, err = process.communicate(timeout=600)
        assert not (root / "videos" / SLUG / "info.json").exists(), "the copy ended before the signal"
        if signum == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL and temporary.exists()
        else:
            assert_clean_failure(CliResult(process.returncode, out, err), "interrupted", "rerun", code=130)
            assert not temporaries(root)
        again = wtours(["add", str(source), "--name", SLUG, "--root", str(root), "--mode", "copy"])
        assert again.returncode == 0, again.stderr
        assert ("removed the temporary copy" in again.stdout) == (signum == signal.SIGKILL)
        assert not temporaries(root)
        info = json.loads((root / "videos" / SLUG / "info.json").read_text())
        copied = root / "videos" / SLUG / info["file"]
        assert info["bytes"] == copied.stat().st_size == source.stat().st_size
        assert info["sha256"] == sha256_file(copied) == sha256_file(source)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # half a GiB of real blocks: not left to pytest's kept folders


# ------------------------------------------------------------------ 2. locks


@pytest.mark.slow
def test_a_second_shard_run_names_the_holder_and_a_killed_runs_lock_frees_the_folder(videos, reference, tmp_path):
    layout = register(tmp_path / "root", videos["long"])
    args = ["shard", "--city", SLUG, "--root", str(layout.root), "--workers", "1", "-q", *SHARD_ARGS]
    first = start(args)
    try:
        wait_for_lock(layout.shard_dir(SLUG), first.pid, first)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, mid-run
        second = wtours(args)
        err = assert_clean_failure(second, "in use by", f"pid {first.pid}", code=1)
        assert "shard folder of walk" in err
        os.kill(first.pid, signal.SIGKILL)  # kill -9 while holding the lock
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    stale = layout.shard_dir(SLUG) / ".walk-000003.tar.tmp-999999-1"  # as a killed run leaves it
    stale.write_bytes(b"x" * 1000)
    third = wtours(args)
    assert third.returncode == 0, third.stderr
    assert not temporaries(layout.root)
    assert shard_digests(layout.shard_dir(SLUG)) == reference["long"]


@pytest.mark.slow
def test_a_second_stats_run_names_the_holder_and_a_killed_runs_lock_frees_the_folder(videos, tmp_path):
    layout = register(tmp_path / "root", videos["long"])
    shard_here(layout)
    args = ["stats", "--city", SLUG, "--root", str(layout.root), "--no-classes", "--chunk", "5", "-q"]
    first = start(args)
    stats_dir = layout.stats_dir(SLUG)
    try:
        wait_for_lock(stats_dir, first.pid, first, timeout=120)
        os.kill(first.pid, signal.SIGSTOP)
        second = wtours(args)
        assert_clean_failure(second, "in use by", f"pid {first.pid}", "stats folder of walk", code=1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (stats_dir / ".summary.json.tmp-999999-1").write_text("{")  # a dead run's temporary
    third = wtours(args, timeout=300)
    assert third.returncode == 0, third.stderr
    assert not temporaries(stats_dir)
    assert json.loads((stats_dir / "summary.json").read_text())["frames"] == 80


# ------------------------------------------------------------------ 3. full disk, read-only disk, a file as root


@pytest.mark.slow
def test_full_disk_during_shard_keeps_everything_and_the_rerun_is_byte_identical(videos, reference, tmp_path):
    ref_layout = register(tmp_path / "ref", videos["long"])
    shard_here(ref_layout)
    total = sum(p.stat().st_size for p in ref_layout.shard_dir(SLUG).glob("*.tar"))
    mount = tmp_path / "disk"
    with tmpfs(mount, size=(total // 2) // 4096 * 4096):
        layout = register(mount / "root", videos["long"])  # a symlink: the video costs no space here
        args = ["shard", "--city", SLUG, "--root", str(layout.root), "--workers", "2", "-q", *SHARD_ARGS]
        result = wtours(args)
        assert_clean_failure(result, "No space left on device", "disk is full", "rerun")
        assert not temporaries(mount), "a failed run left temporaries that keep the disk full"
        assert not layout.index_path(SLUG).exists()
        kept = shard_digests(layout.shard_dir(SLUG))
        assert kept and all(reference["long"][name] == digest for name, digest in kept.items())
        assert all(r["complete"] for r in records(layout))  # nothing recorded as damaged

        # A killed run's leftover temporary filling the disk: the rerun removes it before it starts.
        stale = layout.shard_dir(SLUG) / ".walk-000019.tar.tmp-999999-1"
        with contextlib.suppress(OSError), open(stale, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
        remount(mount, f"size={(total + 2 * total // 10 + (1 << 20)) // 4096 * 4096}")
        again = wtours(args)
        assert again.returncode == 0, again.stderr
        assert not stale.exists() and not temporaries(mount)
        assert shard_digests(layout.shard_dir(SLUG)) == reference["long"]


@pytest.mark.slow
def test_read_only_root_is_a_clear_error(videos, tmp_path):
    with tmpfs(tmp_path / "disk", size=8 << 20) as mount:
        layout = register(mount / "root", videos["short"])
        shard_here(layout)
        before = shard_digests(layout.shard_dir(SLUG))
        remount(mount, "ro")
        shard = wtours(["shard", "--city", SLUG, "--root", str(layout.root), "--overwrite", *SHARD_ARGS])
        assert_clean_failure(shard, "Read-only file system", "read-only")
        stats = wtours(["stats", "--city", SLUG, "--root", str(layout.root), "--no-classes"])
        assert_clean_failure(stats, "Read-only file system", "read-only")
        assert shard_digests(layout.shard_dir(SLUG)) == before


@pytest.mark.slow
def test_a_root_that_is_a_file_is_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    direct = wtours(["shard", "--city", SLUG, "--root", str(afile)])
    assert_clean_failure(direct, "is a file, not a folder", "--root", code=2)
    from_env = wtours(["stats", "--city", SLUG], env={**os.environ, "WTOURS_ROOT": str(afile)})
    assert_clean_failure(from_env, "is a file, not a folder", "WTOURS_ROOT", code=2)
    out = wtours(["stats", "--city", SLUG, "--root", str(tmp_path / "root"), "--out", str(afile)])
    assert_clean_failure(out, "is a file, not a folder", "--out", code=2)
    below = wtours(["add", str(afile), "--name", SLUG, "--root", str(afile / "root")])
    assert_clean_failure(below, code=2)
    assert afile.read_text() == "not a folder"


# ------------------------------------------------------------------ 4. stats skips damaged shards


def damage(folder: Path) -> list[str]:
    """Corrupt a byte of shard 0, truncate shard 1, delete shard 2; returns their names."""
    names = [f"{SLUG}-{n:06d}.tar" for n in range(3)]
    data = bytearray((folder / names[0]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / names[0]).write_bytes(bytes(data))
    (folder / names[1]).write_bytes((folder / names[1]).read_bytes()[:3000])
    (folder / names[2]).unlink()
    return names


@pytest.mark.slow
def test_stats_skips_and_counts_truncated_corrupted_and_missing_shards(videos, tmp_path):
    layout = register(tmp_path / "root", videos["short"])
    shard_here(layout)
    bad = damage(layout.shard_dir(SLUG))
    result = wtours(["stats", "--city", SLUG, "--root", str(layout.root), "--no-classes"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "3 damaged shard(s) skipped" in result.stdout
    for name in bad:
        assert name in result.stdout + result.stderr
    summary = json.loads(layout.stats_summary_path(SLUG).read_text())
    assert [s["name"] for s in summary["source"]["skipped_shards"]] == bad
    assert summary["source"]["complete"] is False
    assert summary["frames"] == 16 - 12  # the one intact shard

    # A rerun continues from the parts: the frames of the skipped shards are still missing, and still named.
    rerun = wtours(["stats", "--city", SLUG, "--root", str(layout.root), "--no-classes", "-q"], timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(layout.stats_summary_path(SLUG).read_text())
    assert [s["name"] for s in summary["source"]["skipped_shards"]] == bad and summary["frames"] == 4

    repaired = wtours(["verify", SLUG, "--root", str(layout.root), "--repair"])
    assert repaired.returncode == 0, repaired.stderr
    whole = wtours(["stats", "--city", SLUG, "--root", str(layout.root), "--no-classes", "--overwrite", "-q"],
                   timeout=300)
    assert whole.returncode == 0, whole.stderr
    summary = json.loads(layout.stats_summary_path(SLUG).read_text())
    assert summary["source"]["skipped_shards"] == [] and summary["frames"] == 16
    assert summary["source"]["complete"] is True


# ------------------------------------------------------------------ 5. invalid index.json


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": "wtours-shards", "version": 2})])
@pytest.mark.slow
def test_inspect_refuses_an_invalid_local_or_http_index(videos, tmp_path, text):
    layout = register(tmp_path / "root", videos["short"])
    shard_here(layout)
    layout.index_path(SLUG).write_text(text)
    local = wtours(["inspect", SLUG, "--root", str(layout.root)])
    assert_clean_failure(local, str(layout.index_path(SLUG)), code=1)
    with FileServer(layout.shards_base()) as server:
        url = server.url(f"{SLUG}/index.json")
        remote = wtours(["inspect", url])
        assert_clean_failure(remote, url, code=1)


@pytest.mark.slow
def test_inspect_reports_an_incomplete_index_and_missing_shards(videos, tmp_path):
    layout = register(tmp_path / "root", videos["short"])
    shard_here(layout)
    index = json.loads(layout.index_path(SLUG).read_text())
    index.update(complete=False, decoded_until=7.5, errors=["[h264] error while decoding"])
    layout.index_path(SLUG).write_text(json.dumps(index))
    (layout.shard_dir(SLUG) / f"{SLUG}-000001.tar").unlink()
    result = wtours(["inspect", SLUG, "--root", str(layout.root), "--clip-frames", "2", "--json"])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["complete"] is False and info["videos"][SLUG]["complete"] is False
    assert info["missing"] == [str(layout.shard_dir(SLUG) / f"{SLUG}-000001.tar")]
    text = wtours(["inspect", SLUG, "--root", str(layout.root), "--clip-frames", "2"]).stdout
    assert "incomplete index" in text and "missing" in text


# ------------------------------------------------------------------ 6. a killed ffmpeg is not a damaged video


@pytest.mark.slow
def test_a_killed_ffmpeg_child_is_not_recorded_as_damage_and_the_rerun_resumes(videos, reference, tmp_path):
    layout = register(tmp_path / "root", videos["long"])
    args = ["shard", "--city", SLUG, "--root", str(layout.root), "--workers", "1", "-q", *SHARD_ARGS]
    process = start(args)
    killed = None
    try:
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            for child in children(process.pid):
                try:
                    if "ffmpeg" not in Path(f"/proc/{child}/comm").read_text(errors="replace"):
                        continue
                except OSError:
                    continue
                os.kill(process.pid, signal.SIGSTOP)  # freeze the reader so the decoder is surely mid-segment
                if proc_state(child) not in ("Z", "X", "gone"):
                    os.kill(child, signal.SIGKILL)
                    killed = child
                os.kill(process.pid, signal.SIGCONT)
                break
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert killed is not None, "no ffmpeg child was caught running"
    result = CliResult(process.returncode, out, err)
    assert_clean_failure(result, "ffmpeg was killed by SIGKILL", "not a fault of the video", "rerun", code=1)
    assert "download it again" not in err.lower()
    assert not layout.index_path(SLUG).exists()
    assert all(r["complete"] and not r["errors"] for r in records(layout))
    assert not temporaries(layout.root)
    again = wtours(args)
    assert again.returncode == 0, again.stderr
    assert shard_digests(layout.shard_dir(SLUG)) == reference["long"]


# ------------------------------------------------------------------ 7. the index of a damaged video is deterministic


def test_ffmpeg_error_text_loses_its_pointer_addresses():
    line = "[h264 @ 0x55d0c6f1e2c0] Invalid NAL unit size (1234 > 567)."
    assert normalise_log_line(line) == "[h264] Invalid NAL unit size (1234 > 567)."
    assert "0x7f3a2c" not in normalise_log_line("[mov,mp4 @ 0x7f3a2c001200] stream 0, offset 0x1f3: partial file")


@pytest.mark.slow
def test_a_truncated_video_gives_the_same_index_bytes_every_run(tmp_path):
    cut = make_truncated_video(tmp_path, size="192x128")
    indexes = []
    for run in ("a", "b", "c"):  # ffmpeg's decoder threads log in a different order each run
        layout = register(tmp_path / run, cut, allow_damaged=True)
        result = wtours(["shard", "--city", SLUG, "--root", str(layout.root), "--workers", "2", "-q", *SHARD_ARGS])
        assert result.returncode == 3, result.stderr
        indexes.append(layout.index_path(SLUG).read_bytes())
    assert indexes[0] == indexes[1] == indexes[2]
    index = json.loads(indexes[0])
    assert index["complete"] is False and index["errors"]
    assert not any("@ 0x" in line for line in index["errors"])
    assert str(tmp_path) not in indexes[0].decode()  # the root's path to the video is not recorded either


# ------------------------------------------------------------------ 8. Ctrl-C


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,said", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_or_sigterm_during_shard_stops_cleanly_and_the_rerun_is_byte_identical(videos, reference, tmp_path,
                                                                                      sig, code, said):
    """To the process group: Ctrl-C as a terminal sends it, SIGTERM as SLURM preempts a step (every process)."""
    layout = register(tmp_path / "root", videos["long"])
    args = ["shard", "--city", SLUG, "--root", str(layout.root), "--workers", "2", "-q", *SHARD_ARGS]
    process = start(args, start_new_session=True)  # its own process group, like a terminal's foreground job
    try:
        deadline = time.monotonic() + 60
        while not list(layout.segments_dir(SLUG).glob("*.json")) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.005)
        os.killpg(process.pid, sig)  # python and its ffmpeg children
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = CliResult(process.returncode, out, err)
    assert_clean_failure(result, said, "rerun", code=code)
    assert not layout.index_path(SLUG).exists(), "the run finished before the interrupt: make the video longer"
    assert not temporaries(layout.root)
    assert all(r["complete"] and not r["errors"] for r in records(layout))
    again = wtours(args)
    assert again.returncode == 0, again.stderr
    assert shard_digests(layout.shard_dir(SLUG)) == reference["long"]


# ------------------------------------------------------------------ 9. verify and repair


@pytest.mark.slow
def test_verify_names_every_bad_shard_and_repair_fixes_exactly_those(videos, reference, tmp_path):
    layout = register(tmp_path / "root", videos["long"])
    shard_here(layout)
    folder = layout.shard_dir(SLUG)
    assert shard_digests(folder) == reference["long"]
    ok = wtours(["verify", "--city", SLUG, "--root", str(layout.root)])
    assert ok.returncode == 0 and "20 shards ok" in ok.stdout, ok.stderr
    bad = damage(folder)
    untouched = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.tar") if p.name not in bad}

    result = wtours(["verify", SLUG, "--root", str(layout.root)])
    err = assert_clean_failure(result, "3 bad shard(s)", "--repair", code=1)
    assert "3 of 20 shards bad" in result.stdout
    for name in bad:
        assert name in result.stdout and name in err
    assert "sha256 differs" in result.stdout and "missing" in result.stdout and "truncated" in result.stdout

    repaired = wtours(["verify", str(folder), "--repair", "--workers", "2"])
    assert repaired.returncode == 0, repaired.stderr
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == untouched[p.name]
               for p in folder.glob("*.tar") if p.name not in bad), "repair rewrote a good shard"
    again = wtours(["verify", "--all", "--root", str(layout.root)])
    assert again.returncode == 0, again.stderr
    assert shard_digests(folder) == reference["long"]
    assert not temporaries(layout.root)


def test_verify_checks_the_index_offsets(videos, tmp_path):
    layout = register(tmp_path / "root", videos["short"])
    shard_here(layout)
    index = json.loads(layout.index_path(SLUG).read_text())
    offsets = index["shards"][1]["offsets"]
    offsets[1] += 512  # still increasing, but inside the first sample's jpg data
    layout.index_path(SLUG).write_text(json.dumps(index))
    result = wtours(["verify", SLUG, "--root", str(layout.root)])
    assert_clean_failure(result, f"{SLUG}-000001.tar", code=1)
    assert "offset" in result.stdout and "1 of 4 shards bad" in result.stdout


def test_verify_checks_the_folder_given_in_place(canonical_roots, tmp_path):
    """A copy of a set at <root>/backup/walk is checked itself, not <root>/shards/walk (its ../../shards
    sibling); it cannot be resharded in place, and says so; the root's own folder given by path is repaired."""
    root = canonical_roots.copy("walk-12s", tmp_path / "root")
    original, copy = root / "shards" / "walk", root / "backup" / "walk"
    shutil.copytree(original, copy)
    (copy / "walk-000001.tar").write_bytes((copy / "walk-000001.tar").read_bytes()[:5000])
    result = wtours(["verify", copy])
    assert_clean_failure(result, "walk-000001.tar", code=1)
    assert f"{copy}: 1 of 2 shards bad" in result.stdout and "truncated" in result.stdout
    err = assert_clean_failure(wtours(["verify", copy, "--repair"]), "not the shard folder of a data root", code=1)
    assert "wtours verify walk --root ROOT --repair" in err
    assert wtours(["verify", "walk", "--root", root]).returncode == 0
    digests = shard_digests(original)
    (original / "walk-000000.tar").unlink()
    repaired = wtours(["verify", original, "--repair", "--workers", "1"])
    assert repaired.returncode == 0 and f"{original}: repaired; 2 shards ok" in repaired.stdout, repaired.stderr
    assert shard_digests(original) == digests and not temporaries(root)


@pytest.mark.slow
def test_train_refuses_an_invalid_index_before_any_work(videos, tmp_path):
    layout = register(tmp_path / "root", videos["short"])
    shard_here(layout)
    layout.index_path(SLUG).write_text(json.dumps({"format": "wtours-shards", "version": 2, "video": {}}))
    result = wtours(["train", "--shards", SLUG, "--root", str(layout.root), "--out", str(tmp_path / "run"),
                     "--steps", "1"], timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert str(layout.index_path(SLUG)) in result.stderr and "not a valid wtours shard index" in result.stderr
    assert "hint: " in result.stderr
