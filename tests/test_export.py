"""`wtours export` to timm (a model folder, real timm loading it), its model card, the format/--out rules,
and `wtours train --resume` taking the model from the run (docs/models.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli import run_wtours, run_wtours_process
from wtours.cli.train_cmd import config_from_args
from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD
from wtours.dora.config import DoRAConfig
from wtours.errors import WtoursError
from wtours.hub.export import resolve_format, timm_config
from wtours.models.checkpoint import load_backbone
from wtours.models.registry import HeadConfig, vit_config, vit_names
from wtours.models.vit import VisionTransformer, create_vit
from wtours.train.config import TrainConfig

timm = pytest.importorskip("timm")

HF_SHARDS = "hf://datasets/alice/walks/venice/venice-{000000..000003}.tar"


def wtours(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (tests/cli.py), as this module's asserts unpack it: exit code, stdout, stderr."""
    result = run_wtours(list(args))
    return result.exit_code, result.stdout, result.stderr


def write_run(out: Path, arch: str = "vit_micro", knn: bool = True) -> Path:
    """A run folder as `wtours train` leaves it (checkpoint with its settings, config.json, log.jsonl with
    k-NN lines) and a `wtours eval knn` result beside the checkpoint; weights random, not trained."""
    torch.manual_seed(0)
    config = TrainConfig(shards=(HF_SHARDS, "/home/walker/data/shards/zurich/zurich-{000000..000002}.tar"),
                         out=str(out), root="/home/walker/data", model=DoRAConfig(arch=arch, out_dim=64),
                         knn_train="/home/walker/digits/train", knn_val="/home/walker/digits/val")
    weights = create_vit(arch).state_dict()
    teacher = {f"backbone.{k}": v for k, v in weights.items()}
    student = {f"backbone.{k}": v + 1 for k, v in weights.items()}
    out.mkdir(parents=True)
    checkpoint = out / "checkpoint.pth"
    torch.save({"teacher": teacher, "student": student, "step": 30, "epoch": 3, "arch": arch,
                "config": config.to_dict()}, checkpoint)
    (out / "config.json").write_text(json.dumps(config.to_dict()))
    if knn:
        lines = [{"step": 10, "loss": 9.0}, {"step": 20, "epoch": 2, "knn_top1": 41.5, "knn_top5": 80.25},
                 {"step": 30, "epoch": 3, "knn_top1": 43.75, "knn_top5": 81.5}]
        (out / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 31, "lo')
        (out / "checkpoint.knn.json").write_text(json.dumps({
            "checkpoint": str(checkpoint), "arch": arch, "which": "teacher", "train": "/home/walker/pets/train",
            "val": "/home/walker/pets/val", "resize": 256, "crop": 224, "device": "cpu", "top1": 55.5, "top5": 90.0,
            "k": 20, "temperature": 0.07, "classes": 10, "train_images": 337, "val_images": 113, "seconds": 1.0}))
    return checkpoint


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("export") / "run")


def test_timm_folder_loads_with_the_trainers_normalisation_and_equal_features(run_checkpoint, tmp_path):
    out = tmp_path / "micro"
    code, stdout, stderr = wtours("export", str(run_checkpoint), "--out", str(out))  # no suffix: timm
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
    ours, arch = load_backbone(run_checkpoint)
    assert arch == "vit_micro" and model.num_features == 96
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        features, reference = model(x), ours(x)  # (3, 96) each: the [CLS] token
    assert features.shape == (3, 96) and torch.allclose(features, reference, atol=1e-5)
    data = timm.data.resolve_data_config({}, model=model)
    assert tuple(data["mean"]) == IMAGENET_MEAN and tuple(data["std"]) == IMAGENET_STD
    assert data["input_size"] == (3, 224, 224) and data["interpolation"] == "bicubic"
    assert data["crop_pct"] == pytest.approx(224 / 256)  # wtours eval's resize 256, centre crop 224
    # Without num_classes: still no classifier (the config says 0 classes)
    assert timm.create_model(f"local-dir:{out}", pretrained=True).num_classes == 0


