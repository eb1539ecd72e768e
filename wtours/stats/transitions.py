"""Scene transitions: a colour-histogram change score, hard cuts (adaptive threshold) and gradual scene changes.

Each frame's colour content is a joint CIELAB histogram (8 L* x 8 a* x 8 b* bins); the change score of two frames is
the total-variation distance of their histograms: the fraction of pixels whose colour would have to move to another
bin, 0 (same colours) .. 1 (no colour in common). Histograms ignore where colours are, so a walking camera's motion
barely moves the score while a cut to another place does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wtours.stats.params import TransitionParams

L_BINS, AB_BINS = 8, 8
AB_RANGE = 32.0  # a*, b* in [-32, 32) over 8 bins; beyond is clipped to the outer bins (street colours are muted)
BINS = L_BINS * AB_BINS * AB_BINS


def colour_histograms(lab: np.ndarray) -> np.ndarray:
    """(B, h, w, 3) L*a*b* -> (B, BINS) uint16 pixel counts (each row sums to h*w). A grid of more than
    65,535 pixels (--analysis-pixels 0 on a large frame) would overflow uint16: its counts are scaled to a
    total of 65,535, which keeps the distribution (everything downstream normalises) to 1/131,070."""
    batch = lab.shape[0]
    qL = np.minimum((lab[..., 0] * (L_BINS / 100)).astype(np.int32), L_BINS - 1)  # L* >= 0 always
    qa, qb = (np.clip(((lab[..., c] + AB_RANGE) * (AB_BINS / (2 * AB_RANGE))).astype(np.int32), 0, AB_BINS - 1)
              for c in (1, 2))
    bins = ((qL * AB_BINS + qa) * AB_BINS + qb).reshape(batch, -1)  # (B, h*w)
    bins += (np.arange(batch, dtype=np.int32) * BINS)[:, None]  # one bincount for the whole batch
    counts = np.bincount(bins.ravel(), minlength=batch * BINS).reshape(batch, BINS)
    pixels = bins.shape[1]
    if pixels > np.iinfo(np.uint16).max:
        counts = np.rint(counts * (np.iinfo(np.uint16).max / pixels))
    return counts.astype(np.uint16)


def normalise(counts: np.ndarray) -> np.ndarray:
    """(N, BINS) counts -> (N, BINS) float32 distributions."""
    counts = counts.astype(np.float32)
    return counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1)


def distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total-variation distance of distributions along the last axis, 0..1."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


# Frames whose float histograms exist at once: the functions below take (N, BINS) uint16 counts and
# normalise a block at a time, so a 2-hour video's analysis needs no (N, BINS) float arrays (memory stays
# flat: about 1 KB of counts per frame).
BLOCK = 2048


def change_scores(hists: np.ndarray) -> np.ndarray:
    """(N, BINS) histograms (counts or distributions) -> (N,) score to the previous frame; NaN for the first."""
    scores = np.full(len(hists), np.nan)
    for a in range(1, len(hists), BLOCK):
        block = normalise(hists[a - 1:a + BLOCK])  # (1 + block, BINS)
        scores[a:a + BLOCK] = distance(block[1:], block[:-1])
    return scores


def detect_cuts(t: np.ndarray, scores: np.ndarray, hists: np.ndarray, params: TransitionParams) -> list[int]:
    """Indices of frames that open a new shot (the cut lies between frame i-1 and frame i).

    A frame is a candidate when its score exceeds both `cut_min` and the local level: the median of the scores within
    `cut_window` seconds each side plus `cut_k` robust standard deviations (1.4826 x median absolute deviation), so
    busy stretches (fast walking, crowds) raise their own threshold. Candidates closer than `min_gap` keep the
    strongest; one whose content comes back within `min_gap` (a flash, a passer-by covering the lens) is dropped."""
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    half = max(4, round(params.cut_window / step))  # at least 4 neighbours a side for a stable median
    candidates = []
    for i in np.flatnonzero(scores >= params.cut_min):
        around = np.r_[scores[max(1, i - half):i], scores[i + 1:i + 1 + half]]
        around = around[np.isfinite(around)]
        level = np.median(around) if len(around) else 0.0
        spread = 1.4826 * np.median(np.abs(around - level)) if len(around) else 0.0
        if scores[i] >= level + params.cut_k * spread:
            candidates.append(int(i))
    kept: list[int] = []
    for cut in sorted(candidates, key=lambda c: -scores[c]):  # strongest first
        if all(abs(t[cut] - t[j]) >= params.min_gap for j in kept) and _scene_differs(t, hists, cut, params):
            kept.append(cut)
    return sorted(kept)


def _scene_differs(t: np.ndarray, hists: np.ndarray, i: int, params: TransitionParams) -> bool:
    """Every frame within `min_gap` before the cut differs from every frame within `min_gap` after it."""
    before = np.flatnonzero((t >= t[i] - params.min_gap) & (t < t[i]))
    after = np.flatnonzero((t >= t[i]) & (t <= t[i] + params.min_gap))
    pairs = distance(normalise(hists[before])[:, None, :], normalise(hists[after])[None, :, :])  # (before, after)
    return bool(pairs.size == 0 or pairs.min() >= params.cut_min)


@dataclass(frozen=True)
class SceneChange:
    start: float  # seconds: the drift window's two ends
    end: float
    drift: float  # histogram distance between the two ends

    @property
    def t(self) -> float:
        return round((self.start + self.end) / 2, 6)


def drift_scores(t: np.ndarray, hists: np.ndarray, lightness: np.ndarray, shot: np.ndarray,
                 params: TransitionParams) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: how far the content moved from `drift_window` seconds earlier in the same shot.

    Both ends average the frames of `drift_smooth` seconds, so one odd frame does not count, and the earlier end is
    shifted along L* by the change of mean lightness in between: a sunset or a tunnel is a lighting change (measured
    as lightness), not a new scene. Returns (drift (N,) with NaN where the window would leave the shot, the index of
    the frame compared with (N,) or -1)."""
    n = len(t)
    first = np.searchsorted(t, t - params.drift_smooth, side="right")  # (N,) first frame of each smoothing span
    ref = np.searchsorted(t, t - params.drift_window, side="right") - 1  # (N,) last frame >= window ago
    valid = ref >= 0
    ref_safe = np.where(valid, ref, 0)
    valid &= (shot[ref_safe] == shot) & (shot[first[ref_safe]] == shot)  # both ends inside this shot

    light_sums = np.concatenate([[0.0], np.cumsum(lightness, dtype=np.float64)])  # (N + 1,)
    light = (light_sums[1:] - light_sums[first]) / (np.arange(n) + 1 - first)  # (N,) smoothed lightness
    rows = np.flatnonzero(valid)
    drift = np.full(n, np.nan)
    for a in range(0, len(rows), BLOCK):
        now, then = rows[a:a + BLOCK], ref[rows[a:a + BLOCK]]  # (M,), (M,)
        lo, hi = int(first[then].min()), int(now.max()) + 1  # the frames these spans cover
        sums = np.cumsum(np.concatenate([np.zeros((1, hists.shape[1])), normalise(hists[lo:hi])]), axis=0)

        def span(i: np.ndarray, sums: np.ndarray = sums, lo: int = lo) -> np.ndarray:  # (M,) -> (M, BINS)
            return (sums[i + 1 - lo] - sums[first[i] - lo]) / (i + 1 - first[i])[:, None]  # smoothing-span means

        drift[now] = distance(span(now), shift_lightness(span(then), light[now] - light[then]))
    return drift, np.where(valid, ref, -1)


