"""The `basam-hf` command line: a thin shell over the Python API.

Building the parser imports nothing heavy (no torch, transformers, accelerate or gradio), so `basam-hf --help` and
every `basam-hf COMMAND --help` answer at once; each command imports what it needs when it runs. Expected failures
(a missing file or folder, an unreachable Hub, an invalid setting or prompt) end as one line
`basam-hf COMMAND: error: ...` on stderr with exit status 1, in one place ([`main`]); anything else is a bug and
keeps its traceback.
"""

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import sys
from pathlib import Path

from . import __version__
from .constants import (
    AUTOMATIC_PROMPTS_PER_BATCH,
    BA_CHOICES,
    DEMO_MAX_FILE_SIZE,
    DEMO_MAX_PIXELS,
    DTYPE_NAMES,
    MASK_GENERATION_THRESHOLDS,
    POINTS_PER_SIDE,
    SEGMENT_MAX_PIXELS,
)
from .references import choose_model, print_model_note
from .settings import (
    DTYPE_HELP,
    SIZE_ROUNDING,
    DatasetSettings,
    EvaluateSettings,
    FinetuneSettings,
    add_settings_arguments,
    cli_fields,
    coco_files,
    settings_from_args,
)
from .settings import positive_int as _positive_int

# The BA fields that have a command-line option (`--bias-mode`, ...).
BA_OPTION_NAMES = (*BA_CHOICES, "bias_slope_scale", "learnable_slopes", "coefficient_init")

# What each writing command writes at the top of its output folder (glob patterns for `basam_hf.outputs`): a file of
# someone else's with one of these names stops the command, even with --overwrite. Copies of the modules' file names.
SEGMENT_OUTPUTS = ("mask_*.png", "overlay.png", "segment.json")
COMPARE_OUTPUTS = ("runs", "results.json", "results.md", "miou_vs_size.png", "overlay.png")
EVALUATE_OUTPUTS = ("samples.jsonl", "summary.json", "summary.md", "metrics_vs_size.png")
FINETUNE_OUTPUTS = (
    "checkpoints",
    "logs",
    "base",
    "best",
    "final",
    "excluded_train_samples.json",
    ".tmp-*",
    ".trash-*",
)
MODEL_FOLDER_OUTPUTS = ("*",)  # a model folder holds nothing else: it is uploaded whole by `push`

# ---------------------------------------------------------------------------------------------------------------------
# Arguments shared by several commands


