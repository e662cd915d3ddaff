"""Resolution studies: one model's quality on synthetic scenes rendered at several input sizes, under several BA
settings, with the same weights.

Each size gets its own rendering of the same scenes (`basam_hf.synthetic`: a scene is a function of its seed, so a
2x image shows the same objects with twice as many pixels), fed to the model at that size: the token count grows with
the square of the size, as for a photo taken at a higher resolution. Prompts are boxes from the ground truth.

[`run_study`] evaluates every (variant, size) with [`basam_hf.evaluation.evaluate`], keeps one JSON per pair in the
output folder (a rerun reuses them: long studies resume), and writes `results.md` (a table of mIoU, sizes across,
and for two variants their paired differences per size with bootstrap intervals), `results.json` and
`miou_vs_size.png` (mean IoU with error bars on a 0-1 axis, and the paired differences). [`overlay_grid`] draws one scene's predicted masks per variant and size.
"""

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .constants import BA_FIELDS
from .data import SegmentationDataset, mask_box
from .evaluation import build_summary, dtype_name, evaluate, weights_fingerprint
from .intervals import mean_with_interval
from .loading import BA_OFF, as_model, ba_variant, load_processor, resolve_dtype
from .metrics import binary_iou
from .segment import draw_prompts, overlay_masks, segment_image
from .synthetic import dataset_seeds, render_sample, synthetic_segmentation_dataset

# The default model's held-out test scenes (scripts/train_default_model.py never trains on them).
HELD_OUT_SEED = 102
RESULTS_JSON = "results.json"
RESULTS_TABLE = "results.md"
PLOT_FILE = "miou_vs_size.png"
OVERLAY_FILE = "overlay.png"
# The two variants of `basam-hf compare`: the model as configured, and the same weights as plain SAM.
COMPARE_VARIANTS = {"BA-SAM": {}, "SAM (BA off)": dict(BA_OFF)}
# Its default sizes, as multiples of the model's training size: the global layers' cost grows with the 4th power of
# the scale, so 3x a 1024 px model would take minutes per scene on a CPU.
COMPARE_SCALES = (1, 1.5, 2)
# What `compare` measures, said in its report: a switch at test time, not two trained models.
COMPARE_NOTE = (
    "Both rows use the same weights: the model with its BA settings (BA-SAM) and switched to plain SAM attention at "
    "test time (BA off). This is not a comparison with a model trained without BA; for that, see the trained twins "
    "of examples/resolution_study.py."
)


def scaled_sizes(model, scales: Sequence[float]) -> list[int]:
    """`scale` times the model's training size, rounded to a multiple of its patch size, for each scale (`model`: a
    model or its vision config)."""
    vision = model.config.vision_config if hasattr(model, "config") else model
    return [
        max(vision.patch_size, round(vision.image_size * scale / vision.patch_size) * vision.patch_size)
        for scale in scales
    ]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _rendered(dataset: SegmentationDataset) -> SegmentationDataset:
    """The dataset with its samples rendered once, for the many variants evaluated on it."""
    samples = [dataset[index] for index in range(len(dataset))]
    return SegmentationDataset(dataset.ids, samples.__getitem__, dataset.info)


def ba_settings(model) -> dict:
    """The BA fields of a model's vision config."""
    return {name: getattr(model.config.vision_config, name) for name in BA_FIELDS}


def build_variants(model, variants: Mapping[str, Mapping | object], *, dtype=None, torch_dtype=None) -> dict:
    """`{name: model}`: a mapping value is a set of BA settings applied to `model`'s weights ([`ba_variant`]; `{}`
    is the model itself), anything else is taken as a model (or a name for [`basam_hf.loading.load_model`]). With `dtype` (or
    `torch_dtype`), the other models are loaded in (or converted to) it; `model`'s variants have its dtype."""
    dtype = resolve_dtype(dtype, torch_dtype)
    built = {}
    for name, spec in variants.items():
        if isinstance(spec, Mapping):
            built[name] = ba_variant(model, **spec) if spec else model
        else:
            built[name] = as_model(spec, dtype=dtype)
    return built


