"""Settings declared once: a command's settings are a dataclass whose fields carry their help, choices and option
name in the field metadata ([`setting`]); the command line builds its options from the fields
([`add_settings_arguments`]) and turns the parsed options back into the dataclass ([`settings_from_args`]); the
Python API takes the dataclass or keyword arguments ([`resolve_settings`]); the run record is the dataclass,
serialised ([`settings_record`]). As transformers' `HfArgumentParser` does, without importing transformers (nor
torch): this module imports only the standard library and [`basam_hf.constants`], so `basam-hf --help` answers at
once.

The option of a field is inferred from its annotation, and the metadata overrides any part of it:
- `X | None` is an option of type `X` (default `None`);
- `bool`: `--flag` (`store_true`) when the default is `False`, else `--flag / --no-flag` (`BooleanOptionalAction`);
- `list[X]` / `tuple[X, ...]`: `nargs="+"` of type `X`;
- `Literal["a", "b"]`: `choices=("a", "b")`;
- `int`, `float`: that type; `str` and unions of several types: strings.
"""

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from .constants import DTYPE_NAMES, LORA_DEFAULTS, LORA_MODE, LOSSES, MIXED_PRECISION, TRAIN_MODES

Settings = TypeVar("Settings")
_MISSING: Any = dataclasses.MISSING
# Field-metadata keys of this module; every other key of a setting's metadata is an `add_argument` keyword.
_OWN_KEYS = ("flag", "cli", "cli_default", "record")


def setting(
    default: Any = _MISSING,
    *,
    help: str | None = None,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    nargs: int | str | None = None,
    type: typing.Callable[[str], Any] | None = None,
    metavar: str | tuple[str, ...] | None = None,
    action: str | type[argparse.Action] | None = None,
    const: Any = _MISSING,
    required: bool = False,
    cli: bool = True,
    cli_default: Any = _MISSING,
    record: bool = True,
    default_factory: typing.Callable[[], Any] = _MISSING,
) -> Any:
    """A dataclass field that is a setting: `default` (or `default_factory`) for the Python API; `help`, `choices`,
    `nargs`, `type` (the string parser), `metavar`, `action`, `const` and `required` as in `add_argument` (inferred
    from the annotation where not given); `flag` the option's name when it is not `--field-name`; `cli=False` for a
    setting of the Python API only; `cli_default` the option's default when it differs from the API's (e.g. an
    output folder); `record=False` to leave it out of the run record (e.g. the folder the record is written to)."""
    given = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices is not None else None,
        "nargs": nargs,
        "type": type,
        "metavar": metavar,
        "action": action,
    }
    metadata = {key: value for key, value in given.items() if value is not None}
    metadata.update(cli=cli, record=record)
    if required:
        metadata["required"] = True
    if const is not _MISSING:
        metadata["const"] = const
    if cli_default is not _MISSING:
        metadata["cli_default"] = cli_default
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0 (sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {value}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Dataclass fields <-> argparse options


def option_flag(field: dataclasses.Field) -> str:
    """The option of a field: its `flag` metadata, else `--field-name`."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def option_dest(field: dataclasses.Field) -> str:
    """The attribute argparse stores the field's option in (derived from the flag, as argparse does: `--lr` ->
    `lr`), so commands read their options by flag as before."""
    return option_flag(field).lstrip("-").replace("-", "_")


def cli_fields(settings_class: type, names: Sequence[str] | None = None) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are command-line options (all, or those in `names`), in order."""
    fields = [field for field in dataclasses.fields(settings_class) if field.metadata.get("cli", True)]
    return fields if names is None else [field for field in fields if field.name in names]


