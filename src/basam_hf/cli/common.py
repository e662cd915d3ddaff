"""What several `basam-hf` commands share: the model options (`--model` and the BA options), the output folder
(checked before any heavy work, its manifest kept while the command writes), the size check and `--overwrite`."""

import argparse
import contextlib
import os
import sys

from ..constants import BA_CHOICES
from ..limits import check_size, read_model_config
from ..outputs import describe_replaced, prepare_output
from ..references import choose_model

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
    "merged",
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


def add_model_arguments(parser: argparse.ArgumentParser, help: str | None = None, photo: bool = False) -> None:
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
    from ..loading import load_model_and_processor  # --help stays fast: no torch at parse time

    choice = choice or choose_model(args.model)
    settings = choice.settings(ba_settings_from_args(args))
    return load_model_and_processor(choice.model, ba_settings=settings, dtype=getattr(args, "dtype", None))


def print_model_line(args: argparse.Namespace, sizes=None, scales=None) -> None:
    """[`basam_hf.loading.model_line`] of `--model` with the BA options, from its config (before the command loads
    it), at `sizes`, else `scales` times its own size, else its own size. The main process only."""
    from ..loading import model_config, model_line  # --help stays fast: no torch at parse time

    if not is_main_process():
        return
    vision = model_config(args.model, ba_settings_from_args(args)).vision_config
    if sizes is None and scales is not None:
        from ..study import scaled_sizes  # torch

        sizes = scaled_sizes(vision, scales)
    print(model_line(args.model, vision, sizes), flush=True)


def model_with_settings(args: argparse.Namespace):
    """For the API functions that take a name or a model: `args.model` itself without BA options (reports name it
    as given), else [`load_model_from_args`]."""
    return load_model_from_args(args).model if ba_settings_from_args(args) else args.model


def is_main_process() -> bool:
    """Whether this is the first process of a run started by `accelerate launch` / torchrun (or a plain run)."""
    return os.environ.get("RANK", "0") in ("0", "")


def prepare_output_folder(args: argparse.Namespace, names: tuple[str, ...], inputs=(), resume: bool = False):
    """`args.output` checked for `args.command` ([`basam_hf.outputs.prepare_output`]) before any heavy work."""
    return prepare_output(
        args.output, args.command, overwrite=args.overwrite, names=names, inputs=inputs, resume=resume
    )


@contextlib.contextmanager
def writing_into(folder, clear: bool, cpu: bool = False):
    """Within: the command writes into `folder` (an [`basam_hf.outputs.OutputFolder`]). Before, the earlier run's
    outputs are removed (`clear`) or kept for reuse, and a note says which; after (also after a failure), the
    folder's manifest records what is now the command's own. Only the main process of a multi-process run writes
    these; the others wait for it (`cpu`: the command's --cpu, so the processes are set up as its run will be)."""
    main = is_main_process()
    if main:
        earlier = folder.begin(clear)
        note = describe_replaced(folder, earlier, "removed" if clear else "reusing (and updating)")
        if note:
            print(note, file=sys.stderr)
    if os.environ.get("WORLD_SIZE", "1") not in ("1", ""):
        from ..runtime import process_state  # torch, accelerate

        process_state(cpu).wait_for_everyone()
    try:
        yield
    finally:
        if main and folder.path.is_dir():
            folder.finish()


def check_sizes(model: str, sizes, option: str, prompts: int = 1) -> None:
    """Refuse input sizes whose estimated memory for `model` exceeds this machine's
    ([`basam_hf.limits.check_size`])."""
    config = read_model_config(model)
    for size in sizes or ():
        check_size(config, size, option, prompts)


def add_overwrite_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder, replacing only what an earlier run of this command wrote there "
        f"(its manifest, .basam-hf-outputs.json){more}; other files stay. Without it, a non-empty folder is refused",
    )
