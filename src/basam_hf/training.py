"""Fine-tuning BA-SAM with `accelerate`: one training loop ([`finetune`]); everything else is a function it calls.

Recipe defaults are the official BA-SAM ones: all parameters, Adam lr 1e-4, StepLR every 10 epochs with gamma 0.5,
BCE + Dice loss, one positive click per object (`points:1`, redrawn every epoch), 50 epochs.

Decisions (documented in the README):
- **Loss resolution**: the loss compares the decoder's low-resolution logits (`4 / patch_size` of the input: 256 x 256
  at 1024 px, as the official recipe's 256 px output) with the ground truth resized to the part of that grid the
  resized image covers (area averaging, so a target is the fraction of object in its cell; bilinear when the mask is
  smaller than that part); the padding cells are excluded from the loss. Upsampling the logits to every image's own
  size instead would cost up to 16x the memory and make batches ragged, for no better gradient at the scale SAM's
  masks are predicted.
- **Multimask**: a single `point` prompt uses SAM's three-mask output (as the evaluation does, which keeps the mask
  with the highest predicted IoU): the loss is that of the best of the three masks plus the MSE of the IoU
  predictions against the masks' actual IoUs (SAM's recipe). Boxes and `points:k` give one mask: its BCE + Dice
  plus the MSE of its predicted IoU (SAM supervises every output's IoU; see [`basam_hf.losses.training_loss`]).
- **What is trained** ([`TRAIN_MODES`]): `all`; `mask-decoder`; `frozen-encoder` (prompt encoder + mask decoder);
  `iou-head`: only the head predicting each mask's IoU (the masks stay bit-identical: calibrates a model's scores);
  `ba-only`: only the parameters BA-SAM adds to SAM (`coefficient` of `bias_mode="coefficient"`, `slopes` with
  `learnable_slopes=True`), so every SAM weight, rel-pos tables included, stays bit-identical and the BA-off model is
  still the original SAM; `lora`: a peft LoRA adapter on the frozen model ([`basam_hf.lora`]). SAM's random Fourier
  matrix (`shared_image_embedding`, a buffer in segment-anything) is never trained.
- **Reproducible data order**: every random choice is a pure function of (seed, epoch, batch or sample): the
  permutation of the epoch ([`EpochSampler`]), the input size of a batch ([`train_size_for_batch`]), the prompt of a
  sample (`sample_rng(seed, "epoch-E/ID")`). With accelerate's `save_state` / `load_state` (model, optimizer, StepLR,
  RNGs) and `skip_first_batches`, an interrupted and resumed run computes exactly the batches of an uninterrupted one.
- **Checkpoints** (`output_dir/checkpoints/checkpoint-STEP`): `save_state` into `.tmp-checkpoint-STEP` next to them,
  plus `trainer_state.json` (step, epoch, batches done, best metric, run settings) and `model_config.json`, then one
  `os.replace`: a checkpoint is complete or absent, also after Ctrl-C. The last `keep_last` are kept. `best/` and
  `final/` are `save_pretrained` folders (safetensors, code files, processor config, model card), replaced atomically.
"""

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.tracking import GeneralTracker

from .checkpoints import (
    CHECKPOINTS_DIR,
    check_resume_compatible,
    latest_checkpoint,
    list_checkpoints,
    remove_stale_temporaries,
    replace_directory,
    resolve_resume,
    save_checkpoint,
)
from .constants import MIXED_PRECISION, TRAIN_MODES
from .conversion import is_ba_parameter
from .data import (
    SINGLE_CLICK_PROMPTS,
    SampleError,
    SegmentationDataset,
    load_segmentation_dataset,
    parse_prompt,
    prompts_from_mask,
    sample_rng,
)
from .lora import LORA_MODE, LoraOptions, is_lora_model, lora_options, prepare_lora_training, save_adapter
from .losses import LOSSES, mask_targets, training_loss
from .model_card import write_model_card
from .references import hub_id_or_none, resolve_model

