"""Per-image segmentation metrics: IoU, Dice, MAE, S-measure, mean E-measure, weighted F-measure, and the official
BA-SAM evaluation's threshold-averaged IoU / Dice / MAE.

All functions take one image: `prob` a float map in [0, 1] (the predicted probability), `gt` a boolean mask of the
same shape, and return a Python float. Conventions (those of the DIS/COD/SOD toolkits, e.g. `pysodmetrics`, where
one exists):

- IoU and Dice binarise `prob > threshold` (0.5). Empty prediction and empty ground truth: 1.0 (perfect agreement);
  exactly one of them empty: 0.0.
- MAE: mean |prob - gt|.
- S-measure (Fan et al. 2017, alpha 0.5): empty GT -> 1 - mean(prob); full GT -> mean(prob). Quadrants of zero area
  (centroid on the last row/column) contribute 0.
- Mean E-measure (Fan et al. 2018): `prob` quantised to 8 bits (`floor(255 * prob)`), E-measure at each of the 256
  thresholds t = 0..255 (`q >= t`), averaged; normalised by (pixels - 1) as in the MATLAB code, so a perfect map
  scores N / (N - 1), slightly above 1. Empty GT -> fraction of predicted background; full GT -> fraction of
  predicted foreground.
- Weighted F-measure (Margolin et al. 2014, beta^2 = 1): empty GT -> 0.0 (the toolkits' convention).
- Maps are used as given by default: no min-max rescaling of `prob` (a probability already is in [0, 1]). The SOD
  toolkits evaluate saved 8-bit maps and rescale each one to its own range first, `(p - min) / (max - min)` when
  `max > min` (pysodmetrics' `prepare_data`, MATLAB's `mapminmax` in the original toolboxes), before every metric they
  compute from it, the ones thresholded at 0.5 included. `normalize=True` ([`normalize_map`]) does the same, so that
  numbers are comparable with papers that evaluated saved maps: it changes all six metrics (IoU and Dice through the
  threshold) whenever a map does not span [0, 1]; it does not reproduce the 8-bit rounding of saved maps (at most
  1/255 per pixel).

`official_metrics` mirrors the official BA-SAM `eval_seg`: thresholds (0.1, 0.3, 0.5, 0.7, 0.9) applied to the raw
logits and to a soft ground truth, IoU `(inter + 1e-6) / (union + 1e-6)`, Dice `(2 inter + 1e-4) / (|p| + |g| + 1e-4)`,
MAE of the binarised maps, each averaged over the thresholds.
"""

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

EPS = np.spacing(1.0)  # MATLAB's eps, used by the reference formulas
OFFICIAL_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
STANDARD_METRICS = ("iou", "dice", "mae", "s_measure", "mean_e_measure", "weighted_f_measure")
OFFICIAL_METRICS = ("official_iou", "official_dice", "official_mae")
# Metrics where lower is better (for tables and plots).
LOWER_IS_BETTER = frozenset({"mae", "official_mae"})


