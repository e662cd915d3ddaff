"""One way to load a BA-SAM model: [`load_model_and_processor`] resolves the model reference once (`default`, a
folder or a Hub repo id, see [`basam_hf.references.resolve_model`]), builds the model once with its BA settings and dtype
applied while loading (`BaSamModel.from_pretrained(path, bias_mode=..., dtype=...)`, one read of `config.json`), and
loads the processor saved with it.

[`model_line`] is the one line every command that runs a model prints about it; [`model_config`] the config a model
would be built from, for that line before a command loads anything.

The other calls serve code that already holds a model: [`ba_variant`] (the same weights under other BA settings),
[`load_processor`] (a processor for a model object) and [`as_model`] (a name or a model).
"""

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from transformers import AutoConfig
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME, cached_file
from transformers.utils import logging as transformers_logging

from .configuration_basam import BaSamConfig
from .constants import BA_FIELDS, BA_OFF, DTYPE_NAMES, is_ba_parameter
from .modeling_basam import BaSamModel
from .processing_basam import BaSamImageProcessor, BaSamProcessor, normalisation_settings, processor_for_model
from .references import DEFAULT_MODEL_NAME, resolve_model

# Floating-point types a model can run in (`dtype=` in the Python API, `--dtype` on the command line).
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


class LoadedModel(NamedTuple):
    """What [`load_model_and_processor`] returns: the model (eval mode), its processor, and the path or Hub repo id
    `from_pretrained` loaded (`default` resolved to the embedded model's folder)."""

    model: Any
    processor: Any
    path: str


def _as_dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
        return DTYPES[value.removeprefix("torch.")]
    raise ValueError(f"Unsupported dtype {value!r}; use one of {', '.join(DTYPES)}.")


def resolve_dtype(dtype=None, torch_dtype=None) -> torch.dtype | None:
    """The `torch.dtype` asked for by a `dtype` argument or its alias `torch_dtype` (transformers' name before
    version 5): a name of [`DTYPES`] (`"bfloat16"`, `"torch.bfloat16"`) or the `torch.dtype` itself. `None` when
    neither is given: the model keeps its own dtype (a saved model loads in the dtype it was saved in, float32 for
    the embedded default model). Giving both, with different values, is an error."""
    if dtype is not None and torch_dtype is not None and _as_dtype(dtype) != _as_dtype(torch_dtype):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; give only one of them.")
    value = dtype if dtype is not None else torch_dtype
    return None if value is None else _as_dtype(value)


def _check_ba_settings(ba_settings: Mapping[str, Any]) -> None:
    unknown = sorted(set(ba_settings) - set(BA_FIELDS))
    if unknown:
        raise ValueError(
            f"Not BA settings: {unknown}; a variant keeps the weights and changes only {list(BA_FIELDS)}."
        )


def _check_same_weights(missing, unexpected) -> None:
    """Raise unless the only keys that did not match are BA parameters (`coefficient`, `slopes`): those the settings
    have no place for are dropped, those they add keep their initial values."""
    missing = [key for key in missing if not is_ba_parameter(key)]
    unexpected = [key for key in unexpected if not is_ba_parameter(key)]
    if missing or unexpected:
        raise RuntimeError(f"BA variant does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")


def _from_pretrained(path: str, ba_settings: Mapping[str, Any], dtype: torch.dtype | None):
    """`BaSamModel.from_pretrained(path, **ba_settings, dtype=dtype)` in eval mode. With BA settings, transformers'
    load report (which lists the BA parameters the settings add or drop) is silenced and the keys are checked here
    instead, as [`ba_variant`] checks them."""
    kwargs = {} if dtype is None else {"dtype": dtype}
    if not ba_settings:
        return BaSamModel.from_pretrained(path, **kwargs).eval()
    _check_ba_settings(ba_settings)
    logger = transformers_logging.get_logger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(transformers_logging.ERROR)
    try:
        model, info = BaSamModel.from_pretrained(path, **ba_settings, **kwargs, output_loading_info=True)
    finally:
        logger.setLevel(level)
    _check_same_weights(info["missing_keys"], info["unexpected_keys"])
    return model.eval()


