"""No secret leaves the machine (docs/troubleshooting.md, "Secrets in a SPEC"): a SPEC is shown, logged, stored
and published only as wtours.redact.shown builds it from an allow-list; credentials in an http(s) URL
(user:password@, ?token=) are sent with the requests and never printed; `push --model` refuses what it cannot
prove clean. Real curl, wget and shell commands, real HTTP servers that demand the credentials
(tests/http_server.py), a real training run, export and push to tests/hub_server.py."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.cli import assert_clean_error, run_wtours, run_wtours_process
from tests.http_server import FileServer
from tests.test_model_hub import TOKEN, env_for
from tests.test_shard_urls import MICRO, read_part
from wtours.clips.spec import resolve
from wtours.redact import HIDDEN, scrub, shown, unclean_field

SECRET = "Qx9unique5ecretZ"  # grepped for in every output
BASIC = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
H = "https://h.example/v/v-{000000..000003}.tar"


@pytest.mark.parametrize(("spec", "expected"), [
    (f"pipe:curl -s -u alice:{SECRET} {H}", f"pipe:curl *** {H}"),
    (f"pipe:curl --user alice:{SECRET} {H}", f"pipe:curl *** {H}"),
    (f"pipe:curl -ualice:{SECRET} {H}", f"pipe:curl *** {H}"),
    (f"pipe:curl -H 'X-Api-Key: {SECRET}' {H}", f"pipe:curl *** {H}"),
    (f'pipe:curl -H "Cookie: session={SECRET}" {H}', f"pipe:curl *** {H}"),
    (f"pipe:curl -H PRIVATE-TOKEN:\\ {SECRET} {H}", f"pipe:curl *** {H}"),
    (f"pipe:curl --header=Authorization:{SECRET} {H} | zstd -d", f"pipe:curl *** {H}"),
    (f"pipe:wget --password={SECRET} -O - {H}", f"pipe:wget *** {H}"),
    (f"pipe:wget --password {SECRET} -qO- {H}", f"pipe:wget *** {H}"),
    (f"pipe:env A={SECRET} curl {H}", f"pipe:env *** {H}"),
    (f"pipe:TOKEN={SECRET} cat /data/v-000000.tar", "pipe:*** *** /data/v-000000.tar"),
    (f"pipe:cat /data/{SECRET}=x.tar", "pipe:cat ***"),  # '=' is not in a shown .tar argument
    (f"pipe:curl 'https://alice:{SECRET}@h.example/v/v-000000.tar?sig={SECRET}#x'",
     "pipe:curl https://***@h.example/v/v-000000.tar?***#***"),
    (f"pipe:curl -H 'unbalanced {SECRET}", "pipe:***"),
    (f"https://alice:{SECRET}@h.example:8443/v/v-{{0..3}}.tar", "https://***@h.example:8443/v/v-{0..3}.tar"),
    (f"https://{SECRET}@h.example/v/x.tar", "https://***@h.example/v/x.tar"),
    (f"https://h.example/v/x.tar?token={SECRET}&x=1", "https://h.example/v/x.tar?***"),
    (f"s3://bucket/v/x.tar#{SECRET}", "s3://bucket/v/x.tar#***"),
    (f"curl -u a:{SECRET} https://h.example/x.tar", HIDDEN),  # not a SPEC: nothing of it is shown
    (f"/data/my {SECRET}/x.tar", "/data/***/x.tar"),
    ("hf://datasets/alice/walks@v1/venice/venice-{000000..000013}.tar",
     "hf://datasets/alice/walks@v1/venice/venice-{000000..000013}.tar"),  # nothing to hide: as it is
    ("pipe:cat /data/v/v-{000000..000001}.tar", "pipe:cat /data/v/v-{000000..000001}.tar"),
    ("venice", "venice"),
    ("cuda:1", "cuda:1"),
])
def test_a_spec_is_shown_from_its_allow_listed_parts(spec, expected):
    assert shown(spec) == expected and shown(expected) == expected  # idempotent: a shown form is clean
    assert unclean_field({"shards": [spec]}) == (None if spec == expected else "shards[0]")
    if SECRET in spec:  # an error about the SPEC that repeats it, or its secret alone
        assert SECRET not in scrub(f"failed: {spec}; {SECRET} denied", spec)


@pytest.fixture(scope="module")
def served(canonical_roots, tmp_path_factory) -> Path:
    """A root whose shards/ folder the servers serve: shards/walk/index.json and two shards."""
    return canonical_roots.copy("walk-8s", tmp_path_factory.mktemp("secrets") / "root") / "shards"


def test_credentials_in_an_http_url_are_sent_and_never_printed(served):
    """user:password@ goes as Basic auth and ?token= with every request (index, whole and partial shard reads):
    servers that refuse requests without them serve all; a wrong one is an error that prints neither."""
    with FileServer(served, authorization=BASIC) as basic, FileServer(served, token=SECRET) as token:
        spec = f"http://alice:{SECRET}@127.0.0.1:{basic.port}/walk/walk-{{000000..000001}}.tar"
        tokened = f"http://127.0.0.1:{token.port}/walk/walk-{{000000..000001}}.tar?token={SECRET}"
        for given, server in ((spec, basic), (tokened, token)):
            result = run_wtours(["inspect", given, "--clip-frames", "2"])
            assert result.exit_code == 0 and "2 shards, 16 frames" in result.output, result.output
            assert SECRET not in result.output
            ref = resolve(given)[1]
            assert read_part(ref, 0, None)[0] == list(range(8)) and read_part(ref, 5, None)[0] == [5, 6, 7]
            assert {r["path"].split("?")[0] for r in server.requests} == {"/walk/index.json", "/walk/walk-000001.tar"}
            assert all(r["authorization"] == BASIC for r in basic.requests)
        assert all(r["path"].endswith(f"?token={SECRET}") for r in token.requests)
        for wrong, shown_as in ((spec.replace(SECRET, "Wr0ngPassw0rd"), f"http://***@127.0.0.1:{basic.port}/walk"),
                                (tokened.replace(SECRET, "Wr0ngT0ken"), f"http://127.0.0.1:{token.port}/walk")):
            err = assert_clean_error(run_wtours(["inspect", wrong, "--clip-frames", "2"]), 1, "HTTP 401")
            assert shown_as in err and "Wr0ng" not in err


def test_a_rotated_credential_keeps_the_epochs_clips(served):
    """Each epoch's clip subset is seeded by the shard's shown URL: a new password or token on --resume reads the
    same clips (the stored SPEC, compared on --resume, is the shown one too)."""
    from wtours.clips.epoch import ClipConfig, epoch_starts

    config = ClipConfig(frames=2, clips_per_shard=2, seed=3)
    with FileServer(served) as server:
        refs = [resolve(f"http://alice:{pw}@127.0.0.1:{server.port}/walk/walk-000000.tar?token={pw}")[0]
                for pw in ("old-Passw0rd", "new-Passw0rd")]
    assert refs[0].url != refs[1].url
    old, new = ([epoch_starts(ref, config, epoch) for epoch in range(10)] for ref in refs)
    assert old == new


def test_a_stored_spec_with_hidden_parts_must_be_given_again(tmp_path):
    """config.json holds only the shown SPEC: `--config config.json --resume` cannot run `curl ***`; it is
    refused before --out is made, saying to pass --shards again."""
    out = tmp_path / "run"
    result = run_wtours(["train", "--shards", "pipe:curl *** https://h.example/v/v-{000000..000001}.tar",
                         "--out", str(out), *MICRO])
    assert_clean_error(result, 2, "has *** where wtours hid part of it")
    assert "pass the whole SPEC again with --shards" in result.stderr and not out.exists()


def _secret_in(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.slow
def test_hostile_specs_leave_no_secret_in_a_run_its_export_or_the_hub(served, tmp_path):
    """One training run on shards named by every hostile SPEC form (real curl and wget, env, a command that
    prints the secret and fails, a server demanding Basic auth, one demanding ?token=), then `export` and
    `push --model`: the secret is in no output, no file of the run folder (checkpoint included), the export
    or the pushed repo; the run resumes when the SPECs are given again."""
    from tests.hub_server import HubServer

    walk = served / "walk"
    with FileServer(served) as plain, FileServer(served, authorization=BASIC) as basic, \
            FileServer(served, token=SECRET) as token:
        url = f"http://127.0.0.1:{plain.port}/walk/walk-{{000000..000001}}.tar"
        specs = [f"pipe:curl -sf -u alice:{SECRET} {url}", f"pipe:curl -sf --user alice:{SECRET} {url}",
                 f"pipe:curl -sf -ualice:{SECRET} {url}", f"pipe:curl -sf -H 'X-Api-Key: {SECRET}' {url}",
                 f'pipe:curl -sf -H "Cookie: s={SECRET}" {url}', f"pipe:curl -sf -H PRIVATE-TOKEN:\\ {SECRET} {url}",
                 f"pipe:wget -q --password={SECRET} --user=alice -O - {url}",
                 f"pipe:wget -q --header=Authorization:{SECRET} -O - {url}",
                 f"pipe:env SECRET={SECRET} cat {walk}/walk-{{000000..000001}}.tar",
                 f"pipe:sh -c 'echo \"401 {SECRET}\" >&2; exit 1' {walk}/walk-000000.tar",
                 f"http://alice:{SECRET}@127.0.0.1:{basic.port}/walk/walk-{{000000..000001}}.tar",
                 f"http://127.0.0.1:{token.port}/walk/walk-{{000000..000001}}.tar?token={SECRET}"]
        out = tmp_path / "run"
        args = ["train", *[a for s in specs for a in ("--shards", s)], "--out", str(out), "--epochs", "1",
                "--clips-per-shard", "1", *MICRO]
        trained = run_wtours_process(args)
        assert trained.returncode == 0 and not trained.crashed, trained.stderr
        assert "skipping unreadable shard pipe:sh *** " in trained.stderr and "(401 ***)" in trained.stderr
        assert f"pipe:curl *** {url}" in json.loads((out / "config.json").read_text())["shards"]
        resumed = run_wtours_process([*args, "--resume"])  # given again: the same shown SPECs, nothing differs
        assert resumed.returncode == 0, resumed.stderr
    exported = tmp_path / "export"
    result = run_wtours(["export", str(out / "checkpoint.pth"), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    with HubServer({TOKEN: "alice"}) as hub:
        pushed = run_wtours_process(["push", "--model", str(exported), "--repo", "alice/m"], env=env_for(hub, tmp_path))
        assert pushed.returncode == 0, pushed.stderr
        files = hub.files("alice/m", repo_type="model")
    assert set(files) >= {"model.safetensors", "config.json", "README.md"}
    assert [name for name, data in files.items() if SECRET.encode() in data] == []
    assert _secret_in(out) == [] and _secret_in(exported) == []
    for done in (trained, resumed, result, pushed):
        assert SECRET not in done.stdout + done.stderr


def test_push_refuses_a_value_it_cannot_prove_clean(tmp_path):
    """Any string of config.json (not only the settings) that is not in its shown form: refused, naming the
    field, never printing it, before the Hub is contacted."""
    from tests.test_export import write_run

    exported = tmp_path / "export"
    assert run_wtours(["export", str(write_run(tmp_path / "run")), "--out", str(exported)]).exit_code == 0
    config = json.loads((exported / "config.json").read_text())
    config["wtours"]["knn_eval"] = {"top1": 1.0, "top5": 2.0, "train": f"curl -H 'Cookie: {SECRET}'"}
    (exported / "config.json").write_text(json.dumps(config))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_wtours(["push", "--model", str(exported), "--repo", "alice/m"], env=env)
    err = assert_clean_error(result, 2, "wtours.knn_eval.train may hold credentials")
    assert SECRET not in result.output and "Cookie" not in err



@pytest.mark.parametrize("url", ["ftp://alice:PASS@host/walk.mp4", "file:///walk.mp4?token=PASS"])
def test_download_refuses_a_non_http_url_without_printing_its_credentials(tmp_path, url):
    result = run_wtours(["download", "--url", url, "--name", "my-walk", "--root", str(tmp_path)])
    stderr = assert_clean_error(result, 2, "is not an http(s) URL")
    assert "PASS" not in stderr and not (tmp_path / "videos").exists()