def add_ba_options(parser: argparse.ArgumentParser) -> None:
    """`--bias-mode`, `--attention-scaling`, ... (default: the model's own settings)."""
    group = parser.add_argument_group("BA settings (default: the model's own)")
    for name, choices in BA_CHOICES.items():
        group.add_argument(f"--{name.replace('_', '-')}", choices=choices, default=None)
    group.add_argument(
        "--bias-slope-scale", type=float, default=None, help="multiplier of the distance-bias slopes, >= 0"
    )
    group.add_argument("--learnable-slopes", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--coefficient-init", type=float, default=None, help="initial coefficient (coefficient mode)")


# `--model` of `segment` and `demo`: not given, the photo model runs (basam_hf.references.photo_model).
PHOTO_MODEL_HELP = (
    "Hub repo id (OWNER/NAME), folder, or `default` (the embedded model). Default: facebook/sam-vit-base with "
    "attention_scaling=log_length, bias_mode=none (SAM itself at 1024 px) when it is in the Hugging Face cache or the "
    "Hub can be reached (downloaded once, 375 MB), else the embedded model, with a note"
)


def _add_model_arguments(parser: argparse.ArgumentParser, help: str | None = None, photo: bool = False) -> None:
    """`--model` and the BA options, for every command that runs a model; `photo`: without `--model`, the photo
    model (`None` until [`basam_hf.references.choose_model`] chooses)."""
    parser.add_argument(
        "--model",
        default=None if photo else "default",
        help=PHOTO_MODEL_HELP
        if photo
        else help or "Hub repo id (OWNER/NAME), folder, or `default` (the embedded model)",
    )
    add_ba_options(parser)


def ba_settings_from_args(args: argparse.Namespace) -> dict:
    """The BA options given on the command line."""
    return {name: getattr(args, name) for name in BA_OPTION_NAMES if getattr(args, name, None) is not None}


def load_model_from_args(args: argparse.Namespace, choice=None):
    """The model of `--model` (or of `choice`, a [`basam_hf.references.ModelChoice`]) and its processor (a
    [`basam_hf.loading.LoadedModel`]), the BA options applied while loading, over the choice's settings; with BA
    settings the model is still named as given (for the reports)."""
    from .loading import load_model_and_processor

    choice = choice or choose_model(args.model)
    settings = choice.settings(ba_settings_from_args(args))
    return load_model_and_processor(choice.model, ba_settings=settings, dtype=getattr(args, "dtype", None))


def print_model_line(args: argparse.Namespace, sizes=None, scales=None) -> None:
    """[`basam_hf.loading.model_line`] of `--model` with the BA options, from its config (before the command loads
    it), at `sizes`, else `scales` times its own size, else its own size. The main process only."""
    from .loading import model_config, model_line

    if not _is_main_process():
        return
    vision = model_config(args.model, ba_settings_from_args(args)).vision_config
    if sizes is None and scales is not None:
        from .study import scaled_sizes

        sizes = scaled_sizes(vision, scales)
    print(model_line(args.model, vision, sizes), flush=True)


def _model_with_settings(args: argparse.Namespace):
    """For the API functions that take a name or a model: `args.model` itself without BA options (reports name it
    as given), else [`load_model_from_args`]."""
    return load_model_from_args(args).model if ba_settings_from_args(args) else args.model


def _is_main_process() -> bool:
    """Whether this is the first process of a run started by `accelerate launch` / torchrun (or a plain run)."""
    return os.environ.get("RANK", "0") in ("0", "")


def _prepare_output(args: argparse.Namespace, names: tuple[str, ...], inputs=(), resume: bool = False):
    """`args.output` checked for `args.command` ([`basam_hf.outputs.prepare_output`]) before any heavy work."""
    from .outputs import prepare_output

    return prepare_output(
        args.output, args.command, overwrite=args.overwrite, names=names, inputs=inputs, resume=resume
    )


@contextlib.contextmanager
def _writing(folder, clear: bool, cpu: bool = False):
    """Within: the command writes into `folder` (an [`basam_hf.outputs.OutputFolder`]). Before, the earlier run's
    outputs are removed (`clear`) or kept for reuse, and a note says which; after (also after a failure), the
    folder's manifest records what is now the command's own. Only the main process of a multi-process run writes
    these; the others wait for it (`cpu`: the command's --cpu, so the processes are set up as its run will be)."""
    from .outputs import describe_replaced

    main = _is_main_process()
    if main:
        earlier = folder.begin(clear)
        note = describe_replaced(folder, earlier, "removed" if clear else "reusing (and updating)")
        if note:
            print(f"{note}", file=sys.stderr)
    if os.environ.get("WORLD_SIZE", "1") not in ("1", ""):
        from .runtime import process_state

        process_state(cpu).wait_for_everyone()
    try:
        yield
    finally:
        if main and folder.path.is_dir():
            folder.finish()


# ---------------------------------------------------------------------------------------------------------------------
# Paths and errors

# Arguments naming something on disk, checked before a command runs, so that a typo gives one line instead of a
# traceback or a message about Hub repo-id syntax.
LOCAL_PATH_ARGUMENTS = ("image", "checkpoint", "folder", "coco_annotations", "images")  # must exist
MODEL_ARGUMENTS = ("model", "source")  # a folder, `default`, or a Hub model id OWNER/NAME
DATA_ARGUMENTS = ("dataset", "val_dataset")  # a folder, or a Hub dataset id
_HUB_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HUB_DATASET_ID = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


class PathNotFoundError(FileNotFoundError):
    """A command-line path that does not exist (and is not a Hub id either)."""

    def __init__(self, path: str, hint: str = ""):
        super().__init__(f"no such file or folder: {path}{hint}")
        self.path = path


def _is_hub_id(value: str, pattern: re.Pattern) -> bool:
    return bool(pattern.fullmatch(value)) and ".." not in value and "--" not in value and not value.endswith(".")


def check_paths(args: argparse.Namespace) -> list[str]:
    """Raise [`PathNotFoundError`] for a path argument that names nothing; return the arguments that will be looked
    up on the Hub (for the message if it cannot be reached)."""
    hub_ids = []
    for name in LOCAL_PATH_ARGUMENTS + MODEL_ARGUMENTS + DATA_ARGUMENTS:
        value = getattr(args, name, None)
        if value is None or not isinstance(value, (str, os.PathLike)):
            continue
        value = str(value)
        if Path(value).expanduser().exists() or (name in MODEL_ARGUMENTS and value == "default"):
            continue
        if name in MODEL_ARGUMENTS and _is_hub_id(value, _HUB_MODEL_ID):
            hub_ids.append(value)
        elif name in DATA_ARGUMENTS and _is_hub_id(value, _HUB_DATASET_ID):
            hub_ids.append(value)
        elif name in MODEL_ARGUMENTS:
            raise PathNotFoundError(value, " (a Hub model is named OWNER/NAME)")
        else:
            raise PathNotFoundError(value)
    return hub_ids


def describe_error(error: BaseException, hub_ids: list[str] = ()) -> str | None:
    """The one-line message of an expected failure, or `None` for an unexpected one (a bug: keep the traceback)."""
    if isinstance(error, PathNotFoundError):
        return str(error)
    # huggingface_hub's error classes: imported only after a failure, so that --help stays fast.
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    from .hub import connection_failure_reason, error_chain, hub_offline, is_connection_error, one_line

    chain = error_chain(error)
    what = " / ".join(hub_ids)

    def caused_by(*classes: type[BaseException]) -> bool:
        return any(isinstance(item, classes) for item in chain)

    not_cached = caused_by(LocalEntryNotFoundError, OfflineModeIsEnabled)
    if hub_ids and (not_cached or is_connection_error(error)) and hub_offline():
        return (
            f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the Hub was not asked; "
            "unset HF_HUB_OFFLINE (with a network), or give a local folder"
        )
    if hub_ids and is_connection_error(error):
        return (
            f"cannot reach the Hugging Face Hub for {what} ({connection_failure_reason(error)}) and it is not in the "
            "local cache; check the network, or give a local folder"
        )
    if is_connection_error(error) and type(error).__module__ != "builtins":  # builtins: a message of basam_hf's
        return f"cannot reach the Hugging Face Hub ({connection_failure_reason(error)}); check the network"
    if caused_by(RepositoryNotFoundError):  # GatedRepoError included: it derives from RepositoryNotFoundError
        return (
            f"no such file or folder, and no Hub repo {what or 'of that name'} that this account may read "
            "(private or gated repos: log in with `hf auth login`)"
        )
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file or folder: {error.filename}"
    expected = isinstance(error, (OSError, ValueError)) or any(
        type(item).__module__.split(".")[0] in ("httpx", "httpx2", "huggingface_hub", "requests") for item in chain
    )
    if not expected:
        return None
    return one_line(str(error)) or type(error).__name__


def _info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from .configuration_basam import BaSamConfig

    settings = ba_settings_from_args(args)
    if args.model == "default":
        config = BaSamConfig(**settings)  # the package's default BA-SAM settings on SAM ViT-B dimensions
    else:
        config = AutoConfig.from_pretrained(args.model)  # basam (registered by basam_hf) or sam: no remote code
        if settings:  # as BaSamModel.from_pretrained(model, **settings) would run it
            config = BaSamConfig.from_dict({**config.to_dict(), "model_type": BaSamConfig.model_type}, **settings)
    vision = getattr(config, "vision_config", config)
    settings = vision.ba_settings() if hasattr(vision, "ba_settings") else {"bias_mode": "none (plain SAM)"}
    print(json.dumps({"model_type": config.model_type, "image_size": vision.image_size, **settings}, indent=2))
    return 0


def _convert_sam(args: argparse.Namespace) -> int:
    folder = _prepare_output(args, MODEL_FOLDER_OUTPUTS, inputs=[args.source])
    from .conversion import convert_sam_to_basam

    settings = ba_settings_from_args(args)
    with _writing(folder, clear=True):
        model = convert_sam_to_basam(
            args.source, args.output, num_attention_heads=args.num_attention_heads, **settings
        )
    _print_converted(model, args.output)
    return 0


def _convert_official(args: argparse.Namespace) -> int:
    folder = _prepare_output(args, MODEL_FOLDER_OUTPUTS, inputs=[args.checkpoint])
    from .conversion import convert_official_checkpoint

    with _writing(folder, clear=True):
        model = convert_official_checkpoint(
            args.checkpoint,
            args.output,
            image_size=args.image_size,
            num_attention_heads=args.num_attention_heads,
            drop_rel_pos=args.drop_rel_pos,
            attention_scaling=args.attention_scaling,
        )
    _print_converted(model, args.output)
    return 0


def _print_converted(model, output: str) -> None:
    """One line naming what was written: the encoder's dimensions (inferred from the weights) and the BA settings."""
    vision = model.config.vision_config
    print(
        f"Saved BA-SAM to {output}: {vision.image_size} px, {vision.num_hidden_layers} layers, hidden size "
        f"{vision.hidden_size}, {vision.num_attention_heads} heads, global layers {vision.global_attn_indexes}, "
        f"{json.dumps(vision.ba_settings())}"
    )


def add_coco_options(parser: argparse.ArgumentParser) -> None:
    """`--coco-annotations FILE --images DIR`: a COCO instances file and its images folder as the dataset."""
    add_settings_arguments(parser, DatasetSettings, ("coco_annotations", "images"))


def _dataset_argument(args):
    """`--dataset`, or the `SegmentationDataset` of `--coco-annotations FILE --images DIR` (`args`: parsed options
    or settings)."""
    coco = coco_files(args)
    if coco is None:
        return args.dataset
    from .data import load_coco_dataset

    return load_coco_dataset(*coco)


def _check_sizes(model: str, sizes, option: str, prompts: int = 1) -> None:
    """Refuse input sizes whose estimated memory for `model` exceeds this machine's
    ([`basam_hf.limits.check_size`])."""
    from .limits import check_size, read_model_config

    config = read_model_config(model)
    for size in sizes or ():
        check_size(config, size, option, prompts)


def _evaluate(args: argparse.Namespace) -> int:
    settings = settings_from_args(EvaluateSettings, args)
    dataset = _dataset_argument(settings)
    inputs = [settings.dataset, settings.images, settings.coco_annotations]
    # Its records are keyed by settings: with --overwrite, files of its names (from Python, say) are resumed from.
    folder = _prepare_output(args, EVALUATE_OUTPUTS, inputs=inputs, resume=args.overwrite)
    _check_sizes(args.model, settings.sizes, "--sizes", settings.batch_size)
    print_model_line(args, settings.sizes)
    from .evaluation import evaluate, markdown_table
    from .runtime import make_accelerator

    accelerator = make_accelerator(cpu=args.cpu)
    with _writing(folder, clear=False, cpu=args.cpu):
        summary = evaluate(_model_with_settings(args), dataset, settings, accelerator=accelerator)
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
    _add_model_arguments(evaluate)
    add_settings_arguments(evaluate, EvaluateSettings)
    _add_overwrite_option(evaluate, "; its per-sample records are reused where the settings match")
    evaluate.add_argument("--cpu", action="store_true", help="run on CPU even if an accelerator is available")
    evaluate.set_defaults(func=_evaluate)


def _compare(args: argparse.Namespace) -> int:
    from .study import COMPARE_SCALES, OVERLAY_FILE, PLOT_FILE, RESULTS_TABLE, compare

    folder = _prepare_output(args, COMPARE_OUTPUTS, resume=args.overwrite)  # cached results are keyed, as evaluate's
    _check_sizes(args.model, args.sizes, "--sizes")
    print_model_line(args, args.sizes, COMPARE_SCALES)
    seed = {} if args.seed is None else {"seed": args.seed}
    model = _model_with_settings(args)
    with _writing(folder, clear=False):
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
    _add_model_arguments(compare)
    compare.add_argument(
        "--sizes",
        type=_positive_int,
        nargs="+",
        default=None,
        help=f"input sizes (default: 1x, 1.5x, 2x the training size); {SIZE_ROUNDING}",
    )
    compare.add_argument("--samples", type=_positive_int, default=8, help="scenes per size (default: %(default)s)")
    compare.add_argument("--seed", type=int, default=None, help="scene seed (default: the held-out test scenes)")
    compare.add_argument("--output", default="basam-compare", help="output folder (default: %(default)s)")
    _add_overwrite_option(compare, "; its cached results (runs/) are reused where model and settings match")
    compare.set_defaults(func=_compare)


def _finetune(args: argparse.Namespace) -> int:
    settings = settings_from_args(FinetuneSettings, args)
    inputs = [args.model, settings.dataset, settings.val_dataset, settings.images, settings.coco_annotations]
    folder = _prepare_output(args, FINETUNE_OUTPUTS, inputs=inputs, resume=settings.resume is True)
    print_model_line(args, settings.train_sizes)
    from .training import finetune

    try:
        with _writing(folder, clear=settings.resume is False, cpu=settings.cpu):
            result = finetune(args.model, settings=settings, ba_settings=ba_settings_from_args(args))
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
    _add_model_arguments(finetune, help="BA-SAM or SAM Hub repo id (OWNER/NAME) or folder, or `default`")
    lora = FinetuneSettings.lora_names()
    others = [field.name for field in cli_fields(FinetuneSettings) if field.name not in lora]
    add_settings_arguments(finetune, FinetuneSettings, others)
    _add_overwrite_option(finetune, " (a new run: the earlier run's checkpoints go)")
    group = finetune.add_argument_group(
        "LoRA (--train lora)",
        "a peft LoRA adapter on the frozen model, plus the BA parameters (coefficient, learnable slopes); "
        "checkpoints and best/ / final/ hold the adapter only (merge it with `basam-hf merge-lora`)",
    )
    add_settings_arguments(group, FinetuneSettings, lora)
    finetune.set_defaults(func=_finetune)


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    result = push_to_hub(
        args.folder, args.repo_id, private=args.private, commit_message=args.commit_message, dry_run=args.dry_run
    )
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
    push.add_argument(
        "folder", help="a saved BA-SAM folder or LoRA adapter folder (e.g. a fine-tuning run's best/ or final/)"
    )
    push.add_argument("repo_id", help="Hub model repo, created if missing")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--commit-message", default="Upload BA-SAM model with basam-hf")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    push.set_defaults(func=_push)


def _check_segment_arguments(args: argparse.Namespace) -> None:
    """The prompt combinations `segment` accepts: prompts, or --automatic alone."""
    prompts = [name for name in ("box", "point", "negative_point") if getattr(args, name)]
    if not prompts and not args.automatic:
        raise ValueError("give --box, --point or --automatic")
    if prompts and args.automatic:
        given = ", ".join("--" + name.replace("_", "-") for name in prompts)
        raise ValueError(f"--automatic prompts the model with a grid of points: it takes no {given} (drop one)")
    if not args.automatic:
        options = [
            name
            for name in ("points_per_side", "pred_iou_thresh", "stability_score_thresh")
            if getattr(args, name) is not None
        ]
        if options:
            given = ", ".join("--" + name.replace("_", "-") for name in options)
            raise ValueError(f"{given} set(s) --automatic mask generation: add --automatic, or drop it")


def _shown_iou(score: float) -> str:
    """A predicted IoU for the screen: within [0, 1], where an IoU lies (SAM's IoU head is a regression and can
    overshoot, e.g. 1.043); the raw value is kept in segment.json."""
    return f"{min(max(float(score), 0.0), 1.0):.3f}"


def _segment(args: argparse.Namespace) -> int:
    _check_segment_arguments(args)
    folder = _prepare_output(args, SEGMENT_OUTPUTS, inputs=[args.image])
    from .limits import open_image
    from .loading import model_line
    from .segment import check_prompts, generate_masks, mask_generation_kwargs, save_masks, segment_image

    image = open_image(args.image, args.max_pixels, hint="pass --max-pixels")
    boxes = points = labels = None
    if not args.automatic:
        points = list(args.point or []) + list(args.negative_point or [])
        labels = [1] * len(args.point or []) + [0] * len(args.negative_point or [])
        # Before loading the model: a prompt that cannot mean anything fails at once.
        boxes, points, notes = check_prompts(image.width, image.height, boxes=args.box, points=points or None)
        for note in notes:
            print(f"basam-hf segment: note: {note}", file=sys.stderr)
    choice = choose_model(args.model)  # after the input checks: without --model, it may download SAM ViT-B (once)
    if args.size is not None:
        prompts = AUTOMATIC_PROMPTS_PER_BATCH if args.automatic else max(1, len(args.box or []))
        _check_sizes(choice.model, [args.size], "--size", prompts)
    print_model_note(args.command, choice)
    model, processor, _ = load_model_from_args(args, choice)
    line = model_line(choice.name, model.config.vision_config, [args.size] if args.size else None)
    print(line, flush=True)
    record = {"image": str(args.image), "model": line.removeprefix("Model: "), "size": args.size}
    if args.automatic:
        points_per_side = args.points_per_side or POINTS_PER_SIDE
        thresholds = mask_generation_kwargs(
            model, pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh
        )
        masks, scores = generate_masks(
            model, processor, image, size=args.size, points_per_side=points_per_side, **thresholds
        )
        record["automatic"] = {"points_per_side": points_per_side, **thresholds}
    else:
        masks, scores = segment_image(
            model, processor, image, boxes=boxes, points=points, labels=labels or None, size=args.size
        )
        record["prompts"] = {"boxes": boxes, "points": points, "labels": labels or None}
    with _writing(folder, clear=True):
        paths = save_masks(masks, image, args.output, boxes=boxes, points=points, labels=labels)
        record["masks"] = [{"file": path.name, "predicted_iou": float(score)} for path, score in zip(paths, scores)]
        _write_json(Path(args.output) / "segment.json", record)
    for path, score in zip(paths, scores):
        print(f"{path}  (predicted IoU {_shown_iou(score)})")
    if args.automatic:
        settings = record["automatic"]
        print(
            f"{len(masks)} mask(s) from a {points_per_side}x{points_per_side} grid of point prompts, kept at "
            f"pred_iou_thresh {settings['pred_iou_thresh']:g} and stability_score_thresh "
            f"{settings['stability_score_thresh']:g} (--points-per-side, --pred-iou-thresh, --stability-score-thresh)"
        )
    print(f"{paths[-1]}  ({len(masks)} mask(s) overlaid, prompts drawn); raw scores in segment.json")
    return 0


def _write_json(path: Path, value) -> None:
    """`value` as JSON at `path`, written to a temporary name and renamed: complete or absent."""
    partial = path.with_name(f".tmp-{path.name}")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def add_segment_command(commands) -> None:
    """The `segment` subcommand (`basam_hf.segment`)."""
    segment = commands.add_parser(
        "segment",
        help="segment an image from box / point prompts or automatically; writes mask PNGs and an overlay",
        description="Prompts are in pixels of the original image. A box or point entirely outside the image, or a "
        "box with X2 <= X1 or Y2 <= Y1, is refused; a box reaching outside the image is clipped to it (with a note). "
        "Writes OUTPUT/mask_000.png, mask_001.png, ... (0/255), OUTPUT/overlay.png (masks and prompts) and "
        "OUTPUT/segment.json (prompts, settings, each mask's raw predicted IoU) into a new or empty folder; with "
        "--overwrite, an earlier segment run's files there are replaced and nothing else is touched.",
    )
    segment.add_argument("image", help="image file")
    _add_model_arguments(segment, photo=True)
    segment.add_argument("--box", nargs=4, type=float, action="append", metavar=("X1", "Y1", "X2", "Y2"))
    segment.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="object point")
    segment.add_argument("--negative-point", nargs=2, type=float, action="append", metavar=("X", "Y"))
    segment.add_argument(
        "--automatic", action="store_true", help="automatic mask generation (a grid of points; takes no prompts)"
    )
    segment.add_argument(
        "--points-per-side",
        type=_positive_int,
        default=None,
        help=f"grid of --automatic: N x N point prompts (default: {POINTS_PER_SIDE})",
    )
    thresholds = "default: the model's recommended one (config `mask_generation`), else the pipeline's %s"
    segment.add_argument(
        "--pred-iou-thresh", type=float, help=thresholds % MASK_GENERATION_THRESHOLDS["pred_iou_thresh"]
    )
    segment.add_argument(
        "--stability-score-thresh",
        type=float,
        help=thresholds % MASK_GENERATION_THRESHOLDS["stability_score_thresh"],
    )
    segment.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help=f"model input size (default: the model's); {SIZE_ROUNDING}. A size whose estimated memory exceeds "
        "this machine's is refused",
    )
    segment.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=SEGMENT_MAX_PIXELS,
        help="largest image read, in pixels (default: %(default)s; checked from the file header)",
    )
    segment.add_argument("--output", default="segment-output", help="output folder (default: %(default)s)")
    _add_overwrite_option(segment)
    segment.set_defaults(func=_segment)


