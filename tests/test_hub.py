"""Shards on the Hub, offline: push, pull, streaming training and errors against tests/hub_server.py.

huggingface_hub reads HF_ENDPOINT when it is imported, and another test module may import it first,
so the CLI runs in subprocesses with the endpoint in their environment; library calls in this process
pass the endpoint explicitly (HubTarget.endpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.cli import CliResult, assert_clean_error, run_wtours_process
from tests.hub_server import HubServer
from tests.videos import index_json, make_video
from wtours.errors import WtoursError
from wtours.fetch.local import add_local
from wtours.hfclient import describe_error, is_transport_error
from wtours.hub import source as provenance
from wtours.hub.card import CardVideo, download_command, is_generated, render_card
from wtours.hub.client import HubTarget, RemoteFile, git_blob_id
from wtours.hub.paths import shard_pattern, shard_spec
from wtours.hub.pull import PullConfig, pull
from wtours.hub.push import Delete, PushConfig, Upload, batch_operations, plan_set, push
from wtours.layout import Layout, read_json, write_json_atomic
from wtours.shard.index import ShardEntry, load_index
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video

TOKEN = "hf_alice_Zq81secret"  # alice's; must never appear in any output
BOB = "hf_bob_Kd02secret"  # a valid token without access to alice's private repos
SETS = {"venice": 8.0, "zurich": 5.0}  # seconds; 2 fps and 4 samples per shard: 4 and 3 shards
CREATOR = {"title": "Venice 4K | walking tour", "uploader": "Test Walker",
           "channel_url": "https://www.youtube.com/@testwalker",
           "license": "Creative Commons Attribution license (reuse allowed)"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


pytestmark = pytest.mark.usefixtures("no_xet")  # tests/conftest.py


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two sharded corpus videos; venice's provenance as `wtours download` records it (creator and
    channel), zurich's as `wtours add` does (the manifest's URL and licence, no creator)."""
    folder = tmp_path_factory.mktemp("hub")
    layout = Layout(folder / "root")
    for slug, seconds in SETS.items():
        video = make_video(folder / f"{slug}.mp4", seconds=seconds, size="192x128", rate=10)
        add_local(video, slug, layout.root, mode="symlink", say=lambda m: None)
        if slug == "venice":
            info = read_json(layout.info_path(slug))
            info["source"].update(CREATOR)
            write_json_atomic(layout.info_path(slug), info)
        shard_video(layout, slug, ShardParams(fps=2.0, short_side=128, samples_per_shard=4),
                    RunOptions(workers=2, progress=False), say=lambda m: None)
    return layout.root


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: "alice", BOB: "bob"}, page_size=3) as server:  # small pages: listings paginate
        yield server


def env_for(hub: HubServer, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home / "hf-home"), WTOURS_ROOT="",
               HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def wtours(args: list[str], env: dict[str, str]) -> CliResult:
    """`wtours ARGS` in a process: huggingface_hub reads HF_ENDPOINT when it is imported."""
    result = run_wtours_process(args, env=env)
    for token in (TOKEN, BOB):
        assert token not in result.stdout + result.stderr, "a token was printed"
    return result


def local_files(root: Path, slug: str) -> dict[str, bytes]:
    folder = Layout(root).shard_dir(slug)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith((".tar", "index.json"))}


@pytest.fixture(scope="module")
def pushed(root, hub, tmp_path_factory):
    """alice/walks after one `wtours push --all`, in commits of at most 3 files."""
    env = env_for(hub, tmp_path_factory.mktemp("home"))
    result = wtours(["push", "--all", "--repo", "alice/walks", "--root", str(root), "--max-commit-files", "3"], env)
    assert result.returncode == 0, result.stderr
    return result


# ---------------------------------------------------------------------- push


@pytest.mark.slow
def test_push_uploads_the_layout_with_lfs_shards_and_index_last(root, hub, pushed):
    files = hub.files("alice/walks")
    layout = Layout(root)
    for slug in SETS:
        index = index_json(layout, slug)
        for shard in index["shards"]:
            assert sha256(files[f"{slug}/{shard['name']}"]) == shard["sha256"]
        assert files[f"{slug}/index.json"] == layout.index_path(slug).read_bytes()
        assert json.loads(files[f"{slug}/source.json"])["source"]["url"].startswith("https://www.youtube.com/")
        assert files[f"{slug}/{slug}.wids.json"] == layout.wids_path(slug).read_bytes()
    assert set(files) == {".gitattributes", "README.md", *(f"{s}/{n}" for s in SETS for n in
                                                          ("index.json", "source.json", f"{s}.wids.json"))} | {
        f"{s}/{sh['name']}" for s in SETS for sh in index_json(layout, s)["shards"]}
    # tars are LFS objects, like on the Hub
    assert all(name in hub.lfs_objects for name in (sha256(b) for p, b in files.items() if p.endswith(".tar")))
    # commits of at most 3 files, and each index and wids descriptor in a commit no earlier than its last shard
    history = hub.history("alice/walks")[1:]
    assert len(history) >= 5 and all(len(c["paths"]) <= 3 for c in history)
    when = {p: i for i, c in enumerate(history) for p in c["paths"]}
    for slug in SETS:
        for listing in (f"{slug}/index.json", f"{slug}/{slug}.wids.json"):
            assert all(when[listing] >= when[p] for p in when if p.startswith(f"{slug}/{slug}-"))
    assert "pushed 14 files" in pushed.stdout  # 7 shards, 2 index.json, 2 wids, 2 source.json, the card


