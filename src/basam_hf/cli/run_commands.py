"""The commands that run over a dataset or a set of sizes: `evaluate`, `compare` and `finetune` (each also runs under
`accelerate launch`)."""

import argparse
import sys
from pathlib import Path

from ..settings import (
    SIZE_ROUNDING,
    EvaluateSettings,
    FinetuneSettings,
    add_settings_arguments,
    cli_fields,
    coco_files,
    positive_int,
    settings_from_args,
)
from .common import (
    COMPARE_OUTPUTS,
    EVALUATE_OUTPUTS,
    FINETUNE_OUTPUTS,
    add_model_arguments,
    add_overwrite_option,
    ba_settings_from_args,
    check_sizes,
    is_main_process,
    model_with_settings,
    prepare_output_folder,
    print_model_line,
    writing_into,
)


def _dataset_argument(args):
    """`--dataset`, or the `SegmentationDataset` of `--coco-annotations FILE --images DIR` (`args`: parsed options
    or settings)."""
    coco = coco_files(args)
    if coco is None:
        return args.dataset
    from ..data import load_coco_dataset  # --help stays fast: numpy, PIL

    return load_coco_dataset(*coco)


def _evaluate(args: argparse.Namespace) -> int:
    settings = settings_from_args(EvaluateSettings, args)
    dataset = _dataset_argument(settings)
    inputs = [settings.dataset, settings.images, settings.coco_annotations]
    # Its records are keyed by settings: with --overwrite, files of its names (from Python, say) are resumed from.
    folder = prepare_output_folder(args, EVALUATE_OUTPUTS, inputs=inputs, resume=args.overwrite)
    check_sizes(args.model, settings.sizes, "--sizes", settings.batch_size)
    print_model_line(args, settings.sizes)
    from ..evaluation import evaluate, markdown_table  # torch, and accelerate imports slowly
    from ..runtime import make_accelerator

    accelerator = make_accelerator(cpu=args.cpu)
    with writing_into(folder, clear=False, cpu=args.cpu):
        summary = evaluate(model_with_settings(args), dataset, settings, accelerator=accelerator)
    if accelerator.is_main_process:
        print(markdown_table(summary), end="")
        print(f"Evaluated with {accelerator.num_processes} process(es) on {accelerator.device}.")
        print(f"Per-sample records, summary.json, summary.md and metrics_vs_size.png are in {args.output}")
    return 0


def add_evaluate_command(commands) -> None:
    """The `evaluate` subcommand: `--model`, the BA options, the fields of [`basam_hf.settings.EvaluateSettings`]
    (the settings of `basam_hf.evaluation.evaluate`), `--overwrite` and `--cpu`."""
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a model on a segmentation dataset at several input sizes (runs under accelerate launch)",
        description="Zero-shot evaluation with prompts from the ground truth. Runs plainly or with several processes "
        "(`accelerate launch --multi_gpu --num_processes N -m basam_hf.cli evaluate ...`, also on CPU-only machines, "
        "or torchrun): samples are sharded and each counted once. A rerun with the same --output and --overwrite "
        "resumes from its samples.jsonl.",
    )
    add_model_arguments(evaluate)
    add_settings_arguments(evaluate, EvaluateSettings)
    add_overwrite_option(evaluate, "; its per-sample records are reused where the settings match")
    evaluate.add_argument("--cpu", action="store_true", help="run on CPU even if an accelerator is available")
    evaluate.set_defaults(func=_evaluate)


