"""The resolution study: does BA keep a model's quality as the token count grows?

This script evaluates a model trained at one size (by default the embedded one, trained as plain SAM at 1024 px =
64 x 64 tokens; scripts/train_default_model.py) zero-shot at 1x, 1.5x, 2x, 3x and 4x that size on held-out synthetic
scenes rendered at each size, with box prompts, under every BA setting below (same weights, only the attention
changes), plus two fine-tuned models: the model fine-tuned at 2x with the package's default BA settings, and, as the
control that separates "BA" from "fine-tuned at a larger size", fine-tuned the same way with BA off.

    python examples/resolution_study.py --output examples/resolution_study --model MODEL

The global layers' cost grows with the square of the token count: for a model trained at 256 px (up to 1024 px) the
study takes about 10 min on 2 CPU cores; for the embedded 1024 px model (up to 4096 px = 65,536 tokens), hours. The
README's table was measured on the previous embedded model, trained at 256 px; its files are in git history:

    mkdir -p prev && for f in config.json model.safetensors processor_config.json; do
        git show b0ec110:src/basam_hf/default/$f > prev/$f; done   # then --model prev

Results (cached per variant and size, so an interrupted run resumes) go to `OUTPUT/results.md`, `results.json` and
`miou_vs_size.png`, plus `overlay.png` (one scene, each size, a few variants). `--finetune-steps 0` skips the
fine-tuning. A quick check of the whole path: `--samples 4 --scales 1 2 --finetune-steps 2`.
"""

import argparse
import sys
from pathlib import Path

from basam_hf.configuration_basam import BA_DEFAULTS
from basam_hf.evaluation import BA_OFF, ba_variant, load_model
from basam_hf.study import run_study, scaled_sizes, study_table
from basam_hf.synthetic import synthetic_segmentation_dataset
from basam_hf.training import finetune

LOG = {"attention_scaling": "log_length"}
DISTANCE = {"bias_mode": "distance", "distance_unit": "token", "bias_slope_scale": 1.0}
DEFAULT = "distance (pretrain grid) + log-length"  # the package's default BA settings, BA_DEFAULTS
# name -> BA settings applied to the same weights (zero-shot).
ZERO_SHOT = {
    "SAM (BA off)": BA_OFF,
    "log-length scale only": {**BA_OFF, **LOG},
    "distance only": {**DISTANCE, "attention_scaling": "none"},
    "distance + log-length": {**DISTANCE, **LOG},
    DEFAULT: dict(BA_DEFAULTS),
    "distance x0.25 + log-length": {**DISTANCE, **LOG, "bias_slope_scale": 0.25},
    "distance x4 + log-length": {**DISTANCE, **LOG, "bias_slope_scale": 4.0},
    "coefficient + log-length": {"bias_mode": "coefficient", **LOG},
}
# name -> BA settings of a fine-tuned model (and of its control).
FINE_TUNED = {"fine-tuned with BA": dict(BA_DEFAULTS), "fine-tuned, BA off": BA_OFF}
TRAIN_SEED = 100  # the default model's training scenes, here rendered at the fine-tuning size
OVERLAY_VARIANTS = ("SAM (BA off)", DEFAULT, "fine-tuned with BA")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model trained at one size (default: the embedded one)")
    parser.add_argument("--output", type=Path, default=Path("resolution-study"), help="output folder")
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 1.5, 2, 3, 4], help="sizes / training size")
    parser.add_argument("--samples", type=int, default=32, help="held-out scenes per size")
    parser.add_argument("--finetune-steps", type=int, default=100, help="0: no fine-tuned models")
    parser.add_argument("--finetune-scale", type=float, default=2.0, help="fine-tuning size / training size")
    parser.add_argument("--finetune-batch-size", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    return parser.parse_args(argv)


def fine_tuned_models(model, args: argparse.Namespace, size: int) -> dict[str, str]:
    """Fine-tune a copy of `model` at `size` per entry of FINE_TUNED (resumable); returns {name: final folder}."""
    train = synthetic_segmentation_dataset(args.finetune_steps * args.finetune_batch_size, size, seed=TRAIN_SEED)
    folders = {}
    for name, settings in FINE_TUNED.items():
        run = args.output / "finetune" / name.replace(" ", "-").replace(",", "")
        if not (run / "final" / "config.json").is_file():
            finetune(
                ba_variant(model, **settings),
                train,
                output_dir=run,
                train_sizes=[size],
                prompt="box",
                learning_rate=args.finetune_lr,
                max_grad_norm=1.0,
                batch_size=args.finetune_batch_size,
                epochs=1,
                max_steps=args.finetune_steps,
                save_steps=max(1, args.finetune_steps // 3),
                keep_last=1,
                resume=True,
                log_with=[],
            )
        folders[name] = str(run / "final")
    return folders


def main(argv=None) -> int:
    args = parse_args(argv)
    model = load_model(args.model)
    sizes = scaled_sizes(model, args.scales)
    variants: dict = dict(ZERO_SHOT)
    if args.finetune_steps > 0:
        size = scaled_sizes(model, [args.finetune_scale])[0]
        variants.update(fine_tuned_models(model, args, size))
    summary = run_study(
        model, variants, sizes, num_samples=args.samples, output_dir=args.output, overlay=OVERLAY_VARIANTS,
        model_name=args.model,
    )  # fmt: skip
    print(study_table(summary), end="")
    print(f"Reports in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