@pytest.mark.parametrize("arch", [name for name in vit_names() if "_patch" in name])
def test_every_architecture_maps_to_a_timm_vit_of_its_shapes(arch, tmp_path):
    """timm's named ViT where one exists, its generic ViT with config.json's model_args otherwise
    (vit_micro, vit_tiny_patch8): the same parameter names and shapes (built on the meta device: no memory)."""
    c = vit_config(arch)
    (tmp_path / "config.json").write_text(json.dumps(timm_config(c, {"arch": arch})))
    with torch.device("meta"):
        model = timm.create_model(f"local-dir:{tmp_path}", pretrained=False, num_classes=0)
    one_block = VisionTransformer(dataclasses.replace(c, depth=1)).state_dict()  # ours, its blocks repeated
    ours = {k: v.shape for k, v in one_block.items() if not k.startswith("blocks.")}
    ours |= {f"blocks.{i}.{k[len('blocks.0.'):]}": v.shape for k, v in one_block.items() if k.startswith("blocks.")
             for i in range(c.depth)}
    assert {k: v.shape for k, v in model.state_dict().items()} == ours
    assert model.blocks[0].attn.num_heads == c.heads


def test_the_card_names_method_data_settings_and_knn_without_local_paths(run_checkpoint, tmp_path):
    out = tmp_path / "card"
    assert wtours("export", str(run_checkpoint), "--out", str(out))[0] == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n") and "datasets:\n- alice/walks\n" in card
    assert "https://arxiv.org/abs/2310.08584" in card and "@inproceedings{venkataramanan2024imagenet" in card
    assert "[alice/walks](https://huggingface.co/datasets/alice/walks)" in card
    assert 'timm.create_model("local-dir:card", pretrained=True, num_classes=0)' in card
    assert "| logged by the run at step 30 | `train` / `val` | 43.75 | 81.50 |" in card  # the last k-NN line
    assert "| 55.50 | 90.00 |" in card and "`train` / `val`" in card  # wtours eval knn's result
    assert "/home/walker" not in card and '"out_dim": 64' in card and "zurich-{000000..000002}.tar" in card
    assert "/home/walker" not in (out / "config.json").read_text()  # the Hub serves config.json too
    config = json.loads((out / "config.json").read_text())
    assert config["wtours"]["train_config"]["model"]["arch"] == "vit_micro" and config["wtours"]["step"] == 30
    assert config["wtours"]["train_config"]["out"] == "run" and config["wtours"]["train_config"]["root"] == "data"
    assert "license: cc-by-4.0\n" in card and "## Licence" in card and "CC-BY 4.0" in card
    assert "trained from scratch" in card and "initialised from" not in card


def test_pth_format_is_kept_and_inferred_from_the_suffix(run_checkpoint, tmp_path):
    for args in (["--out", str(tmp_path / "a.pth")], ["--out", str(tmp_path / "b.pt"), "--format", "pth"]):
        code, stdout, stderr = wtours("export", str(run_checkpoint), *args)
        assert code == 0, stderr
    state = torch.load(tmp_path / "a.pth")
    assert state.keys() == create_vit("vit_micro").state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in torch.load(tmp_path / "b.pt").items())


@pytest.mark.parametrize("args, message", [
    (["--out", "x.safetensors"], "no export format writes a .safetensors file"),
    (["--out", "x.json"], "no export format writes a .json file"),
    (["--format", "timm", "--out", "x.pth"], "--format timm writes a folder, not a .pth file"),
    (["--format", "timm", "--out", "x.safetensors"], "--format timm writes a folder"),
    (["--format", "pth", "--out", "x.safetensors"], "does not end in .pth"),
    (["--format", "pth", "--out", "weights"], "does not end in .pth"),
])
def test_an_out_that_contradicts_the_format_is_refused(run_checkpoint, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = wtours("export", str(run_checkpoint), *args)
    assert code == 2 and message in stderr and "hint:" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_folder_is_not_overwritten_and_a_reexport_replaces_an_export(run_checkpoint, tmp_path):
    run = run_checkpoint.parent
    before = (run / "config.json").read_bytes()
    code, _, stderr = wtours("export", str(run_checkpoint), "--out", str(run))
    assert code == 2 and "not written by `wtours export`" in stderr and (run / "config.json").read_bytes() == before
    assert not (run / "model.safetensors").exists()

    out = tmp_path / "model"
    assert wtours("export", str(run_checkpoint), "--out", str(out))[0] == 0
    (out / "README.md").write_text("# my own card\n")  # the owner's: kept by a re-export
    assert wtours("export", str(run_checkpoint), "--out", str(out), "--which", "student")[0] == 0
    assert (out / "README.md").read_text() == "# my own card\n"
    assert json.loads((out / "config.json").read_text())["wtours"]["which"] == "student"
    student = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0)
    assert torch.equal(student.pos_embed, load_backbone(run_checkpoint)[0].pos_embed + 1)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    with pytest.raises(WtoursError, match="is a file"):
        (tmp_path / "file").write_text("x")
        resolve_format(tmp_path / "file", "timm")


