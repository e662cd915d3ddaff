"""Turning checkpoints into BA-SAM: any transformers SAM checkpoint (and, later, official BA-SAM checkpoints)."""

import os

from .modeling_basam import BaSamModel
from .processing_basam import processor_for_model

# Parameters that BA-SAM adds to SAM; the only keys a SAM checkpoint may lack. Initialised as documented in
# BaSamVisionConfig: coefficient = coefficient_init (0.1), slopes = ALiBi slopes * bias_slope_scale.
BA_PARAMETER_NAMES = ("coefficient", "slopes")


def is_ba_parameter(name: str) -> bool:
    """Whether a state-dict key names a parameter BA-SAM adds to SAM."""
    return name.rsplit(".", 1)[-1] in BA_PARAMETER_NAMES


def convert_sam_to_basam(
    source: str | os.PathLike, output_dir: str | os.PathLike | None = None, **ba_settings
) -> BaSamModel:
    """Load a SAM checkpoint (repo id or folder) as BA-SAM, checking that every SAM weight was loaded.

    Args:
        source: a `SamModel` (or BA-SAM) checkpoint, e.g. `"facebook/sam-vit-base"` or a local folder.
        output_dir: if given, save the converted model there (safetensors, config with `auto_map`, code files) with
            a `BaSamProcessor` (any input size; the source's normalisation settings if it has a processor).
        **ba_settings: BA-SAM fields (`bias_mode`, `attention_scaling`, ...), see `BaSamVisionConfig`.

    Raises:
        ValueError: if the checkpoint has weights BA-SAM does not use, or lacks SAM weights (they would be left
            random).
    """
    model, info = BaSamModel.from_pretrained(source, output_loading_info=True, **ba_settings)
    not_loaded = sorted(key for key in info["missing_keys"] if not is_ba_parameter(key))
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(str(item) for item in info.get("mismatched_keys", []))
    if not_loaded or unexpected or mismatched:
        raise ValueError(
            f"{source} is not a complete SAM checkpoint for this configuration: "
            f"missing {not_loaded[:10]}, unexpected {unexpected[:10]}, mismatched shapes {mismatched[:10]}."
        )
    if output_dir is not None:
        model.save_pretrained(output_dir)
        _save_processor(source, output_dir, model)
    return model


def _save_processor(source: str | os.PathLike, output_dir: str | os.PathLike, model: BaSamModel) -> None:
    """Save a [`BaSamProcessor`] next to the converted weights, so pipelines work on the output folder at any input
    size and without torchvision (SAM's processors need it for mask generation). The source's normalisation settings
    are carried over when it has an image processor."""
    from transformers import AutoImageProcessor

    try:
        source_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        source_processor = None  # a bare weights folder: SAM's defaults
    keys = ("image_mean", "image_std", "rescale_factor", "resample", "do_convert_rgb")
    settings = {key: getattr(source_processor, key, None) for key in keys}
    settings = {key: value for key, value in settings.items() if value is not None}
    processor_for_model(model, **settings).save_pretrained(output_dir)
