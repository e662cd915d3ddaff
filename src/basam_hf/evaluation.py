"""Zero-shot evaluation of BA-SAM (and of the same weights with BA off) at several input sizes, with `accelerate`.

One loop ([`evaluate`]): for each model variant and input size, the samples not yet in the output's JSONL are sharded
over the processes, predicted in batches, gathered with `gather_for_metrics` (so the duplicates that pad the last
batches are dropped and every sample counts once) and appended to the JSONL by the main process. A rerun skips what
the JSONL already holds for the same run key, then writes the summary JSON, a Markdown table and a plot.

Protocols:
- `standard`: the model's processor resizes the longest edge to the size and pads (aspect preserved); prompts from the
  ground truth mapped to the input; sigmoid probabilities brought back to the original image size; the metrics of
  [`basam_hf.metrics.segmentation_metrics`]. A single `point` uses SAM's multimask output and keeps the mask with the
  highest predicted IoU (SAM's way of resolving an ambiguous click); boxes and several points give one mask. With
  `normalize_maps`, each probability map is min-max rescaled before all six metrics, as the SOD toolkits do with
  saved maps ([`basam_hf.metrics.normalize_map`]).
- `official`: mirrors the official BA-SAM evaluation (`function.py` / `utils.py` / `dataset.py`): image squashed to
  size x size (bilinear), ImageNet normalisation (the processor's mean / std), one random positive click among the
  mask pixels that stay 255 after resizing the 0/255 mask to size x size (PIL's default bicubic), one mask
  (`multimask_output=False`), low-resolution logits resized to 256 x 256 (bicubic, antialiased) when they differ,
  the ground truth resized to 256 x 256 (bilinear, soft), thresholds 0.1 ... 0.9 on the raw logits and on the soft
  ground truth, IoU / Dice / MAE averaged over thresholds ([`basam_hf.metrics.official_metrics`]). Two deliberate
  differences: the click is seeded per sample (the official one is unseeded), and it is passed as (x, y) = (column,
  row) (the official code passes (row, column) as (x, y), i.e. transposed).

Skipped samples (unreadable image, mask of another size, empty mask, image too small, ...) are recorded with their
reason, counted in the summary and not retried on resume.
"""

import dataclasses
import hashlib
import json
import math
import os
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from . import __version__, loading, runtime
from .constants import BA_FIELDS
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
from .loading import load_model_and_processor
from .metrics import (
    LOWER_IS_BETTER,
    OFFICIAL_METRICS,
    STANDARD_METRICS,
    mean_metrics,
    official_metrics,
    segmentation_metrics,
)
from .segment import model_inputs
from .settings import PROTOCOLS, EvaluateSettings, coco_files, resolve_settings, settings_record

OFFICIAL_OUT_SIZE = 256
OFFICIAL_PROMPT = "click"
RECORDS_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.md"
PLOT_FILE = "metrics_vs_size.png"
VARIANT_LABELS = {"ba": "BA-SAM", "sam": "SAM (same weights, BA off)"}


# ---------------------------------------------------------------------------------------------------------------------
# Models


