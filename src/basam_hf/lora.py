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

The command line's LoRA options and their defaults live in `basam_hf.constants` (`LORA_DEFAULTS`), so that
`--help` imports none of this.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import PretrainedConfig

from .checkpoints import comparable_config, directory_replaced
from .configuration_basam import BaSamConfig
from .constants import LORA_DEFAULTS, LORA_MODE, is_ba_parameter
from .loading import load_processor
from .model_card import adapter_settings, write_model_card
from .modeling_basam import BaSamModel
from .processing_basam import save_pretrained_with_processor
from .references import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    hub_id_or_none,
    is_adapter_folder,
    is_local_path,
    resolve_model,
)

DEFAULT_TARGET_MODULES = LORA_DEFAULTS["target_modules"]
MASK_DECODER = "mask_decoder"
BASE_DIR = "base"


@dataclass(frozen=True)
class LoraOptions:
    """The adapter of `finetune(train="lora")`. `rank`, `alpha`, `dropout`: peft's `r`, `lora_alpha`, `lora_dropout`
    (its defaults); `target_modules`: module names or name suffixes as peft matches them; `train_mask_decoder`: train
    the mask decoder alongside (saved whole in the adapter)."""

    rank: int = LORA_DEFAULTS["rank"]
    alpha: float = LORA_DEFAULTS["alpha"]
    dropout: float = LORA_DEFAULTS["dropout"]
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    train_mask_decoder: bool = LORA_DEFAULTS["train_mask_decoder"]

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
    """Whether `model` is a `peft.PeftModel`."""
    return isinstance(model, PeftModel)


# ---------------------------------------------------------------------------------------------------------------------
# The base model


def _source_is_base(model, source: str | os.PathLike | None) -> bool:
    """Whether `source` loads as `model` before training: a BA-SAM checkpoint (not SAM, which the Auto classes would
    load without BA) whose config equals the model's."""

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
    resolved = resolve_model(source) if source is not None else None
    if _source_is_base(model, resolved):
        return str(Path(resolved).resolve()) if is_local_path(resolved) else resolved
    base = (output_dir / BASE_DIR).resolve()
    if accelerator.is_main_process:
        with directory_replaced(base) as temporary:
            save_pretrained_with_processor(model, str(temporary), processor=processor)
    accelerator.wait_for_everyone()
    return str(base)


# ---------------------------------------------------------------------------------------------------------------------
# The adapter


def add_lora(model, options: LoraOptions, base: str | None = None):
    """`model` wrapped in a `peft.PeftModel` with the adapter of `options`; trainable: the adapter, the BA parameters
    and (with `train_mask_decoder`) the mask decoder. `base` is the adapter's `base_model_name_or_path` (default:
    the model's `name_or_path`)."""

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
    return {name: parameter.detach() for name, parameter in model.named_parameters() if is_ba_parameter(name)}


def save_adapter(model, folder: str | os.PathLike) -> None:
    """Save a `PeftModel`'s adapter (`save_pretrained`) and add its BA parameters to the adapter weights: peft saves
    only its own modules, and loads the other entries of the file as they are named."""
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
    return PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path


def load_adapter_model(adapter: str | os.PathLike, base: str | os.PathLike | None = None, **kwargs):
    """A `PeftModel`: the BA-SAM base (default: the adapter's `base_model_name_or_path`) with the adapter loaded.
    `kwargs` go to `BaSamModel.from_pretrained`.

    Raises:
        ValueError: for an adapter that names no base model, when `base` is not given.
    """

    base = base or adapter_base(adapter)
    if not base:
        raise ValueError(f"The adapter {adapter} names no base model: pass the base (--base) explicitly.")
    model = BaSamModel.from_pretrained(resolve_model(base), **kwargs)
    return PeftModel.from_pretrained(model, str(adapter)).eval()


def merge_adapter(adapter: str | os.PathLike, output_dir: str | os.PathLike, base: str | os.PathLike | None = None):
    """Merge an adapter into its base (`merge_and_unload`) and save the plain BA-SAM model with the base's processor
    and a model card to `output_dir`. Returns the merged `BaSamModel`."""
    base = str(base or adapter_base(adapter))
    merged = load_adapter_model(adapter, base).merge_and_unload()
    save_pretrained_with_processor(merged, str(output_dir), processor=load_processor(base, merged))
    training = {"method": "LoRA adapter merged into its base (basam-hf merge-lora)", "adapter": str(adapter)}
    if is_adapter_folder(adapter):
        training.update(adapter_settings(json.loads((Path(adapter) / ADAPTER_CONFIG_FILE).read_text("utf-8"))))
    write_model_card(output_dir, base_model=hub_id_or_none(base), training=training)
    return merged


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LORA_MODE",
    "LoraOptions",
    "add_lora",
    "is_lora_model",
    "load_adapter_model",
    "merge_adapter",
    "save_adapter",
]
