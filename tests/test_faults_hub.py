"""Hub faults end in one `error:` + `hint:` (exit 1, 2 for a setting; no traceback, no token), lose nothing, and a rerun
resumes: a server that answers 429 or 503 to any call once (retried: the push or pull goes on) or always (an
error naming the tries), a wrong token, WTOURS_HUB_* settings out of range (refused before any request),
500 to every upload, 429 to a commit, an invalid index, a server that
stops answering, a full disk during pull, a replaced shard while streaming (tests/hub_server.py's
`inject`). The CLI runs in subprocesses (huggingface_hub reads HF_ENDPOINT when imported) with
WTOURS_HUB_TIMEOUT=1, so a stalled request fails within seconds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.cli import CliResult, assert_clean_error, run_wtours, run_wtours_process, start_wtours
from tests.hub_server import HubServer
from tests.videos import index_json, sharded_root
from wtours.errors import EXIT_FAILURE, EXIT_USAGE, UsageError, WtoursError
from wtours.hfclient import MAX_WAIT, retry_delay
from wtours.hub.client import HubTarget
from wtours.hub.pull import PullConfig, pull
from wtours.hub.push import PushConfig, push
from wtours.layout import Layout
from wtours.locks import LOCK_FILE

TOKEN = "hf_alice_Fa17secret"  # must never appear in any output
RETRYING = "; retrying (up to"  # the one line wtours.hfclient shows when it first retries a request
SLUG = "zurich"


pytestmark = pytest.mark.usefixtures("no_xet")  # tests/conftest.py


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One sharded corpus video: 5 s at 2 fps, 4 samples per shard: 3 shards."""
    return sharded_root(tmp_path_factory.mktemp("faults"), seconds=5.0, samples_per_shard=4, slug=SLUG)


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: "alice"}) as server:
        yield server


@pytest.fixture(autouse=True)
def clean_faults(hub):
    hub.clear_faults()
    yield
    hub.clear_faults()


def env_for(hub: HubServer, home: Path, **extra: str) -> dict[str, str]:
    return env_for_endpoint(hub.url, home, **extra)


def env_for_endpoint(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "WTOURS_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(home / "hf-home"), HF_TOKEN=TOKEN,
               HF_HUB_DISABLE_TELEMETRY="1", WTOURS_HUB_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1",
               HF_HUB_ETAG_TIMEOUT="1")
    env.update(extra)
    return env


def wtours(args: list[str], env: dict[str, str]) -> CliResult:
    """`wtours ARGS` in a process: huggingface_hub reads HF_ENDPOINT when it is imported."""
    result = run_wtours_process(args, env=env)
    assert TOKEN not in result.output, "the token was printed"
    return result


def assert_clean_failure(result: CliResult, *phrases: str) -> None:
    """Exit 1 with one `error:` line and its hint, naming each phrase."""
    stderr = assert_clean_error(result, EXIT_FAILURE)
    assert len([line for line in stderr.splitlines() if line.startswith("error: ")]) == 1, stderr
    for phrase in phrases:
        assert phrase in stderr, (phrase, stderr)


def new_repo() -> str:
    return f"alice/f{uuid.uuid4().hex[:8]}"


def pushed_repo(root: Path, hub: HubServer) -> str:
    return pushed_repo_named(root, hub, new_repo())


def pushed_repo_named(root: Path, hub: HubServer, repo: str) -> str:
    push(Layout(root), PushConfig(HubTarget(repo, endpoint=hub.url, token=TOKEN), (SLUG,), progress=False),
         say=lambda m: None)
    return repo


def assert_same_set(copy: Path, root: Path) -> None:
    names = sorted(p.name for p in Layout(root).shard_dir(SLUG).glob("*.tar"))
    folder = Layout(copy).shard_dir(SLUG)
    kept = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json") and p.name != LOCK_FILE)
    assert kept == names  # no temp files
    for name in names:
        assert (folder / name).read_bytes() == (Layout(root).shard_dir(SLUG) / name).read_bytes()
    assert Layout(copy).index_path(SLUG).read_bytes() == Layout(root).index_path(SLUG).read_bytes()


# ---------------------------------------------------------------------- push


