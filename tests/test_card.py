"""The dataset card: `wtours card` writes locally (offline) the card `wtours push` uploads; its declared
features let 🤗 `datasets` load a repo mixing a corpus video (`source_id` a string) with an own video
(`source_id` null), streaming or not; the citation, privacy and licences it states; hostile names and
other people's files are refused. The Hub is tests/hub_server.py (see tests/test_hub.py for why the CLI
and `datasets` run in subprocesses)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.cli import run_wtours
from tests.hub_server import HubServer
from tests.test_hub import TOKEN, env_for, wtours
from tests.videos import index_json, make_video
from wtours.citation import ARXIV_ID, ARXIV_URL, BIBTEX
from wtours.errors import UsageError, WtoursError
from wtours.fetch.local import add_local
from wtours.hub import source as provenance
from wtours.hub.card import (
    MIXED_LICENSE_NAME,
    CardVideo,
    is_cc_by,
    is_generated,
    local_card,
    render_card,
)
from wtours.hub.client import HubTarget
from wtours.hub.push import PushConfig, push
from wtours.layout import Layout
from wtours.privacy.params import BlurParams
from wtours.shard.card import EARLIER_MARKS, sample_features
from wtours.shard.index import load_index
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.read import iter_shard
from wtours.shard.run import shard_video
from wtours.shard.writer import write_shard

OWN = {"url": "https://example.org/my-walk", "title": "My walk", "uploader": "Me", "license": "CC BY 4.0"}
SETS = {"venice": 3.0, "my-walk": 2.0}  # 2 fps, 4 samples per shard: 6 and 4 frames, 2 and 1 shards


pytestmark = pytest.mark.usefixtures("no_xet")  # tests/conftest.py


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A corpus video (venice: its YouTube id is each sample's `source_id`) and an own video (my-walk:
    `wtours add --source-url ...`, no id, so `source_id` is "")."""
    return corpus_and_own_root(tmp_path_factory.mktemp("card"))


def corpus_and_own_root(folder: Path) -> Path:
    """SETS under folder/root: venice (a corpus video) and my-walk (own footage, OWN's provenance), sharded."""
    layout = Layout(folder / "root")
    for slug, seconds in SETS.items():
        video = make_video(folder / f"{slug}.mp4", seconds=seconds, size="192x128", rate=10)
        add_local(video, slug, layout.root, mode="symlink", say=lambda m: None,
                  provenance=OWN if slug == "my-walk" else None)
        shard_video(layout, slug, ShardParams(fps=2.0, short_side=128, samples_per_shard=4),
                    RunOptions(workers=1, progress=False), say=lambda m: None)
    return layout.root


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: "alice"}) as server:
        yield server


def push_sets(root: Path, hub: HubServer, repo: str) -> None:
    push(Layout(root), PushConfig(HubTarget(repo, endpoint=hub.url, token=TOKEN), tuple(SETS), progress=False),
         say=lambda m: None)


def card_videos(root: Path) -> list[CardVideo]:
    layout = Layout(root)
    return [CardVideo(s, load_index(layout, s), provenance.source_record(layout, s)) for s in SETS]


def run_card(root: Path, out: Path, *extra: str):
    return run_wtours(["card", "--city", "venice", "--city", "my-walk", "--repo", "alice/mixed",
                       "--root", str(root), "--out", str(out), *extra])


# ---------------------------------------------------------------------- wtours card


