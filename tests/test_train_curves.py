"""A training run draws its curves beside its log (loss.png): the loss, and the evaluations during training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_viz import train_tiny
from wtours.train.curves import COLOURS, PANEL_HEIGHT, WIDTH, read_curves, write_curves


def write_log(out: Path, lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").write_text("\n".join(lines) + "\n")


def colour_share(image: Image.Image, colour: tuple[int, int, int]) -> float:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return float((pixels == np.array(colour)).all(axis=1).mean())


def test_the_log_is_drawn_with_a_panel_for_the_evaluations(tmp_path):
    train = [json.dumps({"step": s, "epoch": 0, "loss": 5.0 - 0.1 * s, "loss_mean": 5.05 - 0.1 * s, "lr": 1e-3})
             for s in range(1, 21)]
    evals = [json.dumps({"step": s, "epoch": 1, "knn_top1": 10.0 + s, "knn_top5": 30.0 + s}) for s in (10, 20)]
    write_log(tmp_path, [*train, *evals, '{"step": 21, "loss": 4.'])  # a last line cut short by a kill
    curves = read_curves(tmp_path / "log.jsonl")
    assert list(curves) == ["loss_mean", "loss", "knn_top1", "knn_top5"]  # the drawing order
    assert curves["loss"][0] == (1, 4.9) and len(curves["loss"]) == 20
    assert curves["knn_top1"] == [(10, 20.0), (20, 30.0)]
    path = write_curves(tmp_path)
    image = Image.open(path)
    assert path == tmp_path / "loss.png" and image.size == (WIDTH, 2 * PANEL_HEIGHT)
    loss_panel, eval_panel = image.crop((0, 0, WIDTH, PANEL_HEIGHT)), image.crop((0, PANEL_HEIGHT, WIDTH,
                                                                                   2 * PANEL_HEIGHT))
    assert colour_share(loss_panel, COLOURS[0]) > 0.002 and colour_share(loss_panel, COLOURS[1]) > 0.002
    assert colour_share(eval_panel, COLOURS[0]) > 0.001 and colour_share(eval_panel, COLOURS[1]) > 0.001
    write_log(tmp_path / "plain", train)
    assert Image.open(write_curves(tmp_path / "plain")).size == (WIDTH, PANEL_HEIGHT)  # no evaluation: one panel


@pytest.mark.slow
def test_a_real_run_writes_its_curve_beside_its_log(canonical_roots, tmp_path):
    root = canonical_roots.copy("walk-12s", tmp_path / "root")
    out = tmp_path / "run"
    done = train_tiny(root, out, "--steps", "3")
    assert done.returncode == 0, done.stderr
    assert f"curves {out / 'loss.png'}" in done.stdout
    image = Image.open(out / "loss.png")
    assert image.size == (WIDTH, PANEL_HEIGHT) and colour_share(image, COLOURS[1]) > 0.001  # loss, over loss_mean
    again = train_tiny(root, out, "--steps", "3")  # loss.png is the run's own: a second run must be told what to do
    assert again.returncode == 2 and "already holds a training run" in again.stderr