@pytest.mark.parametrize("room", ["none", "weights only", "pth"])
def test_a_full_disk_is_a_clear_error_that_leaves_nothing_and_the_rerun_exports(run_checkpoint, tmp_path, tmpfs, room):
    """A real full disk (a tmpfs, root only: skipped elsewhere) with no room, or room for the weights but not
    the card: `error:` + `hint:`, exit 1, no folder or file under the final name, no temporary; with room
    again the same command exports."""
    reference = tmp_path / "reference"
    assert wtours("export", str(run_checkpoint), "--out", str(reference))[0] == 0
    weights = -(-(reference / "model.safetensors").stat().st_size // 4096) * 4096  # in tmpfs pages
    disk = tmpfs(weights + (1 << 20))
    disk_free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(bytes(disk_free - (weights if room == "weights only" else 0)))
    out = disk / ("model.pth" if room == "pth" else "model")
    code, _, stderr = wtours("export", str(run_checkpoint), "--out", str(out))
    assert code == 1 and "No space left on device" in stderr and "hint: the disk is full" in stderr, stderr
    assert "Traceback" not in stderr and sorted(p.name for p in disk.iterdir()) == ["filler"]

    (disk / "filler").unlink()
    assert wtours("export", str(run_checkpoint), "--out", str(out))[0] == 0
    assert [p.name for p in disk.iterdir()] == [out.name]
    if room != "pth":
        assert timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0) is not None


def test_a_read_only_out_is_a_clear_error(run_checkpoint, tmpfs):
    disk = tmpfs(1 << 20)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    for out in ("model", "model.pth"):
        code, _, stderr = wtours("export", str(run_checkpoint), "--out", str(disk / out))
        assert code == 1 and "Read-only file system" in stderr and "hint: the file system is read-only" in stderr