def _without_none(hint: Any) -> Any:
    """The annotation without its `None` member; `None` for a union of several types (an option of strings)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        return members[0] if len(members) == 1 else None
    return hint


def _field_default(field: dataclasses.Field) -> Any:
    if "cli_default" in field.metadata:
        return field.metadata["cli_default"]
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return None


def argument_options(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """The `add_argument` keywords of a field with annotation `hint` (see the module docstring)."""
    options = {key: value for key, value in field.metadata.items() if key not in _OWN_KEYS}
    options.setdefault("default", _field_default(field))
    kind = _without_none(hint)
    origin = typing.get_origin(kind)
    if origin is Literal:
        options.setdefault("choices", typing.get_args(kind))
        kind = type(typing.get_args(kind)[0])
    if kind is bool and "action" not in options and "nargs" not in options:
        options["action"] = "store_true" if options["default"] is False else argparse.BooleanOptionalAction
    elif origin in (list, tuple, Sequence, typing.Sequence) and "action" not in options:
        options.setdefault("nargs", "+")
        item = typing.get_args(kind)[0] if typing.get_args(kind) else str
        if item in (int, float):
            options.setdefault("type", item)
    elif kind in (int, float) and "action" not in options:
        options.setdefault("type", kind)
    if options.get("required"):
        del options["default"]
    return options


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    settings_class: type,
    names: Sequence[str] | None = None,
) -> None:
    """One option per command-line field of `settings_class` (or of those in `names`), in field order."""
    hints = typing.get_type_hints(settings_class)
    for field in cli_fields(settings_class, names):
        parser.add_argument(option_flag(field), **argument_options(field, hints[field.name]))


def settings_from_args(settings_class: type[Settings], args: argparse.Namespace) -> Settings:
    """The settings of parsed options (fields that are no option keep their default)."""
    values = {field.name: getattr(args, option_dest(field)) for field in cli_fields(settings_class)}
    return settings_class(**values)


# ---------------------------------------------------------------------------------------------------------------------
# The Python API and the run record


def resolve_settings(
    settings_class: type[Settings], settings: Settings | Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """`settings` (a `settings_class`, a mapping of its fields, or `None` for the defaults) with `overrides` (keyword
    arguments of the Python API) applied. Raises `TypeError` naming unknown settings and the known ones."""
    names = [field.name for field in dataclasses.fields(settings_class)]
    given = dict(settings) if isinstance(settings, Mapping) else {}
    unknown = sorted(set(given) - set(names)) + sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(
            f"Unknown setting(s) {', '.join(map(repr, unknown))} of {settings_class.__name__}; the settings are: "
            f"{', '.join(names)}."
        )
    if settings is None or isinstance(settings, Mapping):
        return settings_class(**{**given, **overrides})
    if not isinstance(settings, settings_class):
        raise TypeError(f"settings must be a {settings_class.__name__} (or a dict of its fields), got {settings!r}.")
    return dataclasses.replace(settings, **overrides)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (os.PathLike, Path)):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value)  # e.g. a torch.dtype given through the Python API


def settings_record(settings: Any) -> dict[str, Any]:
    """The run record: `dataclasses.asdict(settings)` in JSON types, without the fields marked `record=False`."""
    values = dataclasses.asdict(settings)
    kept = [field.name for field in dataclasses.fields(settings) if field.metadata.get("record", True)]
    return {name: _jsonable(values[name]) for name in kept}


# ---------------------------------------------------------------------------------------------------------------------
# The settings of the commands

# What --size means for the commands that take one (the processor pads its input up to whole patches).
SIZE_ROUNDING = (
    "the image's longest edge is resized to SIZE and padded to a square whose side is SIZE rounded up to a multiple "
    "of the patch size (16 for SAM): 1000 runs the model at 1008"
)
DTYPE_HELP = (
    "floating-point type of the weights and the computation (default: the model's own, float32 for the embedded "
    "model). On a CPU, bfloat16 / float16 can be faster only with native support (AVX-512 BF16 / FP16, AMX); without "
    "it they are several times slower (see the README). Masks are upsampled and scored in float32"
)
PROTOCOLS = ("standard", "official")


@dataclasses.dataclass
class DatasetSettings:
    """Where the samples come from: a dataset source, or a COCO instances file with its images folder."""

    dataset: str | None = setting(None, help="Hub id, save_to_disk folder, or images/ + masks/ folder")
    coco_annotations: str | None = setting(
        None,
        metavar="FILE",
        help="COCO instances JSON (official layout; CVAT, Label Studio, Roboflow exports): one sample per non-crowd "
        "object, instead of --dataset",
    )
    images: str | None = setting(None, metavar="DIR", help="the images folder of --coco-annotations")
    split: str | None = setting(None, help="dataset split (default: the preset's, or the only one)")
    preset: str | None = setting(None, help="paper dataset: duts cod10k dis5k(-train) isic2016 isic2018")
    image_column: str | None = setting(None, help="image column (default: the preset's, else `image`)")
    mask_column: str | None = setting(
        None, help="mask column (default: the preset's, else the first image column named mask, label, gt, ...)"
    )
    annotations_column: str | None = setting(None, help="COCO-style objects column")


# The dataset settings that --coco-annotations replaces.
_SOURCE_OPTIONS = ("dataset", "preset", "image_column", "mask_column", "annotations_column")


def coco_files(options: Any) -> tuple[str, str] | None:
    """`(annotations file, images folder)` when `options` (settings or parsed options) take the dataset from a COCO
    instances file, else `None`; a `ValueError` when the COCO options are incomplete or combined with another
    source."""
    annotations, images = getattr(options, "coco_annotations", None), getattr(options, "images", None)
    if annotations is None and images is None:
        return None
    if annotations is None or images is None:
        raise ValueError("--coco-annotations FILE and --images DIR go together (a COCO instances file, its images).")
    given = ["--" + name.replace("_", "-") for name in _SOURCE_OPTIONS if getattr(options, name, None) is not None]
    if given:
        raise ValueError(f"--coco-annotations gives the dataset: {', '.join(given)} do not apply.")
    return str(annotations), str(images)


@dataclasses.dataclass
class EvaluateSettings(DatasetSettings):
    """The settings of [`basam_hf.evaluation.evaluate`] and `basam-hf evaluate`."""

    prompt: str | None = setting(None, help="box (default) | point | points:k")
    sizes: list[int] | None = setting(
        None,
        type=positive_int,
        help=f"input sizes (default: the model's). standard protocol: {SIZE_ROUNDING}; official: the image is "
        "squashed to SIZE x SIZE, which must be a multiple of the patch size",
    )
    protocol: str = setting(
        "standard",
        choices=PROTOCOLS,
        help="standard: the processor's resize and pad, prompts from the ground truth; official: the official "
        "BA-SAM evaluation (squashed image, one random click, thresholded logits)",
    )
    compare_sam: bool = setting(False, help="also evaluate the same weights with BA off")
    max_samples: int | None = setting(None, help="evaluate only the first MAX_SAMPLES samples (default: all)")
    batch_size: int = setting(1, help="images per forward pass and process")
    output_dir: str | os.PathLike | None = setting(
        None,
        flag="--output",
        cli_default="basam-hf-evaluation",
        record=False,
        help="output folder (default: %(default)s)",
    )
    seed: int = setting(0, help="seed of the prompts (per sample, process-independent)")
    jitter: float = setting(0.0, help="box jitter, a fraction of the box side")
    negatives: int = setting(0, help="random negative points added to point prompts")
    normalize_maps: bool = setting(
        False,
        help="min-max rescale each probability map before the standard metrics, as the SOD toolkits read saved maps",
    )
    dtype: str | None = setting(None, choices=DTYPE_NAMES, help=DTYPE_HELP)


# The settings of `finetune --train lora` are named `lora_` + a field of `basam_hf.lora.LoraOptions`.
LORA_PREFIX = "lora_"


@dataclasses.dataclass
class FinetuneSettings(DatasetSettings):
    """The settings of [`basam_hf.training.finetune`] and `basam-hf finetune`: the data, validation, what is trained,
    the prompts, the loss, the optimizer and its schedule, the run's length, checkpoints and exports. The `lora_*`
    settings are the fields of [`basam_hf.lora.LoraOptions`] and apply with `train="lora"` only. The run record
    (`trainer_state.json` of each checkpoint, `logs/run_config.json`) is these settings, with what the run derived from
    them (sizes, steps, samples, the model's BA settings)."""

    split: str | None = setting("train", help="training split (default: %(default)s)")
    max_train_samples: int | None = setting(None, help="train on the first MAX_TRAIN_SAMPLES samples (default: all)")
    # A `SegmentationDataset` too, in the Python API.
    val_dataset: Any = setting(None, help="validation data (default: --dataset with --val-split)")
    val_split: str | None = setting(None, help="validation split; without it and --val-dataset: none")
    val_max_samples: int | None = setting(None, help="validate on the first VAL_MAX_SAMPLES samples (default: all)")
    val_sizes: list[int] | None = setting(None, type=positive_int, help="default: the train sizes")
    val_prompt: str | None = setting(None, help="validation prompt (default: --prompt; box with --prompt mixed)")
    val_metric: str = setting("iou", help="metric choosing best/ (default: %(default)s)")
    eval_steps: int | None = setting(None, help="validate every N steps (default: save steps)")
    eval_batch_size: int = setting(1, help="validation images per forward pass")
    train_sizes: list[int] | None = setting(
        None,
        type=positive_int,
        help=f"input sizes, one drawn per batch (default: the model's); {SIZE_ROUNDING}",
    )
    prompt: str = setting(
        "points:1",
        help="box | point | points:k (k positive clicks, redrawn every epoch) | mixed (a kind per batch) "
        "(default: %(default)s)",
    )
    jitter: float = setting(0.0, help="box jitter, a fraction of the box side")
    negatives: int = setting(0, help="random negative points added to point prompts")
    train: str = setting("all", choices=TRAIN_MODES, help="what is trained (default: %(default)s)")
    loss: str = setting("bce-dice", choices=tuple(LOSSES), help="training loss (default: %(default)s)")
    learning_rate: float = setting(1e-4, flag="--lr", help="Adam learning rate (default: %(default)s)")
    weight_decay: float = setting(0.0, help="Adam weight decay (default: %(default)s)")
    lr_step_epochs: int = setting(10, help="StepLR period in epochs (default: %(default)s)")
    lr_gamma: float = setting(0.5, help="StepLR factor (default: %(default)s)")
    max_grad_norm: float | None = setting(None, help="gradient clipping (default: off)")
    batch_size: int = setting(2, help="images per process and micro-batch")
    gradient_accumulation_steps: int = setting(1, help="micro-batches per optimizer step (default: %(default)s)")
    gradient_checkpointing: bool = setting(
        False,
        help="keep one image-encoder layer's activations instead of all (each layer is recomputed in the backward: "
        "one more encoder forward per step); pays off at 1536 px and above",
    )
    mixed_precision: str = setting("no", choices=MIXED_PRECISION, help="accelerate's mixed precision")
    epochs: int = setting(50, help="length of the run in epochs (default: %(default)s)")
    max_steps: int | None = setting(None, help="optimizer steps (overrides --epochs)")
    seed: int = setting(0, help="seed of the data order, the prompts and the input sizes (default: %(default)s)")
    save_steps: int = setting(500, help="checkpoint every N optimizer steps")
    keep_last: int | None = setting(3, help="checkpoints kept (default: %(default)s)")
    resume: bool | str | os.PathLike = setting(
        False,
        nargs="?",
        const=True,
        record=False,
        help="continue from the latest checkpoint in --output (or from the given checkpoint / run folder); "
        "continuing in --output needs no --overwrite",
    )
    num_workers: int = setting(0, help="data loader workers")
    log_with: list[str] | None = setting(
        None,
        nargs="*",
        help="accelerate trackers besides logs/metrics.jsonl (default: tensorboard if installed; none if given "
        "without names)",
    )
    license: str = setting("apache-2.0", help="license in the model card")
    merge: bool = setting(
        False,
        help="with --train lora: also write merged/, final/'s adapter merged into its base (a plain BA-SAM folder "
        "that loads without peft; `basam-hf merge-lora` does the same for any adapter later)",
    )
    push_to_hub: str | None = setting(None, metavar="REPO_ID", help="push best/ (else final/) at the end")
    private: bool = setting(False, help="create the Hub repo as private")
    cpu: bool = setting(False, help="train on CPU even if an accelerator is available")
    output_dir: str | os.PathLike | None = setting(
        None,
        flag="--output",
        required=True,
        record=False,
        help="output folder (new or empty, unless --overwrite / --resume)",
    )
    lora_rank: int = setting(LORA_DEFAULTS["rank"], help="rank r (default: %(default)s)")
    lora_alpha: float = setting(
        LORA_DEFAULTS["alpha"], help="the update is scaled by alpha / rank (default: %(default)s)"
    )
    lora_dropout: float = setting(LORA_DEFAULTS["dropout"], help="default: %(default)s")
    lora_target_modules: list[str] = setting(
        default_factory=lambda: list(LORA_DEFAULTS["target_modules"]),
        metavar="NAME",
        help="module names or name suffixes that get an adapter, as peft matches them (default: qkv proj, the "
        "vision encoder's attention projections)",
    )
    lora_train_mask_decoder: bool = setting(
        LORA_DEFAULTS["train_mask_decoder"],
        help="also train the whole mask decoder (saved in the adapter, about 4 M parameters for SAM)",
    )

    def lora_options(self) -> dict[str, Any] | None:
        """The `lora_*` settings as [`basam_hf.lora.LoraOptions`]' fields (`{"rank": 8, ...}`); `None` unless
        `train="lora"`."""
        if self.train != LORA_MODE:
            return None
        return {name[len(LORA_PREFIX) :]: value for name, value in vars(self).items() if name.startswith(LORA_PREFIX)}

    @classmethod
    def lora_names(cls) -> list[str]:
        """The names of the `lora_*` settings."""
        return [field.name for field in dataclasses.fields(cls) if field.name.startswith(LORA_PREFIX)]


__all__ = [
    "DTYPE_HELP",
    "PROTOCOLS",
    "SIZE_ROUNDING",
    "DatasetSettings",
    "EvaluateSettings",
    "FinetuneSettings",
    "LORA_PREFIX",
    "add_settings_arguments",
    "argument_options",
    "cli_fields",
    "coco_files",
    "option_dest",
    "option_flag",
    "positive_int",
    "resolve_settings",
    "setting",
    "settings_from_args",
    "settings_record",
]
