"""Fine-tuning's samples, data order and batches: the training and validation samples of the settings, those that
can be trained on, the data order (every random choice is a pure function of (seed, epoch, batch or sample), so a
resumed run, or a run on any number of processes, computes exactly the batches of an uninterrupted one) and the loss
of one micro-batch."""

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object

from .data import (
    SINGLE_CLICK_PROMPTS,
    SampleError,
    SegmentationDataset,
    load_coco_dataset,
    load_segmentation_dataset,
    parse_prompt,
    prompts_from_mask,
    sample_rng,
)
from .losses import mask_targets, training_loss
from .settings import FinetuneSettings, coco_files

# A training prompt that draws a prompt kind per batch ([`batch_prompt`]).
MIXED_PROMPT = "mixed"
# The samples a run leaves out, and why (written to the run folder).
EXCLUDED_FILE = "excluded_train_samples.json"


def uses_multimask(prompt: str) -> bool:
    """Whether a prompt gets SAM's three-mask output: a single `point` or `click`, as in the evaluation."""
    return parse_prompt(prompt)[0] in SINGLE_CLICK_PROMPTS


def batch_prompt(prompt: str, jitter: float, negatives: int, seed: int, epoch: int, batch_index: int):
    """`(prompt, jitter, negatives)` of batch `batch_index` of `epoch`: the run's own, or with `prompt="mixed"` one
    kind drawn from `(seed, epoch, batch)` as users prompt SAM: a box (40 %, jittered by up to `jitter` or 10 % of its
    side), one click (35 %, three-mask output) or 1-3 positive clicks with 0-2 negative ones (25 %, at least two
    clicks in all)."""
    if prompt != MIXED_PROMPT:
        return prompt, jitter, negatives
    rng = np.random.default_rng([seed, epoch, batch_index, 1])
    draw = rng.random()
    if draw < 0.40:
        return "box", float(rng.uniform(0.0, jitter or 0.1)), 0
    if draw < 0.75:
        return "click", 0.0, 0
    positives = int(rng.integers(1, 4))
    return f"points:{positives}", 0.0, int(rng.integers(1 if positives == 1 else 0, 3))


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of `range(num_samples)` drawn from `(seed, epoch)` only, so any run (uninterrupted, resumed, on
    any number of processes) sees the same order in an epoch. accelerate calls `set_epoch`."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples).tolist())


def train_size_for_batch(sizes: Sequence[int], seed: int, epoch: int, batch_index: int) -> int:
    """The input size of batch `batch_index` of `epoch`: the only size, or one drawn from `(seed, epoch, batch)`."""
    if len(sizes) == 1:
        return int(sizes[0])
    return int(sizes[np.random.default_rng([seed, epoch, batch_index]).integers(len(sizes))])


def seed_batch(seed: int, epoch: int, batch_index: int, process_index: int) -> None:
    """Seed torch's generator for one micro-batch from `(seed, epoch, batch, process)`, so the model's own random
    draws (dropout, e.g. LoRA's) are a resumed run's as an uninterrupted one's: the data loader also draws from it
    when an epoch's iterator starts, which a resumed run does after restoring the checkpoint's state."""
    torch.manual_seed(int(np.random.default_rng([seed, epoch, batch_index, process_index, 2]).integers(2**62)))


def prompt_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    """The prompt generator of a sample in an epoch (random prompts are redrawn every epoch)."""
    return sample_rng(seed, f"epoch-{epoch}/{sample_id}")


def training_inputs(
    processor, samples: Sequence[dict], size: int, prompt: str, seed: int, epoch: int, jitter: float, negatives: int
):
    """The processor's `BatchFeature` (pixel values, prompts mapped to the input, sizes) for loaded samples."""
    kind, _ = parse_prompt(prompt)
    prompts = [
        prompts_from_mask(sample["mask"], prompt, prompt_rng(seed, epoch, sample["id"]), jitter, negatives)
        for sample in samples
    ]
    if kind == "box":
        prompt_kwargs = {"input_boxes": [p["boxes"].tolist() for p in prompts]}
    else:
        prompt_kwargs = {
            "input_points": [[p["points"].tolist()] for p in prompts],
            "input_labels": [[p["labels"].tolist()] for p in prompts],
        }
    images = [sample["image"] for sample in samples]
    return processor(images=images, size=size, return_tensors="pt", **prompt_kwargs)


