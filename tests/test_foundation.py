"""Package, manifest, layout and ffmpeg resolution."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.cli import run_wtours
from wtours import media
from wtours.cli.main import cli
from wtours.errors import WtoursError
from wtours.layout import Layout, sample_key, shard_name, validate_slug
from wtours.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]


def test_manifest_has_the_ten_videos():
    manifest = load_manifest()
    assert len(manifest.videos) == 10
    assert manifest.get("venice").youtube_id == "fGX0Te6pFvk"
    assert manifest.get("kuala-lumpur").city == "Kuala_Lampur"
    assert "YcI_UXfMTgo" in manifest.get("wildlife").previous_ids
    for video in manifest.videos:
        validate_slug(video.slug)
        assert video.license == "CC-BY"
        assert video.url.endswith(video.youtube_id)
        assert video.kind in ("city-walk", "wildlife")
        assert set(video.observed) >= {"duration", "width", "height", "fps", "sha256"}


@pytest.mark.parametrize("name,slug", [("kuala_lampur", "kuala-lumpur"), ("chiangmai", "chiang-mai"),
                                       ("Chiang Mai", "chiang-mai"), ("VENICE", "venice"), ("Zürich", "zurich")])
def test_aliases_resolve(name, slug):
    assert load_manifest().resolve(name).slug == slug


def test_unknown_city_suggests_the_closest():
    with pytest.raises(WtoursError) as info:
        load_manifest().resolve("veniсe")  # Cyrillic 'с'
    assert "did you mean 'venice'" in info.value.hint
    assert "amsterdam" in info.value.hint


@pytest.mark.parametrize("bad", ["../etc", "a/b", "Venice", "x.y", "", "-x", "a" * 64])
def test_slug_validation_rejects_paths_and_odd_names(bad):
    with pytest.raises(WtoursError, match="not a valid video name"):
        validate_slug(bad)


def test_layout_owns_names(tmp_path):
    layout = Layout(tmp_path)
    assert layout.info_path("venice") == tmp_path / "videos" / "venice" / "info.json"
    assert layout.index_path("venice") == tmp_path / "shards" / "venice" / "index.json"
    assert shard_name("venice", 3) == "venice-000003.tar"
    assert sample_key("venice", 42) == "venice-00000042"
    assert "." not in sample_key("a-b", 1)


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WTOURS_ROOT", str(tmp_path / "r"))
    assert Layout().root == tmp_path / "r"


def test_every_command_has_help_with_examples():
    top = run_wtours(["--help"])
    assert top.exit_code == 0
    for name in cli.commands:
        assert name in top.output
        result = run_wtours([name, "--help"])
        assert result.exit_code == 0, name
        assert "Examples:" in result.output or "Example:" in result.output, name


def test_probe_agrees_between_ffprobe_and_wheel_fallback(small_video, monkeypatch):
    if media.find_tools().ffprobe is None:
        pytest.skip("no ffprobe here: only the fallback is available")
    direct = media.probe(small_video)
    monkeypatch.setenv(media.WHEEL_ONLY_ENV, "1")
    fallback = media.probe(small_video)
    assert media.find_tools().source == "wheel" and media.find_tools().ffprobe is None
    assert (fallback.width, fallback.height, fallback.frames, fallback.codec) == (320, 240, 90, "h264")
    assert fallback.duration == pytest.approx(direct.duration, abs=0.05)
    assert fallback.fps == pytest.approx(direct.fps)


def test_a_bad_ffmpeg_path_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(media.FFMPEG_ENV, str(tmp_path / "nope"))
    with pytest.raises(WtoursError) as info:
        media.find_tools()
    assert "apt-get install ffmpeg" in info.value.hint and "imageio-ffmpeg" in info.value.hint


def test_probe_rejects_a_non_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(media.ProbeError, match="not a readable video"):
        media.probe(junk)


@pytest.mark.slow
def test_wheel_ships_cli_and_manifest(tmp_path):
    """A non-editable install carries wtours.cli and the manifest, and claims no top-level `cli`.

    Built from a copy of the sources, so setuptools' build/ and wtours.egg-info/ land in tmp_path."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("wtours", "cli", "manifests"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True)
    wheel = next(tmp_path.glob("wtours-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wtours/manifests/walking_tours.json" in names
    assert "wtours/stats/vocabularies/lvis_v1.txt" in names  # --detector owlv2's default vocabulary
    assert "wtours/cli/main.py" in names
    assert not any(n.startswith("cli/") or n.startswith("manifests/") for n in names)
    for package in (REPO / "wtours").glob("*/__init__.py"):  # every subpackage ships
        assert f"wtours/{package.parent.name}/__init__.py" in names, package.parent.name
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    code = ("from wtours.manifest import load_manifest; from wtours.stats.vocabulary import read_vocabulary; "
            "print(len(load_manifest().videos), len(read_vocabulary(None).classes))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split() == ["10", "1203"]


def test_list_json_shows_manifest(tmp_path):
    result = run_wtours(["list", "--root", str(tmp_path), "--json"])
    rows = json.loads(result.stdout)
    assert [r["slug"] for r in rows][:2] == ["amsterdam", "bangkok"] and len(rows) == 10