def _demo(args: argparse.Namespace) -> int:
    from .app import run_demo_command  # numpy, PIL and gradio: only when the demo runs

    return run_demo_command(args, ba_settings=ba_settings_from_args(args))


def add_demo_command(commands) -> None:
    """The `demo` subcommand ([`basam_hf.app`], imported only when it runs: it needs numpy, PIL, gradio)."""
    demo = commands.add_parser(
        "demo",
        help="interactive demo in the browser (Gradio): click prompts, compare BA-SAM with BA off at any size",
        description="Start the demo page: upload an image or pick a sample, click points or draw a box, choose the "
        "input size and BA settings; shows BA-SAM's mask next to the BA-off mask with their scores and times, and "
        'offers the masks as PNG. Needs Gradio (pip install "basam-hf[demo]"); runs offline. The BA options set the '
        "model's own settings, which the page starts from.",
    )
    _add_model_arguments(demo, photo=True)
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the whole network)")
    demo.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    sizes = "multiples of the patch size (16 for SAM); others are refused"
    demo.add_argument("--size", type=int, default=None, help=f"initial input size (default: the model's); {sizes}")
    demo.add_argument("--min-size", type=int, default=None, help="smallest input size (default: half the model's)")
    demo.add_argument("--max-size", type=int, default=None, help="largest input size (default: twice the model's)")
    demo.add_argument("--max-pixels", type=int, default=DEMO_MAX_PIXELS, help="largest image accepted (pixels)")
    demo.add_argument("--max-file-size", default=DEMO_MAX_FILE_SIZE, help="largest upload (default: %(default)s)")
    demo.set_defaults(func=_demo)