def test_an_export_without_run_records_has_a_plain_card(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(create_vit("vit_micro").state_dict(), bare)
    assert wtours("export", str(bare), "--out", str(tmp_path / "bare"))[0] == 0
    card = (tmp_path / "bare" / "README.md").read_text()
    assert "recorded no training settings" in card and "k-NN" not in card and "datasets:" not in card
    assert timm.create_model(f"local-dir:{tmp_path / 'bare'}", pretrained=True).num_features == 96


# ---------------------------------------------------------------------- --resume takes the run's model


def test_resume_takes_the_model_from_the_run_and_refuses_explicit_other_shapes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run = TrainConfig(shards=("walk",), out=str(out), model=DoRAConfig(
        arch="vit_micro", out_dim=64, n_local=2, drop_path=0.0, head=HeadConfig(hidden_dim=32, bottleneck_dim=16,
                                                                             norm_last_layer=True)))
    (out / "config.json").write_text(json.dumps(run.to_dict()))
    resumed = config_from_args(["--shards", "walk", "--out", str(out), "--resume", "--steps", "9"])
    assert resumed.model == run.model and resumed.steps == 9
    # without --resume, or with --config naming the run, the usual layers apply
    assert config_from_args(["--shards", "walk", "--out", str(out)]).model == DoRAConfig()
    assert config_from_args(["--config", str(out / "config.json"), "--resume"]).model == run.model
    # an explicit setting still wins (and reaches the run's own refusal of changed settings) ...
    changed = config_from_args(["--shards", "walk", "--out", str(out), "--resume", "--set", "teacher_temp=0.07"])
    assert changed.model.loss.teacher_temp == 0.07 and changed.model.arch == "vit_micro"
    # ... but another shape of weights is refused at once, --reschedule or not
    for args in (["--arch", "vit_tiny"], ["--out-dim", "128", "--reschedule"], ["--set", "hidden_dim=64"]):
        with pytest.raises(WtoursError, match="--resume: .*another shape") as error:
            config_from_args(["--shards", "walk", "--out", str(out), "--resume", *args])
        assert "leave these options out" in error.value.hint
    (out / "config.json").write_text("[]")
    with pytest.raises(WtoursError, match="not a training run's config.json"):
        config_from_args(["--shards", "walk", "--out", str(out), "--resume"])
    (out / "config.json").write_text(json.dumps({"arch": "vit_micro", "out_dim": 64}))  # flat, as --config takes
    assert config_from_args(["--shards", "walk", "--out", str(out), "--resume"]).model.out_dim == 64


@pytest.mark.slow
def test_a_real_run_resumes_without_its_model_options_and_exports_to_timm(canonical_roots, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-export")
    root = canonical_roots.copy("walk-20s", folder / "root")
    out = folder / "run"
    common = ["train", "--shards", "walk", "--root", str(root), "--out", str(out), "--batch-size", "2", "--clip-frames",
              "2", "--workers", "0", "--log-every", "1"]
    model = ["--arch", "vit_micro", "--out-dim", "64", "--n-local", "2"]
    first = run_wtours_process([*common, *model, "--steps", "1"])
    assert first.returncode == 0, first.stderr
    second = run_wtours_process([*common, "--steps", "2", "--resume", "--reschedule"])
    assert second.returncode == 0, second.stderr
    assert "at step 1" in second.stdout
    other = run_wtours_process([*common, "--steps", "2", "--resume", "--arch", "vit_tiny"])
    assert other.returncode == 2 and "--arch vit_micro -> vit_tiny" in other.stderr
    export = folder / "encoder"
    assert wtours("export", str(out / "checkpoint.pth"), "--out", str(export))[0] == 0
    model_ = timm.create_model(f"local-dir:{export}", pretrained=True, num_classes=0).eval()
    ours, _ = load_backbone(out / "checkpoint.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model_(x), ours(x), atol=1e-5)
    assert json.loads((export / "config.json").read_text())["wtours"]["step"] == 2


def test_the_card_survives_a_hand_edited_hostile_config():
    """config.json is a file anyone can edit before a push: odd values never become links, raw markup or a crash."""
    from wtours.hub.model_card import hub_datasets, render_model_card

    shards = ["hf://datasets/../../etc/x.tar", "hf://datasets/alice/ok@v1/a.tar", "hf://datasets/a--b/c/x.tar",
              "x`](javascript:alert(1))`.tar", "hf://datasets/alice/ok/b.tar"]
    config = {"architecture": "vit_tiny_patch16_224", "num_features": 96, "model_args": {},
              "wtours": {"arch": "vit_micro`", "which": "student`", "train_config": {"shards": shards},
                         "license": "mit`", "datasets": [{"repo": "../x"}, {"repo": "bob/d", "revision": "v2"}]}}
    assert hub_datasets(config["wtours"]["train_config"]) == [("alice/ok", "v1"), ("alice/ok", None)]
    card = render_model_card(config, repo="alice/m")
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", card, flags=re.S))  # outside code: markup
    assert "javascript:" not in prose and "../../etc" not in prose and "a--b" not in prose and "../x" not in card
    assert "[alice/ok](https://huggingface.co/datasets/alice/ok) (revision `v1`)" in card
    assert "[bob/d](https://huggingface.co/datasets/bob/d) (revision `v2`)" in card
    assert "k-NN evaluation" not in card


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(model_args=[1]), "model_args is a list, not an object"),
    (lambda c: c["model_args"].update(depth="12"), "model_args.depth is a string, not an integer"),
    (lambda c: c.update(architecture=7), "architecture is an integer, not a string"),
    (lambda c: c.update(num_features=True), "num_features is a boolean"),
    (lambda c: c.update(wtours="x"), "wtours is a string, not an object"),
    (lambda c: c["wtours"].update(step="abc"), "wtours.step is a string, not an integer"),
    (lambda c: c["wtours"].update(parameters=1.5), "wtours.parameters is a number, not an integer"),
    (lambda c: c["wtours"].update(train_config=["x"]), "wtours.train_config is a list"),
    (lambda c: c["wtours"]["train_config"].update(shards="a.tar"), "wtours.train_config.shards is a string, not a"),
    (lambda c: c["wtours"]["train_config"].update(shards=["a.tar", 7]), "wtours.train_config.shards[1] is an integer"),
    (lambda c: c["wtours"]["train_config"].update(out=["x"]), "wtours.train_config.out is a list"),
    (lambda c: c["wtours"].update(knn_logged={"top1": "high", "top5": 1}), "wtours.knn_logged.top1 is a string"),
    (lambda c: c["wtours"].update(knn_eval=["not", "a", "dict"]), "wtours.knn_eval is a list"),
    (lambda c: c["wtours"].update(knn_eval={"top1": 1}), "wtours.knn_eval.top5 is missing"),
    (lambda c: c["wtours"].update(knn_eval={"top1": float("nan"), "top5": 1}), "wtours.knn_eval.top1 is nan"),
    (lambda c: c["wtours"].update(linear_logged={"top1": 1.0}), "wtours.linear_logged.top5 is missing"),
    (lambda c: c["wtours"].update(davis_logged={"jf": "x", "j": 1, "f": 1}), "wtours.davis_logged.jf is a string"),
    (lambda c: c["wtours"].update(datasets=["alice/x"]), "wtours.datasets[0] is a string, not an object"),
    (lambda c: c["wtours"].update(datasets=[{}]), "wtours.datasets[0].repo is missing"),
    (lambda c: c["wtours"].update(license=["mit"]), "wtours.license is a list"),
])
def test_a_hand_edited_config_of_wrong_types_fails_naming_the_field(run_checkpoint, tmp_path, edit, field):
    """Not a traceback at render time (`"model_args": [1]` was an AttributeError): every field the card and the
    push read is type-checked, by `wtours push --model` before anything is contacted."""
    from wtours.hub.model_card import render_model_card

    out = tmp_path / "edited"
    assert wtours("export", str(run_checkpoint), "--out", str(out))[0] == 0
    config = json.loads((out / "config.json").read_text())
    render_model_card(config)  # as exported: fine
    edit(config)
    with pytest.raises(WtoursError, match=re.escape(field)):
        render_model_card(config)
    (out / "config.json").write_text(json.dumps(config))
    code, _, stderr = wtours("push", "--model", str(out), "--repo", "alice/x", "--dry-run")
    why = "was not written by `wtours export`" if field.startswith("wtours is") else field  # no export entry at all
    assert code == (2 if why != field else 1) and why in stderr and "Traceback" not in stderr and "hint:" in stderr


