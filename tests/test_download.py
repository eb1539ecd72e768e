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

from tests.cli import assert_clean_error, run_wtours, run_wtours_process
from tests.http_server import FileServer
from tests.videos import make_video
from wtours.errors import EXIT_FAILURE, EXIT_USAGE, UsageError, WtoursError
from wtours.fetch.download import DownloadConfig, _check_disk, _explain
from wtours.layout import Layout, read_json
from wtours.video import completed_file, read_video_info

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
    result = run_wtours(["download", "--city", "venice", "--dry-run", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fGX0Te6pFvk" in result.output
    assert str(tmp_path / "videos" / "venice") in result.output
    assert not (tmp_path / "videos").exists()


def test_typo_lists_valid_slugs_and_suggests(tmp_path):
    result = run_wtours(["download", "--city", "veniсe", "--dry-run", "--root", str(tmp_path)])
    assert result.returncode != 0
    assert "did you mean 'venice'" in result.stderr and "zurich" in result.stderr


@pytest.mark.parametrize("args", [["--city", "../etc"], ["--url", "http://127.0.0.1:1/x.mp4", "--name", "../etc"]])
def test_path_names_are_rejected(tmp_path, args):
    result = run_wtours(["download", *args, "--dry-run", "--root", str(tmp_path)])
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
        result = run_wtours_process(["download", "--url", server.url("walk.mp4"), "--name", "bad", "--root", str(root),
                                     "-q"])
    assert result.returncode == 1, result.stderr  # a damaged input: a runtime failure, not a usage error
    assert "error:" in result.stderr and "hint:" in result.stderr
    folder_out = root / "videos" / "bad"
    assert not (folder_out / "info.json").exists()
    assert not (folder_out / "bad.mp4").exists()
    assert (folder_out / "bad.mp4.invalid").exists()


def test_unreachable_network_says_so(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_wtours(["download", "--url", f"http://127.0.0.1:{port}/walk.mp4", "--name", "x", "--retries", "1",
                         "--root", str(tmp_path), "-q"])
    assert result.returncode == 1
    assert "network failure (without a retry by yt-dlp)" in result.stderr and "resumes" in result.stderr


def test_a_network_failure_names_the_retries_yt_dlp_made(tmp_path):
    """Offline (the page request goes to a proxy nobody listens on): yt-dlp retries reading the page
    extractor_retries times (3) per request, not --retries' 10, and the error says the number made of the request
    it gave up on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_wtours_process(["download", "--city", "venice", "--yt-dlp-option", f"proxy=http://127.0.0.1:{port}",
                                 "--root", str(tmp_path)])
    retried = [line for line in result.stderr.splitlines() if "Retrying (" in line]
    assert result.returncode == 1 and retried and retried[-1].endswith("Retrying (3/3)..."), result.stderr
    assert "network failure (after 3 retries by yt-dlp)" in result.stderr and "10 retries" not in result.stderr


def test_add_then_list_shows_probe(small_video, tmp_path):
    result = run_wtours(["add", str(small_video), "--name", "mywalk", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listed = run_wtours(["list", "--root", str(tmp_path)])
    line = next(line for line in listed.output.splitlines() if line.startswith("mywalk"))
    assert "0:00:03" in line and "320x240@30" in line
    rows = json.loads(run_wtours(["list", "--root", str(tmp_path), "--json"]).stdout)
    row = next(r for r in rows if r["slug"] == "mywalk")
    assert row["downloaded"] and row["duration"] == pytest.approx(3.0, abs=0.05) and row["width"] == 320


def test_add_rejects_a_non_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(5000))
    result = run_wtours(["add", str(junk), "--name", "junk", "--root", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a readable video" in result.output
    assert not (tmp_path / "r" / "videos" / "junk" / "info.json").exists()


@pytest.mark.parametrize("damage,phrase", [
    (lambda info: info.pop("probe"), "probe is missing"),
    (lambda info: info["probe"].update(duration="ten"), "probe.duration is a string"),
    (lambda info: info.update(bytes=True), "bytes is a boolean"),
])
def test_a_damaged_video_record_is_named_and_add_force_repairs_it(small_video, tmp_path, damage, phrase):
    """A hand-edited or damaged info.json: every reader stops with the file and the key, `add` refuses to
    replace what it cannot read unless told to (--force), and a download fetches the video anew."""
    assert run_wtours(["add", str(small_video), "--name", "mywalk", "--root", str(tmp_path)]).exit_code == 0
    path = Layout(tmp_path).info_path("mywalk")
    info = read_json(path)
    damage(info)
    path.write_text(json.dumps(info))
    assert_clean_error(run_wtours(["list", "--root", str(tmp_path)]), EXIT_FAILURE, phrase)
    assert_clean_error(run_wtours(["shard", "--city", "mywalk", "--root", str(tmp_path)]), EXIT_FAILURE, phrase)
    assert completed_file(Layout(tmp_path), "mywalk") is None  # `wtours download` fetches it again
    refused = run_wtours(["add", str(small_video), "--name", "mywalk", "--root", str(tmp_path)])
    assert_clean_error(refused, EXIT_USAGE, "damaged record", kind=UsageError)
    assert read_json(path) == info  # nothing replaced
    assert run_wtours(["add", str(small_video), "--name", "mywalk", "--root", str(tmp_path), "--force"]).exit_code == 0
    assert read_video_info(Layout(tmp_path), "mywalk").probe.width == 320


def test_add_corpus_video_keeps_manifest_provenance(small_video, tmp_path):
    run_wtours(["add", str(small_video), "--name", "venice", "--root", str(tmp_path), "--mode", "copy"])
    info = read_json(Layout(tmp_path).info_path("venice"))
    assert info["source"]["id"] == "fGX0Te6pFvk" and info["source"]["license"] == "CC-BY"
    assert info["city"] == "Venice" and info["sha256"] == sha256(small_video)


def test_youtube_errors_name_the_fix():
    config = DownloadConfig(root=Path("/tmp"))
    bot = _explain("ERROR: [youtube] fGX0Te6pFvk: Sign in to confirm you’re not a bot. Use --cookies", [], config,
                   "venice")
    assert "--cookies" in bot.hint and "figshare" in bot.hint and "wtours add" in bot.hint
    js = _explain("ERROR: [youtube] x: Requested format is not available",
                  ["No supported JavaScript runtime could be found."], config)
    assert "deno" in js.hint


def test_disk_check_refuses_what_does_not_fit(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(WtoursError, match="not enough free disk"):
        _check_disk({"id": "x", "filesize": free * 2}, tmp_path)
    _check_disk({"id": "x", "filesize": 1000}, tmp_path)


# ---------------------------------------------------------------- the user's yt-dlp config and --yt-dlp-option

YTDLP_CONFIG = """# a yt-dlp user's own settings
--http-chunk-size 64K
-o "~/Videos/%(title)s.%(ext)s"
-f bestaudio
"""


@pytest.fixture
def ytdlp_home(tmp_path, monkeypatch) -> Path:
    """A home whose $XDG_CONFIG_HOME/yt-dlp/config holds YTDLP_CONFIG (this process and children)."""
    xdg = tmp_path / "xdg"
    (xdg / "yt-dlp").mkdir(parents=True)
    (xdg / "yt-dlp" / "config").write_text(YTDLP_CONFIG)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return xdg / "yt-dlp" / "config"


def chunked_ranges(server: FileServer) -> list[tuple[int, int]]:
    """(first, last) byte of every ranged GET the server answered."""
    spans = []
    for request in server.body_requests():
        first, _, last = (request["range"] or "").removeprefix("bytes=").partition("-")
        if first and last:
            spans.append((int(first), int(last)))
    return spans


@pytest.mark.slow
def test_user_ytdlp_config_is_applied_and_reported(served, tmp_path, ytdlp_home):
    size = (served / "walk.mp4").stat().st_size
    root = tmp_path / "root"
    with FileServer(served) as server:
        result = subprocess.run([*WTOURS, "download", "--url", server.url("walk.mp4"), "--name", "walk", "--root",
                                 str(root)], capture_output=True, text=True)
        spans = chunked_ranges(server)
    assert result.returncode == 0, result.stderr
    # the config's --http-chunk-size reached yt-dlp: the body came in ranged requests of at most 64 KiB
    assert len(spans) >= size // 65536 and all(last - first + 1 <= 65536 for first, last in spans), spans
    assert f"applied from {ytdlp_home}: http_chunk_size=65536" in result.stdout
    not_applied = next(line for line in result.stdout.splitlines() if "not applied" in line)
    assert "outtmpl: wtours decides where the video goes" in not_applied and "format: wtours picks" in not_applied
    # -o and -f were not applied: the file is where wtours puts it, and it has video
    info = read_json(Layout(root).info_path("walk"))
    assert (root / "videos" / "walk" / info["file"]).is_file() and not (tmp_path / "home" / "Videos").exists()
    assert info["probe"]["width"] == 640 and info["source"]["yt_dlp_options"] == {"http_chunk_size": "yt-dlp config"}


@pytest.mark.slow
def test_yt_dlp_option_wins_and_the_config_can_be_ignored(served, tmp_path, ytdlp_home):
    with FileServer(served) as server:
        cmd = [*WTOURS, "download", "--url", server.url("walk.mp4"), "--root", str(tmp_path / "root")]
        chosen = subprocess.run([*cmd, "--name", "chosen", "--yt-dlp-option", "http_chunk_size=100K"],
                                capture_output=True, text=True)
        chosen_spans = chunked_ranges(server)
        server.requests.clear()
        ignored = subprocess.run([*cmd, "--name", "ignored", "--ignore-yt-dlp-config"], capture_output=True, text=True)
        ignored_spans = chunked_ranges(server)
    assert chosen.returncode == 0 and ignored.returncode == 0, (chosen.stderr, ignored.stderr)
    assert max(last - first + 1 for first, last in chosen_spans) > 65536  # 100K won over the config's 64K
    assert all(last - first + 1 <= 102400 for first, last in chosen_spans)
    assert "applied from --yt-dlp-option: http_chunk_size=102400" in chosen.stdout
    assert len(ignored_spans) <= 1 and "not read (--ignore-yt-dlp-config)" in ignored.stdout  # one plain GET
    info = read_json(Layout(tmp_path / "root").info_path("ignored"))
    assert info["source"]["yt_dlp_options"] == {}


def test_dry_run_json_shows_the_yt_dlp_settings(tmp_path, ytdlp_home):
    result = run_wtours(["download", "--city", "venice", "--dry-run", "--json", "--root", str(tmp_path),
                         "--yt-dlp-option", "proxy=socks5://alice:s3cret@127.0.0.1:1080",
                         "--yt-dlp-option", 'http_headers={"Authorization": "Bearer tok"}'])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)[0]["yt_dlp"]
    assert settings["config_files"] == [str(ytdlp_home)]
    assert settings["applied"]["http_chunk_size"] == {"value": 65536, "from": "yt-dlp config"}
    # wtours.redact, the one redactor: the password and the secret header hidden by its one marker
    assert settings["applied"]["proxy"]["value"] == "socks5://alice:***@127.0.0.1:1080"
    assert settings["applied"]["http_headers"]["value"] == {"Authorization": "***"}
    assert set(settings["not_applied"]) == {"outtmpl", "format"}
    assert "s3cret" not in result.output and "tok" not in result.output


@pytest.mark.parametrize(("option", "message"), [
    ("outtmpl=/tmp/%(title)s.%(ext)s", "wtours sets outtmpl itself"),
    ("nopart=true", "wtours sets nopart itself"),
    ("ratelimt=50K", "not a YoutubeDL parameter"),
    ("ratelimit=fast", "not a size"),
    ("retries=many", "retries takes an integer"),
    ("noise", "is not KEY=VALUE"),
])
def test_bad_yt_dlp_options_are_usage_errors(tmp_path, ytdlp_home, option, message):
    result = run_wtours(["download", "--city", "venice", "--dry-run", "--root", str(tmp_path),
                         "--yt-dlp-option", option])
    assert result.exit_code == 2 and message in result.output and "hint:" in result.output, result.output
    assert "Traceback" not in result.output


def test_yt_dlp_option_contradicting_a_flag_is_refused(tmp_path, ytdlp_home):
    result = run_wtours(["download", "--city", "venice", "--dry-run", "--root", str(tmp_path),
                         "--rate-limit", "1M", "--yt-dlp-option", "ratelimit=2M"])
    assert result.exit_code == 2 and "contradicts --rate-limit" in result.output


def test_a_broken_yt_dlp_config_names_the_file_and_the_way_out(tmp_path, ytdlp_home):
    ytdlp_home.write_text("--no-such-yt-dlp-flag\n")
    args = ["download", "--city", "venice", "--dry-run", "--root", str(tmp_path)]
    result = run_wtours(args)
    assert result.exit_code == 2, result.output
    assert str(ytdlp_home) in result.output and "no such option" in result.output
    assert "--ignore-yt-dlp-config" in result.output
    assert run_wtours([*args, "--ignore-yt-dlp-config"]).exit_code == 0


# ---------------------------------------------------------------- provenance of added videos


def test_add_records_provenance_and_re_adding_keeps_or_updates_it(small_video, tmp_path):
    base = ["add", str(small_video), "--name", "my-walk", "--root", str(tmp_path), "--mode", "copy"]
    first = run_wtours([*base, "--source-url", "https://example.org/walks/1", "--uploader", "Jane Walker",
                        "--license", "CC-BY-4.0", "--title", "Old town | dusk"])
    assert first.exit_code == 0, first.output
    source = read_json(Layout(tmp_path).info_path("my-walk"))["source"]
    assert (source["url"], source["uploader"], source["license"], source["title"]) == (
        "https://example.org/walks/1", "Jane Walker", "CC-BY-4.0", "Old town | dusk")
    again = run_wtours([*base, "--license", "CC-BY-SA-4.0"])  # the same file: no --force needed
    assert again.exit_code == 0, again.output
    assert "keeping the recorded title, uploader, url" in again.output
    source = read_json(Layout(tmp_path).info_path("my-walk"))["source"]
    assert source["license"] == "CC-BY-SA-4.0" and source["uploader"] == "Jane Walker"
    assert source["url"] == "https://example.org/walks/1"


@pytest.mark.parametrize(("option", "value"), [
    ("--source-url", "ftp://example.org/walk.mp4"), ("--source-url", "/home/me/walk.mp4"),
    ("--source-url", "https:///no-host"), ("--source-url", "https://example.org/a b"),
    ("--uploader", "Jane\nWalker"), ("--license", "x" * 101), ("--license", "  "),
])
def test_add_refuses_bad_provenance_before_touching_the_root(small_video, tmp_path, option, value):
    result = run_wtours(["add", str(small_video), "--name", "my-walk", "--root", str(tmp_path / "r"),
                         option, value])
    assert result.exit_code == 2 and option in result.output and "hint:" in result.output, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_pushed_card_attributes_an_added_video(small_video, tmp_path, monkeypatch):
    """`wtours add` with provenance, shard, push to the local Hub: the card credits the creator and licence."""
    import huggingface_hub.constants

    from tests.hub_server import HubServer
    from wtours.hub.client import HubTarget
    from wtours.hub.push import PushConfig, push
    from wtours.shard.params import RunOptions, ShardParams
    from wtours.shard.run import shard_video

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    layout = Layout(tmp_path / "root")
    result = run_wtours(["add", str(small_video), "--name", "my-walk", "--root", str(layout.root),
                         "--mode", "symlink", "--source-url", "https://example.org/walks/1",
                         "--uploader", "Jane Walker", "--license", "CC-BY-4.0"])
    assert result.exit_code == 0, result.output
    shard_video(layout, "my-walk", ShardParams(fps=2.0, short_side=96, samples_per_shard=4),
                RunOptions(workers=1, progress=False), say=lambda m: None)
    token = "hf_jane_Xy12secret"
    with HubServer({token: "jane"}) as hub:
        target = HubTarget("jane/walks", endpoint=hub.url, token=token)
        push(layout, PushConfig(target, ("my-walk",), progress=False), say=lambda m: None)
        card = hub.files("jane/walks")["README.md"].decode()
    row = next(line for line in card.splitlines() if line.startswith("| `my-walk` |"))
    assert "Jane Walker" in row and "<https://example.org/walks/1>" in row and "CC-BY-4.0" in row


def test_list_names_its_root_and_where_it_came_from_and_the_stated_specs(small_video, tmp_path):
    """Before a download the manifest's stated specs show, marked; after `add`, the file's own."""
    given = run_wtours(["list", "--root", str(tmp_path / "a")])
    assert given.stdout.splitlines()[0] == f"root: {tmp_path / 'a'} (from --root)"
    wildlife = next(line for line in given.stdout.splitlines() if line.startswith("wildlife"))
    assert "~0:59:00" in wildlife and "~3840x2160@60" in wildlife
    assert "amsterdam" in given.stdout and given.stdout.splitlines()[-1].startswith("~: as the corpus manifest")
    env = {**os.environ, "WTOURS_ROOT": str(tmp_path / "b")}
    assert run_wtours(["list"], env=env).stdout.startswith(f"root: {tmp_path / 'b'} (from $WTOURS_ROOT)")
    env = {k: v for k, v in os.environ.items() if k != "WTOURS_ROOT"} | {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert run_wtours(["list"], env=env).stdout.startswith(f"root: {tmp_path / 'xdg' / 'wtours'} (from default)")
    run_wtours(["add", str(small_video), "--name", "wildlife", "--root", str(tmp_path / "a")])
    listed = run_wtours(["list", "--root", str(tmp_path / "a"), "--json"])
    assert listed.stderr.startswith(f"root: {tmp_path / 'a'} (from --root)")
    row = next(r for r in json.loads(listed.stdout) if r["slug"] == "wildlife")
    assert row["duration"] == pytest.approx(3.0, abs=0.05) and row["stated_duration"] == 3540
    line = next(line for line in run_wtours(["list", "--root", str(tmp_path / "a")]).stdout.splitlines()
                if line.startswith("wildlife"))
    assert "0:00:03" in line and "~" not in line and "320x240@30" in line
