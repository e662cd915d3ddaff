"""Settings shared by the model code, training, the demo and the command line, in one module that imports nothing:
the command line builds its parser from them without importing torch or transformers (`basam-hf --help` answers at
once), and saved models ship this file as remote code beside `configuration_basam.py`, which imports it."""

# Allowed values of the BA-SAM string fields; the single source for validation and documentation.
BA_CHOICES: dict[str, tuple[str, ...]] = {
    "attention_scaling": ("none", "log_length", "official"),
    "bias_mode": ("none", "distance", "coefficient"),
    "bias_distance": ("manhattan", "euclidean"),
    "distance_unit": ("token", "pretrain_grid"),
    "bias_layers": ("global", "all"),
}
# The vision-config fields that make up the BA settings.
BA_FIELDS = (
    "attention_scaling",
    "bias_mode",
    "bias_distance",
    "distance_unit",
    "bias_slope_scale",
    "learnable_slopes",
    "bias_layers",
    "coefficient_init",
    "pretrain_image_size",
    "attention_memory_budget_mb",
)
# BA switched off: the same weights compute what SAM computes.
BA_OFF = {"bias_mode": "none", "attention_scaling": "none"}
# The BA settings for a pretrained SAM used zero-shot (no BA while it was trained), e.g. the photo model of `segment`
# and `demo`. log_length scaling multiplies the softmax scale by log(N) / log(N_train): exactly 1 at the pretraining
# size (1024 px for SAM), so there the model computes what SAM computes, and the paper's entropy correction, with no
# parameter to learn, at other sizes. The distance bias stays off: it changes SAM's attention even at 1024 px (the
# steepest ViT-B head loses 0.63 logits per token of distance), and switched on at test time in the resolution study
# (README) it brought no gain on a model trained without it and cost 0.025-0.033 mIoU at 3x and 4x on synthetic
# scenes. The study switched scaling and bias on together; only the bias is what changes SAM at its own size.
ZERO_SHOT_BA = {"attention_scaling": "log_length", "bias_mode": "none"}
# Automatic-mask-generation thresholds a config may recommend (`BaSamConfig.mask_generation`), with transformers'
# mask-generation pipeline defaults (`MaskGenerationPipeline._forward`).
MASK_GENERATION_THRESHOLDS = {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95}

# Floating-point types a model can run in (`dtype=` in the Python API, `--dtype` on the command line).
DTYPE_NAMES = ("float32", "bfloat16", "float16")

# What fine-tuning trains, its losses (name -> terms) and its mixed-precision modes.
TRAIN_MODES = ("all", "mask-decoder", "ba-only", "frozen-encoder", "iou-head", "lora")
LOSSES = {"bce-dice": ("bce", "dice"), "bce": ("bce",), "dice": ("dice",)}
MIXED_PRECISION = ("no", "fp16", "bf16")

# The demo refuses larger uploads before decoding them: the masks come back at the original size, 3 per variant.
DEMO_MAX_PIXELS = 4096 * 4096
DEMO_MAX_FILE_SIZE = "50mb"


# `segment`'s defaults: the largest image it reads without --max-pixels (50 megapixels: a 48 MP phone photo passes;
# the image, its float copy for the processor and one full-size mask per result live in memory at once, and a
# 100-megapixel image peaked at 4.7 GB with a box prompt), the grid of --automatic (N x N point prompts, also
# `generate_masks`' and examples/pipeline_usage.py's: SAM's automatic generator's 32; transformers' pipeline called
# without `points_per_crop` uses 64, four times the prompts, and so finds other masks) and the prompts one automatic
# forward pass decodes at once.
SEGMENT_MAX_PIXELS = 50_000_000
POINTS_PER_SIDE = 32
AUTOMATIC_PROMPTS_PER_BATCH = 16

# The parameters BA-SAM adds to SAM (per attention layer): the official coefficient and learnable distance slopes.
BA_PARAMETER_NAMES = ("coefficient", "slopes")


def is_ba_parameter(name: str) -> bool:
    """Whether a state-dict key names a parameter BA-SAM adds to SAM."""
    return name.rsplit(".", 1)[-1] in BA_PARAMETER_NAMES


# `finetune --train lora`: a peft LoRA adapter (basam_hf.lora), peft's defaults, on the vision encoder's attention
# projections (`qkv`, `proj`: only the encoder's attention layers have modules of these names).
LORA_MODE = TRAIN_MODES[-1]  # "lora"
LORA_DEFAULTS = {
    "rank": 8,
    "alpha": 8.0,
    "dropout": 0.0,
    "target_modules": ("qkv", "proj"),
    "train_mask_decoder": False,
}


__all__ = [
    "AUTOMATIC_PROMPTS_PER_BATCH",
    "BA_CHOICES",
    "BA_FIELDS",
    "BA_OFF",
    "BA_PARAMETER_NAMES",
    "DEMO_MAX_FILE_SIZE",
    "DEMO_MAX_PIXELS",
    "DTYPE_NAMES",
    "LOSSES",
    "MASK_GENERATION_THRESHOLDS",
    "MIXED_PRECISION",
    "POINTS_PER_SIDE",
    "SEGMENT_MAX_PIXELS",
    "TRAIN_MODES",
    "ZERO_SHOT_BA",
    "is_ba_parameter",
]