def dtype_name(model) -> str:
    """`"float32"`, `"bfloat16"`, ...: the dtype a model computes in, as reports name it."""
    return str(model.dtype).removeprefix("torch.")


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 1024) -> str:
    """A short hash of the model's weights (names, shapes and evenly spaced values of every tensor), so that resumed
    records are reused only for the very same weights: a retrained model saved to the same path must be recomputed."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------------
# Prediction of one batch


def _skip(sample_id: str, reason: str) -> dict:
    return {"id": sample_id, "status": "skipped", "reason": reason}


def _ok(sample_id: str, metrics: dict, prompt: dict) -> dict:
    return {"id": sample_id, "status": "ok", "metrics": metrics, "prompt": prompt}


def _jsonable(prompt: dict[str, np.ndarray]) -> dict:
    return {key: np.asarray(value).tolist() for key, value in prompt.items()}


@torch.no_grad()
def predict_standard(
    model,
    processor,
    samples: Sequence[dict],
    size: int,
    prompt: str,
    seed: int,
    jitter: float,
    negatives: int,
    normalize_maps: bool = False,
) -> list[dict]:
    """Records (metrics or skip reason) for loaded samples under the standard protocol, in order."""
    records: dict[str, dict] = {}
    ready = []
    for sample in samples:
        try:
            prompts = prompts_from_mask(sample["mask"], prompt, sample_rng(seed, sample["id"]), jitter, negatives)
        except ValueError as error:
            records[sample["id"]] = _skip(sample["id"], str(error))
            continue
        ready.append((sample, prompts))
    if ready:
        try:
            records.update(_predict_standard_batch(model, processor, ready, size, prompt, normalize_maps))
        except ValueError:
            # One bad sample (e.g. an image smaller than a patch) must not cost the batch: retry one by one.
            for sample, prompts in ready:
                try:
                    records.update(
                        _predict_standard_batch(model, processor, [(sample, prompts)], size, prompt, normalize_maps)
                    )
                except ValueError as error:
                    records[sample["id"]] = _skip(sample["id"], f"cannot be processed at size {size}: {error}")
    return [records[sample["id"]] for sample in samples]


def _predict_standard_batch(
    model, processor, ready, size: int, prompt: str, normalize_maps: bool = False
) -> dict[str, dict]:
    kind, _ = parse_prompt(prompt)
    images = [sample["image"] for sample, _ in ready]
    prompt_kwargs = {}
    if kind == "box":
        prompt_kwargs["input_boxes"] = [prompts["boxes"].tolist() for _, prompts in ready]
    else:
        prompt_kwargs["input_points"] = [[prompts["points"].tolist()] for _, prompts in ready]
        prompt_kwargs["input_labels"] = [[prompts["labels"].tolist()] for _, prompts in ready]
    inputs = processor(images=images, size=size, return_tensors="pt", **prompt_kwargs)
    multimask = kind in SINGLE_CLICK_PROMPTS
    outputs = model(**model_inputs(inputs, model), multimask_output=multimask)
    pred_masks = outputs.pred_masks[:, 0].float().cpu()  # (batch, masks, h, w): one prompt per image
    if multimask:
        best = outputs.iou_scores[:, 0].float().cpu().argmax(dim=-1)
        pred_masks = pred_masks[torch.arange(len(best)), best][:, None]
    logits = processor.image_processor.post_process_masks(
        pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
    )
    records = {}
    for (sample, prompts), sample_logits in zip(ready, logits):
        prob = torch.sigmoid(sample_logits[0]).numpy()
        metrics = segmentation_metrics(prob, sample["mask"], normalize=normalize_maps)
        records[sample["id"]] = _ok(sample["id"], metrics, _jsonable(prompts))
    return records


def official_click(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """`(x, y)` in the size x size input of a random pixel that is 255 in the 0/255 mask resized (PIL bicubic) to
    size x size, as the official code draws its click (there with axes swapped, unseeded). Falls back to pixels
    above 127 when no pixel stays 255 (thin objects); `None` when the object vanishes."""
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BICUBIC))
    candidates = np.argwhere(resized == 255)
    if len(candidates) == 0:
        candidates = np.argwhere(resized > 127)
    if len(candidates) == 0:
        return None
    row, col = candidates[rng.integers(len(candidates))]
    return np.array([col, row], dtype=np.float64)


@torch.no_grad()
def predict_official(model, processor, samples: Sequence[dict], size: int, seed: int) -> list[dict]:
    """Records for loaded samples under the official protocol (see the module docstring), in order."""
    records: dict[str, dict] = {}
    ready = []
    for sample in samples:
        if not sample["mask"].any():
            records[sample["id"]] = _skip(sample["id"], "empty mask: no prompt can be derived from it")
            continue
        click = official_click(sample["mask"], size, sample_rng(seed, sample["id"]))
        if click is None:
            records[sample["id"]] = _skip(sample["id"], f"the object vanishes when the mask is resized to {size}")
            continue
        ready.append((sample, click))
    if ready:
        mean = torch.tensor(processor.image_processor.image_mean).view(3, 1, 1)
        std = torch.tensor(processor.image_processor.image_std).view(3, 1, 1)
        pixels = []
        for sample, _ in ready:
            squashed = np.asarray(sample["image"].resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
            pixels.append((torch.from_numpy(squashed).permute(2, 0, 1) - mean) / std)
        device = model.device
        points = torch.tensor(np.stack([click for _, click in ready]))[:, None, None]
        outputs = model(
            pixel_values=torch.stack(pixels).to(device, model.dtype),
            input_points=points.to(device, torch.float32),
            input_labels=torch.ones(len(ready), 1, 1, dtype=torch.long, device=device),
            multimask_output=False,
        )
        logits = outputs.pred_masks[:, 0].float().cpu()  # (batch, 1, h, w)
        if tuple(logits.shape[-2:]) != (OFFICIAL_OUT_SIZE, OFFICIAL_OUT_SIZE):
            out_size = (OFFICIAL_OUT_SIZE, OFFICIAL_OUT_SIZE)
            logits = F.interpolate(logits, out_size, mode="bicubic", align_corners=False, antialias=True)
        for (sample, click), sample_logits in zip(ready, logits):
            gt = Image.fromarray(sample["mask"].astype(np.uint8) * 255)
            gt_soft = np.asarray(gt.resize((OFFICIAL_OUT_SIZE,) * 2, Image.BILINEAR), dtype=np.float64) / 255.0
            metrics = official_metrics(sample_logits[0].numpy(), gt_soft)
            records[sample["id"]] = _ok(sample["id"], metrics, {"points": [click.tolist()], "labels": [1]})
    return [records[sample["id"]] for sample in samples]


def _predictor(model, processor, run: dict) -> Callable[[list[dict]], list[dict]]:
    """A function from a batch (loaded samples and skip records) to one record per sample, in order."""

    def predict(batch: list[dict]) -> list[dict]:
        loaded = [sample for sample in batch if "status" not in sample]  # the rest are skip records already
        if run["protocol"] == "official":
            predicted = predict_official(model, processor, loaded, run["size"], run["seed"])
        else:
            predicted = predict_standard(
                model,
                processor,
                loaded,
                run["size"],
                run["prompt"],
                run["seed"],
                run["jitter"],
                run["negatives"],
                run.get("normalize_maps", False),
            )
        by_id = {record["id"]: record for record in predicted}
        return [by_id.get(sample["id"], sample) for sample in batch]

    return predict


class _SafeSamples(torch.utils.data.Dataset):
    """Samples of a [`SegmentationDataset`], with a [`SampleError`] turned into a skip record (so a bad sample does
    not stop the data loader)."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        try:
            return self.dataset[index]
        except SampleError as error:
            return _skip(self.dataset.ids[index], error.reason)