@pytest.mark.slow
def test_upload_failing_after_retries_says_the_hub_cannot_be_reached_and_the_rerun_resumes(root, hub, tmp_path):
    repo, env = new_repo(), env_for(hub, tmp_path)
    hub.inject("PUT", "/lfs-upload/", 500)  # every LFS body refused: the client retries 5 times, then gives up
    first = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert_clean_failure(first, f"push to {repo}: upload {SLUG}/{SLUG}-000000.tar", hub.url, "HTTP 500")
    assert "rerun" in first.stderr
    assert [p for p in hub.files(repo) if p.endswith(".tar")] == []  # nothing committed
    hub.clear_faults()
    second = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert second.returncode == 0, second.stderr
    assert f"{SLUG}/index.json" in hub.files(repo)


def test_a_push_through_xet_to_a_server_without_xet_is_one_line_naming_the_setting(root, hub, tmp_path):
    """hf_xet installed and HF_HUB_DISABLE_XET unset: huggingface_hub sends the shards through Xet, which this
    server refuses (501): one error naming the setting that sends them over HTTP; the rerun with it completes."""
    pytest.importorskip("hf_xet")
    repo = new_repo()
    env = env_for(hub, tmp_path)
    del env["HF_HUB_DISABLE_XET"]
    first = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert_clean_failure(first, "the Xet transfer with", "xet-write-token", "HF_HUB_DISABLE_XET=1")
    second = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env_for(hub, tmp_path))
    assert second.returncode == 0, second.stderr


def test_a_commit_answered_429_is_retried(root, hub, tmp_path):
    repo = new_repo()
    fault = hub.inject("POST", "/commit/", 429, times=1)
    result = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env_for(hub, tmp_path))
    assert result.returncode == 0, result.stderr
    assert fault.hits == 1 and f"{SLUG}/index.json" in hub.files(repo)
    assert "Traceback" not in result.stderr


def test_a_commit_always_answered_429_fails_clearly(root, hub, tmp_path):
    repo = new_repo()
    hub.inject("POST", "/commit/", 429)
    result = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"],
                    env_for(hub, tmp_path, WTOURS_HUB_RETRIES="2"))
    assert_clean_failure(result, f"push to {repo}", "HTTP 429 on all 3 tries", "(WTOURS_HUB_RETRIES=2)", hub.url)
    assert [p for p in hub.files(repo) if p.startswith(SLUG)] == []


def test_a_commit_answered_503_is_not_retried_and_the_rerun_resumes(root, hub):
    """A 503 may come after the commit was applied: it is not sent again, and the message says so."""
    repo = new_repo()
    fault = hub.inject("POST", f"/api/datasets/{repo}/commit/", 503, times=1)
    with pytest.raises(WtoursError) as error:
        pushed_repo_named(root, hub, repo)
    assert fault.hits == 1 and "HTTP 503 to a commit, which is not retried" in error.value.message
    pushed_repo_named(root, hub, repo)
    assert f"{SLUG}/index.json" in hub.files(repo)


# ---------------------------------------------------------------------- one retry policy for every Hub call

# Each request push and pull make, answered 429 or 503 once (Retry-After 0, none or unusable: then the backoff's
# 1 s; the unusable values are test_an_unusable_retry_after_...'s): wtours.hfclient retries every one of them, a
# commit on 429 only.
PUSH_FAULTS = [("GET", "/api/whoami-v2", 429, "0"), ("GET", "/api/datasets/{repo}", 503, None),
               ("POST", "/api/repos/create", 503, "0"), ("GET", "/api/datasets/{repo}/tree/", 429, "nan"),
               ("POST", "/preupload/", 503, "0"), ("POST", "/info/lfs/objects/batch", 429, "0"),
               ("POST", "/api/validate-yaml", 503, "0"), ("POST", "/commit/", 429, "0")]
PULL_FAULTS = [("GET", "/api/datasets/{repo}/tree/", 503, "0"), ("GET", "/api/datasets/{repo}", 429, "0"),
               ("GET", f"/resolve/main/{SLUG}/index.json", 503, "0"),
               ("GET", f"/resolve/main/{SLUG}/{SLUG}-000001", 429, "0")]