# A training prompt that draws a prompt kind per batch ([`batch_prompt`]).
MIXED_PROMPT = "mixed"
# Parameters no mode trains: SAM's random Fourier features are a fixed buffer in segment-anything.
NEVER_TRAINED = ("shared_image_embedding.",)
LOGS_DIR = "logs"
METRICS_LOG = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"
EXCLUDED_FILE = "excluded_train_samples.json"
BEST_DIR = "best"
FINAL_DIR = "final"


# ---------------------------------------------------------------------------------------------------------------------
# What is trained


def trainable_parameter_names(model: torch.nn.Module, train: str) -> list[str]:
    """Names of the parameters `train` (one of [`TRAIN_MODES`]) optimizes.

    Raises:
        ValueError: for an unknown mode, or `ba-only` on a model without BA parameters.
    """
    if train == LORA_MODE:  # LoRA adds parameters rather than selecting some
        raise ValueError("train='lora' trains new adapter parameters: see basam_hf.lora.add_lora.")
    if train not in TRAIN_MODES:
        raise ValueError(f"Unknown train mode {train!r}; use one of {', '.join(TRAIN_MODES)}.")
    selectors: dict[str, Callable[[str], bool]] = {
        "all": lambda name: True,
        "mask-decoder": lambda name: name.startswith("mask_decoder."),
        "frozen-encoder": lambda name: not name.startswith("vision_encoder."),
        "ba-only": is_ba_parameter,
        "iou-head": lambda name: name.startswith("mask_decoder.iou_prediction_head."),
    }
    names = [
        name for name, _ in model.named_parameters() if not name.startswith(NEVER_TRAINED) and selectors[train](name)
    ]
    if not names:
        raise ValueError(
            f"train={train!r} selects no parameter of this model. ba-only trains the parameters BA-SAM adds to SAM: "
            "use bias_mode='coefficient' (a coefficient per layer) or learnable_slopes=True with bias_mode='distance'."
        )
    return names


def set_trainable(model: torch.nn.Module, train: str) -> list[str]:
    """Freeze every parameter but those of `train`; return the trainable names."""
    names = set(trainable_parameter_names(model, train))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    return sorted(names)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Checkpoint every image-encoder layer with transformers' API: `activation_checkpointing_enable` (transformers
    5.x's name), else its older alias `gradient_checkpointing_enable`."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


# ---------------------------------------------------------------------------------------------------------------------
# Data order and batches


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
    from accelerate.utils import gather_object

    # Generated data (synthetic scenes, composites) says what holds for every sample: nothing to decode twice.
    if dataset.info.get("nonempty_masks") and patch_size <= dataset.info.get("min_image_side", 0):
        return list(range(len(dataset))), []
    with accelerator.split_between_processes(list(range(len(dataset)))) as mine:
        checked = [(index, _check_training_sample(dataset, index, patch_size)) for index in mine]
    reasons = dict(gather_object(checked))
    usable = sorted(index for index, reason in reasons.items() if reason is None)
    excluded = [{"id": dataset.ids[index], "reason": reason} for index, reason in sorted(reasons.items()) if reason]
    return usable, excluded


def _collate_samples(samples: list[dict]) -> list[dict]:
    return samples  # PIL images of different sizes: the processor batches them per step, at the step's size


# ---------------------------------------------------------------------------------------------------------------------
# Logging


class JsonLinesTracker(GeneralTracker):
    """An accelerate tracker writing one JSON object per `log` call (`{"step": ..., **values}`) to a file, and the
    run configuration to `run_config.json` next to it."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def store_init_configuration(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(values, indent=2, sort_keys=True, default=str) + "\n"
        (self.path.parent / RUN_CONFIG_FILE).write_text(text, encoding="utf-8")

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"step": step, **values}, sort_keys=True, default=float) + "\n")


def read_metrics_log(path: str | os.PathLike) -> list[dict]:
    """The records of a [`JsonLinesTracker`] file (a truncated last line, from a killed run, is ignored)."""
    records = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _truncate_metrics_log(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (logged by an interrupted run after its last checkpoint: they are redone)."""
    if path.is_file():
        kept = [record for record in read_metrics_log(path) if (record.get("step") or 0) <= last_step]
        path.write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in kept), encoding="utf-8")


