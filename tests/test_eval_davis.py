"""`wtours eval davis`: label propagation against a loop-style transcription of DINO's
eval_video_segmentation.py, J and F against transcriptions of davis2017-evaluation's metrics.py and utils.py
(and by hand), an end-to-end run on a DAVIS-layout folder rendered here, resuming, and each bad layout."""

from __future__ import annotations

import copy
import json
import os
import queue
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.morphology import disk as skimage_disk

from tests.cli import CliResult, assert_clean_error, run_wtours, run_wtours_process, start_wtours
from wtours.errors import UsageError, WtoursError
from wtours.eval.config import DavisConfig
from wtours.eval.davis import PALETTE, hard_labels, propagate_sequence
from wtours.eval.jf import boundary_f, region_similarity, sequence_measures, statistics
from wtours.layout import TEMPORARY_GLOB
from wtours.locks import folder_lock
from wtours.models.vit import create_vit

# ---- transcriptions of the reference code, loop by loop -------------------------------------------------------


def dino_restrict_neighborhood(h: int, w: int, size: int) -> torch.Tensor:
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * size + 1):
                for q in range(2 * size + 1):
                    if i - size + p < 0 or i - size + p >= h:
                        continue
                    if j - size + q < 0 or j - size + q >= w:
                        continue
                    mask[i, j, i - size + p, j - size + q] = 1
    return mask.reshape(h * w, h * w)


