"""The resolution study: does training with BA help a model extrapolate to longer token sequences?

Two twins differ only in BA while training: same architecture (the embedded default model's: a ViT 128 wide, 8
layers, 4 x 4 windows, global layers 3 and 7, 16 px patches), same initialisation, data, prompts, schedule and
steps, trained at 256 px (16 x 16 tokens). One was trained with the package's default BA settings, the other as plain
SAM (BA off). Both are committed in `training/twins/{ba,off}`; `scripts/train_default_model.py` documents how they
were trained. This script evaluates them at 1x, 1.5x, 2x, 3x and 4x their training size (256 to 1024 px, 16 x 16 to
64 x 64 tokens) on held-out synthetic scenes (rendered at each size: the same scenes, more pixels) and held-out
photo composites (test photos only, `basam_hf.composites`; the same image fed at each size), from boxes and single
clicks, each twin as trained and with the other's BA setting at test time (a zero-shot switch): four variants.

    python examples/resolution_study.py --output examples/resolution_study

Differences between variants are paired per scene, with 95 % percentile bootstrap intervals
(`basam_hf.study.paired_difference`); a gain or a loss is called only where the interval excludes 0. Results are
cached per (set, prompt, variant, size), so an interrupted run resumes; the whole study takes about 15 min on 2 CPU
cores. Reports: `OUTPUT/results.md` and `results.json` (mIoU tables and paired differences), `miou_vs_size.png`,
`overlay.png` (one held-out scene at each size, each variant) and one folder of `basam_hf.study` reports per set and
prompt. A quick check of the whole path: `--samples 4 --scales 1 2`.
"""

import argparse
import json
import sys
from pathlib import Path

from basam_hf.assessment import mean_with_interval
from basam_hf.composites import composite_segmentation_dataset
from basam_hf.configuration_basam import BA_DEFAULTS
from basam_hf.loading import BA_OFF, ba_variant, load_model
from basam_hf.study import (
    HELD_OUT_SEED,
    _rendered,
    paired_difference,
    run_study,
    scaled_sizes,
    shared_image_embeddings,
    study_table,
)

TWINS = Path(__file__).resolve().parents[1] / "training" / "twins"
BA_TWIN, PLAIN_TWIN = "BA twin", "plain twin"
# name -> (twin, BA settings at test time; {} = as trained)
VARIANTS = {
    f"{BA_TWIN} (as trained, BA on)": ("ba", {}),
    f"{BA_TWIN}, BA off at test": ("ba", BA_OFF),
    f"{PLAIN_TWIN} (as trained, BA off)": ("off", {}),
    f"{PLAIN_TWIN}, BA on at test": ("off", BA_DEFAULTS),
}
BA_AS_TRAINED, BA_SWITCHED, PLAIN_AS_TRAINED, PLAIN_SWITCHED = VARIANTS
# name -> (variant, baseline): paired differences variant - baseline.
CONTRASTS = {
    "BA-SAM vs SAM (each twin as trained)": (BA_AS_TRAINED, PLAIN_AS_TRAINED),
    "trained with BA (both BA on at test)": (BA_AS_TRAINED, PLAIN_SWITCHED),
    "trained with BA (both BA off at test)": (BA_SWITCHED, PLAIN_AS_TRAINED),
    "BA at test time, plain twin (zero-shot)": (PLAIN_SWITCHED, PLAIN_AS_TRAINED),
    "BA at test time, BA twin": (BA_AS_TRAINED, BA_SWITCHED),
}
SETS = ("synthetic", "photo")
PROMPTS = ("box", "point")
PROMPT_NAMES = {"box": "box", "point": "single click"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--twins", type=Path, default=TWINS, help="folder with the twins ba/ and off/")
    parser.add_argument("--output", type=Path, default=Path("resolution-study"), help="output folder")
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 1.5, 2, 3, 4], help="sizes / training size")
    parser.add_argument("--samples", type=int, default=64, help="held-out scenes per set")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--prompts", nargs="+", choices=PROMPTS, default=list(PROMPTS))
    return parser.parse_args(argv)


def scene_sets(num_samples: int) -> dict:
    """{set: scenes(size)}: synthetic scenes rendered at each size; test composites rendered once, fed at each."""
    from basam_hf.synthetic import synthetic_segmentation_dataset

    photos = _rendered(composite_segmentation_dataset(num_samples, "test", seed=HELD_OUT_SEED))
    return {
        "synthetic": lambda size: synthetic_segmentation_dataset(num_samples, size, HELD_OUT_SEED),
        "photo": lambda size: photos,
    }