def _collate(samples: list[dict]) -> list[dict]:
    return samples  # PIL images and masks of different sizes: the processor batches them


# ---------------------------------------------------------------------------------------------------------------------
# The loop


def _run_key(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True)


def read_records(path: Path) -> dict[str, dict[str, dict]]:
    """Records of a JSONL file grouped by run key, then by sample id (the last record of an id wins). A truncated
    last line (a killed run) is ignored."""
    grouped: dict[str, dict[str, dict]] = {}
    if not path.is_file():
        return grouped
    with path.open(encoding="utf-8") as file:
        for line in file:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            grouped.setdefault(_run_key(record["run"]), {})[record["id"]] = record
    return grouped


def evaluate(
    model: Any,
    dataset: SegmentationDataset | str | os.PathLike | None = None,
    settings: EvaluateSettings | Mapping[str, Any] | None = None,
    *,
    accelerator=None,
    on_records: Callable[[list[dict]], None] | None = None,
    label: str | None = None,
    torch_dtype=None,
    **kwargs,
) -> dict:
    """Evaluate a model on a segmentation dataset at several input sizes; returns the summary (on every process).

    Args:
        model: a `BaSamModel`, or a Hub repo id, a folder, or `default` (the package's embedded model).
        dataset: a [`SegmentationDataset`] or a source for [`load_segmentation_dataset`] (with the settings' `split`,
            `preset` and columns); default the settings' `dataset` (or `coco_annotations` with `images`).
        settings: an [`basam_hf.settings.EvaluateSettings`] (or a dict of its fields): sizes, prompt, protocol, ...
            (their help says what each does); keyword arguments (`sizes=[512, 1024]`, ...) set single ones, over
            `settings`. With `output_dir`, `samples.jsonl` (per-sample records, appended and flushed per batch; reruns
            resume from it), `summary.json` (with the settings of the run under `settings`), `summary.md` and
            `metrics_vs_size.png` are written there; without it nothing is written and nothing resumes. Prompts are
            drawn from a generator seeded by (seed, sample id), identical in any process layout. `dtype`: the model
            is loaded in it (a model object is converted); pixels go to the model in its dtype, prompts in float32,
            masks are scored in float32.
        accelerator: an `accelerate.Accelerator` (default: [`basam_hf.runtime.make_accelerator`], configured by the
            launcher).
        on_records: called on every process with each batch's gathered new records (progress reporting, tests).
        label: the model's name in progress bars (default: BA-SAM, and SAM for the `compare_sam` copy).
        torch_dtype: an alias of the `dtype` setting (transformers' older name).

    Raises:
        TypeError: for a keyword argument that is no setting (the message lists the settings).
        ValueError: for settings that do not go together (e.g. a prompt with the official protocol).
    """
    settings = checked_settings(resolve_settings(EvaluateSettings, settings, **kwargs))
    run = EvaluationRun.prepare(model, dataset, settings, accelerator=accelerator, torch_dtype=torch_dtype)
    previous = run.resume()
    results = []
    for variant, variant_model in run.variants():
        for size in run.settings.sizes:
            key = run.key(variant, variant_model, size)
            done = run.predict_missing(variant_model, key, previous.get(_run_key(key), {}), on_records, label)
            results.append(_result(key, run.dataset.ids, done))
    return run.finish(results)