def test_second_push_uploads_nothing(root, hub, pushed, tmp_path):
    mark, commits = len(hub.requests), len(hub.history("alice/walks"))
    # -v: debug logs of huggingface_hub and httpx go to stderr, and must not show the token either
    result = wtours(["push", "--all", "--repo", "alice/walks", "--root", str(root), "-v"], env_for(hub, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "up to date, nothing to upload" in result.stdout and "DEBUG" in result.stderr
    assert hub.uploads(mark) == [] and len(hub.history("alice/walks")) == commits


@pytest.mark.slow
def test_interrupted_push_resumes_without_resending(root, hub, tmp_path):
    """A commit fails midway; the repo never has an index without its shards, and the rerun sends
    only what is missing (LFS bodies already stored are not sent again)."""
    env = env_for(hub, tmp_path)
    hub.fail_commit("alice/resume", number=2)  # commit 1: venice-000000..2; commit 2 (venice-000003, ...) fails
    first = wtours(["push", "--all", "--repo", "alice/resume", "--root", str(root), "--max-commit-files", "3"], env)
    assert first.returncode == WtoursError.exit_code and "error: push to alice/resume" in first.stderr
    partial = hub.files("alice/resume")
    for slug in SETS:
        if f"{slug}/index.json" in partial:
            index = json.loads(partial[f"{slug}/index.json"])
            assert all(f"{slug}/{s['name']}" in partial for s in index["shards"])
    assert sorted(partial) == [".gitattributes", *(f"venice/venice-00000{i}.tar" for i in range(3))]
    stored = set(hub.lfs_objects)
    uncommitted = (Layout(root).shard_dir("venice") / "venice-000003.tar").read_bytes()
    assert sha256(uncommitted) in stored  # its body went up before the failed commit
    mark = len(hub.requests)
    second = wtours(["push", "--all", "--repo", "alice/resume", "--root", str(root), "--max-commit-files", "3"], env)
    assert second.returncode == 0, second.stderr
    resumed, whole = hub.files("alice/resume"), hub.files("alice/walks")
    assert resumed.keys() == whole.keys()
    assert all(resumed[p] == whole[p] for p in whole if p != "README.md")  # the card names its repo
    sent = [r["path"].rsplit("/", 1)[1] for r in hub.uploads(mark) if r["method"] == "PUT"]
    assert not set(sent) & stored, "an LFS body stored before the failure was sent again"
    committed = [p for c in hub.history("alice/resume")[2:] for p in c["paths"]]
    assert not set(committed) & {p for p in partial if p != "README.md"}


# ---------------------------------------------------------------------- pull


@pytest.mark.slow
def test_pull_into_a_fresh_root_matches_the_index_and_resumes(root, hub, pushed, tmp_path):
    env = env_for(hub, tmp_path)
    fresh = tmp_path / "fresh"
    result = wtours(["pull", "--repo", "alice/walks", "--root", str(fresh)], env)
    assert result.returncode == 0, result.stderr
    layout, original = Layout(fresh), Layout(root)
    for slug in SETS:
        index = index_json(layout, slug)
        assert layout.index_path(slug).read_bytes() == original.index_path(slug).read_bytes()
        for shard in index["shards"]:
            assert sha256((layout.shard_dir(slug) / shard["name"]).read_bytes()) == shard["sha256"]
        assert (layout.shard_dir(slug) / f"{slug}.wids.json").is_file()
        pulled = dict(provenance.source_record(layout, slug) or {})
        # where it came from, for `wtours export` to link the model card's training data
        assert pulled.pop("pulled_from") == {"repo": "alice/walks", "revision": "main"}
        assert pulled == provenance.source_record(original, slug)

    # interrupted midway through one shard, another corrupted on disk, a third gone
    folder = layout.shard_dir("venice")
    whole = (folder / "venice-000001.tar").read_bytes()
    (folder / "venice-000001.tar").unlink()
    (folder / ".venice-000001.tar.tmp-pull").write_bytes(whole[:7000])
    damaged = bytearray((folder / "venice-000002.tar").read_bytes())
    damaged[600] ^= 0xFF
    (folder / "venice-000002.tar").write_bytes(bytes(damaged))
    (layout.shard_dir("zurich") / "zurich-000000.tar").unlink()
    mark = len(hub.requests)
    again = wtours(["pull", "--repo", "alice/walks", "--root", str(fresh), "-q"], env)
    assert again.returncode == 0, again.stderr
    fetched = hub.downloads(mark)
    assert sorted({r["path"].split("/resolve/main/")[1] for r in fetched if r["path"].endswith(".tar")}) == [
        "venice/venice-000001.tar", "venice/venice-000002.tar", "zurich/zurich-000000.tar"]
    resumed = [r for r in fetched if r["path"].endswith("venice-000001.tar")]
    assert resumed[0]["range"].startswith("bytes=7000-")
    assert local_files(fresh, "venice") == local_files(root, "venice")
    assert local_files(fresh, "zurich") == local_files(root, "zurich")
    assert not list(folder.glob(".*tmp-pull"))
    assert "pulled 3 shards" in again.stdout and "4 already present" in again.stdout


def test_pull_refuses_an_unknown_set_and_names_the_ones_there(hub, pushed, tmp_path):
    target = HubTarget("alice/walks", endpoint=hub.url, token=TOKEN)
    with pytest.raises(WtoursError) as error:
        pull(Layout(tmp_path), PullConfig(target, ("amsterdam",), progress=False), say=lambda m: None)
    assert "no shard set 'amsterdam'" in error.value.message and "venice, zurich" in error.value.hint


def test_pull_never_mixes_with_another_local_set(hub, pushed, tmp_path):
    target = HubTarget("alice/walks", endpoint=hub.url, token=TOKEN)
    layout = Layout(tmp_path / "root")
    summary = pull(layout, PullConfig(target, ("zurich",), progress=False), say=lambda m: None)
    assert len(summary.downloaded) == 3 and index_json(layout, "venice") is None
    index = index_json(layout, "zurich")
    index["params"]["quality"] = 80  # as if resharded locally with other parameters
    write_json_atomic(layout.index_path("zurich"), index)
    with pytest.raises(WtoursError) as error:
        pull(layout, PullConfig(target, ("zurich",), progress=False), say=lambda m: None)
    assert "holds another shard set of zurich" in error.value.message and "--root" in error.value.hint


# ---------------------------------------------------------------------- streaming


@pytest.mark.slow
def test_train_and_inspect_stream_from_hf_patterns(root, hub, pushed, tmp_path):
    env = env_for(hub, tmp_path)
    mark = len(hub.requests)
    out = tmp_path / "run"
    spec = "hf://datasets/alice/walks/venice/venice-{000000..000003}.tar"
    result = wtours(["train", "--shards", spec, "--out", str(out), "--arch", "vit_micro", "--out-dim", "64",
                     "--batch-size", "2", "--clip-frames", "2", "--n-local", "2", "--workers", "0", "--steps", "2",
                     "--log-every", "1"], env)
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert {r["path"] for r in hub.downloads(mark)} & {f"/datasets/alice/walks/resolve/main/venice/venice-00000{i}.tar"
                                                      for i in range(4)}
    # a glob pattern resolves through the Hub's listing and counts the same clips as the local set
    remote = wtours(["inspect", "hf://datasets/alice/walks/zurich/*.tar", "--clip-frames", "2", "--json"], env)
    local = wtours(["inspect", "zurich", "--root", str(root), "--clip-frames", "2", "--json"], env)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["clips_per_epoch"] == json.loads(local.stdout)["clips_per_epoch"] > 0


@pytest.mark.slow
def test_stats_stream_from_an_hf_index(root, hub, pushed, tmp_path):
    env = env_for(hub, tmp_path)
    fresh = tmp_path / "fresh"
    result = wtours(["stats", "--shards", "hf://datasets/alice/walks/venice/index.json", "--root", str(fresh),
                     "--no-classes", "-q"], env)
    assert result.returncode == 0, result.stderr
    remote = json.loads((fresh / "stats" / "venice" / "summary.json").read_text())
    local_run = wtours(["stats", "--city", "venice", "--root", str(root), "--out", str(tmp_path / "local"),
                        "--no-classes", "-q"], env)
    assert local_run.returncode == 0, local_run.stderr
    local = json.loads((tmp_path / "local" / "venice" / "summary.json").read_text())
    assert remote["lightness"] == local["lightness"] and remote["cuts"] == local["cuts"]
    assert not (fresh / "shards").exists()  # streamed, nothing stored


STREAM_SCRIPT = """
import json, sys
from wtours.clips.spec import resolve
from wtours.clips.stages import Problems, open_shards, tar_samples
problems = Problems()
counts = {}
for sample in tar_samples(open_shards(resolve(sys.argv[1]), problems), problems):
    if sample.key:
        counts[sample.url.rsplit("/", 1)[1]] = counts.get(sample.url.rsplit("/", 1)[1], 0) + 1
print(json.dumps({"counts": counts, "bad": sorted(u.rsplit("/", 1)[1] for u in problems.bad_shards)}))
"""


@pytest.mark.slow
def test_a_shard_that_vanishes_mid_stream_is_skipped_with_a_warning(root, hub, tmp_path):
    push(Layout(root), PushConfig(HubTarget("alice/vanish", endpoint=hub.url, token=TOKEN), ("venice",),
                                  progress=False), say=lambda m: None)
    size = len(hub.files("alice/vanish")["venice/venice-000001.tar"])
    hub.cut_after("alice/vanish", "venice/venice-000001.tar", size // 2)
    env = env_for(hub, tmp_path)
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, "hf://datasets/alice/vanish/venice/index.json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bad"] == ["venice-000001.tar"]
    assert "skipping unreadable shard" in result.stderr and "venice-000001.tar" in result.stderr
    assert {k: v for k, v in report["counts"].items() if k != "venice-000001.tar"} == {
        "venice-000000.tar": 4, "venice-000002.tar": 4, "venice-000003.tar": 4}
    entry = next(e for e in json.loads(hub.files("alice/vanish")["venice/index.json"])["shards"]
                 if e["name"] == "venice-000001.tar")
    whole = sum(end <= size // 2 for end in [*entry["offsets"][1:], entry["bytes"]])  # samples wholly before the cut
    assert 0 < whole < entry["samples"]
    assert report["counts"]["venice-000001.tar"] == whole  # each checked against its sha256 (index v3): they count
    gets = [r for r in hub.downloads() if r["path"].endswith("alice/vanish/resolve/main/venice/venice-000001.tar")]
    assert [r.get("cut") for r in gets] == [size // 2, None]  # cut, then the client's resume: 404
    assert gets[1]["range"].startswith("bytes=") and gets[1]["status"] == 404


PART_SCRIPT = """
import json, sys
from wtours.clips.epoch import ShardRead
from wtours.clips.spec import resolve
from wtours.clips.stages import Problems, open_shards, tar_samples
ref = resolve(sys.argv[1])[1]
problems = Problems()
keys = [s.key for s in tar_samples(open_shards([ShardRead(ref, frozenset(), 1, 3)], problems), problems)]
print(json.dumps({"keys": keys, "offsets": list(ref.entry.offsets), "bad": sorted(problems.bad_shards)}))
"""


@pytest.mark.slow
def test_partial_hf_reads_fetch_only_the_needed_bytes(root, hub, pushed, tmp_path):
    """A slot that needs samples [1, 3) of an hf:// shard asks for a byte range from sample 1's
    offset (index version 2), not for the whole shard, and gets exactly those samples."""
    mark = len(hub.requests)
    result = subprocess.run([sys.executable, "-c", PART_SCRIPT, "hf://datasets/alice/walks/venice/index.json"],
                            env=env_for(hub, tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    local = Layout(root).shard_dir("venice") / "venice-000001.tar"
    with tarfile.open(local) as tar:
        expected = sorted({m.name.split(".")[0] for m in tar.getmembers()})[1:3]
    assert report["keys"] == expected and not report["bad"]
    gets = [r for r in hub.downloads(mark) if r["path"].endswith("/venice/venice-000001.tar")]
    assert gets and all(r["range"] for r in gets)
    assert gets[0]["range"].startswith(f"bytes={report['offsets'][1]}-")


# ---------------------------------------------------------------------- access


@pytest.mark.slow
def test_private_repo_without_a_token_fails_with_a_login_hint(root, hub, tmp_path):
    push(Layout(root), PushConfig(HubTarget("alice/secret", endpoint=hub.url, token=TOKEN), ("zurich",),
                                  private=True, progress=False), say=lambda m: None)
    spec = "hf://datasets/alice/secret/zurich/zurich-{000000..000002}.tar"
    anonymous = env_for(hub, tmp_path, token=None)
    for args in (["inspect", spec], ["pull", "--repo", "alice/secret", "--root", str(tmp_path / "r")],
                 ["train", "--shards", spec, "--out", str(tmp_path / "run"), "--arch", "vit_micro", "--steps", "1"]):
        result = wtours(args, anonymous)
        assert result.returncode == WtoursError.exit_code, result.stderr
        assert "private and you are not logged in" in result.stderr, result.stderr
        assert "hf auth login" in result.stderr and "HF_TOKEN" in result.stderr
        assert "Traceback" not in result.stderr
    stranger = wtours(["inspect", spec], env_for(hub, tmp_path, token=BOB))
    assert stranger.returncode == WtoursError.exit_code and "your token has no read access" in stranger.stderr
    revoked = wtours(["pull", "--repo", "alice/secret", "--root", str(tmp_path / "r")],
                     env_for(hub, tmp_path, token="hf_revoked_0000"))
    assert revoked.returncode == WtoursError.exit_code and "refused your token" in revoked.stderr
    owner = wtours(["inspect", spec, "--clip-frames", "2"], env_for(hub, tmp_path))
    assert owner.returncode == 0, owner.stderr


def test_pushing_to_someone_elses_namespace_is_refused(root, hub):
    """Checked before anything is created (wtours.hub.client.check_namespace, shared with the model push)."""
    target = HubTarget("alice/by-bob", endpoint=hub.url, token=BOB)
    mark = len(hub.requests)
    for dry_run in (False, True):
        with pytest.raises(WtoursError) as error:
            push(Layout(root), PushConfig(target, ("zurich",), progress=False, dry_run=dry_run), say=lambda m: None)
        assert "'alice' is not your namespace (you are logged in as 'bob')" in error.value.message
        assert "--repo bob/by-bob" in error.value.hint
    assert ("dataset", "alice/by-bob") not in hub.repos and hub.uploads(mark) == []


def test_connection_failures_say_the_hub_cannot_be_reached():
    """(Against a dead endpoint the client retries for ~20 s first, so the mapping is tested alone.)"""
    httpx2 = pytest.importorskip("httpx2")  # the HTTP library huggingface_hub 2.x uses

    error = httpx2.ConnectError("[Errno 111] Connection refused")
    assert is_transport_error(error) and not is_transport_error(ValueError("x"))
    described = describe_error(error, "pull alice/walks")
    assert "pull alice/walks: cannot reach the Hub" in described.message and "HF_ENDPOINT" in described.hint


# ---------------------------------------------------------------------- library, no subprocess


def test_regular_file_storage_is_compared_by_git_blob_id(root, tmp_path):
    """A server that stores every file as a regular git blob (no LFS): resume compares blob ids."""
    with HubServer({TOKEN: "alice"}, lfs=False) as server:
        target = HubTarget("alice/plain", endpoint=server.url, token=TOKEN)
        first = push(Layout(root), PushConfig(target, ("zurich",), progress=False), say=lambda m: None)
        assert first.commits == 1 and len(first.uploaded) == 7  # 3 shards, source, wids, index, card
        assert not server.lfs_objects
        mark = len(server.requests)
        second = push(Layout(root), PushConfig(target, ("zurich",), progress=False), say=lambda m: None)
        assert second.uploaded == [] and server.uploads(mark) == []


def test_a_readme_written_by_someone_else_is_kept(root, hub):
    from huggingface_hub import HfApi

    owner = HfApi(endpoint=hub.url, token=TOKEN)
    owner.create_repo("alice/curated", repo_type="dataset")
    owner.upload_file(path_or_fileobj=b"# My own card\n", path_in_repo="README.md", repo_id="alice/curated",
                      repo_type="dataset")
    lines: list[str] = []
    push(Layout(root), PushConfig(HubTarget("alice/curated", endpoint=hub.url, token=TOKEN), ("zurich",),
                                  progress=False), say=lines.append)
    assert hub.files("alice/curated")["README.md"] == b"# My own card\n"
    assert "zurich/index.json" in hub.files("alice/curated") and any("left as is" in line for line in lines)


def test_dry_run_creates_and_uploads_nothing(root, hub):
    lines: list[str] = []
    mark = len(hub.requests)
    summary = push(Layout(root), PushConfig(HubTarget("alice/dry", endpoint=hub.url, token=TOKEN), ("venice",),
                                            dry_run=True, progress=False), say=lines.append)
    assert summary.uploaded == [] and hub.uploads(mark) == [] and ("dataset", "alice/dry") not in hub.repos
    assert "venice: to upload: 4 of 4 shards" in lines[0]


def test_pushing_to_a_branch(root, hub):
    target = HubTarget("alice/branched", revision="fps2", endpoint=hub.url, token=TOKEN)
    push(Layout(root), PushConfig(target, ("zurich",), progress=False), say=lambda m: None)
    assert "zurich/index.json" in hub.files("alice/branched", revision="fps2")
    assert "zurich/index.json" not in hub.files("alice/branched", revision="main")
    card = hub.files("alice/branched", revision="fps2")["README.md"].decode()
    assert "@fps2/zurich/zurich-{000000..000002}.tar" in card and "--revision fps2" in card


def test_a_set_without_provenance_is_refused(small_video, tmp_path):
    layout = Layout(tmp_path / "root")
    add_local(small_video, "my-walk", layout.root, mode="symlink", say=lambda m: None)
    with pytest.raises(WtoursError) as error:
        provenance.check_attribution("my-walk", provenance.source_record(layout, "my-walk"), layout)
    assert "no source url and license" in error.value.message
    assert "--url URL --name my-walk" in error.value.hint and "--source-url URL" in error.value.hint


# ---------------------------------------------------------------------- planning and card (pure)


def fake_index(slug: str, shards: list[tuple[str, int, str]]) -> tuple[ShardEntry, ...]:
    """Index entries with the fields push planning reads (name, bytes, sha256)."""
    return tuple(ShardEntry(n, 1, 0, 0, 0.0, 0.5, ((0, 0),), b, s) for n, b, s in shards)


def test_plan_uploads_what_is_missing_or_changed_and_retires_the_old_index(tmp_path):
    index = fake_index("v", [("v-000000.tar", 10, "a" * 64), ("v-000001.tar", 10, "b" * 64)])
    meta = [("v/source.json", b'{"source": 1}'), ("v/v.wids.json", b'{"wids": 1}'), ("v/index.json", b'{"index": 1}')]
    remote_same = {"v/v-000000.tar": RemoteFile("v/v-000000.tar", 10, "x", "a" * 64)}
    ops = plan_set("v", index, tmp_path, meta, remote_same)
    assert [(type(o).__name__, o.path) for o in ops] == [
        ("Upload", "v/v-000001.tar"), ("Upload", "v/source.json"), ("Upload", "v/v.wids.json"),
        ("Upload", "v/index.json")]

    # shard 0 changed, a stale shard 5, an old index and wids: they go first, the new ones last
    remote_old = {"v/v-000000.tar": RemoteFile("v/v-000000.tar", 10, "x", "f" * 64),
                  "v/v-000005.tar": RemoteFile("v/v-000005.tar", 10, "y", "e" * 64),
                  "v/v.wids.json": RemoteFile("v/v.wids.json", 11, git_blob_id(meta[1][1]), None),
                  "v/index.json": RemoteFile("v/index.json", 12, git_blob_id(meta[2][1]), None)}
    ops = plan_set("v", index, tmp_path, meta, remote_old)
    assert [(type(o).__name__, o.path) for o in ops] == [
        ("Delete", "v/index.json"), ("Delete", "v/v.wids.json"), ("Upload", "v/v-000000.tar"),
        ("Upload", "v/v-000001.tar"), ("Delete", "v/v-000005.tar"), ("Upload", "v/source.json"),
        ("Upload", "v/v.wids.json"), ("Upload", "v/index.json")]
    batches = batch_operations(ops, max_files=2, max_bytes=1 << 30)
    assert [[o.path for o in b] for b in batches][0] == ["v/index.json", "v/v.wids.json"]
    assert batches[-1][-1].path == "v/index.json"
    assert batch_operations(ops, 50, 1 << 30) == [ops[2:]]  # one commit: no need to delete them first

    everything = {**remote_same, "v/v-000001.tar": RemoteFile("v/v-000001.tar", 10, "z", "b" * 64),
                  **{path: RemoteFile(path, len(data), git_blob_id(data), None) for path, data in meta}}
    assert plan_set("v", index, tmp_path, meta, everything) == []
    changed_wids = {**everything, "v/v.wids.json": RemoteFile("v/v.wids.json", 11, git_blob_id(b'{"old": 1}'), None)}
    assert [o.path for o in plan_set("v", index, tmp_path, meta, changed_wids)] == ["v/v.wids.json"]


def test_batches_respect_file_and_byte_limits():
    ops = [Upload(f"v/v-{i:06d}.tar", size) for i, size in enumerate([5, 5, 20, 1, 1, 1])]
    batches = batch_operations([*ops, Delete("v/old.tar"), Upload("v/index.json", 1)], max_files=3, max_bytes=10)
    assert [[o.path[-8:] for o in b] for b in batches] == [
        ["0000.tar", "0001.tar"], ["0002.tar"], ["0003.tar", "0004.tar", "0005.tar"], ["/old.tar", "dex.json"]]


def test_shard_spec_is_a_brace_range_only_over_contiguous_shards():
    names = [f"v-{i:06d}.tar" for i in (2, 0, 1)]
    assert shard_pattern("v", names) == "v/v-{000000..000002}.tar"
    assert shard_pattern("v", names[:1]) == "v/v-000002.tar"
    assert shard_pattern("v", ["v-000000.tar", "v-000002.tar"]) is None  # a range would name v-000001.tar
    assert shard_spec("a/b", "v", ["v-000000.tar", "v-000002.tar"]) == "hf://datasets/a/b/v/index.json"
    assert shard_spec("a/b", "v", names, revision="dev") == "hf://datasets/a/b@dev/v/v-{000000..000002}.tar"


def test_card_attributes_every_video_and_says_how_to_load(root):
    layout = Layout(root)
    videos = [CardVideo(s, load_index(layout, s), provenance.source_record(layout, s)) for s in SETS]
    card = render_card("alice/walks", videos, "https://huggingface.co")
    assert is_generated(card)
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0" and meta["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in meta["configs"]] == ["all", "venice", "zurich"]
    from huggingface_hub import DatasetCard

    assert DatasetCard(card).data.license == "cc-by-4.0"
    for slug in SETS:
        record = provenance.source_record(layout, slug)["source"]
        assert f"<{record['url']}>" in card and record["license"] in card
    assert "[Test Walker](https://www.youtube.com/@testwalker)" in card and "Venice 4K \\| walking tour" in card
    assert "as credited at the source" in card  # zurich: no creator recorded
    assert "| `venice` | 2 | 128 px | 90 | 4 (2 s) |" in card  # fps, short side, quality, samples per shard
    assert "| `venice` | 0:00:08 | 192x128 @ 10.00 fps | 16 |" in card
    assert "wds.WebDataset(\"https://huggingface.co/datasets/alice/walks/resolve/main/venice/" \
           "venice-{000000..000003}.tar\"" in card
    assert 'load_dataset("alice/walks", "venice", split="train", streaming=True)' in card
    names = [s.name for s in videos[0].index.shards]
    assert f"wtours train --shards '{shard_spec('alice/walks', 'venice', names)}'" in card
    assert render_card("alice/walks", videos[::-1], "https://huggingface.co") == card  # deterministic


DATASETS_SCRIPT = """
import json
from datasets import load_dataset
zurich = list(load_dataset("alice/walks", "zurich", split="train", streaming=True))
every = load_dataset("alice/walks", split="train", streaming=True)
print(json.dumps({"zurich": len(zurich), "all": sum(1 for _ in every), "keys": sorted(zurich[0]),
                  "video": zurich[0]["json"]["video"]}))
"""


@pytest.mark.slow
def test_datasets_loads_the_configs_the_card_declares(hub, pushed, tmp_path):
    env = {**env_for(hub, tmp_path), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    result = subprocess.run([sys.executable, "-c", DATASETS_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"zurich": 10, "all": 26, "keys": ["__key__", "__url__", "jpg", "json"],
                                         "video": "zurich"}


def test_pushed_card_names_every_source_and_licence(hub, pushed):
    card = hub.files("alice/walks")["README.md"].decode()
    for slug in SETS:
        record = json.loads(hub.files("alice/walks")[f"{slug}/source.json"])["source"]
        assert record["url"] in card and record["license"] in card


def test_pull_refuses_a_hostile_index_and_writes_nothing_outside_the_root(root, hub, tmp_path):
    """An index naming `../../../x.tar` once made pull write outside the data root: names are checked
    against the shard-name pattern before any path is built from them."""
    from huggingface_hub import HfApi

    push(Layout(root), PushConfig(HubTarget("alice/hostile", endpoint=hub.url, token=TOKEN), ("zurich",),
                                  progress=False), say=lambda m: None)
    index = json.loads(hub.files("alice/hostile")["zurich/index.json"])
    index["shards"][0]["name"] = "../../../escaped.tar"
    HfApi(endpoint=hub.url, token=TOKEN).upload_file(
        path_or_fileobj=json.dumps(index).encode(), path_in_repo="zurich/index.json", repo_id="alice/hostile",
        repo_type="dataset")
    target = tmp_path / "a" / "b" / "c" / "root"
    with pytest.raises(WtoursError) as error:
        pull(Layout(target), PullConfig(HubTarget("alice/hostile", endpoint=hub.url, token=TOKEN), progress=False),
             say=lambda m: None)
    assert "alice/hostile/zurich/index.json" in error.value.message
    assert "'../../../escaped.tar' is not a shard name" in error.value.message and error.value.hint
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written, inside or outside the root


# ---------------------------------------------------------------------- hf download, wids


@pytest.mark.slow
def test_hf_download_as_documented_gives_a_root_wtours_verifies_and_wids_reads(root, hub, pushed, tmp_path):
    """The Hub's own CLI (`hf download`, as docs/hub.md and the card say) into ROOT/shards: a data root
    that `wtours verify` and `inspect` accept, byte-identical to the pushed sets; wids reads the pushed
    descriptors, downloaded and straight from the Hub."""
    import wids

    docs = (Path(__file__).resolve().parents[1] / "docs" / "hub.md").read_text()
    assert download_command("alice/walking-tours", '"$WTOURS_ROOT"', "venice") in docs  # the card's form
    assert download_command("alice/walking-tours", '"$WTOURS_ROOT"') in docs
    env = env_for(hub, tmp_path)
    fresh = tmp_path / "fresh"
    hf = [str(Path(sys.executable).with_name("hf"))]
    command = shlex.split(download_command("alice/walks", str(fresh)))
    assert command[0] == "hf"
    done = subprocess.run(hf + command[1:], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for slug in SETS:
        assert local_files(fresh, slug) == local_files(root, slug)
        assert Layout(fresh).wids_path(slug).read_bytes() == Layout(root).wids_path(slug).read_bytes()
    assert not (fresh / "shards" / "README.md").exists()  # only the sets' folders
    verified = wtours(["verify", "--all", "--root", str(fresh)], env)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert all(f"{slug}:" in verified.stdout for slug in SETS)
    inspected = wtours(["inspect", "venice", "--root", str(fresh), "--clip-frames", "2", "--json"], env)
    original = wtours(["inspect", "venice", "--root", str(root), "--clip-frames", "2", "--json"], env)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["clips_per_epoch"] == json.loads(original.stdout)["clips_per_epoch"] > 0

    index = index_json(Layout(root), "zurich")
    local = wids.ShardListDataset(str(Layout(fresh).wids_path("zurich")))
    remote = wids.ShardListDataset(f"{hub.url}/datasets/alice/walks/resolve/main/zurich/zurich.wids.json",
                                   cache_dir=str(tmp_path / "wids-cache"))
    for dataset in (local, remote):
        assert len(dataset) == index["samples"] == 10
        last = dataset[len(dataset) - 1]
        assert last["__key__"] == f"zurich-{index['shards'][-1]['last_frame']:08d}"
        assert last[".json"]["video"] == "zurich" and last[".jpg"].size == (192, 128)


# ---------------------------------------------------------------------- offline, unreachable

HF_SPEC = "hf://datasets/alice/walks/venice/index.json"
HUB_COMMANDS = {  # every command that reads or writes the Hub, with what it needs
    "push": ["push", "--city", "venice", "--repo", "alice/walks", "--root", "{root}"],
    "push --dry-run": ["push", "--city", "venice", "--repo", "alice/walks", "--root", "{root}", "--dry-run"],
    "pull": ["pull", "--repo", "alice/walks", "--root", "{tmp}/pulled"],
    "inspect index": ["inspect", HF_SPEC],
    "inspect braces": ["inspect", "hf://datasets/alice/walks/venice/venice-{000000..000003}.tar"],
    "inspect glob": ["inspect", "hf://datasets/alice/walks/venice/*.tar"],
    "train": ["train", "--shards", HF_SPEC, "--out", "{tmp}/run", "--arch", "vit_micro", "--steps", "1",
              "--workers", "0"],
    "stats": ["stats", "--shards", HF_SPEC, "--root", "{tmp}/stats-root", "--no-classes"],
}


def hub_command(name: str, root: Path, tmp_path: Path) -> list[str]:
    return [a.replace("{root}", str(root)).replace("{tmp}", str(tmp_path)) for a in HUB_COMMANDS[name]]


def no_hub_env(tmp_path: Path, endpoint: str, offline: bool) -> dict[str, str]:
    from tests.test_faults_hub import env_for_endpoint

    return env_for_endpoint(endpoint, tmp_path, **({"HF_HUB_OFFLINE": "1"} if offline else {}))


def dead_endpoint() -> str:
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def assert_one_line_failure(result: CliResult, *phrases: str) -> None:
    assert_clean_error(result, WtoursError.exit_code)
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-2:-1], result.stderr
    assert lines[-1].startswith("  hint: "), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(HUB_COMMANDS))
def test_offline_every_hub_command_fails_in_one_line(root, tmp_path, command):
    args = hub_command(command, root, tmp_path)
    result = wtours(args, no_hub_env(tmp_path, dead_endpoint(), offline=True))
    assert_one_line_failure(result, "HF_HUB_OFFLINE is set, so the Hub is not contacted")
    assert len(result.stderr.splitlines()) == 2  # the error and its hint, nothing else
    if command.startswith("push"):
        assert "`wtours card" in result.stderr  # what works offline for a push: the card
    else:
        assert "--shards SLUG --root DIR" in result.stderr
        assert "`wtours pull` the shards first" not in result.stderr  # (pull's own hint once sent it to itself)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in HUB_COMMANDS if c != "pull"])  # pull: tests/test_faults_hub.py
def test_an_unreachable_hub_fails_in_one_line(root, tmp_path, command):
    endpoint = dead_endpoint()
    args = hub_command(command, root, tmp_path)
    result = wtours(args, no_hub_env(tmp_path, endpoint, offline=False))
    assert_one_line_failure(result, f"cannot reach the Hub at {endpoint}", "HF_ENDPOINT")
    # at most one line says that the client retries (wtours.hfclient), then the error and its hint
    assert result.stderr.count("; retrying (up to") <= 1 and len(result.stderr.splitlines()) <= 3


def test_card_needs_no_hub(root, tmp_path):
    """`wtours card` contacts nothing: offline, with a dead endpoint, it writes the card."""
    out = tmp_path / "README.md"
    result = wtours(["card", "--all", "--repo", "alice/walks", "--root", str(root), "--out", str(out)],
                    no_hub_env(tmp_path, dead_endpoint(), offline=True))
    assert result.returncode == 0, result.stderr
    assert is_generated(out.read_text()) and result.stderr == ""
