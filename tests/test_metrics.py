"""Metrics: hand-computed cases (empty, full, one pixel, perfect) and agreement with pysodmetrics on random maps."""

import warnings

import numpy as np
import pytest

from basam_hf import metrics


def test_iou_dice_empty_and_disjoint_conventions():
    empty = np.zeros((4, 4))
    one = np.zeros((4, 4), dtype=bool)
    one[1, 2] = True
    assert metrics.segmentation_metrics(empty, one * False)["iou"] == 1.0  # both empty: perfect agreement
    assert metrics.segmentation_metrics(empty, one * False)["dice"] == 1.0
    assert metrics.segmentation_metrics(empty, one)["iou"] == 0.0  # empty prediction, one GT pixel
    assert metrics.segmentation_metrics(one.astype(float), one * False)["dice"] == 0.0  # empty GT, one predicted


def test_iou_dice_mae_hand_computed():
    gt = np.zeros((2, 4), dtype=bool)
    gt[0, 0] = True
    prob = np.zeros((2, 4))
    prob[0, :2] = [0.9, 0.6]  # two predicted pixels, one correct
    prob[1, 0] = 0.5  # exactly 0.5 is not foreground (threshold is strict)
    result = metrics.segmentation_metrics(prob, gt)
    assert result["iou"] == pytest.approx(1 / 2)
    assert result["dice"] == pytest.approx(2 / 3)
    assert result["mae"] == pytest.approx((0.1 + 0.6 + 0.5) / 8)


def test_one_pixel_perfect_prediction():
    gt = np.zeros((5, 5), dtype=bool)
    gt[2, 3] = True
    result = metrics.segmentation_metrics(gt.astype(float), gt)
    assert result["iou"] == result["dice"] == 1.0
    assert result["mae"] == 0.0
    assert result["s_measure"] == pytest.approx(1.0)
    assert result["weighted_f_measure"] == pytest.approx(1.0)
    # 255 thresholds see the perfect map (25 pixels aligned: 25 / 24); at t = 0 everything is foreground, each pixel
    # then has alignment 0 (enhanced value 1/4): 25 / 4 / 24.
    assert result["mean_e_measure"] == pytest.approx((255 * 25 / 24 + 25 / 4 / 24) / 256)


def test_empty_and_full_ground_truth_conventions():
    prob = np.full((3, 3), 0.25)
    empty, full = np.zeros((3, 3), dtype=bool), np.ones((3, 3), dtype=bool)
    assert metrics.s_measure(prob, empty) == pytest.approx(0.75)
    assert metrics.s_measure(prob, full) == pytest.approx(0.25)
    assert metrics.weighted_f_measure(prob, empty) == 0.0
    assert metrics.mae(prob, full) == pytest.approx(0.75)
    # prob 0.25 -> level 63: thresholds 0..63 predict all foreground (63 of them count, t = 0..63 is 64 levels).
    # Empty GT scores predicted background: 9 / 8 for the 192 thresholds above 63, 0 for the other 64.
    assert metrics.mean_e_measure(prob, empty) == pytest.approx(192 * 9 / 8 / 256)
    assert metrics.mean_e_measure(prob, full) == pytest.approx(64 * 9 / 8 / 256)


def test_perfect_prediction_scores_one():
    gt = np.zeros((12, 10), dtype=bool)
    gt[3:8, 2:9] = True
    result = metrics.segmentation_metrics(gt.astype(float), gt)
    assert result["s_measure"] == pytest.approx(1.0)
    assert result["weighted_f_measure"] == pytest.approx(1.0)
    assert result["iou"] == 1.0 and result["mae"] == 0.0


def test_official_metrics_threshold_average():
    gt_soft = np.full((4, 4), 0.4)
    logits = np.ones((4, 4))  # above every threshold
    result = metrics.official_metrics(logits, gt_soft)
    # GT is foreground at t = 0.1, 0.3 only: IoU 1, 1, then ~0 (smoothing 1e-6 / 16) three times.
    assert result["official_iou"] == pytest.approx(2 / 5, abs=1e-6)
    assert result["official_mae"] == pytest.approx(3 / 5)
    both_empty = metrics.official_metrics(-np.ones((4, 4)), np.zeros((4, 4)))
    assert both_empty == {"official_iou": 1.0, "official_dice": 1.0, "official_mae": 0.0}


def test_mean_metrics_order_independent():
    records = [{"iou": 0.1, "dice": 0.3}, {"iou": 0.2}, {"iou": 0.7, "dice": 0.5}]
    assert metrics.mean_metrics(records) == metrics.mean_metrics(records[::-1])
    assert metrics.mean_metrics(records) == pytest.approx({"iou": 1.0 / 3, "dice": 0.4})


