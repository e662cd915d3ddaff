"""LoRA fine-tuning with `peft`: `finetune(train="lora")` trains low-rank adapters on the frozen model.

- **What is trained**: a `peft` `LoraConfig` on the vision encoder's attention projections by default (`qkv` and
  `proj`, which only the encoder's attention layers have), plus the parameters BA-SAM adds to SAM (`coefficient`,
  learnable `slopes`: a few numbers, so always) and, with `train_mask_decoder`, the whole mask decoder (peft's
  `modules_to_save`). Every other weight stays bit-identical.
- **The base model** the adapter needs (`base_model_name_or_path` of `adapter_config.json`): the source checkpoint
  when it loads as the trained model (a BA-SAM checkpoint with the same config), else the model as built for training
  (a SAM checkpoint converted, or other BA settings) saved before training to `OUTPUT/base`. A local base is a path:
  pushing such an adapter needs the base on the Hub too (see [`check_adapter_pushable`]).
- **Checkpoints** hold the trainable tensors only (accelerate's `model.safetensors`, through save / load hooks), with
  the optimizer, scheduler and RNG states: resuming loads the base afresh and restores them exactly.
- **Exports** (`best/`, `final/`) are peft adapter folders (`adapter_config.json`, `adapter_model.safetensors`, model
  card). The BA parameters are stored in the adapter file under their peft names: `PeftModel.from_pretrained` loads
  them as it loads saved biases. [`merge_adapter`] writes a plain BA-SAM folder (`merge_and_unload`).

Nothing heavy is imported with this module (the command line builds its options from it): torch and peft are
imported by the functions that use them.
"""

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .constants import TRAIN_MODES

LORA_MODE = TRAIN_MODES[-1]  # "lora"
DEFAULT_TARGET_MODULES = ("qkv", "proj")
MASK_DECODER = "mask_decoder"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
BASE_DIR = "base"
ADAPTER_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "basam_adapter_card.md"
ADAPTER_TAGS = ("ba-sam", "sam", "mask-generation", "peft", "lora")


@dataclass(frozen=True)
class LoraOptions:
    """The adapter of `finetune(train="lora")`. `rank`, `alpha`, `dropout`: peft's `r`, `lora_alpha`, `lora_dropout`
    (its defaults); `target_modules`: module names or name suffixes as peft matches them; `train_mask_decoder`: train
    the mask decoder alongside (saved whole in the adapter)."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    train_mask_decoder: bool = False

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}.")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ValueError(f"LoRA target modules must be a non-empty list of names, got {self.target_modules!r}.")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def lora_options(train: str, lora: LoraOptions | Mapping[str, Any] | None) -> LoraOptions | None:
    """The [`LoraOptions`] of a run (`None` unless `train="lora"`).

    Raises:
        ValueError: for LoRA options with another train mode, unknown option names or invalid values.
    """
    if train != LORA_MODE:
        if lora:
            raise ValueError(f"LoRA options apply to train='lora' only, not train={train!r}.")
        return None
    if isinstance(lora, LoraOptions):
        return lora
    unknown = sorted(set(lora or {}) - set(LoraOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(f"Unknown LoRA options {unknown}; use {', '.join(LoraOptions.__dataclass_fields__)}.")
    return LoraOptions(**(lora or {}))


def is_lora_model(model: Any) -> bool:
    """Whether `model` is a `peft.PeftModel` (without importing peft for other models)."""
    return any(cls.__name__ == "PeftModel" and cls.__module__.startswith("peft") for cls in type(model).__mro__)


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a saved peft adapter (it has an `adapter_config.json`)."""
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file()


# ---------------------------------------------------------------------------------------------------------------------
# The base model


def _source_is_base(model, source: str | os.PathLike | None) -> bool:
    """Whether `source` loads as `model` before training: a BA-SAM checkpoint (not SAM, which the Auto classes would
    load without BA) whose config equals the model's."""
    from transformers import PretrainedConfig

    from .checkpoints import comparable_config
    from .configuration_basam import BaSamConfig

    if source is None:
        return False
    try:
        saved, _ = PretrainedConfig.get_config_dict(str(source))
    except OSError:
        return False
    if saved.get("model_type") != BaSamConfig.model_type:
        return False
    return comparable_config(BaSamConfig.from_dict(saved)) == comparable_config(model.config)


def prepare_base(model, processor, source: str | os.PathLike | None, output_dir: Path, accelerator) -> str:
    """The reference of the adapter's base model: `source` (a Hub id, or a folder as an absolute path) when it loads
    as `model`, else `output_dir/base`, where the main process saves `model` with `processor` now (before training
    changes its BA parameters in place)."""
    from .checkpoints import replace_directory
    from .hub import is_local_path, resolve_model
    from .processing_basam import save_pretrained_with_processor

    resolved = resolve_model(source) if source is not None else None
    if _source_is_base(model, resolved):
        return str(Path(resolved).resolve()) if is_local_path(resolved) else resolved
    base = (output_dir / BASE_DIR).resolve()
    if accelerator.is_main_process:
        temporary = base.with_name(f".tmp-{base.name}")
        save_pretrained_with_processor(model, str(temporary), processor=processor)
        replace_directory(temporary, base)
    accelerator.wait_for_everyone()
    return str(base)


