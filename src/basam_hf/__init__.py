"""basam-hf: BA-SAM (bias-mode attention for the Segment Anything Model) as a transformers model."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskGeneration, AutoProcessor

from .configuration_basam import BaSamConfig, BaSamVisionConfig
from .modeling_basam import (
    BaSamModel,
    BaSamPreTrainedModel,
    BaSamVisionAttention,
    BaSamVisionEncoder,
    BaSamVisionSdpaAttention,
)
from .processing_basam import BaSamImageProcessor, BaSamProcessor, processor_for_model, save_pretrained_with_processor

__version__ = "0.1.0"

# Remote code: save_pretrained copies the two files and writes this auto_map, so that
# `from_pretrained(..., trust_remote_code=True)` works where basam_hf is not installed. `register_for_auto_class`
# keeps a single slot per class, so the full map is set on the config (see BaSamConfig.__post_init__).
BaSamConfig.register_for_auto_class("AutoConfig")
BaSamModel.register_for_auto_class("AutoModelForMaskGeneration")

# Installed package: load "basam" checkpoints without remote code.
AutoConfig.register(BaSamConfig.model_type, BaSamConfig, exist_ok=True)
AutoModel.register(BaSamConfig, BaSamModel, exist_ok=True)
AutoModelForMaskGeneration.register(BaSamConfig, BaSamModel, exist_ok=True)
# The processors register their own remote-code auto_map (in processing_basam); only the installed path is here.
AutoImageProcessor.register(BaSamConfig, image_processor_classes={"pil": BaSamImageProcessor}, exist_ok=True)
AutoProcessor.register(BaSamConfig, BaSamProcessor, exist_ok=True)

__all__ = [
    "BaSamConfig",
    "BaSamImageProcessor",
    "BaSamModel",
    "BaSamPreTrainedModel",
    "BaSamProcessor",
    "BaSamVisionAttention",
    "BaSamVisionConfig",
    "BaSamVisionEncoder",
    "BaSamVisionSdpaAttention",
    "processor_for_model",
    "save_pretrained_with_processor",
    "__version__",
]