def checked_settings(settings: EvaluateSettings) -> EvaluateSettings:
    """The settings with the protocol's prompt filled in; a `ValueError` for settings that do not go together."""
    if settings.protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {settings.protocol!r}; use one of {PROTOCOLS}.")
    if settings.batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {settings.batch_size}.")
    if settings.protocol == "standard":
        prompt = settings.prompt or "box"
        parse_prompt(prompt)
        return dataclasses.replace(settings, prompt=prompt)
    if settings.prompt not in (None, "point", OFFICIAL_PROMPT) or settings.jitter or settings.negatives:
        raise ValueError("The official protocol uses its own single random positive click; leave prompt unset.")
    if settings.normalize_maps:
        raise ValueError(
            "normalize_maps applies to the standard protocol's probability maps; the official protocol "
            "thresholds raw logits."
        )
    return dataclasses.replace(settings, prompt=OFFICIAL_PROMPT)


def _load_dataset(dataset, settings: EvaluateSettings) -> SegmentationDataset:
    """The samples to evaluate: `dataset`, else the settings' source; the first `max_samples` of them."""
    if dataset is None and coco_files(settings) is not None:
        dataset = load_coco_dataset(*coco_files(settings))
    if isinstance(dataset, SegmentationDataset):
        if settings.max_samples is None:
            return dataset
        return dataset.subset(range(min(settings.max_samples, len(dataset))))
    return load_segmentation_dataset(
        settings.dataset if dataset is None else dataset,
        settings.split,
        preset=settings.preset,
        image_column=settings.image_column,
        mask_column=settings.mask_column,
        annotations_column=settings.annotations_column,
        max_samples=settings.max_samples,
    )


