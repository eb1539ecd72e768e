"""`wtours add` of what the figshare mirror serves: an mp4/mkv of any name or a .zip of one, recorded as the
mirror's, and the archives it must refuse (real zip files built here)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from tests.cli import assert_clean_error, run_wtours
from tests.videos import make_video
from wtours.errors import EXIT_FAILURE, EXIT_USAGE, UsageError
from wtours.fetch.download import DownloadConfig, _explain
from wtours.layout import TEMPORARY_GLOB, Layout, read_json
from wtours.manifest import load_manifest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_zip(path: Path, members: dict[str, bytes | Path], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data.read_bytes() if isinstance(data, Path) else data)
    return path


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_mirror_zip_is_extracted_and_recorded_as_the_mirror(small_video, tmp_path, method):
    archive = make_zip(tmp_path / "Venice.zip", {"Dora_WT/Venice.mp4": small_video}, method)
    root = tmp_path / "root"
    result = run_wtours(["add", str(archive), "--name", "venice", "--root", str(root), "--mirror"])
    assert result.exit_code == 0, result.output
    layout = Layout(root)
    info = read_json(layout.info_path("venice"))
    registered = layout.video_dir("venice") / info["file"]
    assert info["file"] == "venice.mp4" and registered.read_bytes() == small_video.read_bytes()
    assert info["sha256"] == sha256(small_video) and info["sha256"] in result.output
    source = info["source"]
    assert source["type"] == "mirror" and source["url"] == load_manifest().mirror.url
    assert source["mirror_file"] == "Venice.zip" and source["archive_member"] == "Dora_WT/Venice.mp4"
    assert source["archive_sha256"] == sha256(archive)
    assert source["original_url"] == "https://www.youtube.com/watch?v=fGX0Te6pFvk" and source["license"] == "CC-BY"
    assert archive.is_file() and not list(layout.video_dir("venice").glob(TEMPORARY_GLOB))
    again = run_wtours(["add", str(archive), "--name", "venice", "--root", str(root), "--mirror"])
    assert again.exit_code == 0, again.output  # the same archive again needs no --force


def test_a_mirror_mkv_of_any_name_is_recorded_as_the_mirror(tmp_path):
    video = make_video(tmp_path / "Zurich walk 4K (1).mkv", seconds=1.0, size="160x120")
    root = tmp_path / "root"
    assert run_wtours(["add", str(video), "--name", "zurich", "--root", str(root), "--mirror"]).exit_code == 0
    info = read_json(Layout(root).info_path("zurich"))
    assert info["file"] == "zurich.mkv" and info["sha256"] == sha256(video)
    assert info["source"]["type"] == "mirror" and info["source"]["mirror_file"] == video.name
    assert "archive_sha256" not in info["source"]
    plain = run_wtours(["add", str(video), "--name", "my-walk", "--root", str(root)])
    assert plain.exit_code == 0 and read_json(Layout(root).info_path("my-walk"))["source"]["type"] == "local"


def test_a_zip_member_path_never_leaves_the_video_folder(small_video, tmp_path):
    """Zip-slip: the member's name is only read for its suffix; the video lands in the root, nowhere else."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = make_zip(work / "evil.zip", {"../../escaped.mp4": small_video})
    root = work / "root"
    assert run_wtours(["add", str(archive), "--name", "walk", "--root", str(root)]).exit_code == 0
    assert not (tmp_path / "escaped.mp4").exists() and not (tmp_path / "a" / "escaped.mp4").exists()
    assert (Layout(root).video_dir("walk") / "walk.mp4").read_bytes() == small_video.read_bytes()


@pytest.mark.parametrize("members,phrase", [
    ({"a.mp4": "VIDEO", "b.mkv": "VIDEO"}, "holds 2 videos"),
    ({"readme.txt": b"hello", "__MACOSX/._Venice.mp4": b"fork"}, "holds no .mp4 or .mkv video"),
    ({"Venice.mp4": bytes(20 << 20)}, "zip bomb"),  # 20 MiB of zeros deflate to ~20 KiB
])
def test_archives_add_refuses(small_video, tmp_path, members, phrase):
    members = {k: small_video if v == "VIDEO" else v for k, v in members.items()}
    archive = make_zip(tmp_path / "x.zip", members)
    root = tmp_path / "root"
    result = run_wtours(["add", str(archive), "--name", "venice", "--root", str(root)])
    assert_clean_error(result, EXIT_USAGE, phrase, kind=UsageError)
    assert not Layout(root).info_path("venice").exists() and not list(root.rglob("*.mp4"))


def test_a_damaged_archive_or_member_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_wtours(["add", str(cut), "--name", "walk", "--root", str(tmp_path / "r")])
    assert_clean_error(result, EXIT_USAGE, "not a readable zip archive", kind=UsageError)
    junk = make_zip(tmp_path / "junk.zip", {"Walk.mp4": bytes(range(256)) * 40}, zipfile.ZIP_STORED)
    result = run_wtours(["add", str(junk), "--name", "walk", "--root", str(tmp_path / "r")])
    assert_clean_error(result, EXIT_FAILURE, "Walk.mp4 (in junk.zip) is not a readable video")
    folder = Layout(tmp_path / "r").video_dir("walk")
    assert not list(folder.glob(TEMPORARY_GLOB)) and not list(folder.glob("*.mp4"))


def test_download_failures_point_corpus_videos_to_the_mirror():
    config = DownloadConfig(root=Path("/tmp"))
    network = _explain("ERROR: Unable to download webpage: timed out", [], config, "venice")
    assert "network failure" in network.message and "resumes" in network.hint
    assert load_manifest().mirror.url in network.hint and "wtours add FILE --name venice --mirror" in network.hint
    other = _explain("ERROR: Unable to download webpage: timed out", [], config, None)
    assert "figshare" not in other.hint  # a video of the user's own is not on the mirror