def add_convert_commands(commands) -> None:
    """`convert-sam` and `convert-official`."""
    convert = commands.add_parser(
        "convert-sam",
        help="turn a SAM checkpoint into BA-SAM (safetensors + code files)",
        description="Load a SAM checkpoint into BaSamModel with the BA settings given (the package defaults "
        "otherwise; --bias-mode none --attention-scaling none is plain SAM) and save it with its processor and code "
        "files. The source is a transformers SAM checkpoint (Hub repo id or folder) or one of Meta's segment-anything "
        "files (sam_vit_b_01ec64.pth, ...), read with torch.load(weights_only=True) only, its dimensions, heads and "
        "global layers inferred from the weights.",
    )
    convert.add_argument(
        "source",
        help="SAM Hub repo id (e.g. facebook/sam-vit-base), folder, or segment-anything .pth / .safetensors file",
    )
    convert.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    _add_overwrite_option(convert)
    convert.add_argument(
        "--num-attention-heads",
        type=int,
        default=None,
        help="segment-anything files without rel-pos tables only (default: inferred from the weights)",
    )
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
    official.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    _add_overwrite_option(official)
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


# ---------------------------------------------------------------------------------------------------------------------
# LoRA adapters (`merge-lora`; see basam_hf.lora)


def _merge_lora(args: argparse.Namespace) -> int:
    folder = _prepare_output(args, MODEL_FOLDER_OUTPUTS, inputs=[args.source])
    from .lora import merge_adapter

    with _writing(folder, clear=True):
        merge_adapter(args.source, args.output, base=args.base)
    print(f"Merged {args.source} into its base; saved a BA-SAM model to {args.output}")
    return 0


