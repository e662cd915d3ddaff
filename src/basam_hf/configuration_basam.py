"""BA-SAM configuration: SAM's configuration plus the bias-mode attention settings."""

import math

from transformers.models.sam.configuration_sam import (
    SamConfig,
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
)

from .constants import BA_CHOICES, BA_FIELDS, MASK_GENERATION_THRESHOLDS

# Written into every saved config, so the remote code loads through all three Auto classes (transformers'
# `register_for_auto_class` keeps one class per object, which would leave out AutoModel).
AUTO_MAP = {
    "AutoConfig": "configuration_basam.BaSamConfig",
    "AutoModel": "modeling_basam.BaSamModel",
    "AutoModelForMaskGeneration": "modeling_basam.BaSamModel",
}


# Not re-decorated with @strict: BA fields are validated by `validate_ba`, which raises `ValueError` (strict's type
# errors are not `ValueError`s). SAM's own fields stay validated by the parent's decorator.
class BaSamVisionConfig(SamVisionConfig):
    r"""
    Configuration of the BA-SAM image encoder: [`SamVisionConfig`] plus the bias-mode attention (BA) settings.

    attention_scaling (`str`, *optional*, defaults to `"log_length"`):
        Softmax scale of the query-key term. `"none"`: SAM's `head_dim**-0.5`. `"log_length"`:
        `head_dim**-0.5 * log(N) / log(N_train)` with `N` the number of keys a query attends to and `N_train` that
        number at `pretrain_image_size` (windowed layers always attend to `window_size**2` keys, so their factor is
        1). `"official"`: the official BA-SAM rule `log(s**2 * N_train) / log(N_train)` with
        `s = image_size // pretrain_image_size` (floor), defined for square inputs at or above the pretraining size.
    bias_mode (`str`, *optional*, defaults to `"distance"`):
        `"none"`: SAM's attention. `"distance"`: adds `-m_h * d(query, key)` to the logits of head `h` (ALiBi-style
        slopes `m_h = bias_slope_scale * 2**(-8 * (h + 1) / num_heads)`). `"coefficient"`: the official BA-SAM code,
        a learnable scalar per layer multiplying SAM's decomposed relative-position bias.
    bias_distance (`str`, *optional*, defaults to `"manhattan"`):
        Grid distance of the `"distance"` mode: `"manhattan"` (row term + column term, no N x N tensor) or
        `"euclidean"`.
    distance_unit (`str`, *optional*, defaults to `"pretrain_grid"`):
        `"token"`: distances in cells of the current token grid. `"pretrain_grid"`: distances rescaled by
        pretraining grid / current grid, i.e. measured in cells of the grid seen at `pretrain_image_size`, so the
        penalty covers the same image fraction at every resolution (the default: it did better than `"token"` at
        1.5x-4x in `examples/resolution_study.py`).
    bias_slope_scale (`float`, *optional*, defaults to 1.0):
        Multiplier of the ALiBi slopes.
    learnable_slopes (`bool`, *optional*, defaults to `False`):
        Whether the slopes are trainable parameters (saved with the weights) instead of fixed values.
    bias_layers (`str`, *optional*, defaults to `"global"`):
        Layers that get the bias: `"global"` (global-attention layers) or `"all"` (windowed layers too).
    coefficient_init (`float`, *optional*, defaults to 0.1):
        Initial value of the per-layer coefficient of the `"coefficient"` mode (the official code uses 0.1).
    pretrain_image_size (`int`, *optional*):
        Input size the encoder was pretrained at; defaults to `image_size`.
    attention_memory_budget_mb (`float`, *optional*, defaults to 256):
        Upper bound, in MiB, of the attention scores and bias materialized at once by a global layer; larger
        sequences are processed in query chunks so memory stays bounded at any resolution.
    """

    model_type = "basam_vision_model"

    attention_scaling: str = "log_length"
    bias_mode: str = "distance"
    bias_distance: str = "manhattan"
    distance_unit: str = "pretrain_grid"
    bias_slope_scale: float | int = 1.0
    learnable_slopes: bool = False
    bias_layers: str = "global"
    coefficient_init: float | int = 0.1
    pretrain_image_size: int | None = None
    attention_memory_budget_mb: float | int = 256.0

    def __post_init__(self, **kwargs):
        if self.pretrain_image_size is None:
            self.pretrain_image_size = self.image_size
        super().__post_init__(**kwargs)
        self.validate_ba()

    def validate_ba(self) -> None:
        """Raise a `ValueError` naming the field, the value and the allowed values for any invalid BA setting."""
        for field, allowed in BA_CHOICES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"Invalid {field}={value!r}; allowed values are {', '.join(map(repr, allowed))}.")
        for field in ("pretrain_image_size", "attention_memory_budget_mb"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Invalid {field}={value!r}; it must be a positive number.")
        slope_scale = self.bias_slope_scale
        if (
            isinstance(slope_scale, bool)
            or not isinstance(slope_scale, (int, float))
            or not math.isfinite(slope_scale)
        ):
            raise ValueError(f"Invalid bias_slope_scale={slope_scale!r}; it must be a finite number.")
        if slope_scale < 0:
            raise ValueError(
                f"Invalid bias_slope_scale={slope_scale!r}; it must be >= 0 (a negative scale would reward distant "
                "keys instead of penalising them; 0 switches the distance bias off)."
            )
        if self.bias_mode == "coefficient" and not self.use_rel_pos:
            raise ValueError(
                "Invalid bias_mode='coefficient' with use_rel_pos=False: the coefficient scales the relative-position "
                "bias, which this encoder does not have. Use bias_mode='distance' or 'none'."
            )

    @property
    def ba_enabled(self) -> bool:
        """Whether any BA-SAM change to SAM's attention is active."""
        return self.bias_mode != "none" or self.attention_scaling != "none"

    def ba_settings(self) -> dict:
        """The BA-SAM fields and their values."""
        return {field: getattr(self, field) for field in BA_FIELDS}


# The package's default BA settings: `BaSamVisionConfig`'s defaults, chosen by the resolution study (README).
BA_DEFAULTS = {
    field: getattr(BaSamVisionConfig, field)
    for field in ("bias_mode", "attention_scaling", "distance_unit", "bias_slope_scale")
}


def _vision_property(name: str) -> property:
    """A `BaSamConfig` attribute that reads and writes the vision config's field, so that
    `BaSamModel.from_pretrained(path, bias_mode=...)` sets the encoder's setting."""

    def getter(self):
        return getattr(self.vision_config, name)

    def setter(self, value):
        previous = getattr(self.vision_config, name)
        setattr(self.vision_config, name, value)
        try:
            self.vision_config.validate_ba()
        except ValueError:
            setattr(self.vision_config, name, previous)
            raise

    return property(getter, setter, doc=f"Alias of `vision_config.{name}`.")


class BaSamConfig(SamConfig):
    r"""
    Configuration of [`BaSamModel`]: a [`SamConfig`] whose vision config is a [`BaSamVisionConfig`].

    The BA-SAM fields (`bias_mode`, `attention_scaling`, ...) live in `vision_config`; they can also be read, set and
    passed to `from_pretrained` at the top level, e.g. `BaSamModel.from_pretrained(sam_dir, bias_mode="none")`.

    Example:

    ```python
    >>> from basam_hf import BaSamConfig, BaSamModel

    >>> config = BaSamConfig(vision_config={"bias_mode": "distance", "attention_scaling": "log_length"})
    >>> model = BaSamModel(config)
    ```

    `mask_generation` (`dict`, *optional*): thresholds of automatic mask generation recommended for this model,
    `{"pred_iou_thresh": ..., "stability_score_thresh": ...}` (either or both), used by
    [`basam_hf.segment.generate_masks`] (and so `basam-hf segment --automatic` and the demo) where the caller gives
    none. transformers' pipeline defaults (0.88, 0.95) suit SAM's own checkpoints; a small model's IoU head and masks
    are less confident, and may keep nothing at them. `None`: the pipeline's defaults.
    """

    model_type = "basam"
    sub_configs_defaults = {
        "prompt_encoder_config": SamPromptEncoderConfig,
        "mask_decoder_config": SamMaskDecoderConfig,
        "vision_config": BaSamVisionConfig,
    }

    mask_generation: dict | None = None

    def __post_init__(self, **kwargs):
        # BA fields given at the top level belong to the vision config.
        ba_kwargs = {name: kwargs.pop(name) for name in BA_FIELDS if name in kwargs}
        if isinstance(self.vision_config, SamVisionConfig) and not isinstance(self.vision_config, BaSamVisionConfig):
            self.vision_config = self.vision_config.to_dict()
        if isinstance(self.vision_config, dict):
            self.vision_config = {k: v for k, v in self.vision_config.items() if k != "model_type"}
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)
        for name, value in ba_kwargs.items():
            setattr(self.vision_config, name, value)
        self.vision_config.validate_ba()
        check_mask_generation(self.mask_generation)


def check_mask_generation(thresholds: dict | None) -> None:
    """Raise a `ValueError` unless `thresholds` is `None` or maps `MASK_GENERATION_THRESHOLDS` names to numbers in
    [0, 1]."""
    if thresholds is None:
        return
    if not isinstance(thresholds, dict):
        raise ValueError(f"mask_generation must be a dict of thresholds or None, got {thresholds!r}.")
    for name, value in thresholds.items():
        if name not in MASK_GENERATION_THRESHOLDS:
            raise ValueError(
                f"Unknown mask_generation threshold {name!r}; allowed: {', '.join(MASK_GENERATION_THRESHOLDS)}."
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"mask_generation[{name!r}] must be a number in [0, 1], got {value!r}.")


for _name in BA_FIELDS:
    setattr(BaSamConfig, _name, _vision_property(_name))
del _name

# Remote code: save_pretrained copies this file (and modeling_basam.py) next to the weights; the full auto_map is set
# in `BaSamConfig.__post_init__` (register_for_auto_class keeps one Auto class per class).
BaSamConfig.register_for_auto_class("AutoConfig")

__all__ = ["BA_DEFAULTS", "MASK_GENERATION_THRESHOLDS", "BaSamConfig", "BaSamVisionConfig"]