def micro_batch_loss(
    model,
    processor,
    samples: Sequence[dict],
    *,
    size: int,
    prompt: str,
    seed: int,
    epoch: int,
    jitter: float = 0.0,
    negatives: int = 0,
    loss: str = "bce-dice",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The training loss of one batch of loaded samples at input size `size`: prompts from the masks, the model's
    forward pass, the targets on its low-resolution mask grid ([`mask_targets`]) and [`training_loss`]."""
    multimask = uses_multimask(prompt)
    inputs = training_inputs(processor, samples, size, prompt, seed, epoch, jitter, negatives)
    outputs = model(
        pixel_values=inputs["pixel_values"].to(device, dtype),
        input_points=inputs["input_points"].to(device, dtype) if "input_points" in inputs else None,
        input_labels=inputs["input_labels"].to(device) if "input_labels" in inputs else None,
        input_boxes=inputs["input_boxes"].to(device, dtype) if "input_boxes" in inputs else None,
        multimask_output=multimask,
    )
    targets, valid = mask_targets(
        [sample["mask"] for sample in samples],
        inputs["reshaped_input_sizes"].tolist(),
        tuple(inputs["pixel_values"].shape[-2:]),
        tuple(outputs.pred_masks.shape[-2:]),
    )
    return training_loss(outputs.pred_masks, outputs.iou_scores, targets.to(device), valid.to(device), loss, multimask)


def _check_training_sample(dataset: SegmentationDataset, index: int, patch_size: int) -> str | None:
    """Why sample `index` cannot be trained on, or `None`."""
    try:
        sample = dataset[index]
    except SampleError as error:
        return error.reason
    if not sample["mask"].any():
        return "empty mask: no prompt can be derived from it"
    if min(sample["image"].size) < patch_size:
        return f"image {sample['image'].width}x{sample['image'].height} is smaller than one {patch_size} px patch"
    return None


def usable_sample_indices(dataset: SegmentationDataset, patch_size: int, accelerator) -> tuple[list[int], list[dict]]:
    """Indices of the samples that can be trained on, and `{"id", "reason"}` for the others. Checked once, before
    training, sharded over the processes: skipping a sample inside a batch would change batch sizes and, with several
    processes, desynchronise them."""
    # Generated data (synthetic scenes, composites) says what holds for every sample: nothing to decode twice.
    if dataset.info.get("nonempty_masks") and patch_size <= dataset.info.get("min_image_side", 0):
        return list(range(len(dataset))), []
    with accelerator.split_between_processes(list(range(len(dataset)))) as mine:
        checked = [(index, _check_training_sample(dataset, index, patch_size)) for index in mine]
    reasons = dict(gather_object(checked))
    usable = sorted(index for index, reason in reasons.items() if reason is None)
    excluded = [{"id": dataset.ids[index], "reason": reason} for index, reason in sorted(reasons.items()) if reason]
    return usable, excluded


def collate_samples(samples: list[dict]) -> list[dict]:
    """A batch is its list of loaded samples."""
    return samples  # PIL images of different sizes: the processor batches them per step, at the step's size


def _load_split(
    source: Any, split: str | None, preset: str | None, max_samples: int | None, columns: dict
) -> SegmentationDataset:
    """A [`SegmentationDataset`] as given (its first `max_samples`), or loaded by `data.load_segmentation_dataset`."""
    if isinstance(source, SegmentationDataset):
        return source if max_samples is None else source.subset(range(min(max_samples, len(source))))
    return load_segmentation_dataset(source, split, preset=preset, max_samples=max_samples, **columns)


def load_training_data(dataset: Any, settings: FinetuneSettings):
    """The training samples (`dataset`, else the settings' COCO file or dataset) and the validation samples (or
    `None`)."""
    columns = {name: getattr(settings, name) for name in ("image_column", "mask_column", "annotations_column")}
    coco = coco_files(settings)
    if dataset is None and coco is not None:
        dataset = load_coco_dataset(*coco)
    dataset = settings.dataset if dataset is None else dataset
    train_set = _load_split(dataset, settings.split, settings.preset, settings.max_train_samples, columns)
    val_dataset = settings.val_dataset
    if val_dataset is None and settings.val_split is None:
        return train_set, None
    if val_dataset is None and isinstance(dataset, SegmentationDataset):
        raise ValueError("With a SegmentationDataset for training, pass the validation data as val_dataset.")
    val_preset = settings.preset if val_dataset is None else None
    source = dataset if val_dataset is None else val_dataset
    return train_set, _load_split(source, settings.val_split, val_preset, settings.val_max_samples, columns)


def training_loader(train_set: SegmentationDataset, settings: FinetuneSettings, patch_size: int, accelerator):
    """The samples that can be trained on (the others reported and listed), their epoch sampler and data loader."""
    usable, excluded = usable_sample_indices(train_set, patch_size, accelerator)
    for reason, count in Counter(item["reason"] for item in excluded).most_common():
        accelerator.print(f"Excluded {count} of {len(train_set)} training samples: {reason} (see {EXCLUDED_FILE}).")
    if not usable:
        raise ValueError(f"No usable training sample in {train_set.info.get('source')}: {excluded[:3]}")
    samples = train_set.subset(usable)
    sampler = EpochSampler(len(samples), settings.seed)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=settings.batch_size,
        sampler=sampler,
        collate_fn=collate_samples,
        num_workers=settings.num_workers,
    )
    return samples, sampler, loader, excluded


__all__ = [
    "EXCLUDED_FILE",
    "MIXED_PROMPT",
    "EpochSampler",
    "batch_prompt",
    "collate_samples",
    "load_training_data",
    "micro_batch_loss",
    "prompt_rng",
    "seed_batch",
    "train_size_for_batch",
    "training_loader",
    "training_inputs",
    "usable_sample_indices",
    "uses_multimask",
]
