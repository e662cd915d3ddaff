"""The `basam-hf` command line: a thin shell over the Python API."""

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .app import add_demo_command
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
            dtype=args.dtype,
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


def _compare(args: argparse.Namespace) -> int:
    from .study import OVERLAY_FILE, PLOT_FILE, RESULTS_TABLE, compare

    try:
        seed = {} if args.seed is None else {"seed": args.seed}
        summary = compare(
            args.model, args.sizes, num_samples=args.samples, output_dir=args.output, dtype=args.dtype, **seed
        )
    except (OSError, ValueError) as error:  # missing model, bad size: the message says which
        print(f"basam-hf compare: error: {error}", file=sys.stderr)
        return 1
    print((Path(args.output) / RESULTS_TABLE).read_text(encoding="utf-8"), end="")
    seconds = sum(result["seconds"] for result in summary["results"])
    print(
        f"\nEvaluated in {seconds:.0f} s. Table: {RESULTS_TABLE}, plot: {PLOT_FILE}, masks: {OVERLAY_FILE} in {args.output}"
    )
    return 0


def add_compare_command(commands) -> None:
    """The `compare` subcommand ([`basam_hf.study.compare`])."""
    compare = commands.add_parser(
        "compare",
        help="BA-SAM vs the same weights with BA off, on generated scenes at several input sizes (offline)",
        description="Render held-out synthetic scenes at each size, segment them from their boxes with the model "
        "(BA-SAM) and with the same weights as plain SAM (BA off), print the mean IoU per size and write the table, "
        "a plot and a picture of the predicted masks. Needs no download with the embedded default model.",
    )
    compare.add_argument("--model", default="default", help="repo id, folder, or `default` (the embedded model)")
    compare.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="input sizes (default: 1x, 1.5x, 2x the training size)"
    )
    compare.add_argument("--samples", type=int, default=8, help="scenes per size (default: %(default)s)")
    compare.add_argument("--seed", type=int, default=None, help="scene seed (default: the held-out test scenes)")
    compare.add_argument("--output", default="basam-compare", help="output folder (default: %(default)s)")
    compare.set_defaults(func=_compare)