def test_every_call_of_push_and_pull_is_retried_on_429_and_503(root, hub, tmp_path):
    repo = new_repo()
    faults = [hub.inject(m, part.format(repo=repo), status, times=1, retry_after=after)
              for m, part, status, after in PUSH_FAULTS]
    pushed_repo_named(root, hub, repo)
    assert [f.hits for f in faults] == [1] * len(faults) and f"{SLUG}/index.json" in hub.files(repo)
    faults = [hub.inject(m, part.format(repo=repo), status, times=1, retry_after=after)
              for m, part, status, after in PULL_FAULTS]
    pull(Layout(tmp_path / "copy"), PullConfig(HubTarget(repo, endpoint=hub.url, token=TOKEN), progress=False),
         say=lambda m: None)
    assert [f.hits for f in faults] == [1] * len(faults)
    assert_same_set(tmp_path / "copy", root)


@pytest.mark.parametrize(("command", "method", "part", "status"), [
    ("push", "GET", "/api/whoami-v2", 503), ("push", "POST", "/api/repos/create", 429),
    ("pull", "GET", "/resolve/", 503)])
def test_a_call_failing_on_every_try_ends_in_one_error_naming_the_tries(root, hub, tmp_path, command, method, part,
                                                                        status):
    repo = pushed_repo(root, hub) if command == "pull" else new_repo()
    fault = hub.inject(method, part, status)
    args = ["--city", SLUG, "--root", str(root)] if command == "push" else ["--root", str(tmp_path / "copy")]
    result = wtours([command, "--repo", repo, *args], env_for(hub, tmp_path, WTOURS_HUB_RETRIES="2"))
    assert_clean_failure(result, hub.url, f"HTTP {status} on all 3 tries", "(WTOURS_HUB_RETRIES=2)")
    assert fault.hits == 3 and result.stderr.count(RETRYING) == 1, result.stderr
    if command == "push":
        assert ("dataset", repo) not in hub.repos or not [p for p in hub.files(repo) if p.startswith(SLUG)]
    else:
        assert not any(p.is_file() for p in (tmp_path / "copy").rglob("*.tar"))


