"""The `basam-hf` command line: a thin shell over the Python API."""

import argparse
import json
import sys

from . import __version__
from .configuration_basam import BA_FIELDS as BA_OPTION_NAMES


def _info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from .configuration_basam import BaSamConfig

    if args.model == "default":
        config = BaSamConfig()  # the package's default BA-SAM settings on SAM ViT-B dimensions
    else:
        config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    vision = getattr(config, "vision_config", config)
    settings = vision.ba_settings() if hasattr(vision, "ba_settings") else {"bias_mode": "none (plain SAM)"}
    print(json.dumps({"model_type": config.model_type, "image_size": vision.image_size, **settings}, indent=2))
    return 0


def _convert_sam(args: argparse.Namespace) -> int:
    from .conversion import convert_sam_to_basam

    settings = {name: value for name, value in vars(args).items() if name in BA_OPTION_NAMES and value is not None}
    model = convert_sam_to_basam(args.source, args.output, **settings)
    print(f"Saved BA-SAM to {args.output} with {json.dumps(model.config.vision_config.ba_settings())}")
    return 0


def _convert_official(args: argparse.Namespace) -> int:
    from .conversion import convert_official_checkpoint

    try:
        model = convert_official_checkpoint(
            args.checkpoint,
            args.output,
            image_size=args.image_size,
            num_attention_heads=args.num_attention_heads,
            drop_rel_pos=args.drop_rel_pos,
            attention_scaling=args.attention_scaling,
        )
    except (OSError, ValueError) as error:  # unreadable / unsafe / mismatched checkpoint: the message says which
        print(f"basam-hf convert-official: error: {error}", file=sys.stderr)
        return 1
    vision = model.config.vision_config
    print(
        f"Saved BA-SAM to {args.output}: {vision.num_hidden_layers} layers, hidden size {vision.hidden_size}, "
        f"{vision.num_attention_heads} heads, global layers {vision.global_attn_indexes}, "
        f"{json.dumps(vision.ba_settings())}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, make_accelerator, markdown_table

    accelerator = make_accelerator(cpu=args.cpu)
    try:
        summary = evaluate(
            args.model,
            args.dataset,
            split=args.split,
            preset=args.preset,
            image_column=args.image_column,
            mask_column=args.mask_column,
            annotations_column=args.annotations_column,
            sizes=args.sizes,
            prompt=args.prompt,
            protocol=args.protocol,
            compare_sam=args.compare_sam,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            output_dir=args.output,
            seed=args.seed,
            jitter=args.jitter,
            negatives=args.negatives,
            accelerator=accelerator,
        )
    except (OSError, ValueError) as error:  # bad model / dataset / column / size: the message says which
        print(f"basam-hf evaluate: error: {error}", file=sys.stderr)
        return 1
    if accelerator.is_main_process:
        print(markdown_table(summary), end="")
        print(f"Evaluated with {accelerator.num_processes} process(es) on {accelerator.device}.")
        print(f"Per-sample records, summary.json, summary.md and metrics_vs_size.png are in {args.output}")
    return 0


def add_evaluate_command(commands) -> None:
    """The `evaluate` subcommand (arguments of `basam_hf.evaluation.evaluate`)."""
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a model on a segmentation dataset at several input sizes (runs under accelerate launch)",
        description="Zero-shot evaluation with prompts from the ground truth. Runs plainly or with several processes "
        "(`accelerate launch --multi_gpu --num_processes N -m basam_hf.cli evaluate ...`, also on CPU-only machines, "
        "or torchrun): samples are sharded and each counted once. Reruns with the same --output resume from its "
        "samples.jsonl.",
    )
    evaluate.add_argument("--model", default="default", help="repo id, folder, or `default` (the embedded model)")
    evaluate.add_argument("--dataset", default=None, help="Hub id, save_to_disk folder, or images/ + masks/ folder")
    evaluate.add_argument("--split", default=None, help="dataset split (default: the preset's, or the only one)")
    evaluate.add_argument("--preset", default=None, help="paper dataset: duts cod10k dis5k isic2016 isic2018 coco2017")
    evaluate.add_argument("--image-column", default=None)
    evaluate.add_argument("--mask-column", default=None)
    evaluate.add_argument("--annotations-column", default=None, help="COCO-style objects column")
    evaluate.add_argument("--prompt", default=None, help="box (default) | point | points:k")
    evaluate.add_argument("--sizes", type=int, nargs="+", default=None, help="input sizes (default: the model's)")
    evaluate.add_argument("--protocol", choices=("standard", "official"), default="standard")
    evaluate.add_argument("--compare-sam", action="store_true", help="also evaluate the same weights with BA off")
    evaluate.add_argument("--max-samples", type=int, default=None)
    evaluate.add_argument("--batch-size", type=int, default=1, help="images per forward pass and process")
    evaluate.add_argument("--output", default="basam-hf-evaluation", help="output folder (default: %(default)s)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the prompts (per sample, process-independent)")
    evaluate.add_argument("--jitter", type=float, default=0.0, help="box jitter, a fraction of the box side")
    evaluate.add_argument("--negatives", type=int, default=0, help="random negative points added to point prompts")
    evaluate.add_argument("--cpu", action="store_true", help="run on CPU even if an accelerator is available")
    evaluate.set_defaults(func=_evaluate)