def add_merge_lora_command(commands) -> None:
    """The `merge-lora` subcommand ([`basam_hf.lora.merge_adapter`])."""
    merge = commands.add_parser(
        "merge-lora",
        help="merge a LoRA adapter (finetune --train lora) into its base: a plain BA-SAM folder",
        description="Load the adapter's base model (base_model_name_or_path of adapter_config.json, or --base), "
        "apply the adapter and merge it (peft's merge_and_unload), and save the result with the base's processor, "
        "code files and a model card: a BA-SAM folder that loads without peft.",
    )
    merge.add_argument("source", metavar="ADAPTER", help="adapter folder (e.g. a run's final/) or Hub repo id")
    merge.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    merge.add_argument("--base", default=None, help="base model (default: the one the adapter names)")
    _add_overwrite_option(merge)
    merge.set_defaults(func=_merge_lora)


def _add_overwrite_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder, replacing only what an earlier run of this command wrote there "
        f"(its manifest, .basam-hf-outputs.json){more}; other files stay. Without it, a non-empty folder is refused",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Log lines that every run would show about something expected here: dropped (or shortened) while a command runs.


class _LogFilter(logging.Filter):
    """Drops the records whose message contains `drop`; shortens the first record containing `once` to
    `once_note` and drops its repetitions."""

    def __init__(self, drop: tuple[str, ...] = (), once: str | None = None, once_note: str = ""):
        super().__init__()
        self.drop, self.once, self.once_note, self.seen = drop, once, once_note, False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(fragment in message for fragment in self.drop):
            return False
        if self.once is not None and self.once in message:
            if self.seen:
                return False
            self.seen = True
            record.msg, record.args = f"basam-hf: {message}{self.once_note}", ()
        return True


