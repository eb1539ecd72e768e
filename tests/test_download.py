"""`wtours download` / `add` / `list` against a local HTTP server with Range support (no internet)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.http_server import FileServer
from tests.videos import make_video
from wtours.cli.main import cli
from wtours.download import DownloadConfig, _check_disk, _explain
from wtours.errors import WtoursError
from wtours.layout import Layout

WTOURS = [sys.executable, "-m", "wtours"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A ~1.5 MB faststart mp4 in a served folder."""
    folder = tmp_path_factory.mktemp("served")
    make_video(folder / "walk.mp4", seconds=4.0, size="640x360", source="mandelbrot", faststart=True)
    return folder


def test_dry_run_prints_id_and_target_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("dry run touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    result = CliRunner().invoke(cli, ["download", "--city", "venice", "--dry-run", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fGX0Te6pFvk" in result.output
    assert str(tmp_path / "videos" / "venice") in result.output
    assert not (tmp_path / "videos").exists()


def test_typo_lists_valid_slugs_and_suggests(tmp_path):
    result = subprocess.run([*WTOURS, "download", "--city", "veniсe", "--dry-run", "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "did you mean 'venice'" in result.stderr and "zurich" in result.stderr


@pytest.mark.parametrize("args", [["--city", "../etc"], ["--url", "http://127.0.0.1:1/x.mp4", "--name", "../etc"]])
def test_path_names_are_rejected(tmp_path, args):
    result = subprocess.run([*WTOURS, "download", *args, "--dry-run", "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "not a valid video name" in result.stderr


@pytest.mark.slow
def test_download_resume_and_skip(served, tmp_path):
    root = tmp_path / "root"
    target = root / "videos" / "testwalk" / "testwalk.mp4"
    source_size = (served / "walk.mp4").stat().st_size
    with FileServer(served, bytes_per_second=150_000) as slow:
        cmd = [*WTOURS, "download", "--url", slow.url("walk.mp4"), "--name", "testwalk", "--root", str(root), "-q"]
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = target.with_name("testwalk.mp4.part")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size > source_size // 4):
            assert not target.exists(), "a partial download carries the final name"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    partial = part.stat().st_size
    assert 0 < partial < source_size and not target.exists()
    assert not (root / "videos" / "testwalk" / "info.json").exists()

    with FileServer(served) as fast:
        cmd = [*WTOURS, "download", "--url", fast.url("walk.mp4"), "--name", "testwalk", "--root", str(root), "-q"]
        subprocess.run(cmd, check=True, capture_output=True)
        ranges = [r["range"] for r in fast.body_requests() if r["range"]]
        assert any(r.startswith(f"bytes={partial}-") for r in ranges), fast.requests
        assert sha256(target) == sha256(served / "walk.mp4")
        info = json.loads((root / "videos" / "testwalk" / "info.json").read_text())
        assert info["sha256"] == sha256(served / "walk.mp4") and info["bytes"] == source_size
        assert info["probe"]["width"] == 640 and info["probe"]["frames"] == 120
        assert info["source"]["url"] == fast.url("walk.mp4")

        before = len(fast.requests)
        third = subprocess.run(cmd[:-1], check=True, capture_output=True, text=True)
        assert len(fast.requests) == before, "a completed download was fetched again"
        assert "already downloaded" in third.stdout


@pytest.mark.slow
@pytest.mark.parametrize("body", ["garbage", "truncated"])
def test_bad_body_is_never_recorded_complete(served, tmp_path, body):
    folder = tmp_path / "srv"
    folder.mkdir()
    data = (served / "walk.mp4").read_bytes()
    (folder / "walk.mp4").write_bytes(b"\x00not a video\x00" * 5000 if body == "garbage" else data[: len(data) // 2])
    root = tmp_path / "root"
    with FileServer(folder) as server:
        result = subprocess.run([*WTOURS, "download", "--url", server.url("walk.mp4"), "--name", "bad", "--root",
                                 str(root), "-q"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr
    folder_out = root / "videos" / "bad"
    assert not (folder_out / "info.json").exists()
    assert not (folder_out / "bad.mp4").exists()
    assert (folder_out / "bad.mp4.invalid").exists()


def test_unreachable_network_says_so(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([*WTOURS, "download", "--url", f"http://127.0.0.1:{port}/walk.mp4", "--name", "x",
                             "--retries", "1", "--root", str(tmp_path), "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "network failure" in result.stderr and "resumes" in result.stderr


def test_add_then_list_shows_probe(small_video, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["add", str(small_video), "--name", "mywalk", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["list", "--root", str(tmp_path)])
    line = next(line for line in listed.output.splitlines() if line.startswith("mywalk"))
    assert "0:00:03" in line and "320x240@30" in line
    rows = json.loads(runner.invoke(cli, ["list", "--root", str(tmp_path), "--json"]).output)
    row = next(r for r in rows if r["slug"] == "mywalk")
    assert row["downloaded"] and row["duration"] == pytest.approx(3.0, abs=0.05) and row["width"] == 320


def test_add_rejects_a_non_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    result = CliRunner().invoke(cli, ["add", str(junk), "--name", "junk", "--root", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not a readable video" in result.output
    assert not (tmp_path / "r" / "videos" / "junk" / "info.json").exists()


def test_add_corpus_video_keeps_manifest_provenance(small_video, tmp_path):
    CliRunner().invoke(cli, ["add", str(small_video), "--name", "venice", "--root", str(tmp_path), "--mode", "copy"])
    info = Layout(tmp_path).read_info("venice")
    assert info["source"]["id"] == "fGX0Te6pFvk" and info["source"]["license"] == "CC-BY"
    assert info["city"] == "Venice" and info["sha256"] == sha256(small_video)


def test_youtube_errors_name_the_fix():
    config = DownloadConfig(root=Path("/tmp"))
    bot = _explain("ERROR: [youtube] fGX0Te6pFvk: Sign in to confirm you’re not a bot. Use --cookies", [], config)
    assert "--cookies" in bot.hint and "figshare" in bot.hint and "wtours add" in bot.hint
    js = _explain("ERROR: [youtube] x: Requested format is not available",
                  ["No supported JavaScript runtime could be found."], config)
    assert "deno" in js.hint


def test_disk_check_refuses_what_does_not_fit(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(WtoursError, match="not enough free disk"):
        _check_disk({"id": "x", "filesize": free * 2}, tmp_path)
    _check_disk({"id": "x", "filesize": 1000}, tmp_path)