def load_model_and_processor(
    model: str | os.PathLike,
    *,
    ba_settings: Mapping[str, Any] | None = None,
    dtype=None,
    torch_dtype=None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """The model named `model` (a Hub repo id, a folder, or `default`: the package's embedded model) and its
    processor, as a [`LoadedModel`] `(model, processor, path)`.

    Args:
        ba_settings: BA fields of the vision config (e.g. `{"bias_mode": "none"}`) replacing the saved ones, applied
            while loading: the weights are the saved ones; BA parameters the settings add (`coefficient`, `slopes`)
            get their initial values, those they have no place for are dropped.
        dtype: `"float32"`, `"bfloat16"` or `"float16"` (or the `torch.dtype`; `torch_dtype` is its alias) for the
            weights and the computation (see [`resolve_dtype`]); default the saved dtype.
        device: where the model goes (default: where transformers loads it, the CPU).

    The processor is the one saved with the model; a model saved without processor files (e.g. a bare SAM
    checkpoint) gets [`basam_hf.processor_for_model`]'s, see [`load_processor`].
    """
    path = resolve_model(model)
    loaded = _from_pretrained(path, ba_settings or {}, resolve_dtype(dtype, torch_dtype))
    if ba_settings:
        loaded.name_or_path = str(model)  # reports name the model as given, not under its settings' folder
    if device is not None:
        loaded = loaded.to(device)
    # The config just read is the one saved beside the processor: its grid is the model's, nothing to compare.
    return LoadedModel(loaded, _processor_for(loaded, _saved_processor(path)), path)


def model_config(model: str | os.PathLike, ba_settings: Mapping[str, Any] | None = None) -> BaSamConfig:
    """The config [`load_model_and_processor`]`(model, ba_settings=...)` builds its model from (a SAM config becomes
    a BA-SAM one, as loading it does), read without the weights."""
    _check_ba_settings(ba_settings or {})
    return BaSamConfig.from_pretrained(resolve_model(model), **(ba_settings or {}))


# The BA fields [`model_line`] names besides attention_scaling and bias_mode, per bias mode (the others do nothing).
_BIAS_FIELDS = {
    "distance": ("bias_distance", "distance_unit", "bias_layers", "bias_slope_scale", "learnable_slopes"),
    "coefficient": ("bias_layers",),
}


def model_line(name: str | os.PathLike, vision_config, sizes=None) -> str:
    """One line naming the model a command runs, e.g. `Model: facebook/sam-vit-base (BA: attention_scaling=log_length,
    bias_mode=none) at 1024 px`: `name` as given (`default`: the embedded model), the BA settings that act and the
    input sizes (default: the model's own)."""
    fields = ("attention_scaling", "bias_mode", *_BIAS_FIELDS.get(vision_config.bias_mode, ()))
    settings = ", ".join(f"{field}={getattr(vision_config, field)}" for field in fields)
    sizes = ", ".join(str(size) for size in (sizes or [vision_config.image_size]))
    embedded = "embedded; " if str(name) == DEFAULT_MODEL_NAME else ""
    return f"Model: {name} ({embedded}BA: {settings}) at {sizes} px"


def load_model(name: str | os.PathLike, *, dtype=None, torch_dtype=None):
    """A `BaSamModel` in eval mode from a repo id, a folder, or `default` (see [`load_model_and_processor`], which
    also gives its processor)."""
    return _from_pretrained(resolve_model(name), {}, resolve_dtype(dtype, torch_dtype))


def as_model(model, *, dtype=None, torch_dtype=None):
    """`model` itself if it is a model, else [`load_model`]`(model)`; in `dtype` when one is given (a model object
    is converted in place, as `nn.Module.to` does)."""
    dtype = resolve_dtype(dtype, torch_dtype)
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, dtype=dtype)
    return model.to(dtype) if dtype is not None and model.dtype != dtype else model