# ---------------------------------------------------------------------------------------------------------------------
# The adapter


def add_lora(model, options: LoraOptions, base: str | None = None):
    """`model` wrapped in a `peft.PeftModel` with the adapter of `options`; trainable: the adapter, the BA parameters
    and (with `train_mask_decoder`) the mask decoder. `base` is the adapter's `base_model_name_or_path` (default:
    the model's `name_or_path`)."""
    from peft import LoraConfig, get_peft_model

    from .conversion import is_ba_parameter

    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        modules_to_save=[MASK_DECODER] if options.train_mask_decoder else None,
    )
    peft_model = get_peft_model(model, config)
    if base is not None:
        peft_model.peft_config["default"].base_model_name_or_path = base
    for name, parameter in peft_model.named_parameters():
        if is_ba_parameter(name):
            parameter.requires_grad_(True)
    return peft_model


def prepare_lora_training(model, processor, source, options: LoraOptions, output_dir: Path, accelerator):
    """[`finetune`]'s LoRA setup: the base reference ([`prepare_base`]), the adapter ([`add_lora`]) and adapter-only
    checkpoints ([`register_adapter_checkpointing`]). Returns the `PeftModel` and its trainable parameter names."""
    base = prepare_base(model, processor, source, output_dir, accelerator)
    peft_model = add_lora(model, options, base)
    register_adapter_checkpointing(accelerator)
    return peft_model, sorted(trainable_state_dict(peft_model))


def trainable_state_dict(model) -> dict:
    """The tensors training changes (adapter, BA parameters, trained modules), under the model's own names."""
    return {name: parameter.detach() for name, parameter in model.named_parameters() if parameter.requires_grad}


def _ba_state_dict(model) -> dict:
    """The BA parameters of a `PeftModel` under their peft names (`base_model.model.vision_encoder...`)."""
    from .conversion import is_ba_parameter

    return {name: parameter.detach() for name, parameter in model.named_parameters() if is_ba_parameter(name)}


def save_adapter(model, folder: str | os.PathLike) -> None:
    """Save a `PeftModel`'s adapter (`save_pretrained`) and add its BA parameters to the adapter weights: peft saves
    only its own modules, and loads the other entries of the file as they are named."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(str(folder))
    extras = _ba_state_dict(model)
    if extras:
        path = Path(folder) / ADAPTER_WEIGHTS_FILE
        weights = load_file(str(path))
        weights.update({name: tensor.contiguous().cpu() for name, tensor in extras.items()})
        save_file(weights, str(path), metadata={"format": "pt"})


def register_adapter_checkpointing(accelerator) -> None:
    """Make `accelerator.save_state` save a `PeftModel` as its trainable tensors only, and `load_state` restore them
    onto the model (built from the base, as at the start of the run)."""
    from safetensors.torch import load_file

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for index, model in enumerate(models):
            unwrapped = accelerator.unwrap_model(model)
            if is_lora_model(unwrapped):
                weights[index] = trainable_state_dict(unwrapped)

    def load_hook(models: list, input_dir: str) -> None:
        for index in reversed(range(len(models))):
            unwrapped = accelerator.unwrap_model(models[index])
            if not is_lora_model(unwrapped):
                continue
            path = Path(input_dir) / f"model{'' if index == 0 else f'_{index}'}.safetensors"
            state = load_file(str(path))  # load_state_dict copies onto the parameters' device
            expected = set(trainable_state_dict(unwrapped))
            if set(state) != expected:
                raise ValueError(
                    f"{path} does not hold this run's adapter (missing {sorted(expected - set(state))[:5]}, "
                    f"unexpected {sorted(set(state) - expected)[:5]}): resume with the same LoRA options."
                )
            unwrapped.load_state_dict(state, strict=False)
            del models[index]  # loaded here: accelerate would expect a full state dict

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def adapter_base(adapter: str | os.PathLike) -> str | None:
    """The `base_model_name_or_path` of an adapter (folder or Hub id)."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path


def load_adapter_model(adapter: str | os.PathLike, base: str | os.PathLike | None = None, **kwargs):
    """A `PeftModel`: the BA-SAM base (default: the adapter's `base_model_name_or_path`) with the adapter loaded.
    `kwargs` go to `BaSamModel.from_pretrained`.

    Raises:
        ValueError: for an adapter that names no base model, when `base` is not given.
    """
    from peft import PeftModel

    from .hub import resolve_model
    from .modeling_basam import BaSamModel

    base = base or adapter_base(adapter)
    if not base:
        raise ValueError(f"The adapter {adapter} names no base model: pass the base (--base) explicitly.")
    model = BaSamModel.from_pretrained(resolve_model(base), **kwargs)
    return PeftModel.from_pretrained(model, str(adapter)).eval()