def add_ba_options(parser: argparse.ArgumentParser) -> None:
    """`--bias-mode`, `--attention-scaling`, ... (defaults: the model's own settings)."""
    from .configuration_basam import BA_CHOICES

    for name, choices in BA_CHOICES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", choices=choices, default=None)
    parser.add_argument("--bias-slope-scale", type=float, default=None)
    parser.add_argument("--learnable-slopes", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--coefficient-init", type=float, default=None)


def _finetune(args: argparse.Namespace) -> int:
    from .training import finetune

    ba_settings = {name: value for name, value in vars(args).items() if name in BA_OPTION_NAMES and value is not None}
    try:
        result = finetune(
            args.model,
            args.dataset,
            output_dir=args.output,
            split=args.split,
            preset=args.preset,
            image_column=args.image_column,
            mask_column=args.mask_column,
            annotations_column=args.annotations_column,
            max_train_samples=args.max_train_samples,
            val_dataset=args.val_dataset,
            val_split=args.val_split,
            val_max_samples=args.val_max_samples,
            val_sizes=args.val_sizes,
            val_prompt=args.val_prompt,
            val_metric=args.val_metric,
            eval_steps=args.eval_steps,
            eval_batch_size=args.eval_batch_size,
            train_sizes=args.train_sizes,
            prompt=args.prompt,
            jitter=args.jitter,
            negatives=args.negatives,
            train=args.train,
            loss=args.loss,
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            lr_step_epochs=args.lr_step_epochs,
            lr_gamma=args.lr_gamma,
            max_grad_norm=args.max_grad_norm,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            epochs=args.epochs,
            max_steps=args.max_steps,
            seed=args.seed,
            save_steps=args.save_steps,
            keep_last=args.keep_last,
            resume=args.resume,
            ba_settings=ba_settings,
            num_workers=args.num_workers,
            log_with=args.log_with,
            license=args.license,
            push_to_hub=args.push_to_hub,
            private=args.private,
            cpu=args.cpu,
        )
    except (OSError, ValueError) as error:  # bad model / dataset / setting / checkpoint: the message says which
        print(f"basam-hf finetune: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("basam-hf finetune: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        return 130
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"Trained {result.global_step} steps; last checkpoint {result.last_checkpoint}.")
        if result.best:
            best = result.best
            print(f"Best {best['metric']} {best['value']:.4f} at step {best['step']}: {result.best_dir}")
        print(f"Final model: {result.final_dir}")
        if result.pushed_to:
            print(f"Pushed to https://huggingface.co/{result.pushed_to}")
    return 0


def add_finetune_command(commands) -> None:
    """The `finetune` subcommand (arguments of `basam_hf.training.finetune`)."""
    from .losses import LOSSES
    from .training import TRAIN_MODES

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune BA-SAM (or a SAM checkpoint converted to BA-SAM) with accelerate",
        description="Fine-tune with the official BA-SAM recipe by default (all parameters, Adam lr 1e-4, StepLR every "
        "10 epochs gamma 0.5, BCE + Dice, one random positive click, 50 epochs). Runs plainly or under `accelerate "
        "launch` / torchrun. Checkpoints go to OUTPUT/checkpoints (atomic, --resume continues exactly); the best "
        "model by validation metric to OUTPUT/best and the last one to OUTPUT/final (save_pretrained folders with a "
        "model card).",
    )
    finetune.add_argument("--model", default="default", help="BA-SAM or SAM repo id / folder, or `default`")
    finetune.add_argument("--dataset", default=None, help="Hub id, save_to_disk folder, or images/ + masks/ folder")
    finetune.add_argument("--split", default="train", help="training split (default: %(default)s)")
    finetune.add_argument("--preset", default=None, help="paper dataset: duts cod10k dis5k isic2016 isic2018 coco2017")
    finetune.add_argument("--image-column", default=None)
    finetune.add_argument("--mask-column", default=None)
    finetune.add_argument("--annotations-column", default=None, help="COCO-style objects column")
    finetune.add_argument("--max-train-samples", type=int, default=None)
    finetune.add_argument("--val-dataset", default=None, help="validation data (default: --dataset with --val-split)")
    finetune.add_argument("--val-split", default=None, help="validation split; without it and --val-dataset: none")
    finetune.add_argument("--val-max-samples", type=int, default=None)
    finetune.add_argument("--val-sizes", type=int, nargs="+", default=None, help="default: the train sizes")
    finetune.add_argument("--val-prompt", default=None, help="validation prompt (default: --prompt)")
    finetune.add_argument("--val-metric", default="iou", help="metric choosing best/ (default: %(default)s)")
    finetune.add_argument("--eval-steps", type=int, default=None, help="validate every N steps (default: save steps)")
    finetune.add_argument("--eval-batch-size", type=int, default=1, help="validation images per forward pass")
    finetune.add_argument("--train-sizes", type=int, nargs="+", default=None, help="input sizes, one drawn per batch")
    finetune.add_argument("--prompt", default="points:1", help="box | point | points:k (default: %(default)s)")
    finetune.add_argument("--jitter", type=float, default=0.0, help="box jitter, a fraction of the box side")
    finetune.add_argument("--negatives", type=int, default=0, help="random negative points added to point prompts")
    finetune.add_argument("--train", choices=TRAIN_MODES, default="all", help="what is trained (default: %(default)s)")
    finetune.add_argument("--loss", choices=tuple(LOSSES), default="bce-dice")
    finetune.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    finetune.add_argument("--weight-decay", type=float, default=0.0)
    finetune.add_argument("--lr-step-epochs", type=int, default=10, help="StepLR period in epochs (default: 10)")
    finetune.add_argument("--lr-gamma", type=float, default=0.5, help="StepLR factor (default: %(default)s)")
    finetune.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping (default: off)")
    finetune.add_argument("--batch-size", type=int, default=2, help="images per process and micro-batch")
    finetune.add_argument("--gradient-accumulation-steps", type=int, default=1)
    finetune.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    finetune.add_argument("--epochs", type=int, default=50)
    finetune.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--save-steps", type=int, default=500, help="checkpoint every N optimizer steps")
    finetune.add_argument("--keep-last", type=int, default=3, help="checkpoints kept (default: %(default)s)")
    finetune.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from the latest checkpoint in --output (or from the given checkpoint / run folder)",
    )
    finetune.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    finetune.add_argument(
        "--log-with",
        nargs="*",
        default=None,
        help="accelerate trackers besides logs/metrics.jsonl (default: tensorboard if installed; none if given "
        "without names)",
    )
    finetune.add_argument("--license", default="apache-2.0", help="license in the model card")
    finetune.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="push best/ (else final/) at the end")
    finetune.add_argument("--private", action="store_true", help="create the Hub repo as private")
    finetune.add_argument("--cpu", action="store_true", help="train on CPU even if an accelerator is available")
    finetune.add_argument("--output", required=True, help="output folder")
    add_ba_options(finetune)
    finetune.set_defaults(func=_finetune)


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
    card_note = " (generated model card)" if result.generated_card else ""
    card_note = f" (model card pointed at {result.repo_id})" if result.retargeted_card else card_note
    for name in result.files:
        print(f"  {name}{card_note if name == 'README.md' else ''}")
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