@pytest.mark.parametrize("retry_after", ["nan", "-1", "inf", "1e300", "99999999", "Wed, 21 Oct 2099 07:28:00 GMT",
                                         "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""])
def test_an_unusable_retry_after_neither_crashes_nor_hangs(retry_after):
    for attempt in (0, 3, 40):
        delay = retry_delay(retry_after, attempt)
        assert 0 <= delay <= MAX_WAIT


@pytest.mark.slow
def test_a_huge_retry_after_on_an_lfs_upload_is_waited_for_at_most_a_minute(root, tmp_path):
    """An LFS body sent from a file is retried by huggingface_hub itself (it rewinds the file); the wait it
    reads is made wtours': MAX_WAIT at most, not the 3 years the server asks for (the process deadline of
    tests/cli.py, 600 s, ends a hang). A Hub of its own: the module's already stores these LFS bodies."""
    repo = new_repo()
    with HubServer({TOKEN: "alice"}) as fresh:
        fault = fresh.inject("PUT", "/lfs-upload/", 429, times=1, retry_after="99999999")
        result = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env_for(fresh, tmp_path))
        assert result.returncode == 0, result.stderr
        assert fault.hits == 1 and f"{SLUG}/index.json" in fresh.files(repo)


def test_a_wrong_token_is_named_as_such_by_push_and_pull(root, hub, tmp_path):
    wrong, repo, fresh = "hf_expired_Fa17secret", pushed_repo(root, hub), new_repo()
    for args in (["push", "--city", SLUG, "--root", str(root), "--repo", fresh],
                 ["pull", "--root", str(tmp_path / "copy"), "--repo", repo]):
        result = wtours(args, env_for(hub, tmp_path, HF_TOKEN=wrong))
        assert_clean_failure(result, "the Hub refused your token (invalid, expired or revoked)", "HF_TOKEN")
        assert wrong not in result.output and "repository not found" not in result.stderr
    assert ("dataset", fresh) not in hub.repos and not (tmp_path / "copy").exists()


@pytest.mark.parametrize(("command", "name", "value"), [
    ("push", "WTOURS_HUB_RETRIES", "abc"), ("push", "WTOURS_HUB_RETRIES", "-1"),
    ("push", "WTOURS_HUB_RETRIES", "1000000"), ("push", "WTOURS_HUB_TIMEOUT", "nan"),
    ("push", "WTOURS_HUB_TIMEOUT", "0"), ("pull", "WTOURS_HUB_RETRIES", "abc")])
def test_hub_settings_from_the_environment_are_checked_before_any_request(root, hub, tmp_path, command, name, value):
    repo, mark = new_repo(), len(hub.requests)
    args = ["--city", SLUG, "--root", str(root)] if command == "push" else ["--root", str(tmp_path / "copy")]
    result = wtours([command, "--repo", repo, *args], env_for(hub, tmp_path, **{name: value}))
    stderr = assert_clean_error(result, EXIT_USAGE)
    assert f"{name}={value!r}" in stderr and "unset it" in stderr
    assert hub.requests[mark:] == [] and ("dataset", repo) not in hub.repos
    assert not (tmp_path / "copy").exists()


@pytest.mark.slow
def test_a_stalled_commit_times_out_naming_the_endpoint_and_the_rerun_resumes(root, hub, tmp_path):
    repo, env = new_repo(), env_for(hub, tmp_path)
    hub.inject("POST", "/commit/", "stall", times=1)
    first = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert_clean_failure(first, hub.url, "did not answer within 1 s", "WTOURS_HUB_TIMEOUT")
    second = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert second.returncode == 0, second.stderr
    files = hub.files(repo)
    for shard in index_json(Layout(root), SLUG)["shards"]:
        assert hashlib.sha256(files[f"{SLUG}/{shard['name']}"]).hexdigest() == shard["sha256"]


def test_dry_run_on_a_new_branch_of_a_repo_with_a_card(root, hub, tmp_path):
    repo = pushed_repo(root, hub)
    assert "README.md" in hub.files(repo)
    mark = len(hub.requests)
    result = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "--revision", "fps1", "--dry-run"],
                    env_for(hub, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing uploaded" in result.stdout and hub.uploads(mark) == []
    assert "fps1" not in hub.repos[("dataset", repo)].branches


@pytest.mark.slow
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"format": "wtours-shards", "version": 2}'])
def test_an_invalid_remote_index_is_named_by_pull_inspect_and_push(root, hub, tmp_path, body):
    repo = pushed_repo(root, hub)
    hub.inject("GET", f"{repo}/resolve/main/{SLUG}/index.json", body)
    env = env_for(hub, tmp_path)
    where = f"{repo}/{SLUG}/index.json"
    pulled = wtours(["pull", "--repo", repo, "--root", str(tmp_path / "copy"), "-q"], env)
    assert_clean_failure(pulled, where)
    assert not (tmp_path / "copy").exists() or not any(p.is_file() for p in (tmp_path / "copy").rglob("*"))
    inspected = wtours(["inspect", f"hf://datasets/{where}"], env)
    assert_clean_failure(inspected, where)
    # a push of another set reads the index of each set already in the repo, for the card
    from huggingface_hub import HfApi

    owner = HfApi(endpoint=hub.url, token=TOKEN)
    for name, data in (("index.json", body), ("source.json", b"{}")):
        owner.upload_file(path_or_fileobj=data, path_in_repo=f"venice/{name}", repo_id=repo, repo_type="dataset")
    pushed = wtours(["push", "--city", SLUG, "--repo", repo, "--root", str(root), "-q"], env)
    assert_clean_failure(pushed, f"{repo}/venice/index.json")


def test_an_invalid_remote_source_record_is_named(root, hub, tmp_path):
    repo = pushed_repo(root, hub)
    hub.inject("GET", f"{repo}/resolve/main/{SLUG}/source.json", b"\xff\xfe not json")
    result = wtours(["pull", "--repo", repo, "--root", str(tmp_path / "copy"), "-q"], env_for(hub, tmp_path))
    assert_clean_failure(result, f"{repo}/{SLUG}/source.json")


# ---------------------------------------------------------------------- pull


@pytest.mark.slow
def test_a_stalled_listing_is_retried_after_the_timeout_warning_once(root, hub, tmp_path):
    repo = pushed_repo(root, hub)
    fault = hub.inject("GET", f"/api/datasets/{repo}/tree/", "stall", times=1)
    copy = tmp_path / "copy"
    result = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env_for(hub, tmp_path))
    assert result.returncode == 0, result.stderr
    # one line says that the client retries (wtours.hfclient); the client's own retry messages only with -v
    assert fault.hits == 1 and result.stderr.count(RETRYING) == 1, result.stderr
    assert "Retrying in" not in result.stderr and "thrown while requesting" not in result.stderr
    assert_same_set(copy, root)


