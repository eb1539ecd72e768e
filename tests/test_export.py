"""`wtours export` to timm (a model folder, real timm loading it), its model card, the format/--out rules,
and `wtours train --resume` taking the model from the run (docs/models.md)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from wtours.cli.main import cli
from wtours.cli.train_cmd import config_from_args
from wtours.clips.augment import IMAGENET_MEAN, IMAGENET_STD
from wtours.dora.config import DoRAConfig
from wtours.errors import WtoursError
from wtours.eval.backbone import load_backbone
from wtours.models.registry import HeadConfig, vit_config, vit_names
from wtours.models.vit import VisionTransformer, create_vit
from wtours.train.config import TrainConfig
from wtours.train.export import Geometry, resolve_format, timm_config

timm = pytest.importorskip("timm")

HF_SHARDS = "hf://datasets/alice/walks/venice/venice-{000000..000003}.tar"


def wtours(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
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
    (tmp_path / "config.json").write_text(json.dumps(timm_config(
        Geometry(arch, c.patch_size, c.dim, c.depth, c.heads, c.mlp_ratio, c.image_size), {"arch": arch})))
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
    config = json.loads((out / "config.json").read_text())
    assert config["wtours"]["train_config"]["model"]["arch"] == "vit_micro" and config["wtours"]["step"] == 30


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
def test_a_real_run_resumes_without_its_model_options_and_exports_to_timm(tmp_path_factory):
    from tests.videos import sharded_root

    folder = tmp_path_factory.mktemp("resume-export")
    root = sharded_root(folder, seconds=10.0, samples_per_shard=10)
    out = folder / "run"
    common = [sys.executable, "-m", "wtours", "train", "--shards", "walk", "--root", str(root), "--out", str(out),
              "--batch-size", "2", "--clip-frames", "2", "--workers", "0", "--log-every", "1"]
    model = ["--arch", "vit_micro", "--out-dim", "64", "--n-local", "2"]
    first = subprocess.run([*common, *model, "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([*common, "--steps", "2", "--resume", "--reschedule"], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert "at step 1" in second.stdout
    other = subprocess.run([*common, "--steps", "2", "--resume", "--arch", "vit_tiny"], capture_output=True,
                           text=True, timeout=300)
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
              "wtours": {"arch": "vit_micro`", "step": "abc", "parameters": "many", "which": "student`",
                         "train_config": {"shards": shards, "out": "/secret/place"},
                         "knn_logged": {"top1": "high", "top5": 1}, "knn_eval": ["not", "a", "dict"]}}
    assert hub_datasets(config["wtours"]["train_config"]) == [("alice/ok", "v1"), ("alice/ok", None)]
    card = render_model_card(config, repo="alice/m")
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", card, flags=re.S))  # outside code: markup
    assert "javascript:" not in prose and "../../etc" not in prose and "a--b" not in prose
    assert "[alice/ok](https://huggingface.co/datasets/alice/ok) (revision `v1`)" in card
    assert "k-NN evaluation" not in card and "/secret" not in card and "abc" not in card
