"""`wtours stats --detector owlv2`: the vocabulary files, the box selection on known scores, and a tiny random
OWLv2 saved with save_pretrained and loaded the way the real weights are (a folder, or huggingface_hub's cache)."""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.cli import assert_clean_error, run_wtours_process
from wtours.errors import UsageError, WtoursError
from wtours.fetch.local import add_local
from wtours.layout import Layout
from wtours.stats.classes import detect_stage, load_detector
from wtours.stats.owlv2 import PROMPT, Owlv2Detector, select
from wtours.stats.params import OWLV2_MODEL, AnalysisParams, DetectorParams, StatsConfig
from wtours.stats.run import compare, stats_video
from wtours.stats.vocabulary import LVIS_FILE, query_text, read_vocabulary

transformers = pytest.importorskip("transformers")

IMAGE, PATCH = 64, 16  # the tiny model sees 64x64 pixels: (64/16)^2 = 16 boxes per frame
BOXES = (IMAGE // PATCH) ** 2
NAMES = ["red car", "dog", "trash_can"]


# ------------------------------------------------------------------ vocabulary


def test_lvis_vocabulary_ships_the_1203_categories():
    vocabulary = read_vocabulary(None)
    assert vocabulary.name == "LVIS v1" and len(vocabulary.classes) == 1203 == len(set(vocabulary.classes))
    # Spot checks against LVIS v1's category ids (line order is id order, from 1).
    assert vocabulary.classes[0] == "aerosol_can" and vocabulary.classes[79] == "cow"
    assert vocabulary.classes[-1] == "zucchini" and "trash_can" in vocabulary.classes
    assert vocabulary.sha256 == hashlib.sha256(LVIS_FILE.read_bytes()).hexdigest()
    assert vocabulary.thresholds == (None,) * 1203 and vocabulary.label == "LVIS v1 (1203 classes)"
    assert "CC BY 4.0" in LVIS_FILE.read_text().splitlines()[3]  # the source and licence travel with the names
    assert query_text("bat_(animal)") == "bat (animal)"


def test_vocabulary_file_names_thresholds_and_comments(tmp_path):
    path = tmp_path / "street.txt"
    path.write_text("# street things\n\nperson\n  traffic   light \t0.3\nbicycle\t\n", encoding="utf-8")
    vocabulary = read_vocabulary(path)
    assert vocabulary.classes == ("person", "traffic light", "bicycle")
    assert vocabulary.thresholds == (None, 0.3, None) and vocabulary.threshold_of(0.2) == [0.2, 0.3, 0.2]
    assert vocabulary.name == "street.txt" and vocabulary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("text, message", [
    ("person\ncar\nperson\n", "line 3: the class 'person' is listed twice"),
    ("person\tmany\n", "line 1: the threshold 'many' of 'person' is not a score in 0..1"),
    ("person\t1.5\n", "not a score in 0..1"),
    ("person\tnan\n", "not a score in 0..1"),
    ("# nothing\n\n", "lists no class names"),
    ("a\x07bell\n", "line 1: not a class name"),
])
def test_bad_vocabulary_files_are_refused_by_line(tmp_path, text, message):
    path = tmp_path / "v.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WtoursError, match=message):
        read_vocabulary(path)


def test_unreadable_vocabulary_is_refused(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for path in (tmp_path / "latin1.txt", tmp_path / "missing.txt"):
        with pytest.raises(WtoursError, match="cannot read the vocabulary file") as error:
            read_vocabulary(path)
        assert "UTF-8" in error.value.hint


def test_a_vocabulary_needs_the_open_vocabulary_detector(names_file):
    with pytest.raises(UsageError, match="--vocabulary applies to --detector owlv2"):
        load_detector(DetectorParams(vocabulary=names_file, device="cpu"))


# ------------------------------------------------------------------ selection on known scores


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_select_keeps_each_box_best_class_over_its_threshold_then_nms():
    # 5 boxes x 3 classes; scores (sigmoid) chosen so each rule decides one box.
    scores = torch.tensor([[0.90, 0.20, 0.10],   # box 0: class 0 at 0.9
                           [0.80, 0.10, 0.10],   # box 1: class 0 at 0.8, on top of box 0 -> suppressed
                           [0.10, 0.70, 0.10],   # box 2: class 1 at 0.7, on top of box 0 but another class: kept
                           [0.10, 0.10, 0.35],   # box 3: class 2 at 0.35: under the default 0.5, over its own 0.3
                           [0.45, 0.40, 0.10]])  # box 4: best class 0 at 0.45: under 0.5 (class 1 is not asked)
    logits = torch.logit(scores)
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.51, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4],
                          [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]])  # centre x, centre y, width, height
    thresholds = torch.tensor([0.5, 0.5, 0.3])
    kept = select(logits, boxes, thresholds, nms_iou=0.5)
    assert [label for label, _ in kept] == [0, 1, 2]
    assert [score for _, score in kept] == pytest.approx([0.9, 0.7, 0.35])
    assert [label for label, _ in select(logits, boxes, thresholds, nms_iou=1.0)] == [0, 0, 1, 2]  # no NMS
    assert select(logits, boxes, torch.tensor([0.95, 0.95, 0.95]), nms_iou=0.5) == []


