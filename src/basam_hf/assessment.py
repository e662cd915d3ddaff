"""Held-out checks of a promptable segmenter beyond per-prompt mIoU: an image-blind baseline, automatic mask
generation recall, how well predicted IoU tracks actual IoU, and bootstrap intervals for paired comparisons."""

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from .data import SINGLE_CLICK_PROMPTS, SegmentationDataset, mask_box, prompts_from_mask, sample_rng
from .evaluation import evaluate
from .intervals import bootstrap_interval, mean_with_interval
from .metrics import binary_iou
from .segment import generate_masks, model_inputs
from .study import shared_image_embeddings


def inscribed_ellipse(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """The ellipse inscribed in the pixel box `(x0, y0, x1, y1)` (inclusive), as a boolean mask of `shape`."""
    x0, y0, x1, y1 = box
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    rx, ry = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    return ((cols - (x0 + x1) / 2) / rx) ** 2 + ((rows - (y0 + y1) / 2) / ry) ** 2 <= 1


def ellipse_baseline(dataset: SegmentationDataset, indices: Iterable[int] | None = None) -> np.ndarray:
    """Per-sample IoU of a predictor that never looks at the image: the ellipse inscribed in the ground-truth box
    (what a box prompt alone tells). A model must beat it to show it segments what it sees."""
    ious = []
    for index in range(len(dataset)) if indices is None else indices:
        truth = dataset[index]["mask"]
        ious.append(binary_iou(inscribed_ellipse(mask_box(truth), truth.shape), truth))
    return np.asarray(ious)


def matched_objects(predicted: np.ndarray, objects: Sequence[np.ndarray], threshold: float = 0.5) -> list[float]:
    """For each ground-truth object, the best IoU of any predicted mask `(n, H, W)`; an object counts as found when
    it reaches `threshold`."""
    best = []
    for truth in objects:
        ious = [binary_iou(mask, truth) for mask in predicted]
        best.append(max(ious, default=0.0))
    return best


def automatic_mask_recall(model, processor, scenes: Iterable[dict], threshold: float = 0.5, **generate_kwargs) -> dict:
    """Automatic mask generation ([`basam_hf.segment.generate_masks`], pipeline defaults unless `generate_kwargs`
    says otherwise) on scenes `{"image", "masks"}`: the share of objects found (best IoU >= `threshold`), the mean
    best IoU and the number of masks per image."""
    best, counts = [], []
    for scene in scenes:
        masks, _ = generate_masks(model, processor, scene["image"], **generate_kwargs)
        best += matched_objects(masks, scene["masks"], threshold)
        counts.append(len(masks))
    best = np.asarray(best)
    return {
        "recall": float((best >= threshold).mean()) if best.size else 0.0,
        "mean_best_iou": float(best.mean()) if best.size else 0.0,
        "objects": int(best.size),
        "masks_per_image": float(np.mean(counts)) if counts else 0.0,
        "threshold": threshold,
    }


def sweep_mask_generation_thresholds(
    model, processor, scenes: Sequence[dict], candidates: Sequence[Mapping[str, float]], **generate_kwargs
) -> tuple[dict, list[dict]]:
    """[`automatic_mask_recall`] on `scenes` at each candidate `{"pred_iou_thresh", "stability_score_thresh"}`,
    strictest first, and the candidate with the highest recall (the strictest of equals): thresholds to recommend
    for a model in its config (`BaSamConfig.mask_generation`). Sweep on validation scenes, never on the test set.

    Returns:
        `(chosen thresholds, [{"thresholds", **recall summary}, ...])`.
    """
    rows = [
        {"thresholds": dict(candidate)}
        | automatic_mask_recall(model, processor, scenes, **generate_kwargs, **candidate)
        for candidate in candidates
    ]
    best = max(rows, key=lambda row: row["recall"])  # max keeps the first of equals
    return best["thresholds"], rows


def prompt_scores(
    model,
    datasets: Mapping[str, SegmentationDataset],
    prompts: Sequence[str] = ("box", "point"),
    size: int | None = None,
    seed: int = 0,
) -> dict:
    """Held-out mIoU of `model` per dataset and prompt, each with its 95 % bootstrap interval, next to the image-blind
    ellipse baseline and the paired box-minus-ellipse difference: `{set: {"ellipse": ..., prompt: ..., "box -
    ellipse": ..., "per_sample": {"ids": [...], prompt: [IoU, ...]}}}`, each summary `{"mean", "low", "high", "n"}`
    (`per_sample` allows paired comparisons of two models). Prompts on the same images share one encoder pass; a
    skipped sample (no usable prompt) counts as IoU 0, so every prompt is scored on every sample."""
    report = {}
    for name, dataset in datasets.items():
        ids = list(dataset.ids)
        ellipse = dict(zip(ids, ellipse_baseline(dataset).tolist()))
        report[name] = {"ellipse": mean_with_interval(list(ellipse.values())), "per_sample": {"ids": ids}}
        with shared_image_embeddings([model]):
            for prompt in prompts:
                found = {}

                def keep(records: list[dict]) -> None:
                    found.update((r["id"], r["metrics"]["iou"]) for r in records if r["status"] == "ok")

                evaluate(model, dataset, sizes=None if size is None else [size], prompt=prompt, seed=seed,
                         on_records=keep)  # fmt: skip
                ious = [found.get(i, 0.0) for i in ids]
                report[name][prompt] = mean_with_interval(ious)
                report[name]["per_sample"][prompt] = ious
                if prompt == "box":
                    report[name]["box - ellipse"] = mean_with_interval([a - ellipse[i] for a, i in zip(ious, ids)])
    return report


@torch.no_grad()
def predicted_vs_actual_iou(model, processor, dataset: SegmentationDataset, prompt: str = "click", seed: int = 0):
    """Predicted and actual IoU of every mask the model returns for one `prompt` per sample (three per single click):
    `(predicted, actual)` arrays, for the correlation that makes predicted IoU useful (choosing among the three
    masks, filtering automatic masks)."""
    predicted, actual = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        prompts = prompts_from_mask(sample["mask"], prompt, sample_rng(seed, sample["id"]))
        inputs = processor(
            images=sample["image"],
            input_points=[[prompts["points"].tolist()]] if "points" in prompts else None,
            input_labels=[[prompts["labels"].tolist()]] if "points" in prompts else None,
            input_boxes=[prompts["boxes"].tolist()] if "boxes" in prompts else None,
            return_tensors="pt",
        )
        outputs = model(**model_inputs(inputs, model), multimask_output=prompt in SINGLE_CLICK_PROMPTS)
        masks = processor.post_process_masks(
            outputs.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0][0]
        predicted += outputs.iou_scores[0, 0].float().cpu().tolist()
        actual += [binary_iou(mask.numpy(), sample["mask"]) for mask in masks]
    return np.asarray(predicted), np.asarray(actual)


__all__ = [
    "automatic_mask_recall",
    "bootstrap_interval",
    "ellipse_baseline",
    "inscribed_ellipse",
    "matched_objects",
    "mean_with_interval",
    "predicted_vs_actual_iou",
    "prompt_scores",
    "sweep_mask_generation_thresholds",
]