@pytest.mark.slow
def test_a_server_that_stops_answering_fails_pull_naming_the_endpoint(root, hub, tmp_path):
    """Every listing request stalls: the client's retries end (about 30 s with a 1 s timeout), and the
    pull fails naming the endpoint instead of hanging; the rerun, once it answers, completes."""
    repo = pushed_repo(root, hub)
    env = env_for(hub, tmp_path)
    hub.inject("GET", f"/api/datasets/{repo}/tree/", "stall")
    copy = tmp_path / "copy"
    first = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert_clean_failure(first, hub.url, "did not answer within 1 s", "WTOURS_HUB_TIMEOUT")
    hub.clear_faults()
    second = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert second.returncode == 0, second.stderr
    assert_same_set(copy, root)


def test_offline_mode_is_one_line(tmp_path):
    env = {**env_for_endpoint("http://127.0.0.1:9", tmp_path), "HF_HUB_OFFLINE": "1"}
    for args in (["pull", "--repo", "alice/x", "--root", str(tmp_path / "r")],
                 ["inspect", "hf://datasets/alice/x/zurich/index.json"]):
        result = wtours(args, env)
        assert_clean_failure(result, "HF_HUB_OFFLINE is set")
        assert result.stderr.count("\n") == 2  # the error and its hint, nothing else