# ---------------------------------------------------------------------- what a published export holds


SECRET_SHARDS = ("pipe:curl -s -H 'Authorization: Bearer hf_SECRETabcdef0123456789' https://h.example/a-{0..3}.tar",
                 "https://walker:pa55word@h.example/walks/b-{0..3}.tar",
                 "https://h.example/c.tar?token=t0ps3cret&x=1")


def test_published_settings_hold_no_credentials_and_no_local_paths(tmp_path):
    """Settings are cleaned once at export (wtours.redact.shown for credentials, local paths cut to
    their last part): config.json, which the Hub serves as is, and the card rendered from it."""
    run = tmp_path / "review-demo" / "runs" / "demo"
    checkpoint = write_run(run)
    saved = torch.load(checkpoint)
    saved["config"] |= {"shards": [*SECRET_SHARDS, str(tmp_path / "review-demo" / "shards" / "walk")],
                        "out": str(run), "root": str(tmp_path / "review-demo"), "init_from": "/home/walker/dino.pth"}
    torch.save(saved, checkpoint)
    out = tmp_path / "published"
    assert wtours("export", str(checkpoint), "--out", str(out))[0] == 0
    for name in ("config.json", "README.md"):
        text = (out / name).read_text()
        for secret in ("hf_SECRET", "pa55word", "t0ps3cret", str(tmp_path), "/home/walker"):
            assert secret not in text, (name, secret)
    train = json.loads((out / "config.json").read_text())["wtours"]["train_config"]
    assert train["out"] == "demo" and train["root"] == "review-demo" and train["init_from"] == "dino.pth"
    assert train["shards"] == ["pipe:curl *** https://h.example/a-{0..3}.tar",  # the allow-list: wtours.redact.shown
                               "https://***@h.example/walks/b-{0..3}.tar", "https://h.example/c.tar?***", "walk"]
    card = (out / "README.md").read_text()
    # honest: what was cut must be given again, and the run did not start from scratch
    assert "`wtours train --config config.json` reruns them" not in card and "--out DIR --root DIR" in card
    assert "initialised from the checkpoint `dino.pth` (`--init-from`)" in card and "from scratch" not in card


