"""Anomaly detection metrics in the MVTec AD protocol: image/pixel AUROC, AUPRO, pixel AP, F1-max.

Every curve is exact: scores are sorted once and the counts are read off at each
distinct score (ties form one threshold), so millions of pixels cost one sort.
A sample is predicted anomalous when its score is >= the threshold. Ground-truth
masks are binarised at 0.5; labels must be 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

# Regions are 8-connected within one image and never across images (MVTec AD's evaluation code).
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


@dataclass(frozen=True)
class _Counts:
    """Cumulative counts at each distinct score, from the highest score down."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), from (0, 0) at threshold +inf to (1, 1) at the lowest score."""
    c = _counts(labels, scores, "roc_curve")
    fpr, tpr = _roc(c)
    return fpr, tpr, np.concatenate([[np.inf], c.thresholds])


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of image scores (ties count half, as in the Mann-Whitney U statistic)."""
    return _auroc(_counts(labels, scores, "image_auroc"))


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float:
    """AUROC over all pixels of all images; masks and maps of the same shape, e.g. (N, H, W)."""
    return _auroc(_pixel_counts(masks, maps, "pixel_auroc"))


def pixel_ap(masks: ArrayLike, maps: ArrayLike) -> float:
    """Average precision over all pixels: sum over thresholds of (R_k - R_{k-1}) * P_k, no interpolation."""
    return _average_precision(_pixel_counts(masks, maps, "pixel_ap"))


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision of any scores, as pixel_ap computes it for pixels."""
    return _average_precision(_counts(labels, scores, "average_precision"))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """The best F1 over all thresholds on image scores, and that threshold (anomalous when score >= it).

    Where several thresholds give the same F1, the highest is returned.
    """
    c = _counts(labels, scores, "f1_max")
    f1 = 2 * c.tp / (c.tp + c.fp + c.positives)
    best = int(np.argmax(f1))
    return float(f1[best]), float(c.thresholds[best])


def pro_curve(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro): false-positive rate over normal pixels and per-region overlap, from (0, 0).

    PRO at a threshold is the mean, over all connected ground-truth regions of all
    images, of the fraction of the region's pixels at or above the threshold; so
    a small defect counts as much as a large one.
    """
    masks, maps = _pixels(masks, maps, "aupro")
    return _pro_curve(masks, _Ranking.of(maps))


def _pro_curve(masks: np.ndarray, ranking: _Ranking) -> tuple[np.ndarray, np.ndarray]:
    regions, n_regions = ndimage.label(masks.reshape(-1, *masks.shape[-2:]), structure=_REGION_STRUCTURE)
    n_normal = masks.size - int(masks.sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError(
            f"aupro: needs both defect and normal pixels; got {n_regions} defect regions and {n_normal} normal pixels"
        )
    sizes = np.bincount(regions.ravel())
    # Each pixel of region r adds 1 / (|r| * n_regions) to PRO once the threshold reaches it.
    region_weight = np.concatenate([[0.0], 1.0 / (sizes[1:] * n_regions)])
    sorted_regions = regions.ravel()[ranking.order]
    fpr = np.cumsum(sorted_regions == 0)[ranking.last] / n_normal
    pro = np.cumsum(region_weight[sorted_regions])
    # Dividing by the total (1 up to rounding) makes a fully found set of regions exactly 1.
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro[ranking.last] / pro[-1]])


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (1.0 is perfect)."""
    _check_fpr_limit(fpr_limit)
    fpr, pro = pro_curve(masks, maps)
    return float(_area_up_to(fpr, pro, fpr_limit) / fpr_limit)