# ------------------------------------------------------------------ a tiny OWLv2, saved and loaded


def save_tiny_owlv2(folder: Path, seed: int = 0, construct=None) -> Path:
    """A random OWLv2 of the real architecture at toy size, with a CLIP tokenizer over letters, saved as
    `hf download` would leave the real one. `construct(model)` may set weights before saving."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(seed)
    letters = list(string.ascii_lowercase + "()-'.")
    vocab = {"!": 0, **{t: i + 1 for i, t in enumerate(letters + [c + "</w>" for c in letters])}}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the highest id: the text model pools at the argmax token
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=24, bos_token_id=len(vocab) - 2,
                         eos_token_id=len(vocab) - 1, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE, patch_size=PATCH),
        projection_dim=16)
    model = Owlv2ForObjectDetection(config).eval()
    if construct is not None:
        with torch.no_grad():
            construct(model)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": IMAGE, "width": IMAGE}),
                               tokenizer=CLIPTokenizer(vocab=vocab, merges=[], pad_token="!"))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_owlv2(tmp_path_factory) -> Path:
    return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture
def names_file(tmp_path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    return path


def frames(count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(count)]


def test_saved_owlv2_matches_the_models_own_forward_with_text_embedded_once(tiny_owlv2, names_file):
    detector = load_detector(DetectorParams(name="owlv2", weights=tiny_owlv2, vocabulary=names_file, device="cpu"))
    assert isinstance(detector, Owlv2Detector) and detector.queries.shape == (len(NAMES), 16)
    assert detector.settings["model"] == str(tiny_owlv2) and detector.settings["vocabulary_classes"] == 3
    assert detector.score_threshold == 0.1  # owlv2's default
    text_calls = []
    detector.model.owlv2.text_model.register_forward_hook(lambda *args: text_calls.append(1))
    batch = frames(3)
    logits, boxes = detector.scores(batch)  # (3, 16, 3), (3, 16, 4)
    detector.detect(batch)
    assert text_calls == []  # every frame reuses the run's text embeddings
    # The reference: transformers' own forward, text and image together, per the model card's usage.
    inputs = detector.processor(text=[[PROMPT.format(query_text(n)) for n in NAMES]] * 3, images=batch,
                                return_tensors="pt", padding="max_length", max_length=24)
    with torch.inference_mode():
        reference = detector.model(**inputs)
    assert logits.shape == (3, BOXES, 3) and boxes.shape == (3, BOXES, 4)
    torch.testing.assert_close(logits, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(boxes, reference.pred_boxes)


def test_batches_give_the_same_detections_as_single_frames(tiny_owlv2, names_file):
    detector = load_detector(DetectorParams(name="owlv2", weights=tiny_owlv2, vocabulary=names_file, device="cpu",
                                            score_threshold=0.0, nms_iou=0.3))
    batch = frames(5, seed=2)
    single = [found for _, found in detect_stage(batch, detector, 1, frame_of=lambda f: f)]
    batched = [found for _, found in detect_stage(batch, detector, 4, frame_of=lambda f: f)]
    assert [f.labels for f in single] == [f.labels for f in batched]
    np.testing.assert_allclose([s for f in single for s in f.scores], [s for f in batched for s in f.scores],
                               atol=2e-4)
    assert all(0 < f.objects <= BOXES for f in single)


def same_score_everywhere(model, one_box: bool) -> None:
    """Every box scores sigmoid(1) = 0.731 for every class: no image term in the class logits (dense0 = 0
    makes the image-text similarity 0; logit = (0 + shift 1) * (elu(0) + 1)), so each box's best class is the
    first of the vocabulary. Boxes: the patch grid itself (no two overlap), or with `one_box` every box the
    same (centre pushed to 0, width and height to 1)."""
    head = model.class_head
    for layer in (head.dense0, head.logit_shift, head.logit_scale):
        layer.weight.zero_()
        layer.bias.zero_()
    head.logit_shift.bias.fill_(1.0)
    model.box_head.dense2.weight.zero_()
    model.box_head.dense2.bias.copy_(torch.tensor([-20.0, -20.0, 20.0, 20.0] if one_box else [0.0] * 4))


@pytest.mark.parametrize("one_box, expected_objects", [(False, BOXES), (True, 1)])
def test_known_scores_give_known_counts(tmp_path, names_file, one_box, expected_objects):
    folder = save_tiny_owlv2(tmp_path / "known", construct=lambda m: same_score_everywhere(m, one_box))
    score = 1 / (1 + np.exp(-1.0))  # 0.731
    params = DetectorParams(name="owlv2", weights=folder, vocabulary=names_file, device="cpu", score_threshold=0.7)
    found = load_detector(params).detect(frames(2))
    assert [(f.objects, f.classes) for f in found] == [(expected_objects, 1)] * 2
    assert set(found[0].labels) == {NAMES[0]} and found[0].scores[0] == pytest.approx(score, abs=1e-4)
    above = DetectorParams(name="owlv2", weights=folder, vocabulary=names_file, device="cpu", score_threshold=0.75)
    assert [f.objects for f in load_detector(above).detect(frames(2))] == [0, 0]
    # A threshold of the first class's own, in the vocabulary file, overrides the run's for that class only.
    names_file.write_text(f"{NAMES[0]}\t0.8\n" + "\n".join(NAMES[1:]) + "\n", encoding="utf-8")
    own = load_detector(params)
    assert own.settings["class_thresholds"] == {NAMES[0]: 0.8}
    assert [f.objects for f in own.detect(frames(2))] == [0, 0]


def test_owlv2_counts_in_the_summary_and_the_corpus_union(tiny_owlv2, names_file, small_video, tmp_path):
    layout = Layout(tmp_path / "root")
    for name in ("one", "two"):
        add_local(small_video, name, layout.root, mode="symlink", say=lambda m: None)
    params = DetectorParams(name="owlv2", weights=tiny_owlv2, vocabulary=names_file, device="cpu",
                            score_threshold=0.4, batch_size=3)
    detector = load_detector(params)
    config = StatsConfig(analysis=AnalysisParams(source="video", every=1.0), detector=params, progress=False)
    summaries = [stats_video(layout, name, config, detector=detector, say=lambda m: None).summary
                 for name in ("one", "two")]
    classes = summaries[0]["classes"]
    assert classes["detector"] == "owlv2" and classes["vocabulary"] == "names.txt (3 classes)"
    assert classes["vocabulary_sha256"] == hashlib.sha256(names_file.read_bytes()).hexdigest()
    assert classes["score_threshold"] == 0.4 and classes["nms_iou"] == 0.5 and classes["prompt"] == PROMPT
    assert classes["model"] == str(tiny_owlv2) and classes["revision"] is None
    assert summaries[0]["source"]["every"] == 1.0
    table = pd.read_parquet(layout.stats_dir("one") / "frames.parquet")
    assert set(name for labels in table["labels"] for name in labels) <= set(NAMES)
    assert classes["unique"] == len({name for labels in table["labels"] for name in labels})
    compare(layout, None, say=lambda m: None)
    corpus = pd.read_csv(layout.stats_base(None) / "corpus.csv").set_index("video")
    union = {row["name"] for s in summaries for row in s["classes"]["table"]}
    assert list(corpus.index) == ["one", "two", "(corpus)"]
    assert corpus.loc["(corpus)", "unique_classes"] == len(union)
    assert corpus.loc["(corpus)", "frames"] == sum(s["frames"] for s in summaries)
    assert (layout.stats_base(None) / "corpus_unique_classes.png").stat().st_size > 1000
    table = pd.read_csv(layout.stats_base(None) / "corpus_classes.csv").set_index("name")
    assert set(table.index) == union
    for name in union:
        rows = [row for s in summaries for row in s["classes"]["table"] if row["name"] == name]
        assert table.loc[name, "objects"] == sum(row["objects"] for row in rows)
        assert table.loc[name, "videos"] == len(rows)
        share = sum(row["frames"] for row in rows) / corpus.loc["(corpus)", "frames"]
        assert table.loc[name, "frame_share"] == pytest.approx(share, abs=1e-6)


# ------------------------------------------------------------------ weights from huggingface_hub's cache


def cached_copy(cache: Path, folder: Path, revision: str) -> None:
    """`folder` laid out in a huggingface_hub cache as a download of OWLV2_MODEL at `revision` leaves it."""
    repo = cache / ("models--" + OWLV2_MODEL.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


@pytest.mark.slow
def test_weights_come_from_the_hub_cache_or_stop_before_any_frame(tiny_owlv2, names_file, small_video, tmp_path):
    root, cache = tmp_path / "root", tmp_path / "hub"
    add_local(small_video, "walk", root, mode="symlink", say=lambda m: None)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = ["stats", "--city", "walk", "--root", root, "--from", "video", "--every", "1", "--detector", "owlv2",
            "--vocabulary", names_file, "--device", "cpu", "-q"]
    missing = run_wtours_process(args, env=env)
    assert_clean_error(missing, 1, OWLV2_MODEL)
    for part in (OWLV2_MODEL, str(cache), "--weights DIR"):
        assert part in missing.stderr
    assert not (root / "stats").exists(), missing.stderr  # stopped before reading a frame
    revision = "0123456789abcdef0123456789abcdef01234567"
    cached_copy(cache, tiny_owlv2, revision)
    done = run_wtours_process(args, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((root / "stats" / "walk" / "summary.json").read_text())
    assert summary["classes"]["model"] == OWLV2_MODEL and summary["classes"]["revision"] == revision