@pytest.mark.slow
def test_wtours_card_writes_offline_the_card_push_uploads(root, hub, tmp_path):
    push_sets(root, hub, "alice/mixed")
    out = tmp_path / "upload" / "README.md"
    mark = len(hub.requests)
    env = {**env_for(hub, tmp_path), "HF_HUB_OFFLINE": "1"}  # the endpoint is named in the card, never contacted
    result = wtours(["card", "--city", "venice", "--city", "my-walk", "--repo", "alice/mixed", "--root", str(root),
                     "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == hub.files("alice/mixed")["README.md"]
    assert len(hub.requests) == mark and "wrote the dataset card for 2 shard sets" in result.stdout
    assert [p.name for p in out.parent.iterdir()] == ["README.md"]  # no temporary left beside it


def upload_command(repo: str, shards: str) -> str:
    """docs/hub.md's `hf upload` line, for a repo and a shards folder."""
    return (f"hf upload {repo} {shards} . --repo-type dataset --include README.md --include '*/*.tar' "
            "--include '*/index.json' --include '*/*.wids.json'")


@pytest.mark.slow
def test_card_then_hf_upload_as_documented_gives_a_repo_wtours_reads(root, hub, tmp_path):
    """`wtours card` into the shards folder, then the Hub's own `hf upload` as docs/hub.md writes it: the
    repo holds the card, the shards, the indexes and the wids lists, and `wtours inspect` streams it."""
    import shlex

    assert upload_command("alice/walking-tours", '"$WTOURS_ROOT/shards"') in (
        Path(__file__).resolve().parents[1] / "docs" / "hub.md").read_text()
    shards = Layout(root).root / "shards"
    card = tmp_path / "README.md"
    assert run_card(root, card).exit_code == 0
    env = env_for(hub, tmp_path)
    staged = tmp_path / "staged"  # the module's root stays as it is: the card goes into a copy of its shards
    shutil.copytree(shards, staged, symlinks=True)
    shutil.copy(card, staged / "README.md")
    command = shlex.split(upload_command("alice/uploaded", str(staged)))
    done = subprocess.run([str(Path(sys.executable).with_name("hf")), *command[1:]], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = hub.files("alice/uploaded")
    assert files["README.md"] == card.read_bytes()
    for slug in SETS:
        layout = Layout(root)
        assert files[f"{slug}/index.json"] == layout.index_path(slug).read_bytes()
        assert files[f"{slug}/{layout.wids_path(slug).name}"] == layout.wids_path(slug).read_bytes()
        assert all(f"{slug}/{s['name']}" in files for s in index_json(layout, slug)["shards"])
    assert not [f for f in files if "_segments" in f or f.endswith(".lock")]
    inspected = wtours(["inspect", "hf://datasets/alice/uploaded/venice/index.json", "--clip-frames", "2", "--json"],
                       env)
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["shards"] == 2, inspected.stderr


def test_card_replaces_only_a_card_of_ours_unless_told(root, tmp_path):
    out = tmp_path / "README.md"
    out.write_text("# The owner's own card\n")
    refused = run_card(root, out)
    assert refused.exit_code == UsageError.exit_code, refused.output
    assert "is not a dataset card written by wtours" in refused.output and "--overwrite" in refused.output
    assert out.read_text() == "# The owner's own card\n"
    forced = run_card(root, out, "--force")
    assert forced.exit_code == 0, forced.output
    assert is_generated(out.read_text())
    card = out.read_text()
    out.write_text(card.replace("# alice/mixed", "# stale"))
    again = run_card(root, out)  # ours: rewritten without being told
    assert again.exit_code == 0, again.output
    assert out.read_text() == card
    out.write_text(f"---\nlicense: cc-by-4.0\n---\n\n{EARLIER_MARKS[0]}\n\n# an older version's card\n")
    assert run_card(root, out).exit_code == 0 and out.read_text() == card
    folder = run_card(root, tmp_path)
    assert folder.exit_code == UsageError.exit_code and "is a directory" in folder.output


@pytest.mark.parametrize("args", [
    ["--repo", "../../etc/passwd"], ["--repo", "alice/walks\n## injected"], ["--repo", "alice"],
    ["--repo", "alice/walks", "--revision", 'main")\nimport os'], ["--repo", "alice/walks", "--revision", "../x"],
    ["--repo", "alice/walks", "--revision", "-rf"]])
def test_card_refuses_hostile_repo_and_revision_names(root, tmp_path, args):
    out = tmp_path / "README.md"
    result = run_wtours(["card", "--city", "venice", "--root", str(root), "--out", str(out), *args])
    assert result.exit_code == UsageError.exit_code, result.output
    assert "is not a Hub repository name" in result.output or "is not a branch, tag or commit" in result.output
    assert not out.exists()


def test_card_needs_every_shard_and_an_attribution(root, tmp_path):
    layout = Layout(root)
    with pytest.raises(WtoursError) as error:
        local_card(layout, ["zurich"], "alice/walks")
    assert "no shard index" in error.value.message
    shard = layout.shard_dir("my-walk") / "my-walk-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[:-512])
    try:
        with pytest.raises(WtoursError) as error:
            local_card(layout, ["my-walk"], "alice/walks")
        assert "my-walk-000000.tar is missing or not the size" in error.value.message
    finally:
        shard.write_bytes(data)


# ---------------------------------------------------------------------- what the card says


@pytest.mark.slow  # importing datasets takes seconds
def test_declared_features_are_the_samples_fields(root):
    """The struct declared for `json` is exactly what a shard's sample json holds, in the types
    `datasets` would infer from a corpus video; `datasets` parses the YAML form."""
    from datasets import Features, Value

    shard = Layout(root).shard_dir("venice") / "venice-000000.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        sample = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    features = Features._from_yaml_list(copy.deepcopy(sample_features()))
    assert set(features) == {"jpg", "json", "__key__", "__url__"}
    struct = features["json"]
    assert list(struct) == sorted(sample)
    kinds = {"int64": int, "float64": float, "string": str}
    assert all(isinstance(sample[name], kinds[value.dtype]) for name, value in struct.items())
    assert struct["source_id"] == Value("string") and features["jpg"].__class__.__name__ == "Image"


def test_card_cites_the_paper_and_states_privacy_and_licences(root):
    videos = card_videos(root)
    plain = videos[0].index
    faces = [0, 1000, *[234 // (plain.samples - 2)] * (plain.samples - 2)]  # faces in all but the first frame
    faces[-1] += 234 % (plain.samples - 2)  # 1,234 in all
    shards, at = [], 0
    for entry in plain.shards:
        shards.append(dataclasses.replace(entry, faces=tuple(faces[at:at + entry.samples])))
        at += entry.samples
    blurred = dataclasses.replace(plain, shards=tuple(shards), params=dataclasses.replace(
        plain.params, blur_faces=True, blur=BlurParams(mode="pixelate", threshold=0.2)))
    assert blurred.privacy is not None and blurred.privacy["faces"] == 1234
    card = render_card("alice/walks", [CardVideo("venice", blurred, videos[0].source), videos[1]],
                       "https://huggingface.co")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert f"arxiv:{ARXIV_ID}" in meta["tags"]
    assert [c["config_name"] for c in meta["dataset_info"]] == ["all", "my-walk", "venice"]
    assert all(c["features"] == sample_features() for c in meta["dataset_info"])
    assert "&id" not in card  # no YAML anchors: each config spelled out
    assert f"```bibtex\n{BIBTEX}\n```" in card and f"]({ARXIV_URL})" in card
    privacy = card.split("## Privacy and limitations")[1].split("\n## ")[0]
    assert "bystanders' faces" in privacy and "number\nplates" in privacy
    assert f"| `venice` | yes (pixelate) | centerface at 0.2 | 1,234 | {plain.samples - 1} | CC-BY |" in privacy
    assert "| `my-walk` | **no** | | | | CC BY 4.0 |" in privacy
    assert "a face detector (here: `centerface`)\n  leaves them readable" in privacy
    layout = card.split("## Layout")[1]
    assert "<video>/<video>.wids.json" in layout
    loading = card.split("## How to load it")[1]
    assert ('wids.ShardListDataset("https://huggingface.co/datasets/alice/walks/resolve/main/my-walk/'
            'my-walk.wids.json")') in loading
    assert "hf download alice/walks --repo-type dataset --include 'my-walk/*' --local-dir /data/wtours/shards" \
        in loading
    branch = render_card("alice/walks", videos, "https://huggingface.co", revision="fps1")
    assert "--include 'my-walk/*' --revision fps1 --local-dir" in branch


@pytest.mark.parametrize("licence,plain", [
    ("CC-BY", True), ("CC-BY-4.0", True), ("cc by 3.0", True),
    ("Creative Commons Attribution license (reuse allowed)", True),
    ("CC-BY-NC-ND-4.0", False), ("CC BY-SA 4.0", False), ("cc-by-nc", False),
    ("Creative Commons Attribution-NonCommercial 4.0", False), ("All rights reserved", False), ("", False),
    (None, False)])
def test_only_plain_cc_by_counts_as_cc_by(licence, plain):
    assert is_cc_by(licence) is plain


def test_a_video_under_another_licence_makes_the_card_say_so(root):
    """The card claims CC BY 4.0 only when every video is under plain CC BY: one under CC BY-NC-ND
    turns the metadata to `other` and the text to per-video licences naming it."""
    videos = card_videos(root)
    nd = copy.deepcopy(videos[1].source)
    nd["source"]["license"] = "CC-BY-NC-ND-4.0"
    card = render_card("alice/walks", [videos[0], CardVideo(videos[1].slug, videos[1].index, nd)],
                       "https://huggingface.co")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and meta["license_name"] == MIXED_LICENSE_NAME
    licence = card.split("## Licence and attribution")[1].split("\n## ")[0]
    assert "no single licence" in licence and f"`{videos[1].slug}` is not under\nplain CC BY" in licence
    assert "released under the [Creative Commons Attribution 4.0]" not in card
    assert "| CC-BY-NC-ND-4.0 |" in licence
    plain = yaml.safe_load(render_card("alice/walks", videos, "https://huggingface.co").split("---\n")[1])
    assert plain["license"] == "cc-by-4.0" and "license_name" not in plain


# ---------------------------------------------------------------------- datasets


DATASETS_SCRIPT = """
import json, sys
from datasets import load_dataset
report = {}
for repo in sys.argv[1:]:
    for config in (None, "all", "venice", "my-walk"):
        for streaming in (False, True):
            name = f"{repo} {config} {'streaming' if streaming else 'prepared'}"
            try:
                rows = list(load_dataset(repo, config, split="train", streaming=streaming))
            except Exception as e:
                report[name] = f"{type(e).__name__}: {e} {e.__cause__}"
                continue
            ids = sorted({(r["json"]["video"], r["json"]["source_id"]) for r in rows}, key=str)
            report[name] = {"rows": len(rows), "ids": ids, "jpg": type(rows[0]["jpg"]).__name__,
                            "keys": sorted(rows[0])}
print(json.dumps(report))
"""


@pytest.mark.slow
def test_datasets_loads_a_repo_mixing_corpus_and_own_videos(root, hub, tmp_path):
    """Every config and the default, prepared (non-streaming) and streaming, with my-walk's shard as version 3
    wrote it (`source_id` null; version 4 writes ""). Without the declared features (the card of earlier
    versions) the prepared default then fails: `source_id` is a string in venice's shards and null in my-walk's."""
    from huggingface_hub import HfApi

    as_version_3 = tmp_path / "my-walk-000000.tar"
    samples = iter_shard(Layout(root).shard_file("my-walk", "my-walk-000000.tar"))
    write_shard(as_version_3, (dataclasses.replace(s, meta=dataclasses.replace(s.meta, source_id=None))  # type: ignore[arg-type]
                               for s in samples))
    for repo in ("alice/declared", "alice/undeclared"):
        push_sets(root, hub, repo)
        HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=as_version_3.read_bytes(), repo_id=repo,
                                                         path_in_repo="my-walk/my-walk-000000.tar", repo_type="dataset")
    card = hub.files("alice/undeclared")["README.md"].decode()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    del meta["dataset_info"]
    HfApi(endpoint=hub.url, token=TOKEN).upload_file(
        path_or_fileobj=f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}".encode(),
        path_in_repo="README.md", repo_id="alice/undeclared", repo_type="dataset")

    env = {**env_for(hub, tmp_path), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    result = subprocess.run([sys.executable, "-c", DATASETS_SCRIPT, "alice/declared", "alice/undeclared"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    venice_id = index_json(Layout(root), "venice")["video"]["source_id"]
    assert isinstance(venice_id, str) and index_json(Layout(root), "my-walk")["video"]["source_id"] is None
    expected = {None: (10, [["my-walk", None], ["venice", venice_id]]), "all": (10, [["my-walk", None],
                                                                                      ["venice", venice_id]]),
                "venice": (6, [["venice", venice_id]]), "my-walk": (4, [["my-walk", None]])}
    for config, (rows, ids) in expected.items():
        for mode in ("prepared", "streaming"):
            got = report[f"alice/declared {config} {mode}"]
            assert isinstance(got, dict), (config, mode, got)
            assert got == {"rows": rows, "ids": ids, "jpg": "JpegImageFile",
                           "keys": ["__key__", "__url__", "jpg", "json"]}, (config, mode)
    # the failure the declared features fix (and that this test would catch coming back)
    assert "Couldn't cast array of type string to null" in report["alice/undeclared None prepared"]
