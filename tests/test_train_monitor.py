"""`wtours train --eval-every N` with k-NN, the short linear probe and DAVIS data: each evaluation's figures in
log.jsonl and TensorBoard at the right steps, on the exported model card at the checkpoint's step; bad evaluation
data refused before training starts; an evaluation failing mid-run logged while the training goes on; old run
folders' --knn-every kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import assert_clean_error, run_wtours
from tests.conftest import write_digits
from tests.test_eval_davis import render_davis
from tests.test_viz import TINY, train_tiny
from wtours.config import build
from wtours.errors import UsageError, WtoursError
from wtours.train import folder
from wtours.train.config import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Every 8th digit (k-NN and linear probe sets) and a two-sequence DAVIS-layout folder."""
    base = tmp_path_factory.mktemp("monitor-data")
    train, val = write_digits(base / "digits", every=8)
    return {"train": train, "val": val, "davis": render_davis(base / "DAVIS")}


def evaluations(data: dict[str, Path]) -> list[str]:
    return ["--knn-train", str(data["train"]), "--knn-val", str(data["val"]), "--linear-train", str(data["train"]),
            "--linear-val", str(data["val"]), "--linear-epochs", "3", "--davis", str(data["davis"]),
            "--davis-sequences", "walk"]


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_each_evaluation_logged_at_its_steps_and_on_the_card(data, canonical_roots, tmp_path):
    """3 steps of one step per epoch, --eval-every 2: every evaluation after epoch 2 (step 2) and at the end
    (step 3), its figures in log.jsonl and TensorBoard with the step; the card of the step-3 checkpoint
    reports the step-3 figures."""
    root = canonical_roots.copy("walk-12s", tmp_path / "root")
    out = tmp_path / "run"
    done = train_tiny(root, out, "--steps", "3", "--eval-every", "2", *evaluations(data))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["steps_per_epoch"] == 1
    lines = log_lines(out)
    figures = {name: [r for r in lines if f"{name}_{key}" in r]
               for name, key in (("knn", "top1"), ("linear", "top1"), ("davis", "jf"))}
    for name, logged in figures.items():
        assert [(r["step"], r["epoch"]) for r in logged] == [(2, 1), (3, 2)], name
    assert all(set(r) == {"step", "epoch", "knn_top1", "knn_top5"} for r in figures["knn"])
    for r in figures["linear"]:
        assert (r["linear_epochs"], r["linear_mode"]) == (3, "fast") and 0 <= r["linear_top1"] <= r["linear_top5"]
    for r in figures["davis"]:
        assert r["davis_sequences"] == 1 and 0 < r["davis_j"] <= 1 and r["davis_jf"] == pytest.approx(
            (r["davis_j"] + r["davis_f"]) / 2)
    assert not any(k.endswith("_error") for r in lines for k in r)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for tag, key, name in (("knn/top1", "knn_top1", "knn"), ("linear/top5", "linear_top5", "linear"),
                           ("davis/jf", "davis_jf", "davis")):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [
            (r["step"], pytest.approx(r[key])) for r in figures[name]]
    assert "step 2: linear probe (short: fast mode, 3 epochs)" in done.stdout and "DAVIS J&F-Mean" in done.stdout
    plain = train_tiny(root, tmp_path / "plain", "--steps", "3")  # the evaluations leave the training's randomness
    assert plain.returncode == 0, plain.stderr
    losses = [[r["loss"] for r in log if "loss" in r] for log in (lines, log_lines(tmp_path / "plain"))]
    assert losses[0] == losses[1]

    assert run_wtours(["export", str(out / "checkpoint.pth"), "--out", str(tmp_path / "model")]).exit_code == 0
    card = (tmp_path / "model" / "README.md").read_text()
    linear, davis, knn = figures["linear"][-1], figures["davis"][-1], figures["knn"][-1]
    assert (f"| step 3 | top-1 {linear['linear_top1']:.2f} %, top-5 {linear['linear_top5']:.2f} % |" in card
            and "fast mode" in card and "3 epochs" in card)
    assert f"| `DAVIS` | step 3 | J&F-Mean {davis['davis_jf']:.3f} (J-Mean {davis['davis_j']:.3f}" in card
    assert f"| logged by the run at step 3 | `train` / `val` | {knn['knn_top1']:.2f} |" in card