def _available_trackers() -> list[str]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def _flat_config(values: dict) -> dict:
    """Scalars only (TensorBoard's hyperparameters accept nothing else): lists and `None` become strings."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in values.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Models


def load_training_model(model: Any, ba_settings: dict | None = None):
    """A `BaSamModel` from a BA-SAM or plain SAM checkpoint (repo id, folder, `default`) with `ba_settings` applied
    (see [`basam_hf.conversion.convert_sam_to_basam`]: every SAM weight must load), or a given model."""
    from .conversion import convert_sam_to_basam
    from .modeling_basam import BaSamModel

    if isinstance(model, BaSamModel):
        if ba_settings:
            raise ValueError("BA settings apply when loading a checkpoint; this model is already built.")
        return model
    return convert_sam_to_basam(resolve_model(model), **(ba_settings or {}))


def _check_settings(
    *,
    train: str,
    loss: str,
    mixed_precision: str,
    prompts: Sequence[str | None],
    val_metric: str,
    positive: dict,
    positive_or_none: dict,
) -> None:
    """Raise a `ValueError` naming the first invalid setting of [`finetune`]."""
    from .metrics import STANDARD_METRICS

    if train not in TRAIN_MODES:
        raise ValueError(f"Unknown train mode {train!r}; use one of {', '.join(TRAIN_MODES)}.")
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; use one of {', '.join(LOSSES)}.")
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"Unknown mixed precision {mixed_precision!r}; use one of {', '.join(MIXED_PRECISION)}.")
    for index, prompt in enumerate(prompts):
        if prompt is not None and not (index == 0 and prompt == MIXED_PROMPT):  # the training prompt may be mixed
            parse_prompt(prompt)
    if val_metric not in STANDARD_METRICS:
        raise ValueError(f"Unknown validation metric {val_metric!r}; use one of {', '.join(STANDARD_METRICS)}.")
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    for name, value in positive_or_none.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")


def _load_split(
    source: Any, split: str | None, preset: str | None, max_samples: int | None, columns: dict
) -> SegmentationDataset:
    """A [`SegmentationDataset`] as given (its first `max_samples`), or loaded by `data.load_segmentation_dataset`."""
    if isinstance(source, SegmentationDataset):
        return source if max_samples is None else source.subset(range(min(max_samples, len(source))))
    return load_segmentation_dataset(source, split, preset=preset, max_samples=max_samples, **columns)


def _validation_score(summary: dict, metric: str) -> float:
    """The mean of `metric` over the BA-SAM rows (input sizes) of an evaluation summary."""
    values = [
        row["metrics"][metric] for row in summary["results"] if row["variant"] == "ba" and metric in row["metrics"]
    ]
    if not values:
        raise ValueError(f"The validation summary has no {metric!r}; available: {summary['metric_names']}.")
    return float(np.mean(values))


def _is_better(value: float, best: float | None, metric: str) -> bool:
    from .metrics import LOWER_IS_BETTER

    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def training_card_table(settings: dict, patch_size: int) -> dict[str, Any]:
    """The model card's training table from a run's settings."""
    data = Path(settings["dataset"]).name if Path(settings["dataset"]).exists() else settings["dataset"]
    split = f" (split {settings['split']})" if settings.get("split") else ""
    multimask = " (three-mask output: best-mask loss + IoU-prediction MSE)" if settings["multimask"] else ""
    return {
        "base model": Path(settings["model"]).name
        if settings["model"] and Path(settings["model"]).exists()
        else settings["model"],
        "training data": f"{data}{split}, {settings['train_samples']} samples",
        "parameters trained": f"{settings['train']} ({settings['trainable_parameters']:,} parameters)",
        "prompt": settings["prompt"] + multimask,
        "input sizes": settings["train_sizes"],
        "loss": f"{settings['loss']} on the low-resolution masks (4/{patch_size} of the input) against the ground "
        "truth resized to them, padding excluded",
        "optimizer": f"Adam, lr {settings['learning_rate']}, weight decay {settings['weight_decay']}",
        "schedule": f"StepLR every {settings['lr_step_epochs']} epochs, gamma {settings['lr_gamma']}",
        "batch size": f"{settings['batch_size']} per process x {settings['num_processes']} processes x "
        f"{settings['gradient_accumulation_steps']} accumulation steps",
        "optimizer steps": f"{settings['total_steps']} ({settings['steps_per_epoch']} per epoch)",
        "mixed precision": settings["mixed_precision"],
        "seed": settings["seed"],
    }


def _export(model, processor, folder: Path, card: dict) -> None:
    """`save_pretrained_with_processor` + model card into a temporary folder, then [`replace_directory`]."""
    from .processing_basam import save_pretrained_with_processor

    temporary = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    if is_lora_model(model):  # an adapter folder (issue 29): adapter_config.json, adapter_model.safetensors
        save_adapter(model, temporary)
    else:
        save_pretrained_with_processor(model, str(temporary), processor=processor)
    write_model_card(temporary, **card)
    replace_directory(temporary, folder)


# ---------------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainingResult:
    """What a [`finetune`] call did. `losses` are the per-step training losses of this call (after a resume, only the
    steps it ran); `best` is `{"metric", "value", "step"}` or `None` without validation."""

    output_dir: Path
    global_step: int
    total_steps: int
    losses: list[float] = field(default_factory=list)
    best: dict | None = None
    best_dir: Path | None = None
    final_dir: Path | None = None
    last_checkpoint: Path | None = None
    resumed_from: Path | None = None
    excluded_samples: list[dict] = field(default_factory=list)
    pushed_to: str | None = None


def finetune(
    model: Any = "default",
    dataset: str | os.PathLike | SegmentationDataset | None = None,
    *,
    output_dir: str | os.PathLike,
    split: str | None = "train",
    preset: str | None = None,
    image_column: str | None = None,
    mask_column: str | None = None,
    annotations_column: str | None = None,
    max_train_samples: int | None = None,
    val_dataset: str | os.PathLike | SegmentationDataset | None = None,
    val_split: str | None = None,
    val_max_samples: int | None = None,
    val_sizes: Sequence[int] | None = None,
    val_prompt: str | None = None,
    val_metric: str = "iou",
    eval_steps: int | None = None,
    eval_batch_size: int = 1,
    train_sizes: Sequence[int] | None = None,
    prompt: str = "points:1",
    jitter: float = 0.0,
    negatives: int = 0,
    train: str = "all",
    lora: LoraOptions | dict | None = None,
    loss: str = "bce-dice",
    learning_rate: float = 1e-4,
    weight_decay: float = 0.0,
    lr_step_epochs: int = 10,
    lr_gamma: float = 0.5,
    max_grad_norm: float | None = None,
    batch_size: int = 2,
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    epochs: int = 50,
    max_steps: int | None = None,
    seed: int = 0,
    save_steps: int = 500,
    keep_last: int | None = 3,
    resume: bool | str | os.PathLike = False,
    ba_settings: dict | None = None,
    num_workers: int = 0,
    log_with: Sequence[str] | None = None,
    license: str = "apache-2.0",
    push_to_hub: str | None = None,
    private: bool = False,
    cpu: bool = False,
    step_callback: Callable[[dict], None] | None = None,
) -> TrainingResult:
    """Fine-tune BA-SAM on a segmentation dataset with accelerate (plainly, or under `accelerate launch` / torchrun).

    Args:
        model: a BA-SAM or SAM checkpoint (Hub repo id or folder), `default` (the embedded model), or a `BaSamModel`.
            A SAM checkpoint is converted with `ba_settings` (e.g. `{"bias_mode": "coefficient"}`,
            `{"learnable_slopes": True}`), which also override a BA-SAM checkpoint's settings.
        dataset: training data: a [`SegmentationDataset`] or a source of [`basam_hf.data.load_segmentation_dataset`]
            (Hub id, `save_to_disk` folder, images/ + masks/ folder) with `split` (default `train`; ignored by
            single-split sources), `preset` and the column arguments.
        output_dir: `checkpoints/`, `logs/` (`metrics.jsonl`, `run_config.json`, TensorBoard if installed),
            `best/`, `final/` and `excluded_train_samples.json` go here.
        val_dataset, val_split: validation data (default: `dataset` with `val_split`); without both, there is no
            validation and no `best/`. Evaluated with [`basam_hf.evaluation.evaluate`] every `eval_steps` (default
            `save_steps`) and at the end, at `val_sizes` (default `train_sizes`) with `val_prompt` (default `prompt`);
            `best/` holds the model with the best mean `val_metric` over the sizes.
        train_sizes: input sizes (longest edge); with several, each batch draws one (seeded). Default the model's.
        prompt: `box`, `point` / `click` (three-mask output, see the module docstring), `points:k` (k random positive
            clicks, redrawn every epoch) or `mixed` (a kind drawn per batch, see [`batch_prompt`]; validation then
            defaults to boxes); `jitter` / `negatives` as in [`basam_hf.data.prompts_from_mask`].
        train: one of [`TRAIN_MODES`] (module docstring); `lora` trains a peft adapter with the options `lora`
            ([`basam_hf.lora.LoraOptions`]: rank, alpha, dropout, target_modules, train_mask_decoder), see
            [`basam_hf.lora`].
        loss: `bce-dice` (default), `bce` or `dice`.
        learning_rate, weight_decay: Adam's. lr_step_epochs, lr_gamma: StepLR, stepped per optimizer step with a
            period of `lr_step_epochs` epochs. max_grad_norm: gradient clipping (off by default).
        batch_size: images per process and micro-batch; gradient_accumulation_steps micro-batches per optimizer step.
        gradient_checkpointing: keep only each image-encoder layer's input in the forward and recompute the layer in
            the backward (transformers' activation checkpointing): the activations of one layer instead of all, for
            one more encoder forward per step; pays off at 1536 px and above (README: fine-tuning at high
            resolution).
        mixed_precision: `no`, `fp16` or `bf16` (passed to `Accelerator`).
        epochs, max_steps: length of the run; `max_steps` (optimizer steps), when given, wins.
        save_steps, keep_last: checkpoint every `save_steps` optimizer steps and at the end; keep the last
            `keep_last` (all with `None`).
        resume: `True` continues from the latest checkpoint in `output_dir` (starts afresh if there is none); a
            path names a checkpoint or a run folder. The model and the settings in `RESUME_SETTINGS` must match.
            Without `resume`, an `output_dir` that holds checkpoints is refused.
        log_with: accelerate trackers besides the JSON-lines log (default: `tensorboard` if installed).
        license: the model card's license. push_to_hub: a repo id to push `best/` (else `final/`) to at the end.
        step_callback: called on every process after each optimizer step (and its checkpoint) with
            `{"step", "epoch", "loss", "lr"}`; exceptions propagate (an interrupt leaves the last checkpoint intact).

    Raises:
        ValueError: for bad settings, a dataset without masks or usable samples, a model that does not fit the
            train mode, or a checkpoint of another model or run.
    """
    from accelerate import DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration, set_seed

    from .evaluation import evaluate
    from .loading import load_processor
    from .runtime import make_accelerator, progress_bar

    # Settings first, so that mistakes fail before anything is loaded.
    _check_settings(
        train=train,
        loss=loss,
        mixed_precision=mixed_precision,
        prompts=(prompt, val_prompt),
        val_metric=val_metric,
        positive={
            "batch_size": batch_size,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "epochs": epochs,
            "save_steps": save_steps,
            "lr_step_epochs": lr_step_epochs,
            "eval_batch_size": eval_batch_size,
        },
        positive_or_none={"max_steps": max_steps, "eval_steps": eval_steps, "keep_last": keep_last},
    )
    lora = lora_options(train, lora)
    if dataset is None and preset is None:
        raise ValueError("Give a training dataset (Hub id, save_to_disk folder, image folder) or a preset.")

    output = Path(output_dir)
    if not resume and list_checkpoints(output):
        # A new run would mix its checkpoints with the old ones (and keep_last would delete either).
        raise ValueError(
            f"{output} holds checkpoints of an earlier run: continue it with resume=True (--resume), or use a new "
            "output folder."
        )
    logs_dir = output / LOGS_DIR
    trackers: list = [JsonLinesTracker(logs_dir / METRICS_LOG)]
    trackers += list(_available_trackers() if log_with is None else log_with)
    accelerator = make_accelerator(
        cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(logs_dir)),
        log_with=trackers,
        # Parts of the model can be unused by the loss (the IoU head with one mask): DDP must not wait for them.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(seed)

    # Data (cheap errors first: a dataset without masks fails here).
    columns = {"image_column": image_column, "mask_column": mask_column, "annotations_column": annotations_column}
    train_set = _load_split(dataset, split, preset, max_train_samples, columns)
    val_set = None
    if val_dataset is not None or val_split is not None:
        if val_dataset is None and isinstance(dataset, SegmentationDataset):
            raise ValueError("With a SegmentationDataset for training, pass the validation data as val_dataset.")
        val_preset = preset if val_dataset is None else None
        val_set = _load_split(
            dataset if val_dataset is None else val_dataset, val_split, val_preset, val_max_samples, columns
        )

    # Model, processor, what is trained.
    source = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
    net = load_training_model(model, ba_settings)
    if gradient_checkpointing:  # before LoRA wraps the model, so the encoder layers are its own
        enable_gradient_checkpointing(net)
    processor = load_processor(resolve_model(source) if source else None, net)
    if train == LORA_MODE:  # issue 29: a peft adapter on the frozen model, checkpointed adapter-only
        net, trainable = prepare_lora_training(net, processor, source, lora, output, accelerator)
    else:
        trainable = set_trainable(net, train)
    net.train()
    patch_size = net.config.vision_config.patch_size
    train_sizes = [int(size) for size in (train_sizes or [net.config.vision_config.image_size])]
    if any(size < 1 for size in train_sizes):
        raise ValueError(f"Train sizes must be positive, got {train_sizes}.")
    val_sizes = list(val_sizes or train_sizes)
    # Recorded in the settings; micro_batch_loss derives it from each batch's prompt.
    multimask = "per batch" if prompt == MIXED_PROMPT else uses_multimask(prompt)
    val_prompt = val_prompt or ("box" if prompt == MIXED_PROMPT else None)

    usable, excluded = usable_sample_indices(train_set, patch_size, accelerator)
    for reason, count in Counter(item["reason"] for item in excluded).most_common():
        accelerator.print(f"Excluded {count} of {len(train_set)} training samples: {reason} (see {EXCLUDED_FILE}).")
    if not usable:
        raise ValueError(f"No usable training sample in {train_set.info.get('source')}: {excluded[:3]}")
    train_subset = train_set.subset(usable)
    ids_sha = hashlib.sha256("\n".join(train_subset.ids).encode("utf-8")).hexdigest()
    sampler = EpochSampler(len(train_subset), seed)
    loader = torch.utils.data.DataLoader(
        train_subset, batch_size=batch_size, sampler=sampler, collate_fn=_collate_samples, num_workers=num_workers
    )
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad], lr=learning_rate, weight_decay=weight_decay
    )
    prepared_model, optimizer, loader = accelerator.prepare(net, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / gradient_accumulation_steps)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    # Not prepared: accelerate would step it once per process. Per optimizer step with a period of whole epochs is
    # the official per-epoch StepLR, and stays exact when a run stops mid-epoch.
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer.optimizer, step_size=lr_step_epochs * steps_per_epoch, gamma=lr_gamma
    )
    accelerator.register_for_checkpointing(scheduler)
    eval_every = eval_steps or save_steps

    settings = {
        "model": str(source) if source is not None else None,
        "dataset": str(train_set.info.get("source")),
        "split": train_set.info.get("split"),
        "train": train,
        "lora": lora.to_dict() if lora else None,
        "prompt": prompt,
        "jitter": jitter,
        "negatives": negatives,
        "train_sizes": train_sizes,
        "loss": loss,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "lr_step_epochs": lr_step_epochs,
        "lr_gamma": lr_gamma,
        "max_grad_norm": max_grad_norm,
        "batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_checkpointing": gradient_checkpointing,
        "num_processes": accelerator.num_processes,
        "mixed_precision": mixed_precision,
        "seed": seed,
        "epochs": epochs,
        "max_steps": max_steps,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "train_samples": len(train_subset),
        "train_ids_sha256": ids_sha,
        "multimask": multimask,
        "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "ba_settings": net.config.vision_config.ba_settings(),
    }

    # Resume.
    epoch, skip_batches, global_step, best = 0, 0, 0, None
    checkpoint = resolve_resume(resume, output)
    if checkpoint is not None:
        state = check_resume_compatible(checkpoint, net.config, settings)
        accelerator.load_state(str(checkpoint))
        global_step, epoch, skip_batches = state["global_step"], state["epoch"], state["batches_in_epoch"]
        best = state.get("best")
        if skip_batches >= len(loader):
            epoch, skip_batches = epoch + 1, 0
        accelerator.print(f"Resuming from {checkpoint} (step {global_step}).")
    elif resume is True:
        accelerator.print(f"No checkpoint in {output / CHECKPOINTS_DIR}: starting a new run.")

    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output / CHECKPOINTS_DIR)
        remove_stale_temporaries(output)
        if checkpoint is not None:
            _truncate_metrics_log(logs_dir / METRICS_LOG, global_step)
        else:
            (logs_dir / METRICS_LOG).unlink(missing_ok=True)  # a new run in an old folder starts a new log
        (output / EXCLUDED_FILE).write_text(json.dumps(excluded, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    accelerator.init_trackers("basam-hf-finetune", config=_flat_config(settings))

    unwrapped = accelerator.unwrap_model(prepared_model)
    base_model = hub_id_or_none(source)
    train_hub_id = hub_id_or_none(train_set.info.get("source"))
    card_datasets = [train_hub_id] if train_hub_id else []
    training_card = training_card_table(settings, patch_size)

    def card(summary: dict | None, folder: Path) -> dict:
        val_id = hub_id_or_none(summary["dataset"]) if summary else None
        return {
            # Named after the Hub repo it will be pushed to, else the run folder (not the temporary export folder).
            "model_name": push_to_hub.split("/")[-1] if push_to_hub else f"{output.resolve().name}-{folder.name}",
            "repo_id": push_to_hub or str(folder),
            "base_model": base_model,
            "datasets": card_datasets,
            "training": training_card,
            "evaluation": summary,
            "evaluation_dataset_id": val_id,
            "license": license,
        }

    last_summary: dict | None = None
    last_eval_step = None
    last_save_step = global_step if checkpoint is not None else None
    best_dir = output / BEST_DIR

    def validate() -> None:
        nonlocal best, last_summary, last_eval_step
        summary = evaluate(
            unwrapped,
            val_set,
            sizes=val_sizes,
            prompt=val_prompt or prompt,
            batch_size=eval_batch_size,
            seed=seed,
            accelerator=accelerator,
        )
        prepared_model.train()  # evaluate() puts the model in eval mode
        score = _validation_score(summary, val_metric)
        metrics = {f"eval/{val_metric}": score}
        for row in summary["results"]:
            metrics.update({f"eval/{name}@{row['size']}": value for name, value in row["metrics"].items()})
        accelerator.log(metrics, step=global_step)
        last_summary, last_eval_step = summary, global_step
        if _is_better(score, best["value"] if best else None, val_metric):
            best = {"metric": val_metric, "value": score, "step": global_step}
            if accelerator.is_main_process:
                _export(unwrapped, processor, best_dir, card(summary, best_dir))
            accelerator.wait_for_everyone()

    def checkpoint_now(batches_in_epoch: int) -> Path:
        nonlocal last_save_step
        state = {
            "global_step": global_step,
            "epoch": epoch,
            "batches_in_epoch": batches_in_epoch,
            "best": best,
            "settings": settings,
            "trainable": trainable,
        }
        last_save_step = global_step
        return save_checkpoint(accelerator, output, global_step, state, net.config, keep_last)

    losses: list[float] = []
    progress = progress_bar(accelerator, total=total_steps, initial=global_step, desc="fine-tuning")
    try:
        batch_index = skip_batches
        while global_step < total_steps:
            sampler.set_epoch(epoch)
            loader.set_epoch(epoch)  # accelerate re-sets the sampler's epoch from its own counter when iterating
            active = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
            batch_index, micro_losses = skip_batches, []
            for samples in active:
                size = train_size_for_batch(train_sizes, seed, epoch, batch_index)
                seed_batch(seed, epoch, batch_index, accelerator.process_index)
                kind, kind_jitter, kind_negatives = batch_prompt(prompt, jitter, negatives, seed, epoch, batch_index)
                with accelerator.accumulate(prepared_model):
                    batch_loss = micro_batch_loss(
                        prepared_model,
                        processor,
                        samples,
                        size=size,
                        prompt=kind,
                        seed=seed,
                        epoch=epoch,
                        jitter=kind_jitter,
                        negatives=kind_negatives,
                        loss=loss,
                        device=accelerator.device,
                        dtype=unwrapped.dtype,
                    )
                    accelerator.backward(batch_loss)
                    if accelerator.sync_gradients and max_grad_norm is not None:
                        accelerator.clip_grad_norm_(prepared_model.parameters(), max_grad_norm)
                    optimizer.step()  # a no-op while accumulating (accelerate's AcceleratedOptimizer)
                    optimizer.zero_grad()
                batch_index += 1
                micro_losses.append(batch_loss.detach().float())
                if not accelerator.sync_gradients:
                    continue
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                global_step += 1
                step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
                micro_losses = []
                losses.append(step_loss)
                lr = scheduler.get_last_lr()[0]
                accelerator.log({"train/loss": step_loss, "train/lr": lr, "train/epoch": epoch}, step=global_step)
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch)
                if val_set is not None and global_step % eval_every == 0:
                    validate()
                if global_step % save_steps == 0:
                    checkpoint_now(batch_index)
                if step_callback is not None:
                    step_callback({"step": global_step, "epoch": epoch, "loss": step_loss, "lr": lr})
                if global_step >= total_steps:
                    break
            else:
                epoch, skip_batches = epoch + 1, 0

        # The end: validation, checkpoint and exports for the last step (unless just done).
        if val_set is not None and last_eval_step != global_step:
            validate()
        if last_save_step != global_step:
            checkpoint_now(batch_index)
        final_dir = output / FINAL_DIR
        if accelerator.is_main_process:
            _export(unwrapped, processor, final_dir, card(last_summary, final_dir))
        accelerator.wait_for_everyone()
        pushed_to = None
        if push_to_hub and accelerator.is_main_process:
            from .hub import push_to_hub as push

            folder = best_dir if best_dir.is_dir() else final_dir
            pushed_to = push(
                folder, push_to_hub, private=private, commit_message="Fine-tuned BA-SAM (basam-hf)"
            ).repo_id
        accelerator.wait_for_everyone()
    except KeyboardInterrupt:
        latest = latest_checkpoint(output)
        accelerator.print(f"\nInterrupted at step {global_step}; resume with --resume from {latest or 'the start'}.")
        raise
    finally:
        progress.close()
        for tracker in accelerator.trackers:
            tracker.finish()

    return TrainingResult(
        output_dir=output,
        global_step=global_step,
        total_steps=total_steps,
        losses=losses,
        best=best,
        best_dir=best_dir if best_dir.is_dir() else None,
        final_dir=final_dir,
        last_checkpoint=latest_checkpoint(output),
        resumed_from=checkpoint,
        excluded_samples=excluded,
        pushed_to=pushed_to,
    )


__all__ = [
    "LOSSES",
    "MIXED_PROMPT",
    "TRAIN_MODES",
    "EpochSampler",
    "JsonLinesTracker",
    "TrainingResult",
    "batch_prompt",
    "finetune",
    "load_training_model",
    "read_metrics_log",
    "set_trainable",
    "train_size_for_batch",
    "trainable_parameter_names",
]