def _random_maps(seed: int):
    """Random GT (blobs or noise) and predictions (soft noise, a noisy copy of the GT, binary)."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(16, 48, size=2)
    if seed % 2:
        yy, xx = np.mgrid[:height, :width]
        cy, cx, radius = rng.uniform(4, height - 4), rng.uniform(4, width - 4), rng.uniform(3, 10)
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    else:
        gt = rng.random((height, width)) < 0.3
    predictions = [
        rng.random((height, width)),
        np.clip(gt + rng.normal(0, 0.3, gt.shape), 0, 1),
        (rng.random((height, width)) < 0.5).astype(np.float64),
    ]
    return gt, predictions


@pytest.mark.parametrize("seed", range(6))
def test_s_e_f_agree_with_pysodmetrics(seed):
    py_sod_metrics = pytest.importorskip("py_sod_metrics")
    gt, predictions = _random_maps(seed)
    for prob in predictions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s_ref, e_ref, f_ref = (
                py_sod_metrics.Smeasure(),
                py_sod_metrics.Emeasure(),
                py_sod_metrics.WeightedFmeasure(),
            )
            for reference in (s_ref, e_ref, f_ref):
                reference.step(prob, gt, normalize=False)
        assert metrics.s_measure(prob, gt) == pytest.approx(s_ref.sms[0], abs=1e-12)
        assert metrics.mean_e_measure(prob, gt) == pytest.approx(np.mean(e_ref.changeable_ems[0]), abs=1e-12)
        assert metrics.weighted_f_measure(prob, gt) == pytest.approx(f_ref.weighted_fms[0], abs=1e-12)


def test_normalize_maps_rescales_each_map_before_every_metric():
    gt = np.zeros((2, 3), dtype=bool)
    gt[0, :2] = True
    prob = np.array([[0.375, 0.25, 0.125], [0.125, 0.125, 0.3125]])  # 0.125 .. 0.375: nothing above 0.5 as given
    rescaled = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.75]])  # (p - 0.125) / 0.25, by hand (exact in binary)
    assert metrics.normalize_map(prob) == pytest.approx(rescaled)
    as_given, normalized = (
        metrics.segmentation_metrics(prob, gt),
        metrics.segmentation_metrics(prob, gt, normalize=True),
    )
    assert as_given["iou"] == 0.0 and normalized["iou"] == pytest.approx(1 / 3)  # 0.5 threshold on the rescaled map
    assert normalized["dice"] == pytest.approx(2 / 4)
    assert normalized["mae"] == pytest.approx((0 + 0.5 + 0 + 0 + 0 + 0.75) / 6)
    assert normalized == pytest.approx(metrics.segmentation_metrics(rescaled, gt))
    constant = np.full((2, 3), 0.3)  # max == min: left as it is (the toolkits divide by nothing)
    assert metrics.segmentation_metrics(constant, gt, normalize=True) == metrics.segmentation_metrics(constant, gt)


@pytest.mark.parametrize("seed", range(4))
def test_normalize_maps_agrees_with_pysodmetrics_on_saved_maps(seed):
    """pysodmetrics reads a saved 0-255 map and rescales it (`normalize=True`): the same numbers as ours on that map
    divided by 255 with `normalize=True`, for all six metrics (IoU and Dice: its binary `pred > 0.5` handlers)."""
    py_sod_metrics = pytest.importorskip("py_sod_metrics")
    gt, predictions = _random_maps(seed)
    rng = np.random.default_rng(seed)
    for prob in predictions:
        low, high = sorted(rng.uniform(0.1, 0.9, size=2))
        saved = np.round((low + (high - low) * prob) * 255).astype(np.uint8)  # a map not spanning 0 .. 255
        gt_image = gt.astype(np.uint8) * 255
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            references = {
                "mae": py_sod_metrics.MAE(),
                "s_measure": py_sod_metrics.Smeasure(),
                "mean_e_measure": py_sod_metrics.Emeasure(),
                "weighted_f_measure": py_sod_metrics.WeightedFmeasure(),
                "binary": py_sod_metrics.FmeasureV2(
                    {
                        "iou": py_sod_metrics.IOUHandler(False, False, with_binary=True),
                        "dice": py_sod_metrics.DICEHandler(False, False, with_binary=True),
                    }
                ),
            }
            for reference in references.values():
                reference.step(saved, gt_image, normalize=True)
        binary = references["binary"].get_results()
        expected = {
            "iou": binary["iou"]["binary"],
            "dice": binary["dice"]["binary"],
            "mae": references["mae"].get_results()["mae"],
            "s_measure": references["s_measure"].get_results()["sm"],
            "mean_e_measure": references["mean_e_measure"].get_results()["em"]["curve"].mean(),
            "weighted_f_measure": references["weighted_f_measure"].get_results()["wfm"],
        }
        ours = metrics.segmentation_metrics(saved / 255, gt, normalize=True)
        assert ours == pytest.approx(expected, abs=1e-12)
        assert ours != pytest.approx(metrics.segmentation_metrics(saved / 255, gt), abs=1e-3)  # the option matters
