"""hdm.metrics against independent reference computations and cases known by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from hdm.metrics import (
    aupro,
    average_precision,
    evaluate,
    f1_max,
    image_auroc,
    pixel_ap,
    pixel_auroc,
    pro_curve,
    roc_curve,
)

# --- independent references: definitions computed the slow, obvious way ---


def _pairs_auroc(labels, scores) -> float:
    """P(score of an anomalous sample > score of a normal one), ties counting half."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _f1_brute(labels, scores) -> tuple[float, float]:
    best = (-1.0, 0.0)
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        tp, fp, fn = np.sum(pred & (labels == 1)), np.sum(pred & (labels == 0)), np.sum(~pred & (labels == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, t)
    return best


def _aupro_brute(masks, maps, fpr_limit) -> float:
    """Threshold by threshold: label regions per image, average their overlaps, then integrate
    the polyline segment by segment, clipped at fpr_limit."""
    regions = []  # (image index, region mask)
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        pro = np.mean([np.sum(pred[i] & region) / np.sum(region) for i, region in regions])
        points.append((np.sum(pred & normal) / np.sum(normal), pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


# --- AUROC ---


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_mann_whitney_u_and_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 12, 200) + labels * rng.integers(0, 4, 200)  # many ties
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / (labels.sum() * (labels == 0).sum())
    assert image_auroc(labels, scores) == pytest.approx(expected, abs=1e-12)
    assert image_auroc(labels, scores) == pytest.approx(_pairs_auroc(labels, scores), abs=1e-12)


def test_auroc_known_cases():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert image_auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one of four pairs inverted
    assert image_auroc([0, 0, 1, 1], [0.1, 0.85, 0.8, 0.9]) == 0.75
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.85, 0.8, 0.9])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.85, 0.8, 0.1]


def test_pixel_auroc_is_auroc_over_all_pixels():
    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) < 0.1
    maps = rng.random((4, 16, 16)) + masks * 0.3
    expected = _pairs_auroc(masks.ravel().astype(int), maps.ravel())
    assert pixel_auroc(masks.astype(np.float32), maps) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(masks[:, None], maps[:, None]) == pytest.approx(expected, abs=1e-12)  # (N, 1, H, W)


# --- average precision ---


def test_average_precision_by_hand():
    # ranks: + - + + -  -> precision at each positive 1, 2/3, 3/4
    assert average_precision([1, 0, 1, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # a tie between a positive and a negative is one threshold: recall 0.5 at P=1, then 1.0 at P=2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.6]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision([0, 1], [0.2, 0.9]) == 1.0


def test_pixel_ap_equals_mean_precision_at_each_positive_without_ties():
    rng = np.random.default_rng(7)
    masks = rng.random((3, 20, 20)) < 0.05
    maps = rng.random((3, 20, 20)) + masks * 0.5
    ranked = masks.ravel()[np.argsort(-maps.ravel())]
    precision_at_hits = (np.cumsum(ranked) / np.arange(1, ranked.size + 1))[ranked]
    assert pixel_ap(masks, maps) == pytest.approx(precision_at_hits.mean(), abs=1e-12)


# --- F1-max ---


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # ties
    f1, threshold = f1_max(labels, scores)
    expected_f1, expected_threshold = _f1_brute(labels, scores)
    assert f1 == pytest.approx(expected_f1, abs=1e-12)
    assert threshold == expected_threshold


def test_f1_max_known_case():
    f1, threshold = f1_max([0, 0, 1, 1, 0], [0.1, 0.3, 0.7, 0.9, 0.8])
    # at >= 0.7: tp 2, fp 1 -> F1 = 4/5; no threshold does better
    assert (f1, threshold) == (pytest.approx(0.8), 0.7)


# --- AUPRO ---


def _two_regions() -> np.ndarray:
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 4:14, 4:14] = True  # 100 px
    masks[1, 20:22, 20:22] = True  # 4 px
    masks[1, 2:8, 2:10] = True  # 48 px
    return masks


def test_aupro_perfect_and_inverted_maps():
    masks = _two_regions()
    assert aupro(masks, masks.astype(float)) == 1.0
    assert aupro(masks, 1.0 - masks) == 0.0


def test_aupro_half_of_each_region_at_zero_fpr():
    """Half of every region above all normal pixels, the other half below them all:
    PRO is 0.5 from FPR 0 until FPR 1, so the normalised area is exactly 0.5."""
    masks = _two_regions()
    maps = np.full(masks.shape, 0.5)
    for image, mask in zip(maps, masks, strict=True):
        rows, cols = np.nonzero(mask)
        upper = rows < (rows.min() + rows.max() + 1) / 2
        image[rows[upper], cols[upper]] = 1.0
        image[rows[~upper], cols[~upper]] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.5, abs=1e-12)