def _known_log_filters() -> dict[str, _LogFilter]:
    return {
        # Loading a SAM checkpoint into BaSamModel (convert-sam, finetune or evaluate of a SAM model) is the point
        # of those commands; every SAM weight is checked to be loaded (convert-sam) or loaded strictly.
        "transformers.configuration_utils": _LogFilter(
            drop=("You are using a model of type `sam` to instantiate a model of type `basam`",)
        ),
        # SAM ties its prompt encoder's positional embedding to the model's shared one: accelerate saves the tensor
        # once in each checkpoint, and loading ties it again (resuming is tested to equal an uninterrupted run).
        "accelerate.utils.other": _LogFilter(drop=("Removed shared tensor",)),
        # No network: huggingface_hub retries 5 times (about 25 s) with two lines per try; say it once.
        "huggingface_hub.utils._http": _LogFilter(
            drop=("Retrying in",),
            once="thrown while requesting",
            once_note=" (retrying for about 25 s; HF_HUB_OFFLINE=1 uses the local cache only)",
        ),
    }


@contextlib.contextmanager
def quiet_known_warnings():
    """Within: the log lines of [`_known_log_filters`] are dropped or shortened; every other line is untouched."""
    filters = _known_log_filters()
    for name, log_filter in filters.items():
        logging.getLogger(name).addFilter(log_filter)
    try:
        yield
    finally:
        for name, log_filter in filters.items():
            logging.getLogger(name).removeFilter(log_filter)


