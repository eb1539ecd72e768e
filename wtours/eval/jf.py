"""DAVIS's region (J) and boundary (F) measures, as the official davis2017-evaluation code defines them
(github.com/davisvideochallenge/davis2017-evaluation: davis2017/metrics.py, utils.py, evaluation.py).

J is the IoU of an object's predicted and annotated masks, 1 when both are empty. F is the F-measure of
their 1-pixel boundary maps (`seg2bmap`), a boundary pixel matching when the other map, dilated by a disk of
ceil(0.008 x the image diagonal) pixels, covers it; an empty boundary has precision 1 and recall 0 against a
non-empty one, and both empty give F = 1. In the semi-supervised task the first and the last frames are not
scored, objects are the labels 1..N of the first annotation (void, 255, counts as background), and an object
is summed up by its mean over frames, its recall (share of frames above 0.5) and its decay (the mean of the
first quarter of frames minus that of the last)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUND_TH = 0.008  # of the image diagonal
VOID = 255


def region_similarity(annotation: np.ndarray, segmentation: np.ndarray) -> float:
    """J of two binary masks (metrics.py db_eval_iou, without void pixels as the semi-supervised task runs it)."""
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    union = np.sum(annotation | segmentation)
    return 1.0 if union == 0 else float(np.sum(annotation & segmentation) / union)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel boundary of a binary mask, offset half a pixel towards the origin (metrics.py _seg2bmap,
    David Martin's): a pixel differing from its east, south or south-east neighbour; on the last row only the
    east neighbour counts, on the last column only the south one, and the corner is never a boundary."""
    seg = mask.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk: the pixels within `radius` of the centre, (2r+1) x (2r+1), uint8."""
    grid = np.arange(-radius, radius + 1)
    return (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).astype(np.uint8)


def boundary_f(annotation: np.ndarray, segmentation: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F of two binary masks (metrics.py f_measure): `bound_th` below 1 is a share of the diagonal."""
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*annotation.shape)))
    fg, gt = seg2bmap(segmentation), seg2bmap(annotation)
    kernel = disk(radius)
    fg_dil = cv2.dilate(fg.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt.astype(np.uint8), kernel).astype(bool)
    n_fg, n_gt = int(fg.sum()), int(gt.sum())
    if n_fg == 0 or n_gt == 0:
        precision, recall = (1.0 if n_fg == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    else:
        precision, recall = np.sum(fg & gt_dil) / n_fg, np.sum(gt & fg_dil) / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


@dataclass
class Statistics:
    mean: float
    recall: float
    decay: float


def statistics(per_frame: np.ndarray) -> Statistics:
    """utils.py db_statistics: mean, share above 0.5, and the first quarter's mean minus the last quarter's
    (4 bins of frame indices round(linspace(1, n, 5)) - 1, each bin including its right edge)."""
    ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(int)
    bins = [per_frame[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return Statistics(float(np.mean(per_frame)), float(np.mean(per_frame > 0.5)),
                      float(np.mean(bins[0]) - np.mean(bins[3])))


def sequence_measures(annotations: list[np.ndarray], results: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F, each (objects, frames - 2), of one sequence's label maps (evaluation.py,
    semi-supervised): frames 1 .. n-2, objects 1 .. the first annotation's largest label, void as background
    (the official code refuses results with a larger label; propagation never makes one)."""
    objects = int(np.max(np.where(annotations[0] == VOID, 0, annotations[0])))
    j = np.zeros((objects, len(annotations) - 2))
    f = np.zeros_like(j)
    for t, (annotation, result) in enumerate(zip(annotations[1:-1], results[1:-1])):
        annotation = np.where(annotation == VOID, 0, annotation)
        for o in range(objects):
            j[o, t] = region_similarity(annotation == o + 1, result == o + 1)
            f[o, t] = boundary_f(annotation == o + 1, result == o + 1)
    return j, f