def _check(prob: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if prob.shape != gt.shape or prob.ndim != 2:
        raise ValueError(f"Expected 2-D prediction and ground truth of one shape, got {prob.shape} and {gt.shape}.")
    return prob, gt


def normalize_map(prob: np.ndarray) -> np.ndarray:
    """A map min-max rescaled to [0, 1], `(prob - min) / (max - min)`, as the SOD toolkits read saved maps; a
    constant map is returned unchanged (as float64)."""
    prob = np.asarray(prob, dtype=np.float64)
    low, high = prob.min(), prob.max()
    return prob if high == low else (prob - low) / (high - low)


def binary_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def binary_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two boolean masks; 1.0 when both are empty."""
    total = np.count_nonzero(pred) + np.count_nonzero(gt)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(pred & gt) / total


def mae(prob: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a probability map and a boolean mask."""
    prob, gt = _check(prob, gt)
    return float(np.mean(np.abs(prob - gt)))


def s_measure(prob: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure: `alpha` object-aware + (1 - alpha) region-aware similarity, clipped at 0."""
    prob, gt = _check(prob, gt)
    foreground = gt.mean()
    if foreground == 0:
        return float(1.0 - prob.mean())
    if foreground == 1:
        return float(prob.mean())
    score = alpha * _object_score(prob, gt) + (1 - alpha) * _region_score(prob, gt)
    return float(max(0.0, score))


def _object_similarity(values: np.ndarray) -> float:
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _object_score(prob: np.ndarray, gt: np.ndarray) -> float:
    foreground = gt.mean()
    return _object_similarity(prob[gt]) * foreground + _object_similarity(1 - prob[~gt]) * (1 - foreground)


def _region_score(prob: np.ndarray, gt: np.ndarray) -> float:
    height, width = gt.shape
    # Split at the GT centroid (rounded half to even, +1 as MATLAB's 1-based ranges include it).
    cy, cx = (int(v) + 1 for v in np.round(np.argwhere(gt).mean(axis=0)))
    score = 0.0
    for rows in (slice(0, cy), slice(cy, height)):
        for cols in (slice(0, cx), slice(cx, width)):
            block_prob, block_gt = prob[rows, cols], gt[rows, cols]
            if block_gt.size:  # an empty quadrant has weight 0
                score += _ssim(block_prob, block_gt.astype(np.float64)) * block_gt.size / gt.size
    return score


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    n = x.size
    mean_x, mean_y = x.mean(), y.mean()
    var_x = np.sum((x - mean_x) ** 2) / (n - 1 + EPS)
    var_y = np.sum((y - mean_y) ** 2) / (n - 1 + EPS)
    cov = np.sum((x - mean_x) * (y - mean_y)) / (n - 1 + EPS)
    numerator = 4 * mean_x * mean_y * cov
    denominator = (mean_x**2 + mean_y**2) * (var_x + var_y)
    if numerator != 0:
        return numerator / (denominator + EPS)
    return 1.0 if denominator == 0 else 0.0


def e_measure_curve(prob: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """E-measure of `floor(255 * prob) >= t` for t = 255, 254, ..., 0 (256 values)."""
    prob, gt = _check(prob, gt)
    levels = np.clip((prob * 255).astype(np.int64), 0, 255)
    size = gt.size
    gt_fg = np.count_nonzero(gt)
    # Pixels with level >= t, per t from 255 down to 0: reversed cumulative histograms.
    tp = np.cumsum(np.bincount(levels[gt], minlength=256)[::-1])
    fp = np.cumsum(np.bincount(levels[~gt], minlength=256)[::-1])
    pred_fg = tp + fp
    pred_bg = size - pred_fg
    if gt_fg == 0:
        enhanced_sum = pred_bg.astype(np.float64)
    elif gt_fg == size:
        enhanced_sum = pred_fg.astype(np.float64)
    else:
        fn = gt_fg - tp
        tn = pred_bg - fn
        mean_pred = pred_fg / size
        mean_gt = gt_fg / size
        enhanced_sum = np.zeros(256)
        # Alignment of the demeaned maps in each of the four (pred, gt) value combinations, weighted by pixel count.
        for count, pred_value, gt_value in (
            (tp, 1 - mean_pred, 1 - mean_gt),
            (fp, 1 - mean_pred, -mean_gt),
            (fn, -mean_pred, 1 - mean_gt),
            (tn, -mean_pred, -mean_gt),
        ):
            align = 2 * pred_value * gt_value / (pred_value**2 + gt_value**2 + EPS)
            enhanced_sum += count * (align + 1) ** 2 / 4
    return enhanced_sum / (size - 1 + EPS)


def mean_e_measure(prob: np.ndarray, gt: np.ndarray) -> float:
    """Mean over 256 thresholds of the enhanced-alignment measure (see [`e_measure_curve`])."""
    return float(e_measure_curve(prob, gt).mean())


def _gaussian_kernel(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB's `fspecial('gaussian', size, sigma)`."""
    offsets = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0
    return kernel / kernel.sum()


def weighted_f_measure(prob: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure: errors spread to the nearest GT pixel, smoothed, and weighted by distance to the GT."""
    from scipy.ndimage import convolve, distance_transform_edt  # scipy.ndimage imports slowly

    prob, gt = _check(prob, gt)
    if not gt.any():
        return 0.0
    distance, (nearest_rows, nearest_cols) = distance_transform_edt(~gt, return_indices=True)
    error = np.abs(prob - gt)
    # Pixel dependency: a background pixel takes the error of its nearest GT pixel, so that errors next to the
    # object's edge are not counted as isolated.
    spread = error.copy()
    spread[~gt] = error[nearest_rows[~gt], nearest_cols[~gt]]
    smoothed = convolve(spread, _gaussian_kernel(), mode="constant", cval=0.0)
    weighted = np.where(gt & (smoothed < error), smoothed, error)
    # Pixel importance: background errors count more the farther they are from the object (up to 2x).
    weighted = weighted * np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * distance))
    true_positive = np.count_nonzero(gt) - weighted[gt].sum()
    false_positive = weighted[~gt].sum()
    recall = 1 - weighted[gt].mean()
    precision = true_positive / (true_positive + false_positive + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


def segmentation_metrics(
    prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5, normalize: bool = False
) -> dict[str, float]:
    """The standard-protocol metrics of one image: IoU and Dice of `prob > threshold`, MAE, S, mean E, weighted F.
    With `normalize`, `prob` is min-max rescaled first ([`normalize_map`]), for all six, as the SOD toolkits do."""
    prob, gt = _check(prob, gt)
    if normalize:
        prob = normalize_map(prob)
    pred = prob > threshold
    return {
        "iou": float(binary_iou(pred, gt)),
        "dice": float(binary_dice(pred, gt)),
        "mae": mae(prob, gt),
        "s_measure": s_measure(prob, gt),
        "mean_e_measure": mean_e_measure(prob, gt),
        "weighted_f_measure": weighted_f_measure(prob, gt),
    }


def official_metrics(
    logits: np.ndarray, gt_soft: np.ndarray, thresholds: Sequence[float] = OFFICIAL_THRESHOLDS
) -> dict[str, float]:
    """The official BA-SAM evaluation of one image: `logits > t` (raw logits, no sigmoid) against `gt_soft > t` for
    each threshold `t`, IoU / Dice / MAE with the official smoothing constants, averaged over the thresholds."""
    logits = np.asarray(logits, dtype=np.float64)
    gt_soft = np.asarray(gt_soft, dtype=np.float64)
    if logits.shape != gt_soft.shape:
        raise ValueError(f"Expected logits and ground truth of one shape, got {logits.shape} and {gt_soft.shape}.")
    ious, dices, maes = [], [], []
    for threshold in thresholds:
        pred, gt = logits > threshold, gt_soft > threshold
        intersection = np.count_nonzero(pred & gt)
        ious.append((intersection + 1e-6) / (np.count_nonzero(pred | gt) + 1e-6))
        dices.append((2 * intersection + 1e-4) / (np.count_nonzero(pred) + np.count_nonzero(gt) + 1e-4))
        maes.append(np.mean(pred != gt))
    return {
        "official_iou": float(np.mean(ious)),
        "official_dice": float(np.mean(dices)),
        "official_mae": float(np.mean(maes)),
    }


def mean_metrics(per_sample: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-metric means over samples (each metric averaged over the samples that have it), keys sorted. Sums are
    exact (`math.fsum`), so the result does not depend on the order of the samples (e.g. the number of processes)."""
    totals: dict[str, list[float]] = {}
    for metrics in per_sample:
        for name, value in metrics.items():
            totals.setdefault(name, []).append(float(value))
    return {name: math.fsum(values) / len(values) for name, values in sorted(totals.items())}


__all__ = [
    "LOWER_IS_BETTER",
    "OFFICIAL_METRICS",
    "OFFICIAL_THRESHOLDS",
    "STANDARD_METRICS",
    "binary_dice",
    "binary_iou",
    "e_measure_curve",
    "mae",
    "mean_e_measure",
    "mean_metrics",
    "normalize_map",
    "official_metrics",
    "s_measure",
    "segmentation_metrics",
    "weighted_f_measure",
]