def ba_variant(model, **ba_settings):
    """The same weights under other BA settings (vision-config fields, e.g. `bias_mode="coefficient"`): a new
    `BaSamModel` built from the model's config with those fields, loading the model's state dict. BA parameters the
    new settings have no place for are dropped; those they add (`coefficient`, `slopes`) get their initial values.
    To load a saved model under other settings, give them to [`load_model_and_processor`] instead (one model)."""
    _check_ba_settings(ba_settings)
    config_dict = model.config.to_dict()
    config_dict["vision_config"].update(ba_settings)
    config = BaSamConfig.from_dict(config_dict)
    config._attn_implementation = model.config._attn_implementation
    variant = BaSamModel(config)
    _check_same_weights(*variant.load_state_dict(model.state_dict(), strict=False))
    return variant.to(device=model.device, dtype=model.dtype).eval()


def sam_variant(model):
    """The same weights with BA switched off (`bias_mode="none"`, `attention_scaling="none"`, see [`ba_variant`]).
    BaSamModel with BA off computes exactly what `SamModel` computes, so this is SAM's behaviour with these weights."""
    return ba_variant(model, **BA_OFF)


def _has_processor_files(path: str) -> bool:
    """Whether `path` (a folder or a Hub repo id) has processor files. A file the repo lacks, or one that is not in
    the cache while the Hub cannot be asked, counts as absent; any other failure (an access error) propagates."""
    lookup = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    return any(cached_file(path, name, **lookup) is not None for name in (PROCESSOR_NAME, IMAGE_PROCESSOR_NAME))


def _saved_processor(path: str) -> BaSamProcessor | None:
    """The processor saved at `path`, or `None` when there are no processor files there (the one case that falls
    back to [`basam_hf.processor_for_model`]). Named `preprocessor_config.json` explicitly so that transformers does
    not open `config.json` once more to check for a timm checkpoint."""
    if not _has_processor_files(path):
        return None
    return BaSamProcessor.from_pretrained(path, image_processor_filename=IMAGE_PROCESSOR_NAME)


def _processor_for(model, saved: BaSamProcessor | None) -> BaSamProcessor:
    """`saved` if it is BA-SAM's; a SAM checkpoint's processor (e.g. facebook/sam-vit-base's `SamImageProcessor`,
    which resizes to its saved size only) gives its normalisation settings to [`basam_hf.processor_for_model`]'s;
    no processor files: [`basam_hf.processor_for_model`]'s."""
    if saved is None:
        return processor_for_model(model)
    if not isinstance(saved.image_processor, BaSamImageProcessor):
        return processor_for_model(model, **normalisation_settings(saved.image_processor))
    return saved


def load_processor(name: str | os.PathLike | None, model):
    """The processor saved with the model `name` if it has processor files, else [`basam_hf.processor_for_model`].
    A processor saved with a model of another token grid (`model` was rebased to a new size since, see
    [`basam_hf.conversion.rebase_image_size`]) gives only its normalisation settings: its size was that model's
    default, not a choice for this one."""
    path = None if name is None else resolve_model(name)
    processor = None if path is None else _saved_processor(path)
    if processor is None or not isinstance(processor.image_processor, BaSamImageProcessor):
        return _processor_for(model, processor)
    vision, saved = model.config.vision_config, AutoConfig.from_pretrained(path).vision_config
    if (saved.image_size, saved.patch_size) == (vision.image_size, vision.patch_size):
        return processor
    return processor_for_model(model, **normalisation_settings(processor.image_processor))


__all__ = [
    "BA_OFF",
    "DTYPES",
    "LoadedModel",
    "as_model",
    "ba_variant",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "model_config",
    "model_line",
    "resolve_dtype",
    "sam_variant",
]
