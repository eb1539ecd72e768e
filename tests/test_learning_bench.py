"""benchmarks/learning_bench.py: its rendered label-propagation set is a DAVIS set, and the whole bench runs at a
budget of two steps (real shards of the street footage, real training, the real evaluations), so it cannot rot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import learning_bench
from wtours.eval.davis import check_sequence, read_labels, read_layout
from wtours.models.checkpoint import read_weights


def test_rendered_sequences_are_a_davis_set_with_two_moving_objects(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (288, 384, 3), dtype=np.uint8) for _ in range(5)]
    davis = learning_bench.render_davis(tmp_path / "DAVIS", frames, sequences=2, length=6)
    sequences = read_layout(davis)
    assert [s.name for s in sequences] == ["street0", "street1"]
    for sequence in sequences:
        check_sequence(sequence)  # palette PNGs, sizes, annotations paired with frames
        labels = [read_labels(path) for path in sequence.annotations]
        assert len(labels) == 6 and labels[0].shape == (learning_bench.SEQ_H, learning_bench.SEQ_W)
        assert set(np.unique(labels[0])) == {0, 1, 2}  # both objects in the first frame, to be propagated
        assert all(set(np.unique(m)) <= {0, 1, 2} for m in labels)
        for label in (1, 2):  # every object moves
            assert not np.array_equal(labels[0] == label, labels[-1] == label)
        # the objects' pixels are pieces of the frames given: no colour of their own
        image = np.asarray(Image.open(sequence.frames[0]).convert("RGB")).astype(float)
        assert abs(image[labels[0] > 0].mean() - image[labels[0] == 0].mean()) < 10


@pytest.mark.slow
def test_bench_runs_at_a_tiny_budget(tmp_path, capsys):
    pytest.importorskip("sklearn")
    work = tmp_path / "work"
    result = learning_bench.main(["--steps", "2", "--batch-size", "2", "--frames", "2", "--out-dim", "256",
                                  "--fps", "2", "--sequences", "1", "--length", "4", "--probe-epochs", "2",
                                  "--workers", "1", "--device", "cpu", "--work", str(work)])
    assert result["steps"] == 2
    assert result["init"].keys() == result["trained"].keys()
    for figures in (result["init"], result["trained"]):
        assert all(0 <= value <= 100 for value in figures.values())
    assert 0 <= result["colour_jf"] <= 100
    table = capsys.readouterr().out
    assert "budget: 2 steps" in table and "k-NN top-1 (digits)" in table and "J&F-Mean" in table
    initial, trained = read_weights(work / "init.pth"), read_weights(work / "run/checkpoint.pth")
    assert initial["teacher"].keys() == trained["teacher"].keys()
    assert any(not torch.equal(initial["teacher"][k], trained["teacher"][k]) for k in initial["teacher"])
    assert not [p for p in work.rglob("*") if ".tmp" in p.name]  # no temporaries left
    # a rerun starts afresh in the same work folder (the shards are reused); one step runs at the warm-up's lr 0,
    # so its teacher is still the initial one: init.pth holds the weights `wtours train` starts from
    assert learning_bench.main(["--steps", "1", "--batch-size", "2", "--frames", "2", "--out-dim", "256",
                                "--fps", "2", "--sequences", "1", "--length", "4", "--probe-epochs", "1",
                                "--workers", "1", "--device", "cpu", "--work", str(work)])["steps"] == 1
    initial, trained = read_weights(work / "init.pth"), read_weights(work / "run/checkpoint.pth")
    for name, weights in initial["teacher"].items():
        torch.testing.assert_close(trained["teacher"][name], weights, rtol=0, atol=1e-6)