def evaluate(
    labels: ArrayLike,
    scores: ArrayLike,
    masks: ArrayLike | None = None,
    maps: ArrayLike | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float | int | None]:
    """All metrics of one category. Pixel metrics are None when masks or maps are not given."""
    _check_fpr_limit(fpr_limit)
    f1, threshold = f1_max(labels, scores)
    result: dict[str, float | int | None] = {
        "images": int(np.asarray(labels).size),
        "image_auroc": image_auroc(labels, scores),
        "f1_max": f1,
        "f1_threshold": threshold,
        "pixel_auroc": None,
        "aupro": None,
        "pixel_ap": None,
    }
    if (masks is None) != (maps is None):
        raise ValueError("evaluate: give both masks and maps, or neither")
    if masks is not None:
        masks, maps = _pixels(masks, maps, "evaluate")
        if masks.shape[0] != result["images"]:
            raise ValueError(f"evaluate: {result['images']} labels but {masks.shape[0]} masks")
        ranking = _Ranking.of(maps)  # one sort of all pixels for all pixel metrics
        pixels = _counts(masks, maps, "evaluate", ranking)
        result["pixel_auroc"] = _auroc(pixels)
        result["pixel_ap"] = _average_precision(pixels)
        result["aupro"] = float(_area_up_to(*_pro_curve(masks, ranking), fpr_limit) / fpr_limit)
    return result


@dataclass(frozen=True)
class _Ranking:
    """Scores sorted from the highest: `order` sorts them, `last` ends each run of equal scores
    (tied samples switch together, so each run is one threshold)."""

    order: np.ndarray
    last: np.ndarray
    thresholds: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray) -> _Ranking:
        flat = scores.ravel()
        order = np.argsort(-flat)  # need not be stable: ties are grouped
        ranked = flat[order]
        last = np.flatnonzero(np.concatenate([ranked[1:] != ranked[:-1], [True]]))
        return cls(order, last, ranked[last])


def _counts(labels: ArrayLike, scores: ArrayLike, what: str, ranking: _Ranking | None = None) -> _Counts:
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: {labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{what}: labels must be 0 (normal) or 1 (anomalous), got {np.unique(labels)[:5]}")
    if np.isnan(scores).any():
        raise ValueError(f"{what}: scores contain NaN")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        only = "normal (0)" if positives == 0 else "anomalous (1)"
        raise ValueError(f"{what}: needs both normal and anomalous samples; all {labels.size} are {only}")
    ranking = ranking or _Ranking.of(scores)
    tp = np.cumsum(labels[ranking.order], dtype=np.int64)[ranking.last]
    return _Counts(ranking.thresholds, tp, ranking.last + 1 - tp, positives, negatives)


def _pixel_counts(masks: ArrayLike, maps: ArrayLike, what: str) -> _Counts:
    masks, maps = _pixels(masks, maps, what)
    return _counts(masks.ravel(), maps.ravel(), what)


def _roc(c: _Counts) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[0.0], c.fp / c.negatives]), np.concatenate([[0.0], c.tp / c.positives])


def _auroc(c: _Counts) -> float:
    fpr, tpr = _roc(c)
    return float(np.trapezoid(tpr, fpr))


def _average_precision(c: _Counts) -> float:
    precision = c.tp / (c.tp + c.fp)
    recall_steps = np.diff(c.tp, prepend=0) / c.positives
    return float(np.sum(recall_steps * precision))


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"aupro: fpr_limit must be in (0, 1], got {fpr_limit}")


def _pixels(masks: ArrayLike, maps: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(f"{what}: masks have shape {masks.shape} but maps {maps.shape}")
    if masks.ndim < 2:
        raise ValueError(f"{what}: expected masks of shape (N, H, W) or (H, W), got {masks.shape}")
    if np.isnan(maps).any():
        raise ValueError(f"{what}: maps contain NaN")
    return masks >= 0.5, maps


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline (x, y) for x in [0, x_max]; x is non-decreasing from 0."""
    k = int(np.searchsorted(x, x_max, side="right")) - 1  # last point with x <= x_max
    area = float(np.trapezoid(y[: k + 1], x[: k + 1]))
    if k + 1 < x.size and x[k] < x_max:
        y_at = y[k] + (y[k + 1] - y[k]) * (x_max - x[k]) / (x[k + 1] - x[k])
        area += (x_max - x[k]) * (y[k] + y_at) / 2
    return area
