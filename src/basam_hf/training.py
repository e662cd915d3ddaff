"""Fine-tuning BA-SAM with `accelerate`: one training loop ([`finetune`]) over the named steps of a
[`FineTuningRun`] (prepare, resume, train step, validate, checkpoint, finish). Its settings are
[`basam_hf.settings.FinetuneSettings`]; what is trained lives in [`basam_hf.trainable`], the samples and batches in
[`basam_hf.batches`], the logs in [`basam_hf.tracking`].

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
  plus `trainer_state.json` (step, epoch, batches done, best metric, the run record: the settings serialised with
  what the run derived from them) and `model_config.json`, then one
  `os.replace`: a checkpoint is complete or absent, also after Ctrl-C. The last `keep_last` are kept. `best/` and
  `final/` are `save_pretrained` folders (safetensors, code files, processor config, model card), replaced atomically.
"""

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed

from .batches import (
    EXCLUDED_FILE,
    MIXED_PROMPT,
    EpochSampler,
    batch_prompt,
    load_training_data,
    micro_batch_loss,
    seed_batch,
    train_size_for_batch,
    training_loader,
    usable_sample_indices,
    uses_multimask,
)
from .checkpoints import (
    CHECKPOINTS_DIR,
    check_resume_compatible,
    directory_replaced,
    latest_checkpoint,
    list_checkpoints,
    remove_stale_temporaries,
    resolve_resume,
    save_checkpoint,
)
from .constants import LORA_MODE, MIXED_PRECISION, TRAIN_MODES
from .data import SegmentationDataset, parse_prompt
from .evaluation import evaluate
from .hub import push_to_hub
from .lora import LoraOptions, is_lora_model, lora_options, merge_adapter, save_adapter
from .losses import LOSSES
from .metrics import LOWER_IS_BETTER, STANDARD_METRICS
from .model_card import write_model_card
from .processing_basam import save_pretrained_with_processor
from .references import hub_id_or_none
from .runtime import make_accelerator, progress_bar
from .settings import LORA_PREFIX, FinetuneSettings, coco_files, resolve_settings, settings_record
from .tracking import (
    LOGS_DIR,
    METRICS_LOG,
    JsonLinesTracker,
    available_trackers,
    flat_config,
    read_metrics_log,
    truncate_metrics_log,
)
from .trainable import load_training_model, model_source, prepare_model, set_trainable, trainable_parameter_names

BEST_DIR = "best"
FINAL_DIR = "final"
MERGED_DIR = "merged"  # final/'s adapter merged into its base (`merge=True`)


# ---------------------------------------------------------------------------------------------------------------------
# Settings


def checked_settings(settings: FinetuneSettings, dataset: Any, lora: LoraOptions | Mapping | None) -> FinetuneSettings:
    """The settings with `lora` (the `lora_*` settings as one [`basam_hf.lora.LoraOptions`] or dict) applied.
    Raises a `ValueError` naming the first invalid setting, so that mistakes fail before anything is loaded."""
    if settings.output_dir is None:
        raise TypeError("finetune() needs output_dir: the folder of the run's checkpoints, logs and models.")
    for name, value, known in (
        ("train mode", settings.train, TRAIN_MODES),
        ("loss", settings.loss, LOSSES),
        ("mixed precision", settings.mixed_precision, MIXED_PRECISION),
    ):
        if value not in known:
            raise ValueError(f"Unknown {name} {value!r}; use one of {', '.join(known)}.")
    if settings.prompt != MIXED_PROMPT:  # the training prompt may be mixed, the validation prompt not
        parse_prompt(settings.prompt)
    if settings.val_prompt is not None:
        parse_prompt(settings.val_prompt)
    if settings.val_metric not in STANDARD_METRICS:
        raise ValueError(
            f"Unknown validation metric {settings.val_metric!r}; use one of {', '.join(STANDARD_METRICS)}."
        )
    for name in (
        "batch_size",
        "gradient_accumulation_steps",
        "epochs",
        "save_steps",
        "lr_step_epochs",
        "eval_batch_size",
    ):
        _check_positive(name, getattr(settings, name))
    for name in ("max_steps", "eval_steps", "keep_last"):
        if getattr(settings, name) is not None:
            _check_positive(name, getattr(settings, name), " or None")
    options = lora_options(settings.train, lora)  # the given object: refused with another train mode
    if options is not None and lora is not None:
        settings = replace(settings, **{LORA_PREFIX + name: value for name, value in options.to_dict().items()})
    elif settings.train == LORA_MODE:
        LoraOptions(**settings.lora_options())  # the lora_* settings checked
    if settings.merge and settings.train != LORA_MODE:
        raise ValueError(f"merge applies to train='lora' only (it merges an adapter), not train={settings.train!r}.")
    if dataset is None and settings.dataset is None and settings.preset is None and coco_files(settings) is None:
        raise ValueError("Give a training dataset (Hub id, save_to_disk folder, image folder) or a preset.")
    return settings