def _check_sizes(sizes: Sequence[int], protocol: str, patch_size: int) -> None:
    for size in sizes:
        if size <= 0 or (protocol == "official" and size % patch_size):
            raise ValueError(f"Size {size} is not valid for the {protocol} protocol (patch size {patch_size}).")


@dataclasses.dataclass
class EvaluationRun:
    """What one call of [`evaluate`] works with: the settings as run (the protocol's prompt, the sizes and the dtype
    filled in), the model on its device, its processor, the samples and the accelerator."""

    settings: EvaluateSettings
    model: Any
    processor: Any
    model_name: str
    dataset: SegmentationDataset
    accelerator: Any
    fingerprint: str

    @classmethod
    def prepare(
        cls, model, dataset, settings: EvaluateSettings, accelerator=None, torch_dtype=None
    ) -> "EvaluationRun":
        """Load the model (in the settings' dtype) and its processor, check the sizes, load the samples."""
        accelerator = accelerator or runtime.make_accelerator()
        if isinstance(model, (str, os.PathLike)):
            model_name = str(model)
            model, processor, _ = load_model_and_processor(model, dtype=settings.dtype, torch_dtype=torch_dtype)
        else:
            model_name = str(getattr(model, "name_or_path", None) or "model")
            model = loading.as_model(model, dtype=settings.dtype, torch_dtype=torch_dtype)
            processor = loading.load_processor(model_name if model_name != "model" else None, model)
        model = model.to(accelerator.device).eval()  # inference only: no DDP wrapper, every process has the weights
        vision = model.config.vision_config
        sizes = list(settings.sizes or [vision.image_size])
        _check_sizes(sizes, settings.protocol, vision.patch_size)
        samples = _load_dataset(dataset, settings)
        source = os.fspath(dataset) if isinstance(dataset, (str, os.PathLike)) else settings.dataset
        settings = dataclasses.replace(settings, dataset=source, sizes=sizes, dtype=dtype_name(model))
        return cls(settings, model, processor, model_name, samples, accelerator, weights_fingerprint(model))

    @property
    def output_path(self) -> Path | None:
        return Path(self.settings.output_dir) if self.settings.output_dir is not None else None

    @property
    def records_path(self) -> Path | None:
        return self.output_path / RECORDS_FILE if self.output_path is not None else None

    def resume(self) -> dict[str, dict[str, dict]]:
        """The records an earlier run wrote to the output folder (created here), grouped by run key."""
        if self.output_path is not None and self.accelerator.is_main_process:
            self.output_path.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()  # the main process may still be writing an earlier run's records
        return read_records(self.records_path) if self.records_path is not None else {}

    def variants(self) -> list[tuple[str, Any]]:
        """`("ba", model)`, and `("sam", the same weights with BA off)` with `compare_sam`."""
        return [("ba", self.model)] + ([("sam", loading.sam_variant(self.model))] if self.settings.compare_sam else [])

    def key(self, variant: str, variant_model, size: int) -> dict:
        """What a record is valid for: resumed records must come from the same weights and settings."""
        settings = self.settings
        key = {
            "model": self.model_name,
            "weights": self.fingerprint,
            "variant": variant,
            # Resumed records must come from the same BA settings too (`basam-hf evaluate --bias-mode ...`).
            "ba_settings": {name: getattr(variant_model.config.vision_config, name) for name in BA_FIELDS},
            "dataset": str(self.dataset.info.get("source")),
            "split": self.dataset.info.get("split"),
            "size": size,
            "prompt": settings.prompt,
            "protocol": settings.protocol,
            "seed": settings.seed,
            "jitter": settings.jitter,
            "negatives": settings.negatives,
        }
        if settings.normalize_maps:  # only when set: records of earlier runs keep their key and resume
            key["normalize_maps"] = True
        return key

    def predict_missing(
        self, variant_model, key: dict, done: dict[str, dict], on_records=None, label: str | None = None
    ) -> dict[str, dict]:
        """Every sample's record under `key`: those in `done`, and the others predicted (sharded over the processes,
        gathered, appended to the records file by the main process)."""
        done = dict(done)
        remaining = [index for index, sample_id in enumerate(self.dataset.ids) if sample_id not in done]
        if not remaining:
            return done
        predict = _predictor(variant_model, self.processor, key)
        loader = torch.utils.data.DataLoader(
            _SafeSamples(self.dataset.subset(remaining)), batch_size=self.settings.batch_size, collate_fn=_collate
        )
        loader = self.accelerator.prepare(loader)
        description = f"{label or VARIANT_LABELS[key['variant']]} @ {key['size']}"
        for batch in runtime.progress_bar(self.accelerator, loader, desc=description):
            records = [{"run": key, **record} for record in predict(batch)]
            # Every process gets all records of this step; duplicates padding the last batches are dropped.
            records = self.accelerator.gather_for_metrics(records, use_gather_object=True)
            if self.records_path is not None and self.accelerator.is_main_process:
                _append_records(self.records_path, records)
            done.update((record["id"], record) for record in records)
            if on_records is not None:
                on_records(records)
        return done

    def finish(self, results: list[dict]) -> dict:
        """The summary of the results, written with its reports by the main process."""
        settings = self.settings
        summary = build_summary(
            results,
            model=self.model_name,
            dataset=str(self.dataset.info.get("source")),
            split=self.dataset.info.get("split"),
            prompt=settings.prompt,
            protocol=settings.protocol,
            sizes=settings.sizes,
            seed=settings.seed,
            jitter=settings.jitter,
            negatives=settings.negatives,
            normalize_maps=settings.normalize_maps,
            dtype=settings.dtype,
            dataset_info=self.dataset.info,
            settings=settings_record(settings),
        )
        if self.output_path is not None and self.accelerator.is_main_process:
            write_reports(summary, self.output_path)
        self.accelerator.wait_for_everyone()
        return summary