def _segment(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from .evaluation import load_model, load_processor
    from .segment import generate_masks, save_masks, segment_image

    if not (args.box or args.point or args.negative_point or args.automatic):
        print("basam-hf segment: error: give --box, --point or --automatic", file=sys.stderr)
        return 1
    try:
        image = Image.open(args.image)
        image.load()
        model = load_model(args.model, dtype=args.dtype)
        processor = load_processor(args.model, model)
        if args.automatic:
            masks, scores = generate_masks(
                model,
                processor,
                image,
                size=args.size,
                points_per_side=args.points_per_side,
                pred_iou_thresh=args.pred_iou_thresh,
                stability_score_thresh=args.stability_score_thresh,
            )
        else:
            points = list(args.point or []) + list(args.negative_point or [])
            labels = [1] * len(args.point or []) + [0] * len(args.negative_point or [])
            masks, scores = segment_image(
                model, processor, image, boxes=args.box, points=points or None, labels=labels or None, size=args.size
            )
    except (OSError, UnidentifiedImageError, ValueError) as error:
        print(f"basam-hf segment: error: {error}", file=sys.stderr)
        return 1
    paths = save_masks(masks, image, args.output)
    for path, score in zip(paths, scores):
        print(f"{path}  (predicted IoU {score:.3f})")
    print(f"{paths[-1]}  ({len(masks)} mask(s) overlaid)")
    return 0


def add_segment_command(commands) -> None:
    """The `segment` subcommand (`basam_hf.segment`)."""
    segment = commands.add_parser(
        "segment",
        help="segment an image from box / point prompts or automatically; writes mask PNGs and an overlay",
        description="Prompts are in pixels of the original image. Writes OUTPUT/mask_NN.png (0/255) and "
        "OUTPUT/overlay.png.",
    )
    segment.add_argument("image", help="image file")
    segment.add_argument("--model", default="default", help="repo id, folder, or `default` (the embedded model)")
    segment.add_argument("--box", nargs=4, type=float, action="append", metavar=("X1", "Y1", "X2", "Y2"))
    segment.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="object point")
    segment.add_argument("--negative-point", nargs=2, type=float, action="append", metavar=("X", "Y"))
    segment.add_argument("--automatic", action="store_true", help="automatic mask generation (a grid of points)")
    segment.add_argument("--points-per-side", type=int, default=16)
    segment.add_argument("--pred-iou-thresh", type=float, default=0.88)
    segment.add_argument("--stability-score-thresh", type=float, default=0.95)
    segment.add_argument(
        "--size", type=int, default=None, help="model input size (longest edge), any multiple of the patch size"
    )
    segment.add_argument("--output", default="segment-output", help="output folder")
    segment.set_defaults(func=_segment)


# Commands that run a model for inference, and so take --dtype.
DTYPE_COMMANDS = ("evaluate", "compare", "segment", "demo")


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """`--dtype {float32,bfloat16,float16}`: the floating-point type of the weights and of the computation."""
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="floating-point type of the weights and the computation (default: the model's own, float32 for the "
        "embedded model). On a CPU, bfloat16 / float16 can be faster only with native support (AVX-512 BF16 / FP16, "
        "AMX); without it they are several times slower (see the README). Masks are upsampled and scored in float32",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print the BA-SAM settings of a model's config")
    info.add_argument("model", help="repo id, folder, or `default` (the package defaults)")
    info.set_defaults(func=_info)
    add_evaluate_command(commands)
    add_compare_command(commands)
    add_finetune_command(commands)
    add_push_command(commands)
    add_segment_command(commands)
    add_demo_command(commands)
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
    for name in DTYPE_COMMANDS:
        _add_dtype_argument(commands.choices[name])
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