def dino_label_propagation(feat_tar, list_frame_feats, list_segs, h, w, n_mask, topk, mask_neighborhood):
    """feat_tar (h*w, dim); list_frame_feats [(dim, h*w)]; list_segs [(1, C, h, w)]."""
    return_feat_tar = feat_tar.T
    ncontext = len(list_frame_feats)
    feat_sources = torch.stack(list_frame_feats)
    feat_tar = F.normalize(feat_tar, dim=1, p=2)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)
    if n_mask > 0:
        if mask_neighborhood is None:
            mask_neighborhood = dino_restrict_neighborhood(h, w, n_mask).unsqueeze(0).repeat(ncontext, 1, 1)
        aff *= mask_neighborhood
    aff = aff.transpose(2, 1).reshape(-1, h * w)
    tk_val, _ = torch.topk(aff, dim=0, k=topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    segs = torch.cat(list_segs)
    nmb_context, C, h, w = segs.shape
    segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T
    seg_tar = torch.mm(segs, aff).reshape(1, C, h, w)
    return seg_tar, return_feat_tar, mask_neighborhood


def dino_video(features, first_seg, h, w, n_last_frames, n_mask, topk):
    """eval_video_tracking_davis's loop; features [(h*w, dim)] of every frame; the soft segs of frames 1..."""
    que = queue.Queue(n_last_frames)
    frame1_feat = features[0].T
    mask_neighborhood = None
    out = []
    for cnt in range(1, len(features)):
        used_frame_feats = [frame1_feat] + [pair[0] for pair in list(que.queue)]
        used_segs = [first_seg] + [pair[1] for pair in list(que.queue)]
        frame_tar_avg, feat_tar, mask_neighborhood = dino_label_propagation(
            features[cnt], used_frame_feats, used_segs, h, w, n_mask, topk, mask_neighborhood)
        if que.qsize() == n_last_frames:
            que.get()
        que.put([feat_tar, copy.deepcopy(frame_tar_avg)])
        out.append(frame_tar_avg)
    return out


def dino_upsample(frame_tar_avg, patch, ori_h, ori_w):
    frame_tar_avg = F.interpolate(frame_tar_avg, scale_factor=patch, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=False)[0]
    for cnt in range(frame_tar_avg.shape[0]):  # norm_mask
        mask_cnt = frame_tar_avg[cnt]
        if mask_cnt.max() > 0:
            mask_cnt = mask_cnt - mask_cnt.min()
            frame_tar_avg[cnt] = mask_cnt / mask_cnt.max()
    _, seg = torch.max(frame_tar_avg, dim=0)
    seg = seg.squeeze().cpu().numpy().astype(np.uint8)
    return np.array(Image.fromarray(seg).resize((ori_w, ori_h), 0))


def dino_read_frame(path: Path, short: int):
    img = cv2.imread(str(path))
    ori_h, ori_w, _ = img.shape
    if ori_h > ori_w:
        tw = short
        th = int(((tw * ori_h) / ori_w // 64) * 64)
    else:
        th = short
        tw = int(((th * ori_w) / ori_h // 64) * 64)
    img = cv2.resize(img, (tw, th)).astype(np.float32) / 255.0
    img = torch.from_numpy(np.transpose(img[:, :, ::-1].copy(), (2, 0, 1))).float()
    for t, m, s in zip(img, [0.485, 0.456, 0.406], [0.228, 0.224, 0.225]):
        t.sub_(m)
        t.div_(s)
    return img, ori_h, ori_w


def dino_read_seg(path: Path, factor: int, short: int):
    seg = Image.open(path)
    _w, _h = seg.size
    if _w > _h:
        _th = short
        _tw = int(((_th * _w) / _h // 64) * 64)
    else:
        _tw = short
        _th = int(((_tw * _h) / _w // 64) * 64)
    small = torch.from_numpy(np.array(seg.resize((_tw // factor, _th // factor), 0)).copy()).float()
    n_dims = int(small.max() + 1)
    one_hot = torch.zeros(small.numel(), n_dims).scatter_(1, small.long().view(-1, 1), 1)
    return one_hot.view(*small.shape, n_dims).permute(2, 0, 1).unsqueeze(0), np.asarray(seg)


def dino_sequence(model, frames: list[Path], first_annotation: Path, short: int, n_last, n_mask, topk):
    """The whole of eval_video_tracking_davis for one sequence: the label maps it writes."""
    patch = model.config.patch_size
    first_seg, seg_ori = dino_read_seg(first_annotation, patch, short)
    features, size = [], None
    for path in frames:
        frame, ori_h, ori_w = dino_read_frame(path, short)
        size = (ori_h, ori_w)
        with torch.no_grad():
            features.append(model.forward_last_attention(frame[None]).tokens[0, 1:])  # get_intermediate_layers(n=1)
        h, w = frame.shape[1] // patch, frame.shape[2] // patch
    soft = dino_video(features, first_seg, h, w, n_last, n_mask, topk)
    return [seg_ori] + [dino_upsample(s, patch, *size) for s in soft]


def davis_iou(annotation, segmentation):
    inters = np.sum(segmentation.astype(bool) & annotation.astype(bool))
    union = np.sum(segmentation.astype(bool) | annotation.astype(bool))
    return 1 if np.isclose(union, 0) else inters / union


def davis_seg2bmap(seg):
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def davis_f_measure(foreground_mask, gt_mask, bound_th=0.008):
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary, gt_boundary = davis_seg2bmap(foreground_mask), davis_seg2bmap(gt_mask)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), skimage_disk(bound_pix).astype(np.uint8))
    gt_match, fg_match = gt_boundary * fg_dil, fg_boundary * gt_dil
    n_fg, n_gt = np.sum(fg_boundary), np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def davis_statistics(per_frame_values):
    M = np.nanmean(per_frame_values)
    O = np.nanmean(per_frame_values > 0.5)  # noqa: E741 (their name)
    ids = (np.round(np.linspace(1, len(per_frame_values), 5) + 1e-10) - 1).astype(np.uint8)
    D_bins = [per_frame_values[ids[i]:ids[i + 1] + 1] for i in range(0, 4)]
    return M, O, np.nanmean(D_bins[0]) - np.nanmean(D_bins[3])


def davis_color_map():
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r = r | (((c & 1) != 0) << 7 - j)
            g = g | (((c & 2) != 0) << 7 - j)
            b = b | (((c & 4) != 0) << 7 - j)
            c = c >> 3
        cmap[i] = np.array([r, g, b])
    return cmap


def davis_sequence(gt_paths: list[Path], result_folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """evaluation.py's semi-supervised path for one sequence: (objects, frames-2) J and F."""
    masks = np.stack([np.array(Image.open(p)) for p in gt_paths]).astype(float)
    masks[masks == 255] = 0
    n = int(np.max(masks[0]))
    gt = (np.arange(1, n + 1)[:, None, None, None] == masks[None])[:, 1:-1]
    res = np.stack([np.array(Image.open(result_folder / f"{p.stem}.png")) for p in gt_paths])[1:-1]
    res = np.arange(1, int(res.max()) + 1)[:, None, None, None] == res[None]
    if len(res) < n:
        res = np.concatenate([res, np.zeros((n - len(res), *res.shape[1:]), bool)])
    j = np.array([[davis_iou(gt[o, t], res[o, t]) for t in range(gt.shape[1])] for o in range(n)])
    f = np.array([[davis_f_measure(res[o, t], gt[o, t]) for t in range(gt.shape[1])] for o in range(n)])
    return j, f


# ---- propagation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_last, n_mask, topk", [(2, 1, 3), (7, 0, 5), (1, 2, 1)])
def test_propagation_equals_dinos(n_last, n_mask, topk):
    g = torch.Generator().manual_seed(n_last * 10 + n_mask)
    h, w, dim, classes, frames = 4, 6, 16, 3, 7
    features = [torch.randn(h * w, dim, generator=g) for _ in range(frames)]
    first = F.one_hot(torch.randint(0, classes, (h, w), generator=g), classes).permute(2, 0, 1).float()
    config = DavisConfig(n_last_frames=n_last, size_mask_neighborhood=n_mask, topk=topk)
    ours = list(propagate_sequence(iter(features), first, config))
    theirs = dino_video(features, first[None], h, w, n_last, n_mask, topk)
    assert len(ours) == len(theirs) == frames - 1
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference[0], rtol=1e-5, atol=1e-6)
        for patch, (height, width) in ((16, (70, 100)), (8, (32, 48))):
            assert np.array_equal(hard_labels(mine, patch, height, width),
                                  dino_upsample(reference.clone(), patch, height, width))
    assert not torch.equal(ours[0], ours[-1])  # the features do move the labels


# ---- J and F -------------------------------------------------------------------------------------------------


def square(x: int, y: int = 10, side: int = 10, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y:y + side, x:x + side] = True
    return mask


def test_j_and_f_by_hand_and_as_davis_defines_them():
    gt, empty = square(10), np.zeros((40, 40), bool)
    assert region_similarity(gt, gt) == boundary_f(gt, gt) == 1.0  # perfect
    assert region_similarity(gt, empty) == boundary_f(gt, empty) == 0.0  # nothing found
    assert region_similarity(empty, gt) == boundary_f(empty, gt) == 0.0  # found where nothing is
    assert region_similarity(empty, empty) == boundary_f(empty, empty) == 1.0  # DAVIS's convention
    # shifted 1 pixel: 90 of 110 pixels shared; the boundaries are 1 pixel apart, within ceil(0.008 * 56.6) = 1
    assert region_similarity(gt, square(11)) == pytest.approx(90 / 110)
    assert boundary_f(gt, square(11)) == 1.0
    # shifted 3 pixels: the vertical edges (2 x 11 boundary pixels of 40 per square) no longer match
    assert region_similarity(gt, square(13)) == pytest.approx(70 / 130)
    assert boundary_f(gt, square(13)) == pytest.approx(davis_f_measure(square(13), gt))
    assert boundary_f(gt, square(13)) < 1.0
    rng = np.random.default_rng(0)
    for size in ((40, 40), (120, 200), (480, 854)):  # radius 1, 2, 8
        for _ in range(3):
            a = cv2.GaussianBlur(rng.random(size), (0, 0), 3) > 0.5
            b = np.roll(a, rng.integers(-4, 5, 2), axis=(0, 1))
            assert region_similarity(a, b) == pytest.approx(davis_iou(a, b))
            assert boundary_f(a, b) == pytest.approx(davis_f_measure(b, a))
    for values in (rng.random(9), rng.random(50), np.array([0.2, 0.9, 0.7])):
        mine = statistics(values)
        assert (mine.mean, mine.recall, mine.decay) == pytest.approx(davis_statistics(values))


def test_sequence_measures_skip_first_and_last_frames():
    gt = [np.where(square(10), 1, 0).astype(np.uint8) + np.where(square(25, 25), 2, 0).astype(np.uint8)] * 5
    gt[2] = gt[2].copy()
    gt[2][0, 0] = 255  # void counts as background
    wrong = np.zeros((40, 40), np.uint8)
    result = [wrong, gt[1], np.where(square(11), 1, 0).astype(np.uint8), gt[3], wrong]
    j, f = sequence_measures(gt, result)
    assert j.shape == f.shape == (2, 3)  # 2 objects, frames 1..3
    assert j[0].tolist() == pytest.approx([1, 90 / 110, 1]) and j[1].tolist() == [1, 0, 1]
    assert f[1].tolist() == [1, 0, 1]


def test_palette_is_davis():
    assert np.array_equal(np.array(PALETTE, np.uint8).reshape(256, 3), davis_color_map())


# ---- end to end ----------------------------------------------------------------------------------------------

FRAME_H, FRAME_W = 64, 128


def render_sequence(root: Path, name: str, frames: int = 5, seed: int = 0) -> None:
    """Moving coloured shapes on a textured background: a red square going right, a blue disc going left."""
    rng = np.random.default_rng(seed)
    background = (cv2.GaussianBlur(rng.random((FRAME_H, FRAME_W, 3)), (0, 0), 4) * 255).astype(np.uint8)
    (root / "JPEGImages/480p" / name).mkdir(parents=True)
    (root / "Annotations/480p" / name).mkdir(parents=True)
    for t in range(frames):
        image, labels = background.copy(), np.zeros((FRAME_H, FRAME_W), np.uint8)
        x = 10 + 6 * t
        image[16:40, x:x + 24], labels[16:40, x:x + 24] = (0, 0, 220), 1  # BGR red
        cv2.circle(image, (100 - 5 * t, 36), 12, (220, 60, 0), -1)
        cv2.circle(labels, (100 - 5 * t, 36), 12, 2, -1)
        cv2.imwrite(str(root / "JPEGImages/480p" / name / f"{t:05d}.jpg"), image)
        mask = Image.fromarray(labels)
        mask.putpalette(davis_color_map().ravel().tolist())
        mask.save(root / "Annotations/480p" / name / f"{t:05d}.png")


def render_davis(root: Path, names=("walk", "turn"), frames: int = 5) -> Path:
    for seed, name in enumerate(names):
        render_sequence(root, name, frames, seed=seed)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("".join(f"{n}\n" for n in names))
    return root


@pytest.fixture
def davis(tmp_path) -> Path:
    return render_davis(tmp_path / "DAVIS")


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("davis-ckpt") / "micro.pth"
    torch.save(create_vit("vit_micro").state_dict(), path)
    return path


def eval_davis(micro: Path, davis: Path, out: Path, *extra: str):
    return run_wtours(["eval", "davis", micro, "--davis", davis, "--out", out, "--short-side", "64",
                       "--device", "cpu", *extra])


def test_end_to_end_results_read_back_by_palette(micro, davis, tmp_path):
    out = tmp_path / "results"
    done = eval_davis(micro, davis, out)
    assert done.exit_code == 0, done.output
    assert "[2/2] turn: 5 frames segmented" in done.stdout and "DAVIS J&F-Mean" in done.stdout
    record = json.loads((out / "davis.json").read_text())
    js, fs = [], []
    for name in ("walk", "turn"):
        gt_paths = sorted((davis / "Annotations/480p" / name).glob("*.png"))
        written = sorted((out / name).glob("*.png"))
        assert [p.name for p in written] == [p.name for p in gt_paths]
        for path in written:
            with Image.open(path) as image:
                assert image.mode == "P" and image.size == (FRAME_W, FRAME_H)
                assert image.getpalette()[:9] == PALETTE[:9]
                labels = np.array(image)
            assert set(np.unique(labels)) <= {0, 1, 2}
        assert np.array_equal(np.array(Image.open(written[0])), np.array(Image.open(gt_paths[0])))
        j, f = davis_sequence(gt_paths, out / name)
        js += [davis_statistics(row)[0] for row in j]
        fs += [davis_statistics(row)[0] for row in f]
        assert record["sequences"][name]["J"] == pytest.approx(np.mean([davis_statistics(r)[0] for r in j]))
    assert record["j_mean"] == pytest.approx(np.mean(js)) and record["f_mean"] == pytest.approx(np.mean(fs))
    assert record["jf_mean"] == pytest.approx((np.mean(js) + np.mean(fs)) / 2)
    assert set(record["objects"]) == {"walk_1", "walk_2", "turn_1", "turn_2"}
    assert record["arch"] == "vit_micro" and record["n_last_frames"] == 7 and record["short_side"] == 64
    assert not list(out.glob(".*.tmp-*"))
    model = create_vit("vit_micro")
    model.load_state_dict(torch.load(micro))
    frames = sorted((davis / "JPEGImages/480p/walk").glob("*.jpg"))
    expected = dino_sequence(model.eval(), frames, davis / "Annotations/480p/walk/00000.png", 64, 7, 12, 5)
    for path, labels in zip(sorted((out / "walk").glob("*.png")), expected):
        assert np.array_equal(np.array(Image.open(path)), labels), path.name


def test_rerun_resumes_and_refuses_another_runs_results(micro, davis, tmp_path):
    out = tmp_path / "results"
    assert eval_davis(micro, davis, out).exit_code == 0
    first = json.loads((out / "davis.json").read_text())
    kept = (out / "walk" / "00003.png").stat().st_mtime_ns
    for name in os.listdir(out / "turn"):  # a run killed mid-sequence leaves its temporary folder, not a final one
        (out / "turn" / name).unlink()
    (out / "turn").rename(out / f".turn.tmp-{os.getpid()}-dead")
    again = eval_davis(micro, davis, out)
    assert again.exit_code == 0, again.output
    assert "walk: segmented already" in again.stdout and "turn: 5 frames segmented" in again.stdout
    assert (out / "walk" / "00003.png").stat().st_mtime_ns == kept and not list(out.glob(".*.tmp-*"))
    second = json.loads((out / "davis.json").read_text())
    assert second["jf_mean"] == first["jf_mean"] and second["objects"] == first["objects"]
    other = eval_davis(micro, davis, out, "--topk", "2")
    assert_clean_error(other, 2, "holds segmentations of another run", UsageError)
    assert "topk" in other.stderr and (out / "walk" / "00003.png").stat().st_mtime_ns == kept
    replaced = eval_davis(micro, davis, out, "--topk", "2", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "davis.json").read_text())["topk"] == 2


def break_layout(davis: Path, fault: str) -> list[str]:
    """Breaks `davis` as `fault` says; the extra command-line arguments the fault needs."""
    walk = davis / "Annotations/480p/walk"
    if fault == "no frames folder":
        (davis / "JPEGImages").rename(davis / "frames")
    elif fault == "no image set":
        (davis / "ImageSets/2017/val.txt").unlink()
    elif fault == "listed but absent":
        (davis / "ImageSets/2017/val.txt").write_text("walk\nturn\nbike-packing\n")
    elif fault == "unannotated frame":
        (walk / "00002.png").unlink()
    elif fault == "colour mask":
        Image.open(walk / "00001.png").convert("RGB").save(walk / "00001.png")
    elif fault == "annotation of another size":
        Image.open(walk / "00003.png").resize((FRAME_W // 2, FRAME_H // 2)).save(walk / "00003.png")
    elif fault == "two frames":
        for t in (2, 3, 4):
            (davis / f"JPEGImages/480p/walk/{t:05d}.jpg").unlink()
    elif fault == "no object":
        blank = Image.new("P", (FRAME_W, FRAME_H))
        blank.save(walk / "00000.png")
    elif fault == "path in the list":
        (davis / "ImageSets/2017/val.txt").write_text("walk\n../walk\n")
    elif fault == "frame not an image":
        (davis / "JPEGImages/480p/walk/00001.jpg").write_bytes(b"not a jpeg")
    elif fault == "image set path":
        return ["--image-set", "../../secret"]
    return []


@pytest.mark.parametrize("fault, code, phrase", [
    ("no frames folder", 2, "missing"), ("no image set", 2, "val.txt"),
    ("listed but absent", 1, "lists 1 sequences that"), ("unannotated frame", 1, "00002.png"),
    ("colour mask", 1, "not an indexed (palette) PNG"), ("annotation of another size", 1, "64 x 32"),
    ("two frames", 1, "has 2 frames"), ("no object", 1, "marks no object"),
    ("path in the list", 1, "'../walk'"), ("frame not an image", 1, "00001.jpg"),
    ("image set path", 2, "is not a name"),
])
def test_bad_layout_is_one_clear_error(micro, davis, tmp_path, fault, code, phrase):
    extra = break_layout(davis, fault)
    out = tmp_path / "results"
    kind = UsageError if code == 2 else WtoursError
    err = assert_clean_error(eval_davis(micro, davis, out, *extra), code, phrase, kind)
    assert err.count("error:") == 1
    assert not out.exists()  # checked before anything is written


def test_a_second_run_on_the_same_out_is_refused(micro, davis, tmp_path):
    out = tmp_path / "results"
    with folder_lock(out, "DAVIS results folder"):  # another live run holds it
        assert_clean_error(eval_davis(micro, davis, out), 1, "in use by", WtoursError)
    assert not (out / "walk").exists() and not (out / "run.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_mid_sequence_keeps_only_whole_sequences_and_resumes(micro, tmp_path, sig):
    """Ctrl-C (exit 130) or kill -9 while a long sequence is being written: no partial sequence folder under
    its name; the rerun removes what the killed run left and finishes."""
    davis, out = render_davis(tmp_path / "DAVIS", ("walk", "long"), frames=300), tmp_path / "results"
    args = ["eval", "davis", micro, "--davis", davis, "--out", out, "--short-side", "64", "--device", "cpu"]
    process = start_wtours(args, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(len(list(t.glob("*.png"))) > 2 for t in out.glob(".long.tmp-*")):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.005)
        os.killpg(process.pid, sig)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (out / "long").exists() and (out / "walk").is_dir()
    if sig == signal.SIGINT:
        assert_clean_error(CliResult(process.returncode, stdout, stderr), 130, "interrupted")
        assert not list(out.glob(TEMPORARY_GLOB))
    else:
        assert process.returncode == -signal.SIGKILL and list(out.glob(TEMPORARY_GLOB))
    again = run_wtours_process(args)
    assert again.returncode == 0, again.stderr
    assert "walk: segmented already" in again.stdout and "long: 300 frames segmented" in again.stdout
    assert len(list((out / "long").glob("*.png"))) == 300 and not list(out.glob(TEMPORARY_GLOB))