def _compare(args: argparse.Namespace) -> int:
    from ..study import COMPARE_SCALES, OVERLAY_FILE, PLOT_FILE, RESULTS_TABLE, compare  # torch

    # Its cached results are keyed by model and settings, as evaluate's: with --overwrite they are reused.
    folder = prepare_output_folder(args, COMPARE_OUTPUTS, resume=args.overwrite)
    check_sizes(args.model, args.sizes, "--sizes")
    print_model_line(args, args.sizes, COMPARE_SCALES)
    seed = {} if args.seed is None else {"seed": args.seed}
    model = model_with_settings(args)
    with writing_into(folder, clear=False):
        summary = compare(
            model, args.sizes, num_samples=args.samples, output_dir=args.output, dtype=args.dtype, **seed
        )
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
        help="BA-SAM vs the same weights with BA off (a test-time switch), on generated scenes at several sizes (offline)",
        description="Render held-out synthetic scenes at each size, segment them from their boxes with the model "
        "(BA-SAM) and with the same weights as plain SAM (BA off), print the mean IoU per size and write the table, "
        "a plot and a picture of the predicted masks. Needs no download with the embedded default model.",
    )
    add_model_arguments(compare)
    compare.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=None,
        help=f"input sizes (default: 1x, 1.5x, 2x the training size); {SIZE_ROUNDING}",
    )
    compare.add_argument("--samples", type=positive_int, default=8, help="scenes per size (default: %(default)s)")
    compare.add_argument("--seed", type=int, default=None, help="scene seed (default: the held-out test scenes)")
    compare.add_argument("--output", default="basam-compare", help="output folder (default: %(default)s)")
    add_overwrite_option(compare, "; its cached results (runs/) are reused where model and settings match")
    compare.set_defaults(func=_compare)


def _finetune(args: argparse.Namespace) -> int:
    settings = settings_from_args(FinetuneSettings, args)
    inputs = [args.model, settings.dataset, settings.val_dataset, settings.images, settings.coco_annotations]
    folder = prepare_output_folder(args, FINETUNE_OUTPUTS, inputs=inputs, resume=settings.resume is True)
    print_model_line(args, settings.train_sizes)
    from ..training import finetune  # torch, accelerate

    try:
        with writing_into(folder, clear=settings.resume is False, cpu=settings.cpu):
            result = finetune(args.model, settings=settings, ba_settings=ba_settings_from_args(args))
    except KeyboardInterrupt:
        print("basam-hf finetune: interrupted; the last checkpoint is intact, continue with --resume", file=sys.stderr)
        return 130
    if is_main_process():
        print(f"Trained {result.global_step} steps; last checkpoint {result.last_checkpoint}.")
        if result.best:
            best = result.best
            print(f"Best {best['metric']} {best['value']:.4f} at step {best['step']}: {result.best_dir}")
        print(f"Final model: {result.final_dir}")
        if result.pushed_to:
            print(f"Pushed to https://huggingface.co/{result.pushed_to}")
    return 0


def add_finetune_command(commands) -> None:
    """The `finetune` subcommand: `--model`, the BA options, the fields of [`basam_hf.settings.FinetuneSettings`]
    (the settings of `basam_hf.training.finetune`; the `lora_*` ones in a group of their own) and `--overwrite`."""
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune BA-SAM (or a SAM checkpoint converted to BA-SAM) with accelerate",
        description="Fine-tune with the official BA-SAM recipe by default (all parameters, Adam lr 1e-4, StepLR every "
        "10 epochs gamma 0.5, BCE + Dice, one random positive click, 50 epochs). Runs plainly or under `accelerate "
        "launch` / torchrun. Checkpoints go to OUTPUT/checkpoints (atomic, --resume continues exactly); the best "
        "model by validation metric to OUTPUT/best and the last one to OUTPUT/final (save_pretrained folders with a "
        "model card).",
    )
    add_model_arguments(finetune, help="BA-SAM or SAM Hub repo id (OWNER/NAME) or folder, or `default`")
    lora = FinetuneSettings.lora_names()
    others = [field.name for field in cli_fields(FinetuneSettings) if field.name not in lora]
    add_settings_arguments(finetune, FinetuneSettings, others)
    add_overwrite_option(finetune, " (a new run: the earlier run's checkpoints go)")
    group = finetune.add_argument_group(
        "LoRA (--train lora)",
        "a peft LoRA adapter on the frozen model, plus the BA parameters (coefficient, learnable slopes); "
        "checkpoints and best/ / final/ hold the adapter only (merge it with `basam-hf merge-lora`)",
    )
    add_settings_arguments(group, FinetuneSettings, lora)
    finetune.set_defaults(func=_finetune)