@contextlib.contextmanager
def shared_image_embeddings(models: Iterable) -> Iterator[None]:
    """Within the block, each model's vision encoder returns its earlier output for the same pixels and arguments
    instead of recomputing it (a memo keyed by the input's bytes): the same scenes evaluated from boxes, then from
    clicks, run the encoder once. Outputs are kept until the block ends, so keep it to one set of scenes. Blocks nest:
    an inner block computes through the outer one's memo."""
    encoders = list({id(model.vision_encoder): model.vision_encoder for model in models}.values())

    def memoized(encoder):
        compute, memo = encoder.forward, {}

        def forward(pixel_values, *args, **kwargs):
            raw = pixel_values.detach().cpu().contiguous().view(torch.uint8).numpy()  # any dtype, bfloat16 too
            digest = hashlib.blake2b(raw.tobytes(), digest_size=16).hexdigest()
            key = (digest, tuple(pixel_values.shape), str(pixel_values.dtype), repr((args, sorted(kwargs.items()))))
            if key not in memo:
                memo[key] = compute(pixel_values, *args, **kwargs)
            return memo[key]

        return forward

    # An enclosing block's memo is an instance attribute already: kept, wrapped, and put back at the end (nested
    # blocks then share the outer memo).
    previous = [encoder.__dict__.get("forward") for encoder in encoders]
    for encoder in encoders:
        encoder.forward = memoized(encoder)  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        for encoder, forward in zip(encoders, previous):
            if forward is None:
                del encoder.forward
            else:
                encoder.forward = forward


def run_study(
    model,
    variants: Mapping[str, Mapping | object],
    sizes: Sequence[int],
    *,
    num_samples: int = 64,
    seed: int = HELD_OUT_SEED,
    prompt: str = "box",
    scenes: Callable[[int], SegmentationDataset] | None = None,
    output_dir: str | os.PathLike | None = None,
    overlay: Sequence[str] = (),
    model_name: str | None = None,
    note: str | None = None,
    accelerator=None,
    dtype=None,
    torch_dtype=None,
) -> dict:
    """Evaluate `variants` (see [`build_variants`]) of `model` on `num_samples` synthetic scenes rendered at each
    size, or on `scenes(size)` (the held-out samples to feed at that size, e.g. the same photos at every size), with
    `prompt`; returns the summary (as [`basam_hf.evaluation.evaluate`]'s, one result per variant and size, `model`
    being the variant's name, plus `per_sample`: {sample id: IoU} for paired comparisons, [`paired_difference`]).
    With `output_dir`, results are cached per (variant, size) and the reports are written, plus
    `overlay.png` ([`overlay_grid`], from the same models) of the variants named in `overlay`. `model_name` names the
    model in the reports (default: its `name_or_path`); `note` heads `results.md`. `dtype` (or `torch_dtype`): `"float32"`, `"bfloat16"` or
    `"float16"` for every variant (see [`basam_hf.loading.load_model`]); default the model's own."""
    dtype = resolve_dtype(dtype, torch_dtype)
    model = as_model(model, dtype=dtype)
    models = build_variants(model, variants, dtype=dtype)
    if model_name is None:
        model_name = str(getattr(model, "name_or_path", "model"))
    output = Path(output_dir) if output_dir is not None else None
    if output is not None:
        (output / "runs").mkdir(parents=True, exist_ok=True)
    if scenes is None:
        scenes = lambda size: synthetic_segmentation_dataset(num_samples, size, seed)  # noqa: E731
    results, dataset = [], None
    for size in sizes:
        dataset = _rendered(scenes(size))
        for name, variant in models.items():
            # A cached result is reused only for the same weights, BA settings, scenes and prompt.
            key = {"weights": weights_fingerprint(variant), "ba": ba_settings(variant), "prompt": prompt}
            key["scenes"] = [str(dataset.info.get("source")), len(dataset), seed]
            cache = output / "runs" / f"{_slug(name)}-{size}.json" if output is not None else None
            cached = json.loads(cache.read_text()) if cache is not None and cache.is_file() else None
            if cached is not None and cached.get("key") == key:
                results.append(cached)
                continue
            start = time.perf_counter()
            per_sample = {}

            def keep(records: list[dict]) -> None:
                per_sample.update((r["id"], r["metrics"]["iou"]) for r in records if r["status"] == "ok")

            summary = evaluate(
                variant, dataset, sizes=[size], prompt=prompt, seed=seed, accelerator=accelerator, label=name,
                on_records=keep,
            )  # fmt: skip
            seconds = round(time.perf_counter() - start, 1)
            result = {**summary["results"][0], "model": name, "key": key, "seconds": seconds}
            result["per_sample"] = dict(sorted(per_sample.items()))
            if cache is not None:
                cache.write_text(json.dumps(result, indent=2) + "\n")
            results.append(result)
    described = f"{dataset.info.get('source')}, {len(dataset)} samples fed at each size" if dataset is not None else ""
    summary = build_summary(
        results,
        model=model_name,
        dataset=described,
        split=None,
        prompt=prompt,
        protocol="standard",
        sizes=list(sizes),
        seed=seed,
        jitter=0.0,
        negatives=0,
        dtype=dtype_name(model),
        dataset_info=dataset.info if dataset is not None else {},
    )
    if note:
        summary["note"] = note
    summary["variants"] = {
        name: dict(spec) if isinstance(spec, Mapping) else str(spec) for name, spec in variants.items()
    }
    if output is not None:
        write_study_reports(summary, output)
        shown = {name: models[name] for name in overlay if name in models}
        if shown:
            overlay_grid(shown, sizes, seed=seed).save(output / OVERLAY_FILE)
    return summary