def shift_lightness(hists: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Move each (BINS,) histogram's mass by `delta` L* units, split linearly between L* bins."""
    by_l = hists.reshape(len(hists), L_BINS, AB_BINS * AB_BINS)  # (M, L_BINS, AB_BINS * AB_BINS)
    steps = np.asarray(delta, dtype=np.float64) / (100 / L_BINS)  # (M,) in bins
    whole = np.floor(steps).astype(np.int64)
    part = steps - whole
    transfer = np.zeros((len(hists), L_BINS, L_BINS))  # (M, to, from)
    source = np.arange(L_BINS)
    for offset, weight in ((0, 1 - part), (1, part)):
        to = np.clip(source[None, :] + whole[:, None] + offset, 0, L_BINS - 1)  # (M, L_BINS)
        np.add.at(transfer, (np.arange(len(hists))[:, None], to, source[None, :]), weight[:, None])
    return (transfer @ by_l).reshape(hists.shape)


def detect_scene_changes(t: np.ndarray, drift: np.ndarray, reference: np.ndarray,
                         params: TransitionParams) -> list[SceneChange]:
    """Greedy: the first frame whose drift reaches the threshold closes a change; the next window starts there."""
    changes: list[SceneChange] = []
    free_from = -1  # a window may not reach back into the previous change
    for i in np.flatnonzero(np.nan_to_num(drift) >= params.drift_threshold):
        r = reference[i]
        if r >= free_from:
            changes.append(SceneChange(float(t[r]), float(t[i]), float(drift[i])))
            free_from = int(i)
    return changes


def shots(n: int, cuts: list[int], gaps: list[int]) -> np.ndarray:
    """(N,) shot number per frame: a new shot starts at each cut and after each gap in the sampling."""
    starts = np.zeros(n, dtype=np.int64)
    starts[sorted(set(cuts) | set(gaps))] = 1
    return np.cumsum(starts)


def gaps(t: np.ndarray, every: float) -> list[int]:
    """Indices of frames that follow a stretch with no analysed frame (blank frames left out of the shards)."""
    return [int(i) + 1 for i in np.flatnonzero(np.diff(t) > 1.5 * every)]


@dataclass(frozen=True)
class CutAgreement:
    """Two detectors' cuts matched one to one: pairs within `tolerance` seconds, nearest pairs first."""

    tolerance: float
    both: list[tuple[float, float]]  # (first detector's time, second's)
    first_only: list[float]
    second_only: list[float]


def agreement(first: list[float], second: list[float], tolerance: float) -> CutAgreement:
    """Match cut times of two detectors: a cut found by both lies within `tolerance` seconds of its partner, and
    each cut has at most one partner (the closest pairs are matched first)."""
    pairs = sorted((abs(a - b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)
                   if abs(a - b) <= tolerance + 1e-9)
    partner: dict[int, int] = {}
    taken: set[int] = set()
    for _, i, j in pairs:
        if i not in partner and j not in taken:
            partner[i] = j
            taken.add(j)
    both = sorted((first[i], second[j]) for i, j in partner.items())
    return CutAgreement(tolerance, both, [a for i, a in enumerate(first) if i not in partner],
                        [b for j, b in enumerate(second) if j not in taken])