def _append_records(path: Path, records: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())  # a killed run keeps every finished batch


def _result(run: dict, ids: Sequence[str], done: dict[str, dict]) -> dict:
    """One (variant, size) row: means over evaluated samples of this dataset, counts and skip reasons."""
    missing = [sample_id for sample_id in ids if sample_id not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} samples were not evaluated (e.g. {missing[:3]}); this is a bug.")
    records = [done[sample_id] for sample_id in sorted(ids)]
    evaluated = [record for record in records if record["status"] == "ok"]
    skipped = [{"id": record["id"], "reason": record["reason"]} for record in records if record["status"] != "ok"]
    return {
        "model": VARIANT_LABELS[run["variant"]],
        "variant": run["variant"],
        "size": run["size"],
        "metrics": mean_metrics(record["metrics"] for record in evaluated),
        "counts": {"samples": len(records), "evaluated": len(evaluated), "skipped": len(skipped)},
        "skipped": skipped,
    }


def package_versions() -> dict[str, str]:
    # Slow imports (accelerate, datasets), needed only when a summary is written.
    import accelerate
    import datasets

    return {
        "basam_hf": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def build_summary(results: list[dict], **fields) -> dict:
    """The summary JSON content: run settings, one result per (variant, size), dataset info and versions."""
    info = {key: value for key, value in fields.pop("dataset_info").items() if key not in ("source", "split")}
    metric_names = list(OFFICIAL_METRICS if fields["protocol"] == "official" else STANDARD_METRICS)
    return {
        **fields,
        "metric_names": metric_names,
        "results": results,
        "dataset_info": info,
        "versions": package_versions(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Reports


def _split_text(summary: dict) -> str:
    return f" (split {summary['split']})" if summary.get("split") else ""


def _dtype_text(summary: dict) -> str:
    return f", {summary['dtype']}" if summary.get("dtype") else ""


def markdown_table(summary: dict) -> str:
    """A Markdown table of the summary: one row per (model, size), one column per metric."""
    names = summary["metric_names"]
    arrows = [f"{name} {'↓' if name in LOWER_IS_BETTER else '↑'}" for name in names]
    lines = [
        f"Model `{summary['model']}` on `{summary['dataset']}`{_split_text(summary)}, prompt `{summary['prompt']}`, "
        f"protocol `{summary['protocol']}`, seed {summary['seed']}"
        f"{', maps min-max normalised' if summary.get('normalize_maps') else ''}{_dtype_text(summary)}.",
        "",
        "| model | size | evaluated | skipped | " + " | ".join(arrows) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(names),
    ]
    for result in summary["results"]:
        values = [f"{result['metrics'][name]:.4f}" if name in result["metrics"] else "–" for name in names]
        counts = result["counts"]
        lines.append(
            f"| {result['model']} | {result['size']} | {counts['evaluated']} | {counts['skipped']} | "
            + " | ".join(values)
            + " |"
        )
    skipped = {(item["id"], item["reason"]) for result in summary["results"] for item in result["skipped"]}
    if skipped:
        lines += ["", "Skipped samples:", ""] + [f"- `{sample_id}`: {reason}" for sample_id, reason in sorted(skipped)]
    return "\n".join(lines) + "\n"


def plot_metrics(summary: dict, path: Path) -> None:
    """A PNG with one panel per metric: the metric against the input size, one line per model."""
    import matplotlib  # a slow import, needed only for the plot

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt  # after use(): with the backend chosen

    names = summary["metric_names"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    models = list(dict.fromkeys(result["model"] for result in summary["results"]))
    for axis, name in zip(axes.flat, names):
        for model in models:
            points = sorted(
                (result["size"], result["metrics"][name])
                for result in summary["results"]
                if result["model"] == model and name in result["metrics"]
            )
            if points:
                axis.plot(*zip(*points), marker="o", label=model)
        axis.set_title(f"{name} ({'lower' if name in LOWER_IS_BETTER else 'higher'} is better)", fontsize=10)
        axis.set_xlabel("input size (px)")
        axis.set_xticks(sorted({result["size"] for result in summary["results"]}))
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"{summary['dataset']}{_split_text(summary)}, prompt {summary['prompt']}, {summary['protocol']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_reports(summary: dict, output_dir: Path) -> None:
    """`summary.json`, `summary.md` and `metrics_vs_size.png` in `output_dir`."""
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (output_dir / TABLE_FILE).write_text(markdown_table(summary), encoding="utf-8")
    plot_metrics(summary, output_dir / PLOT_FILE)


# Moved out of this module (issue 28): model loading to `basam_hf.loading`, run helpers to `basam_hf.runtime`. The
# old names keep working for one release, with a DeprecationWarning.
_MOVED = {
    **dict.fromkeys(
        ("BA_OFF", "DTYPES", "as_model", "ba_variant", "load_model", "load_processor", "resolve_dtype", "sam_variant"),
        loading,
    ),
    **dict.fromkeys(("make_accelerator", "progress_bar"), runtime),
}


def __getattr__(name: str):
    if name in _MOVED:
        module = _MOVED[name]
        warnings.warn(
            f"basam_hf.evaluation.{name} moved to {module.__name__}.{name}; the old name will be removed in the next "
            "release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROTOCOLS",
    "EvaluateSettings",
    "EvaluationRun",
    "build_summary",
    "checked_settings",
    "evaluate",
    "markdown_table",
    "official_click",
    "plot_metrics",
    "predict_official",
    "predict_standard",
    "read_records",
    "write_reports",
]