def test_aupro_averages_regions_not_pixels():
    """The 100 px region found, the 4 px and 48 px ones ranked below every normal pixel: PRO = 1/3,
    although 100 of 152 defect pixels are found."""
    masks = _two_regions()
    maps = np.full(masks.shape, 0.5)
    maps[0][masks[0]] = 1.0
    maps[1][masks[1]] = 0.0
    assert aupro(masks, maps) == pytest.approx(1 / 3, abs=1e-12)


def test_aupro_diagonal_components_are_one_region():
    """MVTec AD labels regions with 8-connectivity: two pixels touching at a corner are one defect."""
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2, 2] = masks[0, 3, 3] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 2, 2], maps[0, 3, 3] = 1.0, 0.0
    masks[0, 6, 6] = True  # a separate defect, found
    maps[0, 6, 6] = 1.0
    # 8-connected: regions {half found, found} -> 0.75; 4-connected would be {found, missed, found} -> 2/3
    assert aupro(masks, maps) == pytest.approx(0.75)


def test_aupro_interpolates_at_the_fpr_limit():
    """One region ranked right after the top 20% of normal pixels: PRO jumps to 1 at FPR 0.2."""
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0, :10] = True  # 10 defect pixels, 90 normal
    normal_scores = np.linspace(1, 0, 90, endpoint=False)
    maps = np.zeros((1, 10, 10))
    maps[0][~masks[0]] = normal_scores
    maps[0][masks[0]] = normal_scores[17] - 1e-9  # after 18 of 90 normal pixels: FPR 0.2
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx((0.3 - 0.2) / 0.3)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.8)


@pytest.mark.parametrize("seed", range(4))
def test_aupro_equals_brute_force_threshold_sweep(seed):
    rng = np.random.default_rng(seed)
    masks = ndimage.binary_dilation(rng.random((3, 12, 12)) < 0.04, iterations=1)
    maps = np.round(rng.random((3, 12, 12)) * 0.6 + masks * 0.4 * rng.random((3, 12, 12)), 2)
    for limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, limit) == pytest.approx(_aupro_brute(masks, maps, limit), abs=1e-9)


def test_random_maps_are_near_chance():
    rng = np.random.default_rng(11)
    masks = ndimage.binary_dilation(rng.random((20, 32, 32)) < 0.01, iterations=2)
    maps = rng.random(masks.shape)
    assert pixel_auroc(masks, maps) == pytest.approx(0.5, abs=0.02)
    assert aupro(masks, maps) == pytest.approx(0.15, abs=0.02)  # PRO ~ FPR: area 0.3^2/2, normalised
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == pro[0] == 0 and fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


# --- evaluate and edge cases ---


def test_evaluate_reports_every_metric():
    masks = _two_regions()
    maps = masks * 0.9 + 0.05
    labels = np.array([0, 1, 1])
    masks3 = np.concatenate([np.zeros((1, 32, 32), bool), masks])
    maps3 = np.concatenate([np.full((1, 32, 32), 0.05), maps])
    result = evaluate(labels, [0.1, 0.9, 0.8], masks3, maps3)
    assert result == {
        "images": 3,
        "image_auroc": 1.0,
        "f1_max": 1.0,
        "f1_threshold": 0.8,
        "pixel_auroc": 1.0,
        "aupro": 1.0,
        "pixel_ap": 1.0,
    }
    assert evaluate(labels, [0.1, 0.9, 0.8])["pixel_auroc"] is None


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: image_auroc([1, 1, 1], [0.1, 0.2, 0.3]), "all 3 are anomalous"),
        (lambda: f1_max([0, 0], [0.1, 0.2]), "all 2 are normal"),
        (lambda: pixel_auroc(np.zeros((2, 4, 4)), np.ones((2, 4, 4))), "needs both normal and anomalous"),
        (lambda: pixel_ap(np.ones((2, 4, 4)), np.ones((2, 4, 4))), "needs both normal and anomalous"),
        (lambda: aupro(np.zeros((2, 4, 4)), np.ones((2, 4, 4))), "0 defect regions"),
        (lambda: aupro(np.ones((2, 4, 4)), np.ones((2, 4, 4))), "0 normal pixels"),
        (lambda: image_auroc([0, 1], [0.1]), "2 labels but 1 scores"),
        (lambda: image_auroc([0, 2], [0.1, 0.2]), "labels must be 0"),
        (lambda: image_auroc([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))), "shape"),
        (lambda: aupro(_two_regions(), _two_regions(), fpr_limit=0), "fpr_limit"),
        (lambda: evaluate([0, 1], [0.1, 0.2], masks=np.zeros((2, 4, 4))), "both masks and maps"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