def degradation_difference(summary: dict, size: int, base: int) -> dict:
    """Per scene, (BA twin at `size` - at `base`) - (plain twin at `size` - at `base`), each as trained: how much less
    the BA twin loses from its training size than the plain twin, with its bootstrap interval."""
    found = {(r["model"], r["size"]): r["per_sample"] for r in summary["results"]}
    ba_big, ba_base = found[BA_AS_TRAINED, size], found[BA_AS_TRAINED, base]
    plain_big, plain_base = found[PLAIN_AS_TRAINED, size], found[PLAIN_AS_TRAINED, base]
    ids = sorted(set(ba_big) & set(ba_base) & set(plain_big) & set(plain_base))
    return mean_with_interval([(ba_big[i] - ba_base[i]) - (plain_big[i] - plain_base[i]) for i in ids])


def cell(difference: dict) -> str:
    """`+0.012 [-0.004, +0.027]`, bold where the interval excludes 0 (a gain or a loss)."""
    text = f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
    return f"**{text}**" if difference["low"] > 0 or difference["high"] < 0 else text


def contrast_table(summary: dict, sizes: list[int]) -> str:
    base = sizes[0]
    lines = [
        "| paired difference | " + " | ".join(f"{size} px ({size / base:g}×)" for size in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, (variant, baseline) in CONTRASTS.items():
        cells = [cell(paired_difference(summary, variant, baseline, size)) for size in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = ["–"] + [cell(degradation_difference(summary, size, base)) for size in sizes[1:]]
    lines.append(f"| loss from {base} px, BA twin minus plain twin | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summaries: dict, sizes: list[int], path: Path) -> None:
    """mIoU against input size, one panel per (set, prompt), one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 4.2), squeeze=False)
    styles = {BA_AS_TRAINED: "-o", BA_SWITCHED: ":o", PLAIN_AS_TRAINED: "-s", PLAIN_SWITCHED: ":s"}
    for axis, ((set_name, prompt), summary) in zip(axes[0], summaries.items(), strict=True):
        for name, style in styles.items():
            values = {r["size"]: r["metrics"]["iou"] for r in summary["results"] if r["model"] == name}
            axis.plot(
                sizes, [values[size] for size in sizes], style, label=name, color="C0" if "BA twin" in name else "C1"
            )
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.set_title(f"{set_name}, {PROMPT_NAMES[prompt]}")
        axis.set_xlabel("input size (px)")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mIoU")
    figure.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(styles), fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below the panels
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    twin = load_model(str(args.twins / "ba"))
    plain = load_model(str(args.twins / "off"))
    models = {"ba": twin, "off": plain}
    variants = {name: ba_variant(models[which], **settings) if settings else models[which]
                for name, (which, settings) in VARIANTS.items()}  # fmt: skip
    sizes = scaled_sizes(twin, args.scales)
    scenes = scene_sets(args.samples)
    summaries, report = {}, ["# Trained twins: BA vs plain SAM beyond the training size\n"]
    for set_name in args.sets:
        with shared_image_embeddings(variants.values()):  # boxes and clicks on the same scenes: one encoder pass
            for prompt in args.prompts:
                first = set_name == args.sets[0] and prompt == args.prompts[0]
                summaries[set_name, prompt] = run_study(
                    twin, variants, sizes, prompt=prompt, scenes=scenes[set_name], seed=HELD_OUT_SEED,
                    output_dir=args.output / f"{set_name}-{prompt}", overlay=list(VARIANTS) if first else (),
                    model_name="twins",
                )  # fmt: skip
        for prompt in args.prompts:
            summary = summaries[set_name, prompt]
            count = summary["results"][0]["counts"]["evaluated"]
            report.append(f"## {set_name} scenes, {PROMPT_NAMES[prompt]} ({count} held-out scenes)\n")
            report.append("Mean IoU:\n\n" + study_table(summary))
            report.append("Paired per-scene IoU differences, mean [95 % bootstrap interval]:\n")
            report.append(contrast_table(summary, sizes))
    args.output.mkdir(parents=True, exist_ok=True)
    text = "\n".join(report)
    (args.output / "results.md").write_text(text, encoding="utf-8")
    contrasts = {
        f"{set_name}-{prompt}": {
            name: {size: paired_difference(summary, *pair, size) for size in sizes} for name, pair in CONTRASTS.items()
        }
        for (set_name, prompt), summary in summaries.items()
    }
    means = {
        f"{set_name}-{prompt}": {
            name: {r["size"]: r["metrics"]["iou"] for r in summary["results"] if r["model"] == name}
            for name in VARIANTS
        }
        for (set_name, prompt), summary in summaries.items()
    }
    results = {"sizes": sizes, "samples": args.samples, "miou": means, "paired_differences": contrasts}
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(summaries, sizes, args.output / "miou_vs_size.png")
    first = args.output / f"{args.sets[0]}-{args.prompts[0]}" / "overlay.png"
    if first.is_file():
        first.replace(args.output / "overlay.png")  # one copy, next to the plot
    print(text)
    print(f"Reports in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