def _check_positive(name: str, value: Any, or_none: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{or_none}, got {value!r}.")


def settings_as_run(settings: FinetuneSettings, image_size: int, train_set, val_set) -> FinetuneSettings:
    """The settings with what they leave to the run filled in: the datasets' sources and split, the input sizes
    (the model's by default) and the validation prompt."""
    train_sizes = [int(size) for size in (settings.train_sizes or [image_size])]
    if any(size < 1 for size in train_sizes):
        raise ValueError(f"Train sizes must be positive, got {train_sizes}.")
    mixed = settings.prompt == MIXED_PROMPT
    return replace(
        settings,
        dataset=str(train_set.info.get("source")),
        split=train_set.info.get("split"),
        val_dataset=str(val_set.info.get("source")) if val_set is not None else None,
        train_sizes=train_sizes,
        val_sizes=list(settings.val_sizes or train_sizes),
        val_prompt=settings.val_prompt or ("box" if mixed else settings.prompt),
    )


def run_record(
    settings: FinetuneSettings, source, net, samples: SegmentationDataset, steps: tuple[int, int], processes: int
) -> dict:
    """The run record (`trainer_state.json`'s `settings`, `logs/run_config.json`): the settings as run, the LoRA
    options, and what the run derived (model, steps, samples, the model's BA settings), under the keys a resumed run
    compares ([`basam_hf.checkpoints.RESUME_SETTINGS`])."""
    lora = settings.lora_options()
    steps_per_epoch, total_steps = steps
    return {
        **settings_record(settings),
        "model": str(source) if source is not None else None,
        "lora": LoraOptions(**lora).to_dict() if lora else None,
        "num_processes": processes,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "train_samples": len(samples),
        "train_ids_sha256": hashlib.sha256("\n".join(samples.ids).encode("utf-8")).hexdigest(),
        # micro_batch_loss derives it from each batch's prompt.
        "multimask": "per batch" if settings.prompt == MIXED_PROMPT else uses_multimask(settings.prompt),
        "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "ba_settings": net.config.vision_config.ba_settings(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# The accelerator


def make_training_accelerator(settings: FinetuneSettings):
    """The run's `Accelerator`: mixed precision, gradient accumulation, the JSON-lines log and the trackers."""
    output = Path(settings.output_dir)
    logs_dir = output / LOGS_DIR
    trackers: list = [JsonLinesTracker(logs_dir / METRICS_LOG)]
    trackers += list(available_trackers() if settings.log_with is None else settings.log_with)
    return make_accelerator(
        settings.cpu,
        mixed_precision=settings.mixed_precision,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(logs_dir)),
        log_with=trackers,
        # Parts of the model can be unused by the loss (the IoU head with one mask): DDP must not wait for them.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Validation and exports


def _validation_score(summary: dict, metric: str) -> float:
    """The mean of `metric` over the BA-SAM rows (input sizes) of an evaluation summary."""
    values = [
        row["metrics"][metric] for row in summary["results"] if row["variant"] == "ba" and metric in row["metrics"]
    ]
    if not values:
        raise ValueError(f"The validation summary has no {metric!r}; available: {summary['metric_names']}.")
    return float(np.mean(values))


def _is_better(value: float, best: float | None, metric: str) -> bool:
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
    """`save_pretrained_with_processor` + model card as `folder`, swapped in whole ([`directory_replaced`])."""
    with directory_replaced(folder) as temporary:
        if is_lora_model(model):  # an adapter folder (issue 29): adapter_config.json, adapter_model.safetensors
            save_adapter(model, temporary)
        else:
            save_pretrained_with_processor(model, str(temporary), processor=processor)
        write_model_card(temporary, **card)


# ---------------------------------------------------------------------------------------------------------------------
# The run


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


@dataclass
class FineTuningRun:
    """What one call of [`finetune`] works with (the settings as run, the prepared model, data loader, optimizer and
    scheduler, the run record) and where it is (step, epoch, batch in the epoch, best validation score). Its methods
    are the steps [`finetune`]'s loop calls: `prepare`, `resume`, `start`, `train_step` and `end_optimizer_step`,
    `validate`, `checkpoint`, `finish`."""

    settings: FinetuneSettings
    accelerator: Any
    model: Any  # as prepared by accelerate (wrapped for several processes)
    unwrapped: Any
    processor: Any
    trainable: list[str]
    sampler: EpochSampler
    loader: Any
    optimizer: Any
    scheduler: Any
    val_set: SegmentationDataset | None
    record: dict
    card_fields: dict
    excluded: list[dict]
    step_callback: Callable[[dict], None] | None = None
    global_step: int = 0
    epoch: int = 0
    skip_batches: int = 0  # batches of `epoch` done before this call (a resumed run skips them)
    batch_index: int = 0
    best: dict | None = None
    losses: list[float] = field(default_factory=list)
    micro_losses: list[torch.Tensor] = field(default_factory=list)
    resumed_from: Path | None = None
    last_summary: dict | None = None
    last_eval_step: int | None = None
    last_save_step: int | None = None
    pushed_to: str | None = None
    progress: Any = None

    @classmethod
    def prepare(
        cls, model: Any, dataset: Any, settings: FinetuneSettings, ba_settings: dict | None = None, **fields
    ) -> "FineTuningRun":
        """Refuse an output folder of another run, then build the run: accelerator, data, model, processor, what is
        trained, data loader, Adam and StepLR (the official per-epoch StepLR, stepped per optimizer step with a period
        of whole epochs: exact when a run stops mid-epoch), prepared by accelerate."""
        if not settings.resume and list_checkpoints(settings.output_dir):
            # A new run would mix its checkpoints with the old ones (and keep_last would delete either).
            raise ValueError(
                f"{settings.output_dir} holds checkpoints of an earlier run: continue it with resume=True (--resume), "
                "or use a new output folder."
            )
        accelerator = make_training_accelerator(settings)
        set_seed(settings.seed)
        train_set, val_set = load_training_data(dataset, settings)  # cheap errors first: a dataset without masks
        net, processor, trainable = prepare_model(model, settings, ba_settings, accelerator)
        vision = net.config.vision_config
        settings = settings_as_run(settings, vision.image_size, train_set, val_set)
        samples, sampler, loader, excluded = training_loader(train_set, settings, vision.patch_size, accelerator)
        optimizer = torch.optim.Adam(
            [p for p in net.parameters() if p.requires_grad],
            lr=settings.learning_rate,
            weight_decay=settings.weight_decay,
        )
        prepared, optimizer, loader = accelerator.prepare(net, optimizer, loader)
        steps_per_epoch = math.ceil(len(loader) / settings.gradient_accumulation_steps)
        total_steps = settings.max_steps if settings.max_steps is not None else settings.epochs * steps_per_epoch
        # Not prepared: accelerate would step it once per process.
        period = settings.lr_step_epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer.optimizer, step_size=period, gamma=settings.lr_gamma)
        accelerator.register_for_checkpointing(scheduler)
        steps = (steps_per_epoch, total_steps)
        record = run_record(settings, model_source(model), net, samples, steps, accelerator.num_processes)
        unwrapped = accelerator.unwrap_model(prepared)
        card_fields = {
            "base_model": hub_id_or_none(model_source(model)),
            "datasets": [hub] if (hub := hub_id_or_none(train_set.info.get("source"))) else [],
            "training": training_card_table(record, vision.patch_size),
            "license": settings.license,
        }
        parts = (
            settings,
            accelerator,
            prepared,
            unwrapped,
            processor,
            trainable,
            sampler,
            loader,
            optimizer,
            scheduler,
        )
        return cls(*parts, val_set, record, card_fields, excluded, **fields)

    @property
    def output(self) -> Path:
        return Path(self.settings.output_dir)

    @property
    def total_steps(self) -> int:
        return self.record["total_steps"]

    @property
    def best_dir(self) -> Path:
        return self.output / BEST_DIR

    @property
    def final_dir(self) -> Path:
        return self.output / FINAL_DIR

    def resume(self) -> None:
        """Restore the checkpoint of `resume` (model, optimizer, scheduler, RNGs; step, epoch, batches done, best),
        after checking it was made by the same model and settings."""
        checkpoint = resolve_resume(self.settings.resume, self.output)
        if checkpoint is None:
            if self.settings.resume is True:
                self.accelerator.print(f"No checkpoint in {self.output / CHECKPOINTS_DIR}: starting a new run.")
            return
        state = check_resume_compatible(checkpoint, self.unwrapped.config, self.record)
        self.accelerator.load_state(str(checkpoint))
        self.global_step, self.epoch, self.skip_batches = (
            state[key] for key in ("global_step", "epoch", "batches_in_epoch")
        )
        self.best, self.resumed_from, self.last_save_step = state.get("best"), checkpoint, self.global_step
        if self.skip_batches >= len(self.loader):
            self.epoch, self.skip_batches = self.epoch + 1, 0
        self.accelerator.print(f"Resuming from {checkpoint} (step {self.global_step}).")

    def start(self) -> None:
        """Start the run folder (stale temporaries removed, the excluded samples listed), the logs (a new run in an
        old folder starts a new log, a resumed one drops what was logged after its checkpoint: it is redone) and the
        progress bar."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.output / CHECKPOINTS_DIR)
            remove_stale_temporaries(self.output)
            log = self.output / LOGS_DIR / METRICS_LOG
            if self.resumed_from is not None:
                truncate_metrics_log(log, self.global_step)
            else:
                log.unlink(missing_ok=True)
            (self.output / EXCLUDED_FILE).write_text(json.dumps(self.excluded, indent=2) + "\n", encoding="utf-8")
        accelerator.wait_for_everyone()
        accelerator.init_trackers("basam-hf-finetune", config=flat_config(self.record))
        self.batch_index = self.skip_batches
        self.progress = progress_bar(accelerator, total=self.total_steps, initial=self.global_step, desc="fine-tuning")

    def epoch_batches(self):
        """The batches of the current epoch still to do (a resumed run skips those done before its checkpoint)."""
        self.sampler.set_epoch(self.epoch)
        self.loader.set_epoch(self.epoch)  # accelerate re-sets the sampler's epoch from its own counter when iterating
        self.batch_index, self.micro_losses = self.skip_batches, []
        if self.skip_batches:
            return self.accelerator.skip_first_batches(self.loader, self.skip_batches)
        return self.loader

    def next_epoch(self) -> None:
        self.epoch, self.skip_batches = self.epoch + 1, 0

    def train_step(self, samples: list[dict]) -> None:
        """Forward and backward one micro-batch at its input size and prompt; the optimizer steps (with clipping)
        when accelerate says the gradients are accumulated."""
        settings, accelerator, epoch, batch = self.settings, self.accelerator, self.epoch, self.batch_index
        size = train_size_for_batch(settings.train_sizes, settings.seed, epoch, batch)
        seed_batch(settings.seed, epoch, batch, accelerator.process_index)
        kind, jitter, negatives = batch_prompt(
            settings.prompt, settings.jitter, settings.negatives, settings.seed, epoch, batch
        )
        with accelerator.accumulate(self.model):
            loss = micro_batch_loss(
                self.model,
                self.processor,
                samples,
                size=size,
                prompt=kind,
                seed=settings.seed,
                epoch=epoch,
                jitter=jitter,
                negatives=negatives,
                loss=settings.loss,
                device=accelerator.device,
                dtype=self.unwrapped.dtype,
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients and settings.max_grad_norm is not None:
                accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
            self.optimizer.step()  # a no-op while accumulating (accelerate's AcceleratedOptimizer)
            self.optimizer.zero_grad()
        self.batch_index += 1
        self.micro_losses.append(loss.detach().float())

    def end_optimizer_step(self) -> None:
        """After an optimizer step: the schedule, the step's loss (the mean over micro-batches and processes) logged,
        validation and checkpoint when due, then the step callback."""
        accelerator, settings = self.accelerator, self.settings
        if not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.global_step += 1
        step_loss = accelerator.reduce(torch.stack(self.micro_losses).mean(), reduction="mean").item()
        self.micro_losses = []
        self.losses.append(step_loss)
        lr = self.scheduler.get_last_lr()[0]
        accelerator.log({"train/loss": step_loss, "train/lr": lr, "train/epoch": self.epoch}, step=self.global_step)
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{step_loss:.4f}", epoch=self.epoch)
        if self.val_set is not None and self.global_step % (settings.eval_steps or settings.save_steps) == 0:
            self.validate()
        if self.global_step % settings.save_steps == 0:
            self.checkpoint()
        if self.step_callback is not None:
            self.step_callback({"step": self.global_step, "epoch": self.epoch, "loss": step_loss, "lr": lr})

    def validate(self) -> None:
        """Evaluate on the validation samples (every process a shard), log the metrics, export `best/` when the
        score improves."""
        settings = self.settings
        summary = evaluate(
            self.unwrapped,
            self.val_set,
            sizes=settings.val_sizes,
            prompt=settings.val_prompt,
            batch_size=settings.eval_batch_size,
            seed=settings.seed,
            accelerator=self.accelerator,
        )
        self.model.train()  # evaluate() puts the model in eval mode
        score = _validation_score(summary, settings.val_metric)
        metrics = {f"eval/{settings.val_metric}": score}
        for row in summary["results"]:
            metrics.update({f"eval/{name}@{row['size']}": value for name, value in row["metrics"].items()})
        self.accelerator.log(metrics, step=self.global_step)
        self.last_summary, self.last_eval_step = summary, self.global_step
        if _is_better(score, self.best["value"] if self.best else None, settings.val_metric):
            self.best = {"metric": settings.val_metric, "value": score, "step": self.global_step}
            self.export(self.best_dir, summary)

    def checkpoint(self) -> Path:
        """Save the training state and the trainer state (step, epoch, batches done, best, run record) atomically."""
        state = {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batch_index,
            "best": self.best,
            "settings": self.record,
            "trainable": self.trainable,
        }
        self.last_save_step = self.global_step
        config = self.unwrapped.config
        return save_checkpoint(self.accelerator, self.output, self.global_step, state, config, self.settings.keep_last)

    def export(self, folder: Path, summary: dict | None) -> None:
        """The model (or adapter) with its processor and model card as `folder`, written by the main process."""
        if self.accelerator.is_main_process:
            push = self.settings.push_to_hub
            card = {
                **self.card_fields,
                # Named after the Hub repo it will be pushed to, else the run folder (not the temporary export folder).
                "model_name": push.split("/")[-1] if push else f"{self.output.resolve().name}-{folder.name}",
                "repo_id": push or str(folder),
                "evaluation": summary,
                "evaluation_dataset_id": hub_id_or_none(summary["dataset"]) if summary else None,
            }
            _export(self.unwrapped, self.processor, folder, card)
        self.accelerator.wait_for_everyone()

    def finish(self) -> None:
        """The end: validation and checkpoint of the last step (unless just done), `final/` (with `merge`, also
        `merged/`: the adapter merged into its base), and the push of `best/` (else `final/`)."""
        if self.val_set is not None and self.last_eval_step != self.global_step:
            self.validate()
        if self.last_save_step != self.global_step:
            self.checkpoint()
        self.export(self.final_dir, self.last_summary)
        settings = self.settings
        if settings.merge and self.accelerator.is_main_process:
            with directory_replaced(self.output / MERGED_DIR) as temporary:
                merge_adapter(self.final_dir, temporary)
        if settings.push_to_hub and self.accelerator.is_main_process:
            folder = self.best_dir if self.best_dir.is_dir() else self.final_dir
            message = "Fine-tuned BA-SAM (basam-hf)"
            pushed = push_to_hub(folder, settings.push_to_hub, private=settings.private, commit_message=message)
            self.pushed_to = pushed.repo_id
        self.accelerator.wait_for_everyone()

    def close(self, interrupted: bool = False) -> None:
        """Close the progress bar and the trackers; after an interrupt, say where to resume from."""
        if interrupted:
            latest = latest_checkpoint(self.output)
            self.accelerator.print(
                f"\nInterrupted at step {self.global_step}; resume with --resume from {latest or 'the start'}."
            )
        self.progress.close()
        for tracker in self.accelerator.trackers:
            tracker.finish()

    def result(self) -> TrainingResult:
        return TrainingResult(
            output_dir=self.output,
            global_step=self.global_step,
            total_steps=self.total_steps,
            losses=self.losses,
            best=self.best,
            best_dir=self.best_dir if self.best_dir.is_dir() else None,
            final_dir=self.final_dir,
            last_checkpoint=latest_checkpoint(self.output),
            resumed_from=self.resumed_from,
            excluded_samples=self.excluded,
            pushed_to=self.pushed_to,
        )


def finetune(
    model: Any = "default",
    dataset: str | os.PathLike | SegmentationDataset | None = None,
    settings: FinetuneSettings | Mapping[str, Any] | None = None,
    *,
    lora: LoraOptions | Mapping[str, Any] | None = None,
    ba_settings: dict | None = None,
    step_callback: Callable[[dict], None] | None = None,
    **kwargs,
) -> TrainingResult:
    """Fine-tune BA-SAM on a segmentation dataset with accelerate (plainly, or under `accelerate launch` / torchrun).

    Args:
        model: a BA-SAM or SAM checkpoint (Hub repo id or folder), `default` (the embedded model), or a `BaSamModel`.
            A SAM checkpoint is converted with `ba_settings` (e.g. `{"bias_mode": "coefficient"}`,
            `{"learnable_slopes": True}`), which also override a BA-SAM checkpoint's settings.
        dataset: training data: a [`SegmentationDataset`] or a source of [`basam_hf.data.load_segmentation_dataset`]
            (Hub id, `save_to_disk` folder, images/ + masks/ folder); default the settings' `dataset` (or
            `coco_annotations` with `images`).
        settings: a [`basam_hf.settings.FinetuneSettings`] (or a dict of its fields; their help says what each
            does); keyword arguments (`output_dir=...`, `max_steps=100`, ...) set single ones, over `settings`.
            `output_dir` is needed: `checkpoints/`, `logs/` (`metrics.jsonl`, `run_config.json`, TensorBoard if
            installed), `best/`, `final/` and `excluded_train_samples.json` go there. Validation (with `val_dataset`
            or `val_split`) runs every `eval_steps` (default `save_steps`) and at the end; `best/` holds the model
            with the best mean `val_metric` over `val_sizes`. `resume=True` continues from the latest checkpoint in
            `output_dir` (a path names a checkpoint or a run folder); the model and the settings in
            `RESUME_SETTINGS` must match. Without it, an `output_dir` that holds checkpoints is refused.
        lora: the `lora_*` settings as one [`basam_hf.lora.LoraOptions`] (or a dict of its fields: rank, alpha,
            dropout, target_modules, train_mask_decoder), for `train="lora"` (see [`basam_hf.lora`]).
        ba_settings: BA settings the model is loaded with.
        step_callback: called on every process after each optimizer step (and its checkpoint) with
            `{"step", "epoch", "loss", "lr"}`; exceptions propagate (an interrupt leaves the last checkpoint intact).

    Raises:
        TypeError: for a keyword argument that is no setting (the message lists the settings), or no `output_dir`.
        ValueError: for bad settings, a dataset without masks or usable samples, a model that does not fit the
            train mode, or a checkpoint of another model or run.
    """
    settings = checked_settings(resolve_settings(FinetuneSettings, settings, **kwargs), dataset, lora)
    run = FineTuningRun.prepare(model, dataset, settings, ba_settings, step_callback=step_callback)
    run.resume()
    run.start()
    interrupted = False
    try:
        while run.global_step < run.total_steps:
            for samples in run.epoch_batches():
                run.train_step(samples)
                if not run.accelerator.sync_gradients:
                    continue
                run.end_optimizer_step()
                if run.global_step >= run.total_steps:
                    break
            else:
                run.next_epoch()
        run.finish()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        run.close(interrupted)
    return run.result()


__all__ = [
    "BEST_DIR",
    "EXCLUDED_FILE",
    "FINAL_DIR",
    "MERGED_DIR",
    "LOGS_DIR",
    "LOSSES",
    "METRICS_LOG",
    "MIXED_PROMPT",
    "TRAIN_MODES",
    "EpochSampler",
    "FineTuningRun",
    "FinetuneSettings",
    "JsonLinesTracker",
    "TrainingResult",
    "batch_prompt",
    "finetune",
    "load_training_model",
    "read_metrics_log",
    "set_trainable",
    "train_size_for_batch",
    "trainable_parameter_names",
    "usable_sample_indices",
]