@pytest.mark.slow
def test_an_evaluation_failing_mid_run_is_logged_and_training_goes_on(data, canonical_roots, tmp_path):
    """The k-NN val images replaced by bytes that are no image: the folder lists fine at the start, then
    the k-NN fails at each evaluation; it is warned about and logged, the probe still runs and the
    training ends with its checkpoint."""
    val = tmp_path / "val"
    for image in data["val"].rglob("*.png"):
        (val / image.parent.name).mkdir(parents=True, exist_ok=True)
        (val / image.parent.name / image.name).write_bytes(b"not a png")
    root = canonical_roots.copy("walk-12s", tmp_path / "root")
    out = tmp_path / "run"
    done = train_tiny(root, out, "--steps", "2", "--knn-train", str(data["train"]), "--knn-val", str(val),
                      "--linear-train", str(data["train"]), "--linear-val", str(data["val"]), "--linear-epochs", "1")
    assert done.returncode == 0, done.stderr
    lines = log_lines(out)
    failed = [r for r in lines if "knn_error" in r]
    assert [r["step"] for r in failed] == [1, 2] and "decodes" in failed[0]["knn_error"]
    assert [r["step"] for r in lines if "linear_top1" in r] == [1, 2]
    assert "step 1: knn evaluation failed: none of the 57 images" in done.stdout
    assert max(r["step"] for r in lines) == 2 and (out / "checkpoint.pth").is_file()
    # the val folder mended (the good one given), --resume continues from the checkpoint and evaluates again
    resumed = train_tiny(root, out, "--resume", "--reschedule", "--steps", "3", "--knn-train", str(data["train"]),
                         "--knn-val", str(data["val"]), "--linear-train", str(data["train"]), "--linear-val",
                         str(data["val"]), "--linear-epochs", "1")
    assert resumed.returncode == 0, resumed.stderr
    lines = log_lines(out)
    assert [r["step"] for r in lines if "knn_top1" in r] == [3] and len([r for r in lines if "knn_error" in r]) == 2
    assert json.loads((out / "config.json").read_text())["eval_every"] == 1


@pytest.mark.slow
def test_under_torchrun_rank_0_evaluates_and_a_refusal_stops_every_rank(data, canonical_roots, tmp_path):
    """Two processes: bad --davis data is refused on both ranks (exit 2, nothing created), none waits; with good
    data rank 0 evaluates while rank 1 waits, and each evaluation is logged once."""
    from tests.test_train import child_env, free_port

    root = canonical_roots.copy("walk-20s", tmp_path / "root")

    def torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "wtours", "train", "--shards", "walk", "--root", str(root),
               "--out", str(out), *TINY, "--steps", "2", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())

    refused = torchrun(tmp_path / "refused", "--davis", str(data["train"]))
    assert refused.returncode != 0 and refused.stderr.count("is not a DAVIS-2017 folder") == 2, refused.stderr
    assert not (tmp_path / "refused").exists()
    done = torchrun(tmp_path / "run", "--knn-train", str(data["train"]), "--knn-val", str(data["val"]),
                    "--linear-train", str(data["train"]), "--linear-val", str(data["val"]), "--linear-epochs", "1")
    assert done.returncode == 0, done.stderr
    lines = log_lines(tmp_path / "run")
    assert [r["step"] for r in lines if "knn_top1" in r] == [r["step"] for r in lines if "linear_top1" in r] == [2]


