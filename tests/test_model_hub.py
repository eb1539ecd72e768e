"""`wtours push --model`: an exported encoder on the Hub, offline against tests/hub_server.py, loaded back
by real timm through huggingface_hub (`hf-hub:USER/NAME`); resume, dry run, someone else's namespace or
README, and the errors of a folder that is not an export.

huggingface_hub reads HF_ENDPOINT when it is imported, so timm and the CLI run in subprocesses with the
endpoint in their environment; library calls in this process pass the endpoint (HubTarget.endpoint)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli import run_wtours
from tests.hub_server import HubServer
from tests.test_export import write_run
from wtours.errors import WtoursError
from wtours.hub.client import HubTarget
from wtours.hub.model import ModelPushConfig, push_model
from wtours.hub.model_card import is_generated_model_card

TOKEN = "hf_alice_Mx41secret"
BOB = "hf_bob_Qp77secret"


pytestmark = pytest.mark.usefixtures("no_xet")  # tests/conftest.py


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: "alice", BOB: "bob"}) as server:
        yield server


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A `wtours export --format timm` folder of a vit_micro run that streamed hf:// shards of alice/walks."""
    folder = tmp_path_factory.mktemp("model-hub")
    checkpoint = write_run(folder / "run")
    out = folder / "venice-micro"
    result = run_wtours(["export", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def env_for(hub: HubServer, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    for token in (TOKEN, BOB):
        assert token not in result.stdout + result.stderr, "a token was printed"
    return result


def target(hub: HubServer, repo: str, token: str | None = TOKEN, revision: str = "main") -> HubTarget:
    return HubTarget(repo, revision, endpoint=hub.url, token=token)


def quiet(config: ModelPushConfig) -> tuple[object, list[str]]:
    lines: list[str] = []
    return push_model(config, say=lines.append), lines


LOAD = """
import sys, timm, torch
model = timm.create_model(sys.argv[1], pretrained=True).eval()
data = timm.data.resolve_data_config({}, model=model)
torch.manual_seed(0)
x = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    torch.save({"features": model(x), "x": x, "mean": data["mean"], "std": data["std"],
                "classes": model.num_classes}, sys.argv[2])
"""


@pytest.mark.slow
def test_cli_push_then_timm_loads_it_from_the_hub_with_equal_features(hub, exported, tmp_path):
    env = env_for(hub, tmp_path)
    pushed = run([sys.executable, "-m", "wtours", "push", "--model", str(exported), "--repo", "alice/venice-micro"],
                 env)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed 3 files" in pushed.stdout
    files = hub.files("alice/venice-micro", repo_type="model")
    assert files["model.safetensors"] == (exported / "model.safetensors").read_bytes()
    assert files["config.json"] == (exported / "config.json").read_bytes()
    card = files["README.md"].decode()
    assert is_generated_model_card(card) and 'create_model("hf-hub:alice/venice-micro"' in card
    assert f"[alice/walks]({hub.url}/datasets/alice/walks)" in card and "datasets:\n- alice/walks" in card
    history = hub.history("alice/venice-micro", repo_type="model")
    assert len(history) == 2 and set(history[1]["paths"]) == {"model.safetensors", "config.json", "README.md"}

    result = tmp_path / "features.pt"
    loaded = run([sys.executable, "-c", LOAD, "hf-hub:alice/venice-micro", str(result)], env)
    assert loaded.returncode == 0, loaded.stderr
    got = torch.load(result)
    from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD
    from wtours.models.checkpoint import load_backbone

    ours, _ = load_backbone(exported.parent / "run" / "checkpoint.pth")
    with torch.no_grad():
        assert torch.allclose(got["features"], ours(got["x"]), atol=1e-5)  # (2, 96) [CLS] features
    assert tuple(got["mean"]) == IMAGENET_MEAN and tuple(got["std"]) == IMAGENET_STD and got["classes"] == 0


def test_a_second_push_sends_nothing_and_a_new_export_only_what_changed(hub, exported, tmp_path):
    config = ModelPushConfig(target(hub, "alice/again"), exported, progress=False)
    first, _ = quiet(config)
    assert sorted(first.uploaded) == ["README.md", "config.json", "model.safetensors"]
    mark = len(hub.requests)
    second, lines = quiet(config)
    assert second.uploaded == [] and hub.uploads(mark) == [] and lines == []  # the summary line says it, once
    assert second.line("alice/again").startswith("alice/again: up to date")
    mine = tmp_path / "mine"
    shutil.copytree(exported, mine)
    (mine / "README.md").write_text("# alice's own card\n")  # not generated: goes up as it is
    third, _ = quiet(ModelPushConfig(target(hub, "alice/again"), mine, progress=False))
    assert third.uploaded == ["README.md"]
    assert hub.files("alice/again", repo_type="model")["README.md"] == b"# alice's own card\n"


def test_an_interrupted_push_resumes(hub, exported):
    hub.fail_commit("alice/flaky", 1)  # the first commit after the repo's creation answers 503
    config = ModelPushConfig(target(hub, "alice/flaky"), exported, progress=False)
    with pytest.raises(WtoursError) as error:
        quiet(config)
    assert "HTTP 503" in error.value.message and "rerun" in error.value.hint
    assert set(hub.files("alice/flaky", repo_type="model")) == {".gitattributes"}  # nothing half-committed
    summary, _ = quiet(config)
    assert summary.commits == 1 and "model.safetensors" in hub.files("alice/flaky", repo_type="model")


def test_someone_elses_namespace_is_refused_before_anything_is_created(hub, exported):
    mark = len(hub.requests)
    with pytest.raises(WtoursError) as error:
        quiet(ModelPushConfig(target(hub, "alice/by-bob", token=BOB), exported, progress=False))
    assert "'alice' is not your namespace" in error.value.message and "bob/by-bob" in error.value.hint
    assert ("model", "alice/by-bob") not in hub.repos and hub.uploads(mark) == []
    with pytest.raises(WtoursError, match="not logged in"):
        quiet(ModelPushConfig(target(hub, "alice/anon", token=None), exported, progress=False))


def test_a_readme_written_by_someone_else_is_kept(hub, exported):
    from huggingface_hub import HfApi

    owner = HfApi(endpoint=hub.url, token=TOKEN)
    owner.create_repo("alice/curated-model")
    owner.upload_file(path_or_fileobj=b"# My own model card\n", path_in_repo="README.md", repo_id="alice/curated-model")
    _, lines = quiet(ModelPushConfig(target(hub, "alice/curated-model"), exported, progress=False))
    files = hub.files("alice/curated-model", repo_type="model")
    assert files["README.md"] == b"# My own model card\n" and "model.safetensors" in files
    assert any("left as is" in line for line in lines)


def test_a_dry_run_creates_and_uploads_nothing(hub, exported):
    mark = len(hub.requests)
    summary, lines = quiet(ModelPushConfig(target(hub, "alice/dry-model"), exported, dry_run=True, progress=False))
    assert summary.uploaded == [] and hub.uploads(mark) == [] and ("model", "alice/dry-model") not in hub.repos
    assert "alice/dry-model: to upload: model.safetensors" in lines[-1]


def test_pushing_to_a_branch(hub, exported):
    summary, _ = quiet(ModelPushConfig(target(hub, "alice/branched-model", revision="v1"), exported, progress=False))
    assert summary.commits == 1
    assert "config.json" in hub.files("alice/branched-model", "v1", repo_type="model")
    assert "config.json" not in hub.files("alice/branched-model", repo_type="model")


def test_the_push_records_its_license_and_datasets_in_config_json_and_card(hub, exported):
    """`wtours push --model DIR --license ID --dataset USER/NAME`: what the repo gets says the same in both
    files; the folder is left as the export wrote it."""
    before = (exported / "config.json").read_bytes()
    summary, _ = quiet(ModelPushConfig(target(hub, "alice/licensed"), exported, progress=False,
                                       license="apache-2.0", datasets=(("bob/city-walks", None),)))
    assert summary.commits == 1
    files = hub.files("alice/licensed", repo_type="model")
    info = json.loads(files["config.json"])["wtours"]
    assert info["license"] == "apache-2.0" and info["datasets"] == [{"repo": "bob/city-walks", "revision": None}]
    card = files["README.md"].decode()
    assert "license: apache-2.0\n" in card and "- alice/walks\n- bob/city-walks\n" in card
    assert f"[bob/city-walks]({hub.url}/datasets/bob/city-walks)" in card
    assert (exported / "config.json").read_bytes() == before
    # the CLI's options, refused before the Hub is contacted
    for args, message in ((["--license", "MIT!"], "is not a licence id"), (["--dataset", "../../x"], "repository"),
                          (["--city", "venice", "--license", "mit"], None)):
        argv = ["push", *(["--model", str(exported)] if args[0] != "--city" else []), *args, "--repo", "alice/x",
                "--dry-run"]
        result = run_wtours(argv)
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        assert (message or "go with --model DIR") in result.stderr


def test_a_config_json_with_local_paths_or_credentials_is_not_pushed(hub, exported, tmp_path):
    """Settings are cleaned once, at export; a config.json that holds local paths or secrets anyway (an older
    export, a hand edit) is refused before the Hub is contacted, not published."""
    for edit, said in (({"out": "/home/walker/runs/venice"}, "holds local paths or credentials"),
                       ({"shards": ["https://walker:pa55word@h.example/a.tar"]},
                        "wtours.train_config.shards[0] may hold credentials")):  # named, never printed
        folder = tmp_path / f"old-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(exported, folder)
        config = json.loads((folder / "config.json").read_text())
        config["wtours"]["train_config"] |= edit
        (folder / "config.json").write_text(json.dumps(config))
        result = run_wtours(["push", "--model", str(folder), "--repo", "alice/leaky"])
        assert result.exit_code == 2 and said in result.stderr  # (2: not a Hub error)
        assert "wtours export CHECKPOINT --out" in result.stderr and "pa55word" not in result.stderr


def test_a_folder_that_is_not_an_export_is_refused(hub, tmp_path):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "config.json").write_text(json.dumps({"model": {"arch": "vit_small"}}))
    cases = [(tmp_path / "missing", "is not a folder"), (tmp_path, "no config.json"),
             (run_folder, "was not written by `wtours export`")]
    for folder, message in cases:
        result = run_wtours(["push", "--model", str(folder), "--repo", "alice/x", "--dry-run"])
        assert result.exit_code == 2 and message in result.stderr and "wtours export" in result.stderr
    result = run_wtours(["push", "--model", str(tmp_path), "--city", "venice", "--repo", "alice/x"])
    assert result.exit_code == 2 and "--model uploads a model" in result.stderr
    result = run_wtours(["push", "--model", str(tmp_path), "--repo", "../../etc"])
    assert result.exit_code != 0 and "is not a Hub repository name" in result.stderr


@pytest.mark.slow
def test_offline_mode_is_one_line(hub, exported, tmp_path):
    env = {**env_for(hub, tmp_path), "HF_HUB_OFFLINE": "1"}
    result = run([sys.executable, "-m", "wtours", "push", "--model", str(exported), "--repo", "alice/off"], env)
    assert result.returncode == 1 and "HF_HUB_OFFLINE is set" in result.stderr
    assert result.stderr.count("\n") == 2 and "Traceback" not in result.stderr
    assert "writes a dataset card" not in result.stderr  # a model push's hint, not the dataset push's