def test_the_card_reports_the_knn_of_the_checkpoints_step_not_a_later_one(tmp_path):
    checkpoint = write_run(tmp_path / "run")
    log = checkpoint.parent / "log.jsonl"
    log.write_text(log.read_text().rsplit("\n", 1)[0] + "\n" + json.dumps(
        {"step": 40, "epoch": 4, "knn_top1": 99.0, "knn_top5": 99.5}) + "\n")  # the run went on after it
    assert wtours("export", str(checkpoint), "--out", str(tmp_path / "a"))[0] == 0
    card = (tmp_path / "a" / "README.md").read_text()
    assert "| logged by the run at step 30 | `train` / `val` | 43.75 | 81.50 |" in card and "99.00" not in card
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines if line.get("step") != 30))
    assert wtours("export", str(checkpoint), "--out", str(tmp_path / "b"))[0] == 0
    card = (tmp_path / "b" / "README.md").read_text()  # none at step 30: the last before it, saying so
    assert "| logged by the run at step 20 (the checkpoint is of step 30) | `train` / `val` | 41.50 |" in card


def test_the_card_reports_the_probe_and_davis_of_the_checkpoints_step(tmp_path):
    """`--eval-every` lines: the card takes the linear probe's and DAVIS's figures of the checkpoint's step (30),
    never the later ones; with none at step 30, the last one before it, naming both steps; a failed
    evaluation's line (`_error`) holds no figures."""
    checkpoint = write_run(tmp_path / "run", knn=False)
    saved = torch.load(checkpoint)
    saved["config"] |= {"linear_train": "/home/walker/pets/train", "linear_val": "/home/walker/pets/val",
                        "davis": "/home/walker/DAVIS"}
    torch.save(saved, checkpoint)
    lines = [{"step": 20, "epoch": 2, "linear_top1": 30.0, "linear_top5": 70.0, "linear_epochs": 10,
              "linear_mode": "fast"}, {"step": 20, "epoch": 2, "davis_jf": 0.25, "davis_j": 0.2, "davis_f": 0.3,
                                       "davis_sequences": 3},
             {"step": 30, "epoch": 3, "linear_top1": 35.5, "linear_top5": 75.25, "linear_epochs": 10,
              "linear_mode": "fast"}, {"step": 30, "epoch": 3, "davis_error": "RuntimeError: out of memory"},
             {"step": 40, "epoch": 4, "linear_top1": 99.0, "linear_top5": 99.5, "linear_epochs": 10},
             {"step": 40, "epoch": 4, "davis_jf": 0.99, "davis_j": 0.99, "davis_f": 0.99, "davis_sequences": 3}]
    (checkpoint.parent / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert wtours("export", str(checkpoint), "--out", str(tmp_path / "a"))[0] == 0
    card = (tmp_path / "a" / "README.md").read_text()
    assert ("| short linear probe (fast mode: features computed once, no augmentation, 10 epochs; not the authors' "
            "protocol) | `train` / `val` | step 30 | top-1 35.50 %, top-5 75.25 % |") in card
    assert ("| DAVIS-2017 label propagation (3 val sequences) | `DAVIS` | step 20 (the checkpoint is of step 30) | "
            "J&F-Mean 0.250 (J-Mean 0.200, F-Mean 0.300) |") in card
    assert "99.00" not in card and "0.990" not in card and "/home/walker" not in card


def test_datasets_are_linked_from_pulled_sets_and_from_the_option(tmp_path):
    """A run on local shards pulled from the Hub (source.json's "pulled_from", untrusted: checked) and
    --dataset name the dataset repo in the card's metadata and training-data section."""
    root = tmp_path / "root"
    checkpoint = write_run(tmp_path / "run", knn=False)
    saved = torch.load(checkpoint)
    saved["config"] |= {"shards": ["venice", "zurich", "rome"], "root": str(root)}
    torch.save(saved, checkpoint)
    for slug, origin in (("venice", {"repo": "alice/walks", "revision": "v1"}), ("zurich", {"repo": "../../etc"}),
                         ("rome", "alice/x")):
        (root / "shards" / slug).mkdir(parents=True)
        (root / "shards" / slug / "source.json").write_text(json.dumps({"slug": slug, "pulled_from": origin}))
    out = tmp_path / "linked"
    code, _, stderr = wtours("export", str(checkpoint), "--out", str(out), "--dataset", "bob/more@main",
                             "--license", "apache-2.0")
    assert code == 0, stderr
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["datasets"] == ["bob/more", "alice/walks"] and meta["license"] == "apache-2.0"
    assert "[alice/walks](https://huggingface.co/datasets/alice/walks) (revision `v1`)" in card
    assert "../../etc" not in card and "CC-BY 4.0" not in card
    config = json.loads((out / "config.json").read_text())
    assert config["wtours"]["datasets"] == [{"repo": "bob/more", "revision": "main"},
                                            {"repo": "alice/walks", "revision": "v1"}]
    for args, message in ((["--dataset", "../x"], "is not a Hub repository name"),
                          (["--license", "CC BY"], "is not a licence id")):
        code, _, stderr = wtours("export", str(checkpoint), "--out", str(tmp_path / "bad"), *args)
        assert code == 2 and message in stderr and not (tmp_path / "bad").exists()


def test_a_bare_backbone_is_labelled_as_such_and_has_no_student(tmp_path):
    bare = tmp_path / "exported.pth"
    torch.save(create_vit("vit_micro").state_dict(), bare)
    code, _, stderr = wtours("export", str(bare), "--out", str(tmp_path / "s"), "--which", "student")
    assert code == 2 and "bare backbone" in stderr and not (tmp_path / "s").exists()
    assert wtours("export", str(bare), "--out", str(tmp_path / "t"))[0] == 0
    card = (tmp_path / "t" / "README.md").read_text()
    assert "an exported backbone (which network" in card and "the teacher (" not in card and "from scratch" not in card
    assert json.loads((tmp_path / "t" / "config.json").read_text())["wtours"]["which"] == "backbone"


@pytest.mark.parametrize("command", [["export", "CKPT", "--out", "s3://bucket/model"],
                                     ["export", "CKPT", "--out", "s3://bucket/model.pth"],
                                     ["card", "--city", "walk", "--repo", "alice/w", "--out",
                                      "hf://datasets/alice/w/README.md"]])
def test_an_out_that_is_a_url_is_refused(run_checkpoint, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = wtours(*[str(run_checkpoint) if a == "CKPT" else a for a in command])
    assert code == 2 and "is a URL" in stderr and "hint:" in stderr
    assert list(tmp_path.iterdir()) == []  # no ./s3:/ or ./hf:/ folder


def test_a_dotted_folder_name_is_a_timm_folder_readable_like_the_rest(run_checkpoint, tmp_path):
    out = tmp_path / "venice-vits16-v0.1"
    code, stdout, stderr = wtours("export", str(run_checkpoint), "--out", str(out), "-q")
    assert code == 0, stderr
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    # as the umask allows, the weights like the rest (safetensors creates its file 0600)
    assert modes == dict.fromkeys(["model.safetensors", "config.json", "README.md"], 0o666 & ~umask)
    assert timm.create_model(f"local-dir:{out}", pretrained=True).num_features == 96


def test_resume_takes_the_model_from_the_checkpoint_without_config_json(tmp_path):
    """A folder with only a copied checkpoint: its own saved settings, and a hint naming a file that exists."""
    checkpoint = write_run(tmp_path / "copied", knn=False)
    (checkpoint.parent / "config.json").write_text(json.dumps({"model": {"arch": "vit_small"}}))  # stale
    run = config_from_args(["--shards", "walk", "--out", str(checkpoint.parent), "--resume"])
    assert run.model.arch == "vit_micro" and run.model.out_dim == 64  # the checkpoint's, over config.json
    (checkpoint.parent / "config.json").unlink()
    assert config_from_args(["--shards", "walk", "--out", str(checkpoint.parent), "--resume"]).model.out_dim == 64
    with pytest.raises(WtoursError, match="another shape") as error:
        config_from_args(["--shards", "walk", "--out", str(checkpoint.parent), "--resume", "--arch", "vit_tiny"])
    assert str(checkpoint) in error.value.hint and "config.json" not in error.value.hint