@pytest.mark.slow
def test_an_unreachable_hub_is_one_line_after_the_retries(tmp_path):
    """Nothing listens on the port: the client retries (about 25 s), saying so once, then one error."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = wtours(["pull", "--repo", "alice/x", "--root", str(tmp_path / "r")], env_for_endpoint(endpoint, tmp_path))
    assert_clean_failure(result, f"cannot reach the Hub at {endpoint}", "HF_ENDPOINT")
    assert result.stderr.count(RETRYING) == 1 and len(result.stderr.splitlines()) == 3, result.stderr


@pytest.mark.slow
def test_hub_errors_after_retries_on_download_name_the_file(root, hub, tmp_path):
    repo = pushed_repo(root, hub)
    env = env_for(hub, tmp_path)
    hub.inject("GET", f"{repo}/resolve/main/{SLUG}/{SLUG}-000001.tar", 404)
    copy = tmp_path / "copy"
    first = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert_clean_failure(first, f"{repo}/{SLUG}/{SLUG}-000001.tar")
    assert not Layout(copy).index_path(SLUG).exists() and not list(Layout(copy).shard_dir(SLUG).glob("*1.tar"))
    hub.clear_faults()
    second = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert second.returncode == 0, second.stderr
    assert_same_set(copy, root)


def test_wtours_hub_timeout_governs_downloads_and_the_error_names_the_limit_that_fired(root, hub, tmp_path):
    """A shard download stalls: it fails after WTOURS_HUB_TIMEOUT (2 s), not after huggingface_hub's own
    HF_HUB_DOWNLOAD_TIMEOUT (1 s here, 10 s by default), and the error names the limit that fired."""
    repo = pushed_repo(root, hub)
    env = env_for(hub, tmp_path, WTOURS_HUB_TIMEOUT="2", WTOURS_HUB_RETRIES="0", HF_HUB_DOWNLOAD_TIMEOUT="1")
    stall = hub.inject("GET", f"{repo}/resolve/main/{SLUG}/{SLUG}-000001.tar", "stall")
    started = time.monotonic()
    first = wtours(["pull", "--repo", repo, "--root", str(tmp_path / "copy"), "-q"], env)
    took = time.monotonic() - started
    assert_clean_failure(first, f"{repo}/{SLUG}/{SLUG}-000001.tar",
                         "did not answer within 2 s (ReadTimeout, the limit WTOURS_HUB_TIMEOUT=2)")
    assert stall.hits == 1 and took >= 2, (stall.hits, took)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 64 KiB (a root-only mount; skipped where it is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


@pytest.mark.slow
def test_a_full_disk_during_pull_is_one_line_and_the_rerun_resumes(root, hub, tmp_path, small_disk):
    repo = pushed_repo(root, hub)
    env = env_for(hub, tmp_path)
    total = sum(p.stat().st_size for p in Layout(root).shard_dir(SLUG).glob("*.tar"))
    assert total > 64 << 10, "the test set must not fit the small disk"
    copy = small_disk / "root"
    first = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert_clean_failure(first, "No space left on device", "disk is full")
    folder = Layout(copy).shard_dir(SLUG)
    index = index_json(Layout(root), SLUG)
    for shard in index["shards"]:  # a shard under its final name is whole and verified
        path = folder / shard["name"]
        assert not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
    assert not Layout(copy).index_path(SLUG).exists()
    parts = list(folder.glob(".*.tmp-pull"))
    assert [p for p in folder.iterdir() if ".tmp-" in p.name] == parts  # only the resumable part
    kept = {p.name: p.stat().st_size for p in parts}
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True, timeout=10)
    mark = len(hub.requests)
    second = wtours(["pull", "--repo", repo, "--root", str(copy), "-q"], env)
    assert second.returncode == 0, second.stderr
    assert_same_set(copy, root)
    for name, size in kept.items():  # continued with a Range request, not from zero
        if size:
            shard = name[1:-len(".tmp-pull")]
            gets = [r for r in hub.downloads(mark) if r["path"].endswith(f"/{shard}")]
            assert gets[0]["range"].startswith(f"bytes={size}-"), gets


@pytest.mark.slow
def test_sigterm_during_pull_stops_cleanly_and_the_rerun_resumes(root, hub, tmp_path):
    """SIGTERM (a preemption) while a shard downloads (its server stalls): exit 143 with one `error:` line, the
    verified shard under its name, no index; the rerun fetches only the rest."""
    repo = pushed_repo(root, hub)
    stall = hub.inject("GET", f"{SLUG}-000001.tar", "stall", times=1)
    copy = tmp_path / "copy"
    args = ["pull", "--repo", repo, "--root", str(copy), "-q"]
    process = start_wtours(args, env={**env_for(hub, tmp_path), "WTOURS_HUB_TIMEOUT": "60",
                                      "HF_HUB_DOWNLOAD_TIMEOUT": "60"})
    try:
        deadline = time.monotonic() + 120
        while not stall.hits and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert stall.hits, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    stderr = assert_clean_error(CliResult(process.returncode, out, err), 143, "stopped by SIGTERM")
    assert len([line for line in stderr.splitlines() if line.startswith("error: ")]) == 1 and TOKEN not in stderr
    folder = Layout(copy).shard_dir(SLUG)
    assert (folder / f"{SLUG}-000000.tar").is_file() and not (folder / f"{SLUG}-000001.tar").exists()
    assert not Layout(copy).index_path(SLUG).exists()
    mark = len(hub.requests)
    again = wtours(args, env_for(hub, tmp_path))
    assert again.returncode == 0, again.stderr
    assert_same_set(copy, root)
    fetched = {r["path"].rsplit("/", 1)[1] for r in hub.downloads(mark) if r["path"].endswith(".tar")}
    assert fetched == {f"{SLUG}-000001.tar", f"{SLUG}-000002.tar"}


# ---------------------------------------------------------------------- streaming: what the index promises

STREAM_SCRIPT = """
import json, sys
from wtours.clips.spec import resolve
from wtours.clips.stages import Problems, open_shards, tar_samples
problems = Problems()
counts = {}
for sample in tar_samples(open_shards(resolve(sys.argv[1]), problems), problems):
    name = sample.url.rsplit("/", 1)[1]
    counts[name] = counts.get(name, 0) + 1
