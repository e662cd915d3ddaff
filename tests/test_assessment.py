"""Held-out checks beyond mIoU: the image-blind baseline, bootstrap intervals, automatic mask recall and predicted
IoU, each against an independent computation."""

import numpy as np
import pytest
from conftest import save_tiny_model

from basam_hf.assessment import (
    automatic_mask_recall,
    bootstrap_interval,
    ellipse_baseline,
    inscribed_ellipse,
    matched_objects,
    predicted_vs_actual_iou,
    prompt_scores,
    sweep_mask_generation_thresholds,
)
from basam_hf.evaluation import evaluate
from basam_hf.loading import load_model, load_processor
from basam_hf.synthetic import synthetic_segmentation_dataset


def test_inscribed_ellipse_touches_its_box_and_has_the_ellipse_area():
    mask = inscribed_ellipse((10, 20, 109, 59), (80, 140))  # 100 x 40 pixels
    rows, cols = np.nonzero(mask)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (10, 109, 20, 59)
    assert abs(mask.sum() - np.pi * 50 * 20) / (np.pi * 50 * 20) < 0.02


def test_ellipse_baseline_is_one_on_ellipses_and_lower_on_rectangles():
    from basam_hf.data import SegmentationDataset

    ellipse = inscribed_ellipse((5, 5, 44, 24), (40, 60))
    rectangle = np.zeros((40, 60), bool)
    rectangle[5:25, 5:45] = True
    masks = [ellipse, rectangle]
    dataset = SegmentationDataset(["e", "r"], lambda i: {"id": "er"[i], "mask": masks[i]}, {})
    ious = ellipse_baseline(dataset)
    assert ious[0] == 1.0
    assert abs(ious[1] - ellipse.sum() / rectangle.sum()) < 1e-9  # the ellipse lies inside its box


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.1, 1.0, 50), rng.normal(0.1, 1.0, 5000)
    low, high = bootstrap_interval(small)
    assert low < small.mean() < high
    # The normal approximation of the mean's 95 % interval: +- 1.96 standard errors.
    half = 1.96 * small.std(ddof=1) / np.sqrt(small.size)
    assert abs((high - low) / 2 - half) < 0.2 * half
    large_low, large_high = bootstrap_interval(large)
    assert large_high - large_low < (high - low) / 5
    assert bootstrap_interval(small, seed=3) == bootstrap_interval(small, seed=3)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_matched_objects_takes_each_objects_best_mask():
    truth = np.zeros((2, 10, 10), bool)
    truth[0, :5] = True
    truth[1, 5:] = True
    predicted = np.stack([truth[0], truth[0] | truth[1]])
    assert matched_objects(predicted, list(truth)) == [1.0, 0.5]
    assert matched_objects(np.zeros((0, 10, 10), bool), list(truth)) == [0.0, 0.0]


@pytest.fixture
def tiny(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny", seed=2)
    model = load_model(folder)
    return model, load_processor(folder, model)


def test_automatic_mask_recall_counts_found_objects(tiny, single_thread):
    model, processor = tiny
    scenes = []
    for index in range(2):
        sample = synthetic_segmentation_dataset(2, 64, seed=4)[index]
        scenes.append({"image": sample["image"], "masks": [sample["mask"]]})
    loose = automatic_mask_recall(
        model, processor, scenes, threshold=0.0, points_per_side=4, pred_iou_thresh=-1e9, stability_score_thresh=-1e9
    )
    assert loose["objects"] == 2 and loose["masks_per_image"] > 0
    assert loose["recall"] == 1.0  # every object meets IoU >= 0 once any mask exists
    strict = automatic_mask_recall(model, processor, scenes, threshold=1.01, points_per_side=4, pred_iou_thresh=-1e9)
    assert strict["recall"] == 0.0 and 0.0 <= strict["mean_best_iou"] <= 1.0


def test_threshold_sweep_picks_the_highest_recall_and_the_strictest_of_equals(tiny, single_thread):
    model, processor = tiny
    sample = synthetic_segmentation_dataset(1, 64, seed=4)[0]
    scenes = [{"image": sample["image"], "masks": [sample["mask"]]}]
    keep_none = {"pred_iou_thresh": 1.0, "stability_score_thresh": 1.0}  # predicted IoU never exceeds 1: no mask
    keep_all = {"pred_iou_thresh": -1e9, "stability_score_thresh": -1e9}
    chosen, rows = sweep_mask_generation_thresholds(
        model, processor, scenes, [keep_none, keep_all, dict(keep_all)], threshold=1e-6, points_per_side=4
    )
    assert [row["thresholds"] for row in rows] == [keep_none, keep_all, keep_all]
    assert rows[0]["masks_per_image"] == 0 and rows[0]["recall"] == 0.0 and rows[1]["recall"] == 1.0
    assert chosen == keep_all and chosen is rows[1]["thresholds"]  # the first of the equal candidates
    direct = automatic_mask_recall(model, processor, scenes, threshold=1e-6, points_per_side=4, **keep_all)
    assert {key: rows[1][key] for key in direct} == direct


def test_predicted_vs_actual_iou_scores_every_returned_mask(tiny, single_thread):
    model, processor = tiny
    dataset = synthetic_segmentation_dataset(3, 64, seed=5)
    predicted, actual = predicted_vs_actual_iou(model, processor, dataset, prompt="click")
    assert predicted.shape == actual.shape == (9,)  # three masks per single click
    assert ((0 <= actual) & (actual <= 1)).all()
    predicted, actual = predicted_vs_actual_iou(model, processor, dataset, prompt="box")
    assert predicted.shape == (3,)


def test_prompt_scores_match_evaluate_and_the_ellipse_baseline(tiny, single_thread):
    """Each prompt's mean is evaluate()'s mIoU on the same samples and prompts (run here without the shared encoder
    pass), with an interval around it; the baseline and the paired difference follow from the per-sample values."""
    model, _ = tiny
    scenes = synthetic_segmentation_dataset(4, 64, seed=6)
    report = prompt_scores(model, {"scenes": scenes}, prompts=("box", "point"), seed=3)["scenes"]
    for prompt in ("box", "point"):
        expected = evaluate(model, scenes, prompt=prompt, seed=3)["results"][0]["metrics"]["iou"]
        row = report[prompt]
        assert row["mean"] == pytest.approx(expected, abs=1e-6) and row["n"] == 4
        assert row["low"] <= row["mean"] <= row["high"]
        assert np.mean(report["per_sample"][prompt]) == pytest.approx(row["mean"])
    assert report["per_sample"]["ids"] == list(scenes.ids)
    ellipse = ellipse_baseline(scenes)
    assert report["ellipse"]["mean"] == pytest.approx(ellipse.mean())
    assert report["box - ellipse"]["mean"] == pytest.approx(report["box"]["mean"] - ellipse.mean())