# Commands that run a model for inference, and so take --dtype (evaluate's is one of its settings).
DTYPE_COMMANDS = ("compare", "segment", "demo")


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """`--dtype {float32,bfloat16,float16}`: the floating-point type of the weights and of the computation."""
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help=DTYPE_HELP)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its errors on one line, `basam-hf COMMAND: error: ...` (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _left_over_message(parser: argparse.ArgumentParser, command: str | None, argv: list[str], extra: list[str]) -> str:
    """argparse's `unrecognized arguments` for values after an option that takes a fixed number of them
    (`--point 1 2 3`), said of that option."""
    subparser = parser._subparsers._group_actions[0].choices.get(command) if command else None
    actions = subparser._option_string_actions if subparser is not None else {}

    def is_option(token: str) -> bool:
        return token.startswith("-") and not _is_number(token)

    for index, token in enumerate(argv):
        if not is_option(token) or token not in actions or not isinstance(actions[token].nargs, int):
            continue
        values = list(itertools.takewhile(lambda item: not is_option(item), argv[index + 1 :]))
        nargs = actions[token].nargs
        if len(values) > nargs and values[nargs] == extra[0]:
            metavar = actions[token].metavar
            names = f" ({' '.join(metavar)})" if isinstance(metavar, tuple) else ""
            return f"argument {token}: takes {nargs} values{names}, got {len(values)}: {' '.join(values)}"
    return f"unrecognized arguments: {' '.join(extra)}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; building it imports nothing heavy."""
    parser = OneLineErrorParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="print the BA-SAM settings of a model's config",
        description="Print the model type, input size and BA settings of a config; with BA options, the settings "
        "the model would run with under them.",
    )
    info.add_argument(
        "model", help="Hub repo id (OWNER/NAME), folder, or `default` (the package defaults, SAM ViT-B dimensions)"
    )
    add_ba_options(info)
    info.set_defaults(func=_info)
    add_evaluate_command(commands)
    add_compare_command(commands)
    add_finetune_command(commands)
    add_push_command(commands)
    add_segment_command(commands)
    add_demo_command(commands)
    add_convert_commands(commands)
    add_merge_lora_command(commands)
    for name in DTYPE_COMMANDS:
        _add_dtype_argument(commands.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an expected failure prints `basam-hf COMMAND: error: MESSAGE` (one line) and returns 1."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(args, "command", None)
        prog = f"basam-hf {command}" if command else "basam-hf"
        parser.exit(2, f"{prog}: error: {_left_over_message(parser, command, argv, extra)} (see {prog} --help)\n")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    hub_ids: list[str] = []
    try:
        hub_ids = check_paths(args)
        with quiet_known_warnings():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"basam-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = describe_error(error, hub_ids)
        if message is None:
            raise
        print(f"basam-hf {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