def merge_adapter(adapter: str | os.PathLike, output_dir: str | os.PathLike, base: str | os.PathLike | None = None):
    """Merge an adapter into its base (`merge_and_unload`) and save the plain BA-SAM model with the base's processor
    and a model card to `output_dir`. Returns the merged `BaSamModel`."""
    from .hub import hub_id_or_none, write_model_card
    from .loading import load_processor
    from .processing_basam import save_pretrained_with_processor

    base = str(base or adapter_base(adapter))
    merged = load_adapter_model(adapter, base).merge_and_unload()
    save_pretrained_with_processor(merged, str(output_dir), processor=load_processor(base, merged))
    training = {"method": "LoRA adapter merged into its base (basam-hf merge-lora)", "adapter": str(adapter)}
    if is_adapter_folder(adapter):
        training.update(_adapter_settings(json.loads((Path(adapter) / ADAPTER_CONFIG_FILE).read_text("utf-8"))))
    write_model_card(output_dir, base_model=hub_id_or_none(base), training=training)
    return merged


# ---------------------------------------------------------------------------------------------------------------------
# Pushing and the adapter's model card


def check_adapter_pushable(folder: str | os.PathLike) -> list[str]:
    """Check that an adapter folder names its base and has weights; return the files to upload. Warns when the base
    is a local folder: Hub users need it on the Hub too.

    Raises:
        ValueError: for an adapter without weights or without a base model reference.
    """
    from .hub import files_to_upload, is_local_path

    folder = Path(folder)
    if not (folder / ADAPTER_WEIGHTS_FILE).is_file():
        raise ValueError(f"{folder} has an {ADAPTER_CONFIG_FILE} but no {ADAPTER_WEIGHTS_FILE}.")
    base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{folder / ADAPTER_CONFIG_FILE} names no base model: set base_model_name_or_path to the base's Hub id."
        )
    if is_local_path(base) or Path(base).is_absolute():
        warnings.warn(
            f"The adapter's base model is the local folder {base}: Hub users cannot load it. Push the base too "
            f"(basam-hf push {base} OWNER/NAME) and set base_model_name_or_path in {ADAPTER_CONFIG_FILE} to OWNER/NAME.",
            UserWarning,
            stacklevel=3,
        )
    return files_to_upload(folder)


def _adapter_settings(adapter_config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's adapter table from an `adapter_config.json`."""
    return {
        "rank": adapter_config.get("r"),
        "alpha": adapter_config.get("lora_alpha"),
        "dropout": adapter_config.get("lora_dropout"),
        "target modules": sorted(adapter_config.get("target_modules") or []),
        "trained whole": adapter_config.get("modules_to_save") or [],
    }


def write_adapter_card(
    folder: str | os.PathLike,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    datasets: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    evaluation_dataset_id: str | None = None,
    license: str | None = None,
    license_text: str | None = None,
    **ignored: Any,
) -> Path:
    """Render the adapter card of `folder` (its base model, how to load it with peft, the adapter's settings, the
    training run and evaluation) and save it as `folder/README.md`. Takes the arguments of
    [`basam_hf.hub.write_model_card`]; the base model is the adapter's own reference."""
    from huggingface_hub import ModelCard, ModelCardData
    from safetensors import safe_open

    from .conversion import is_ba_parameter
    from .hub import (
        DEFAULT_LICENSE,
        MODEL_CARD_FILE,
        _evaluation_table,
        default_license_text,
        evaluation_results,
        hub_id_or_none,
        is_local_path,
    )

    folder = Path(folder)
    adapter_config = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    base = adapter_config.get("base_model_name_or_path")
    with safe_open(str(folder / ADAPTER_WEIGHTS_FILE), framework="pt") as weights:
        names = list(weights.keys())
        count = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    model_name = model_name or folder.resolve().name
    license = license or DEFAULT_LICENSE
    card_data = ModelCardData(
        library_name="peft",
        pipeline_tag="mask-generation",
        base_model=hub_id_or_none(base),
        datasets=list(datasets) or None,
        tags=list(ADAPTER_TAGS),
        license=license,
        model_name=model_name,
        eval_results=evaluation_results(evaluation, evaluation_dataset_id) if evaluation else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(ADAPTER_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base=base,
        base_is_local=is_local_path(base) or bool(base and Path(base).is_absolute()),
        adapter=_adapter_settings(adapter_config),
        ba_parameters=sorted({name.split(".")[-1] for name in names if is_ba_parameter(name)}),
        parameters=f"{count:,}",
        megabytes=f"{(folder / ADAPTER_WEIGHTS_FILE).stat().st_size / 1e6:.1f}",
        training=dict(training) if training else None,
        evaluation=_evaluation_table(evaluation) if evaluation else None,
        license_text=license_text or default_license_text(license),
    )
    path = folder / MODEL_CARD_FILE
    card.save(str(path))
    return path


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LORA_MODE",
    "LoraOptions",
    "add_lora",
    "check_adapter_pushable",
    "is_adapter_folder",
    "is_lora_model",
    "load_adapter_model",
    "merge_adapter",
    "save_adapter",
    "write_adapter_card",
]