print(json.dumps({"counts": counts, "bad": {u.rsplit("/", 1)[1]: e for u, e in problems.bad_shards.items()}}))
"""


@pytest.mark.slow
def test_a_replaced_shard_is_skipped_counted_and_named_when_streamed(root, hub, tmp_path):
    """The server holds another file under a shard's name (same size, one byte changed: still a valid
    tar, which would train silently): none of its samples is used, the shard is counted and named."""
    from huggingface_hub import HfApi

    repo = pushed_repo(root, hub)
    folder = Layout(root).shard_dir(SLUG)
    name = f"{SLUG}-000001.tar"
    replaced = bytearray((folder / name).read_bytes())
    replaced[2000] ^= 0xFF  # inside the first JPEG: the tar headers stay valid
    HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=bytes(replaced), path_in_repo=f"{SLUG}/{name}",
                                                     repo_id=repo, repo_type="dataset")
    before = set(os.listdir(tmp_path))
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, f"hf://datasets/{repo}/{SLUG}/index.json"],
                            env={**env_for(hub, tmp_path), "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["bad"]) == [name] and "sha256" in report["bad"][name]
    assert report["counts"] == {f"{SLUG}-000000.tar": 4, f"{SLUG}-000002.tar": 2}  # nothing of the replaced one
    assert "skipping unreadable shard" in result.stderr and name in result.stderr
    assert "index.json records" in result.stderr and TOKEN not in result.stderr + result.stdout
    assert set(os.listdir(tmp_path)) == before  # no spool file left


def test_verified_shard_checks_size_and_sha256_and_serves_nothing_of_a_broken_stream():
    import io

    from wtours.streams import ShardMismatchError, VerifiedShard

    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    good = VerifiedShard(io.BytesIO(data), "http://127.0.0.1/x.tar", len(data), digest)
    assert good.read(1000) + good.read() == data and good.read() == b""
    other_last_byte = data[:-1] + bytes([data[-1] ^ 1])  # never equal to data (a fixed byte would be, 1 in 256)
    for body, size in ((other_last_byte, len(data)), (data + b"more", len(data)), (data[:-5], len(data))):
        bad = VerifiedShard(io.BytesIO(body), "http://127.0.0.1/x.tar", size, digest)
        with pytest.raises(ShardMismatchError, match="x.tar: .*index.json records"):
            bad.read(10)
        assert bad.read(10) == b""  # then nothing: the stage has counted it

    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 1000:
                raise ConnectionResetError("connection reset")
            return super().read(min(size, 1000 - self.tell()))

    cut = VerifiedShard(Broken(data), "http://127.0.0.1/x.tar", len(data), digest)
    with pytest.raises(OSError, match="broke after 1000 of 3000 bytes") as broken:
        cut.read()  # a server could send replaced samples, then drop the connection: nothing unverified is used
    assert cut.read() == b"" and not isinstance(broken.value, ShardMismatchError)  # a network fault: read again


def test_hostile_names_from_listings_are_refused():
    """Names from a Hub listing or a remote index never become paths unless they are plain shard
    names: `$` alone would let "venice\\n" or "x-000000.tar\\n" through."""
    from wtours.errors import WtoursError
    from wtours.hub.paths import is_shard_path, shard_path, slugs_in
    from wtours.layout import validate_shard_name

    listing = ["venice/index.json", "venice\n/index.json", "../index.json", "a/../index.json", ".x/index.json",
               "zurich/sub/index.json", "Zurich/index.json"]
    assert slugs_in(listing) == ["venice"]
    for name in ("venice-000000.tar\n", "../venice-000000.tar", "venice-000000.tar/x", "venice-0000001.tar"):
        with pytest.raises(WtoursError, match="is not a shard name"):
            validate_shard_name(name, "venice")
        with pytest.raises(WtoursError):
            shard_path("venice", name)
        assert not is_shard_path(f"venice/{name}", "venice")
    assert shard_path("venice", "venice-000001.tar") == "venice/venice-000001.tar"


# ---------------------------------------------------------------------- eval and viz: bad inputs


def image_folders(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) // (1 if label == "a" else 4)
                Image.fromarray(pixels).save(folder / split / label / f"{i}.png")
    return folder / "train", folder / "val"


@pytest.fixture
def micro_backbone(tmp_path) -> Path:
    import torch

    from wtours.models.vit import create_vit

    torch.manual_seed(0)
    path = tmp_path / "micro.pth"
    torch.save(create_vit("vit_micro").state_dict(), path)
    return path


@pytest.mark.slow
def test_knn_skips_counts_and_names_images_that_do_not_decode(tmp_path, micro_backbone, caplog):
    train, val = image_folders(tmp_path / "images")
    (train / "a" / "empty.png").write_bytes(b"")
    whole = (val / "b" / "0.png").read_bytes()
    (val / "b" / "cut.png").write_bytes(whole[: len(whole) // 2])  # truncated
    out = tmp_path / "knn.json"
    result = run_wtours(["eval", "knn", str(micro_backbone), "--train", str(train), "--val", str(val), "--workers",
                         "0", "--device", "cpu", "--k", "3", "--out", str(out)])
    assert result.returncode == 0 and result.error is None, result
    assert "2 images that do not decode skipped" in result.stdout
    named = " ".join(r.getMessage() for r in caplog.records)
    assert "empty.png" in named and "cut.png" in named
    result = json.loads(out.read_text())
    assert sorted(Path(p).name for p in result["bad_images"]) == ["cut.png", "empty.png"]
    assert result["train_images"] == 6 and result["val_images"] == 4  # the readable ones

    for path in list(val.rglob("*.png")):
        path.write_bytes(b"not an image")
    result = run_wtours(["eval", "knn", str(micro_backbone), "--train", str(train), "--val", str(val), "--workers",
                         "0", "--device", "cpu", "--out", str(out)])
    stderr = assert_clean_error(result, 1, "none of the 5 images", kind=WtoursError)
    assert str(val) in stderr


@pytest.mark.parametrize("content", [[1, 2, 3], {"teacher": [1, 2]}, {"weights": "text"}, "a string"])
def test_a_checkpoint_that_is_not_a_dict_of_weights_is_named(tmp_path, content):
    import torch

    train, val = image_folders(tmp_path / "images")
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    result = run_wtours(["eval", "knn", str(path), "--train", str(train), "--val", str(val), "--workers", "0",
                         "--device", "cpu"])
    assert_clean_error(result, 1, str(path), kind=WtoursError)
    result = run_wtours(["viz", str(path), "--shards", "venice", "--root", str(tmp_path), "--out",
                         str(tmp_path / "viz"), "--device", "cpu"])
    assert_clean_error(result, 1, str(path), kind=WtoursError)


def test_viz_out_under_a_file_fails_before_any_work(tmp_path, micro_backbone):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    result = run_wtours(["viz", str(micro_backbone), "--shards", "venice", "--root", str(tmp_path), "--out",
                         str(blocker / "viz"), "--device", "cpu"])
    assert_clean_error(result, 2, "is a file, not a folder", kind=UsageError)
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("url", ["hf://", "hf://datasets/alice", "hf://models/a/b/v/v-000000.tar",
                                 "hf://datasets/a/b@/v/index.json", "hf://datasets/a/b/../v/index.json",
                                 "hf://datasets/a/b/v/v-{000000..000001.tar"])
def test_malformed_hf_urls_are_refused_before_the_network(url):
    assert_clean_error(run_wtours(["inspect", url]), 2, url, kind=UsageError)


def test_a_replaced_shard_served_over_http_is_skipped_and_named(root, tmp_path, caplog):
    """The same check for http(s):// shards: a copy of the set whose shard 0 lost its last 512 bytes
    (the tar end marker, so the tar still reads: its last sample is not used), and shard 2 had a byte changed."""
    from tests.http_server import FileServer
    from wtours.clips.spec import resolve
    from wtours.clips.stages import Problems, open_shards, tar_samples

    served = tmp_path / SLUG
    shutil.copytree(Layout(root).shard_dir(SLUG), served)
    first = served / f"{SLUG}-000000.tar"
    first.write_bytes(first.read_bytes()[:-512])
    last = served / f"{SLUG}-000002.tar"
    changed = bytearray(last.read_bytes())
    changed[2000] ^= 0xFF
    last.write_bytes(bytes(changed))
    with FileServer(served) as server:
        refs = resolve(server.url(f"{SLUG}-{{000000..000002}}.tar"))
        problems = Problems()
        counts: dict[str, int] = {}
        for sample in tar_samples(open_shards(refs, problems), problems):
            name = sample.url.rsplit("/", 1)[1]
            counts[name] = counts.get(name, 0) + 1
    assert counts == {f"{SLUG}-000000.tar": 3, f"{SLUG}-000001.tar": 4}  # every sample checked: the cut one not used
    assert sorted(u.rsplit("/", 1)[1] for u in problems.bad_shards) == [f"{SLUG}-000000.tar", f"{SLUG}-000002.tar"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{SLUG}-000000.tar" in warned and "bytes" in warned and f"{SLUG}-000002.tar" in warned
