"""What fine-tuning trains: the parameters each train mode optimizes ([`TRAIN_MODES`]: all, the mask decoder, the
prompt encoder and mask decoder, the IoU head, the BA parameters, or a LoRA adapter), and the model prepared for
training (BA settings applied, encoder layers checkpointed, parameters frozen or an adapter added)."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .constants import LORA_MODE, TRAIN_MODES
from .conversion import convert_sam_to_basam, is_ba_parameter
from .loading import load_processor
from .lora import LoraOptions, prepare_lora_training
from .modeling_basam import BaSamModel
from .references import resolve_model
from .settings import FinetuneSettings

# Parameters no mode trains: SAM's random Fourier features are a fixed buffer in segment-anything.
NEVER_TRAINED = ("shared_image_embedding.",)


def trainable_parameter_names(model: torch.nn.Module, train: str) -> list[str]:
    """Names of the parameters `train` (one of [`TRAIN_MODES`]) optimizes.

    Raises:
        ValueError: for an unknown mode, or `ba-only` on a model without BA parameters.
    """
    if train == LORA_MODE:  # LoRA adds parameters rather than selecting some
        raise ValueError("train='lora' trains new adapter parameters: see basam_hf.lora.add_lora.")
    if train not in TRAIN_MODES:
        raise ValueError(f"Unknown train mode {train!r}; use one of {', '.join(TRAIN_MODES)}.")
    selectors: dict[str, Callable[[str], bool]] = {
        "all": lambda name: True,
        "mask-decoder": lambda name: name.startswith("mask_decoder."),
        "frozen-encoder": lambda name: not name.startswith("vision_encoder."),
        "ba-only": is_ba_parameter,
        "iou-head": lambda name: name.startswith("mask_decoder.iou_prediction_head."),
    }
    names = [
        name for name, _ in model.named_parameters() if not name.startswith(NEVER_TRAINED) and selectors[train](name)
    ]
    if not names:
        raise ValueError(
            f"train={train!r} selects no parameter of this model. ba-only trains the parameters BA-SAM adds to SAM: "
            "use bias_mode='coefficient' (a coefficient per layer) or learnable_slopes=True with bias_mode='distance'."
        )
    return names


def set_trainable(model: torch.nn.Module, train: str) -> list[str]:
    """Freeze every parameter but those of `train`; return the trainable names."""
    names = set(trainable_parameter_names(model, train))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    return sorted(names)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Checkpoint every image-encoder layer with transformers' API: `activation_checkpointing_enable` (transformers
    5.x's name), else its older alias `gradient_checkpointing_enable`."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def load_training_model(model: Any, ba_settings: dict | None = None):
    """A `BaSamModel` from a BA-SAM or plain SAM checkpoint (repo id, folder, `default`) with `ba_settings` applied
    (see [`basam_hf.conversion.convert_sam_to_basam`]: every SAM weight must load), or a given model."""
    if isinstance(model, BaSamModel):
        if ba_settings:
            raise ValueError("BA settings apply when loading a checkpoint; this model is already built.")
        return model
    return convert_sam_to_basam(resolve_model(model), **(ba_settings or {}))


def prepare_model(model: Any, settings: FinetuneSettings, ba_settings: dict | None, accelerator):
    """The model to train (`ba_settings` applied, encoder layers checkpointed with `gradient_checkpointing`, the
    LoRA adapter added or the parameters of the train mode selected), its processor and the trainable names."""
    source = model_source(model)
    net = load_training_model(model, ba_settings)
    if settings.gradient_checkpointing:  # before LoRA wraps the model, so the encoder layers are its own
        enable_gradient_checkpointing(net)
    processor = load_processor(resolve_model(source) if source else None, net)
    if settings.train == LORA_MODE:  # issue 29: a peft adapter on the frozen model, checkpointed adapter-only
        options = LoraOptions(**settings.lora_options())
        net, trainable = prepare_lora_training(net, processor, source, options, Path(settings.output_dir), accelerator)
    else:
        trainable = set_trainable(net, settings.train)
    net.train()
    return net, processor, trainable


def model_source(model: Any) -> str | os.PathLike | None:
    """Where the model comes from: its name or folder as given, or a model object's `name_or_path`."""
    return model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)


__all__ = [
    "NEVER_TRAINED",
    "enable_gradient_checkpointing",
    "load_training_model",
    "model_source",
    "prepare_model",
    "set_trainable",
    "trainable_parameter_names",
]