def add_ba_options(parser: argparse.ArgumentParser) -> None:
    """`--bias-mode`, `--attention-scaling`, ... (defaults: the model's own settings)."""
    from .configuration_basam import BA_CHOICES

    for name, choices in BA_CHOICES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", choices=choices, default=None)
    parser.add_argument("--bias-slope-scale", type=float, default=None)
    parser.add_argument("--learnable-slopes", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--coefficient-init", type=float, default=None)


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    try:
        result = push_to_hub(
            args.folder,
            args.repo_id,
            private=args.private,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
        )
    except (OSError, ValueError) as error:  # folder that would not load for others, offline, Hub errors
        print(f"basam-hf push: error: {error}", file=sys.stderr)
        return 1
    verb = "Would upload" if result.dry_run else "Uploaded"
    print(f"{verb} {len(result.files)} files to {result.repo_id}:")
    for name in result.files:
        note = " (generated model card)" if result.generated_card and name == "README.md" else ""
        print(f"  {name}{note}")
    if result.commit_url:
        print(result.commit_url)
    return 0


def add_push_command(commands) -> None:
    """The `push` subcommand (arguments of `basam_hf.hub.push_to_hub`)."""
    push = commands.add_parser(
        "push",
        help="upload a saved BA-SAM folder to the Hub",
        description="Upload weights, config, processor config, code files and model card. Refuses a folder that "
        "would not load for others (no auto_map in config.json, or missing code files).",
    )
    push.add_argument("folder", help="a saved BA-SAM folder (e.g. a fine-tuning run's best/ or final/)")
    push.add_argument("repo_id", help="Hub model repo, created if missing")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--commit-message", default="Upload BA-SAM model with basam-hf")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    push.set_defaults(func=_push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print the BA-SAM settings of a model's config")
    info.add_argument("model", help="repo id, folder, or `default` (the package defaults)")
    info.set_defaults(func=_info)
    add_evaluate_command(commands)
    add_push_command(commands)
    convert = commands.add_parser("convert-sam", help="turn a SAM checkpoint into BA-SAM (safetensors + code files)")
    convert.add_argument("source", help="SAM repo id (e.g. facebook/sam-vit-base) or folder")
    convert.add_argument("output", help="output folder")
    add_ba_options(convert)
    convert.set_defaults(func=_convert_sam)
    official = commands.add_parser(
        "convert-official",
        help="turn a checkpoint of the official BA-SAM code into a BA-SAM folder",
        description="Convert a checkpoint of the official BA-SAM code (.pth or .safetensors). A .pth is read with "
        "torch.load(weights_only=True) only: basam-hf never unpickles arbitrary code. Dimensions, global layers "
        "and the build size are inferred from the weights; every key must be used.",
    )
    official.add_argument("checkpoint", help="official BA-SAM checkpoint file")
    official.add_argument("output", help="output folder")
    official.add_argument("--image-size", type=int, default=None, help="build input size (default: inferred)")
    official.add_argument("--attention-scaling", choices=("official", "log_length", "none"), default="official")
    official.add_argument("--num-attention-heads", type=int, default=None, help="default: inferred")
    official.add_argument(
        "--drop-rel-pos",
        action="store_true",
        help="drop the rel-pos tables as the official evaluation script does: the rel-pos bias is then zero and the "
        "coefficient has no effect",
    )
    official.set_defaults(func=_convert_official)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