def paired_difference(summary: dict, variant: str, baseline: str, size: int, confidence: float = 0.95) -> dict:
    """Mean per-sample IoU difference `variant - baseline` at `size` over the samples both evaluated, with its
    percentile bootstrap interval ([`basam_hf.intervals.mean_with_interval`]): `{"mean", "low", "high", "n"}`. A
    gain or loss is called only where the interval excludes 0."""
    found = {(r["model"], r["size"]): r.get("per_sample") for r in summary["results"]}
    first, second = found.get((variant, size)), found.get((baseline, size))
    if first is None or second is None:
        raise KeyError(f"No per-sample results for {variant!r} and {baseline!r} at {size} px in this summary.")
    ids = sorted(set(first) & set(second))
    return mean_with_interval([first[i] - second[i] for i in ids], confidence)


def study_table(summary: dict, metric: str = "iou") -> str:
    """A Markdown table: one row per variant, one column per size, the mean `metric` in each cell."""
    sizes = sorted({result["size"] for result in summary["results"]})
    cells = {(result["model"], result["size"]): result["metrics"].get(metric) for result in summary["results"]}
    names = list(dict.fromkeys(result["model"] for result in summary["results"]))
    base = sizes[0]
    lines = [
        "| variant | " + " | ".join(f"{size} px ({size / base:g}×)" for size in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name in names:
        values = [cells.get((name, size)) for size in sizes]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def difference_table(summary: dict, variant: str, baseline: str, confidence: float = 0.95) -> str:
    """A Markdown table: per size, the mean paired IoU difference `variant - baseline` over the same samples, with
    its bootstrap interval ([`paired_difference`]) and whether the interval excludes 0."""
    sizes = sorted({result["size"] for result in summary["results"]})
    lines = [
        f"| size | {variant} − {baseline} | {confidence:.0%} interval | samples | |",
        "|---:|---:|---|---:|---|",
    ]
    for size in sizes:
        d = paired_difference(summary, variant, baseline, size, confidence)
        verdict = "within noise" if d["low"] <= 0 <= d["high"] else ("gain" if d["low"] > 0 else "loss")
        lines.append(f"| {size} px | {d['mean']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | {d['n']} | {verdict} |")
    return "\n".join(lines) + "\n"


def _paired_variants(summary: dict) -> tuple[str, str] | None:
    """The first two variants, when every result of both keeps per-sample IoU (a paired comparison is possible)."""
    names = list(dict.fromkeys(result["model"] for result in summary["results"]))
    if len(names) < 2:
        return None
    if not all(result.get("per_sample") for result in summary["results"] if result["model"] in names[:2]):
        return None
    return names[0], names[1]


def plot_study(summary: dict, path: str | os.PathLike, confidence: float = 0.95) -> None:
    """Save [`study_figure`] as `path` (`miou_vs_size.png`)."""
    figure = study_figure(summary, confidence)  # first: it chooses the file-only backend before pyplot loads
    import matplotlib.pyplot as plt  # matplotlib imports slowly; only the plot needs it

    figure.savefig(path, dpi=100)
    plt.close(figure)


def study_figure(summary: dict, confidence: float = 0.95):
    """A matplotlib figure: mean IoU per size and variant with bootstrap error bars, on an axis from 0 to 1 (so a
    difference looks as large as it is); and, for two variants, their paired difference per size with its interval,
    around a zero line, on an axis of at least ±0.05."""
    import matplotlib  # imports slowly; only the plot needs it

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt  # after use(): with the backend chosen

    pair = _paired_variants(summary)
    sizes = sorted({result["size"] for result in summary["results"]})
    figure, axes = plt.subplots(1, 2 if pair else 1, figsize=(9.5 if pair else 5, 3.6), squeeze=False)
    names = list(dict.fromkeys(result["model"] for result in summary["results"]))
    for offset, name in enumerate(names):
        rows = sorted((r["size"], r) for r in summary["results"] if r["model"] == name)
        means, errors = [], [[], []]
        for _, result in rows:
            values = list((result.get("per_sample") or {}).values())
            if values:
                interval = mean_with_interval(values, confidence)
                mean, low, high = interval["mean"], interval["low"], interval["high"]
            else:
                mean = low = high = result["metrics"]["iou"]
            means.append(mean)
            errors[0].append(mean - low)
            errors[1].append(high - mean)
        shift = (offset - (len(names) - 1) / 2) * 0.012 * (sizes[-1] - sizes[0] or sizes[0])
        x = [size + shift for size, _ in rows]
        axes[0, 0].errorbar(x, means, yerr=errors, marker="o", capsize=4, label=name)
    axes[0, 0].set(ylim=(0, 1), xlabel="input size (px)", ylabel="mean IoU", xticks=sizes)
    axes[0, 0].set_title(f"mean IoU, {confidence:.0%} bootstrap intervals", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].grid(alpha=0.3)
    if pair:
        diffs = [paired_difference(summary, *pair, size, confidence) for size in sizes]
        axis = axes[0, 1]
        axis.errorbar(
            sizes,
            [d["mean"] for d in diffs],
            yerr=[[d["mean"] - d["low"] for d in diffs], [d["high"] - d["mean"] for d in diffs]],
            marker="o",
            capsize=4,
            color="black",
        )
        axis.axhline(0, color="grey", linewidth=1)
        reach = max(0.05, *(max(abs(d["low"]), abs(d["high"])) for d in diffs)) * 1.2
        axis.set(ylim=(-reach, reach), xlabel="input size (px)", ylabel="IoU difference", xticks=sizes)
        axis.set_title(f"{pair[0]} − {pair[1]}, paired, {confidence:.0%} intervals", fontsize=10)
        axis.grid(alpha=0.3)
    figure.suptitle(str(summary.get("dataset", "")), fontsize=9)
    figure.tight_layout()
    return figure


def write_study_reports(summary: dict, output_dir: str | os.PathLike) -> None:
    """`results.json`, `results.md` (mIoU and MAE tables; for two variants with per-sample results, their paired
    differences per size with bootstrap intervals) and `miou_vs_size.png` ([`plot_study`]) in `output_dir`."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / RESULTS_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    dtype = f" in {summary['dtype']}" if summary.get("dtype") else ""
    pair = _paired_variants(summary)
    differences = (
        f"\nPaired IoU differences over the same scenes (percentile bootstrap; a gain or loss only where the "
        f"interval excludes 0):\n\n{difference_table(summary, *pair)}"
        if pair
        else ""
    )
    text = (
        (f"{summary['note']}\n\n" if summary.get("note") else "")
        + f"{summary['dataset']}, prompt `{summary['prompt']}`, model `{summary['model']}`{dtype}.\n\n"
        f"Mean IoU (higher is better):\n\n{study_table(summary, 'iou')}{differences}\n"
        f"Mean absolute error (lower is better):\n\n{study_table(summary, 'mae')}"
    )
    (output / RESULTS_TABLE).write_text(text, encoding="utf-8")
    plot_study(summary, output / PLOT_FILE)


def overlay_grid(
    models: Mapping[str, object], sizes: Sequence[int], scene: int = 0, seed: int = HELD_OUT_SEED, tile: int = 256
) -> Image.Image:
    """One synthetic scene at each size (columns), segmented from its ground-truth box by each model (rows): the
    predicted mask over the image, the box outlined ([`basam_hf.segment.draw_prompts`]), each tile scaled to `tile` pixels with its label and IoU."""
    sample_seed = dataset_seeds(scene + 1, seed)[scene]
    processors = {name: load_processor(None, model) for name, model in models.items()}
    label_height = 16
    grid = Image.new("RGB", (tile * len(sizes), (tile + label_height) * len(models)), "white")
    draw = ImageDraw.Draw(grid)
    for column, size in enumerate(sizes):
        sample = render_sample(sample_seed, size)
        truth = np.asarray(sample["mask"]) > 127
        box = mask_box(truth).tolist()
        for row, (name, model) in enumerate(models.items()):
            masks, _ = segment_image(model, processors[name], sample["image"], boxes=[box], size=size)
            iou = binary_iou(masks[0], truth)
            picture = draw_prompts(overlay_masks(sample["image"], masks[:1]), boxes=[box])
            top = row * (tile + label_height)
            grid.paste(picture.resize((tile, tile), Image.Resampling.BILINEAR), (column * tile, top + label_height))
            draw.text((column * tile + 3, top + 2), f"{name} @ {size}px  IoU {iou:.2f}", fill="black")
    return grid


def compare(
    model="default",
    sizes: Sequence[int] | None = None,
    *,
    num_samples: int = 8,
    seed: int = HELD_OUT_SEED,
    output_dir: str | os.PathLike = "basam-compare",
    dtype=None,
    torch_dtype=None,
) -> dict:
    """The package's showcase: `model` with its BA settings against the same weights with BA off, on held-out
    synthetic scenes at several sizes (default [`COMPARE_SCALES`] times the model's training size). Writes the
    reports of [`run_study`] and `overlay.png` to `output_dir`; returns the summary. `dtype` (or `torch_dtype`):
    `"float32"`, `"bfloat16"` or `"float16"` for both variants (see [`basam_hf.loading.load_model`])."""
    model = as_model(model, dtype=dtype, torch_dtype=torch_dtype)
    sizes = list(sizes or scaled_sizes(model, COMPARE_SCALES))
    return run_study(
        model, COMPARE_VARIANTS, sizes, num_samples=num_samples, seed=seed, output_dir=output_dir,
        overlay=list(COMPARE_VARIANTS), note=COMPARE_NOTE,
    )  # fmt: skip


__all__ = [
    "COMPARE_NOTE",
    "COMPARE_SCALES",
    "COMPARE_VARIANTS",
    "HELD_OUT_SEED",
    "build_variants",
    "compare",
    "difference_table",
    "overlay_grid",
    "paired_difference",
    "plot_study",
    "run_study",
    "scaled_sizes",
    "study_figure",
    "shared_image_embeddings",
    "study_table",
    "write_study_reports",
]