def break_data(data: dict[str, Path], tmp_path: Path, fault: str) -> list[str]:
    """The training options of a bad evaluation folder."""
    davis = tmp_path / "DAVIS"
    if fault == "knn folder absent":
        return ["--knn-train", str(tmp_path / "nowhere"), "--knn-val", str(data["val"])]
    if fault == "linear val class unknown":
        (tmp_path / "val" / "eleven").mkdir(parents=True)
        return ["--linear-train", str(data["train"]), "--linear-val", str(tmp_path / "val")]
    if fault == "linear train alone":
        return ["--linear-train", str(data["train"])]
    render_davis(davis)
    if fault == "davis unannotated frame":
        (davis / "Annotations/480p/walk/00002.png").unlink()
    elif fault == "davis not a davis folder":
        return ["--davis", str(data["train"])]
    elif fault == "davis sequence not listed":
        return ["--davis", str(davis), "--davis-sequences", "bike-packing"]
    elif fault == "davis sequences alone":
        return ["--davis-sequences", "walk"]
    elif fault == "both schedules":
        return ["--davis", str(davis), "--knn-every", "3", "--eval-every", "2"]
    return ["--davis", str(davis)]


@pytest.mark.parametrize("fault, phrase", [
    ("knn folder absent", "nowhere is not a labelled image folder"),
    ("linear val class unknown", "classes the train folder lacks: eleven"),
    ("linear train alone", "needs both --linear-train and --linear-val"),
    ("davis unannotated frame", "00002.png"),
    ("davis not a davis folder", "is not a DAVIS-2017 folder"),
    ("davis sequence not listed", "does not list bike-packing"),
    ("davis sequences alone", "--davis-sequences without --davis"),
    ("both schedules", "--knn-every 3 and --eval-every 2 contradict"),
])
def test_bad_evaluation_data_is_refused_before_training(data, canonical_roots, tmp_path, fault, phrase):
    root = canonical_roots.copy("walk-12s", tmp_path / "root")
    out = tmp_path / "run"
    err = assert_clean_error(train_tiny(root, out, "--steps", "1", *break_data(data, tmp_path, fault)), 2, phrase,
                             UsageError)
    assert err.count("error:") == 1
    assert not out.exists()  # refused before the run folder is made


def test_knn_every_of_older_runs_is_eval_every():
    """An older run's config.json (--knn-every, no --eval-every nor the newer options) loads and means the same
    schedule; a --resume of it changes no setting that it compares."""
    old = {"shards": ["walk"], "out": "runs/old", "knn_train": "t", "knn_val": "v", "knn_every": 5}
    config = build(TrainConfig, old)
    assert (config.eval_every, config.knn_every) == (5, None)
    assert folder.recorded(config)["eval_every"] == 5
    assert folder.changes(old, folder.flat_settings(folder.recorded(config))) == {}


def test_the_short_probe_of_a_folder_where_nothing_decodes_is_an_error(data, tmp_path):
    """Not a top-1 of 0 %: the probe says which folder holds no image that decodes (logged as linear_error)."""
    import torch

    from wtours.eval.config import LinearConfig
    from wtours.eval.data import labelled_pair
    from wtours.eval.linear import short_probe
    from wtours.models.vit import create_vit

    for split in ("train", "val"):
        (tmp_path / split / "0").mkdir(parents=True)
    image = next(data["train"].glob("0/*.png"))
    (tmp_path / "train/0" / image.name).write_bytes(image.read_bytes())
    (tmp_path / "val/0/0000.png").write_bytes(b"not a png")
    val = tmp_path / "val" / "0"
    config = LinearConfig(train=str(tmp_path / "train"), val=str(val.parent), workers=0)
    train, bad = labelled_pair(config.train, config.val, config.resize, config.crop)
    with pytest.raises(WtoursError, match=f"no image of {val.parent} decodes"):
        short_probe(create_vit("vit_micro").eval(), train, bad, 1, torch.device("cpu"), config)
