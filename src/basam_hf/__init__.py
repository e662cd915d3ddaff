"""basam-hf: BA-SAM (bias-mode attention for the Segment Anything Model) as a transformers model.

Importing the package is cheap (no torch, no transformers): the classes below are imported on first use (PEP 562),
so that `basam-hf --help` answers at once. `import basam_hf` still registers the `basam` model type with
transformers' Auto classes (`AutoConfig`, `AutoModel`, `AutoModelForMaskGeneration`, `AutoImageProcessor`,
`AutoProcessor`): with transformers' Auto modules already imported, right away; otherwise right after transformers
imports each of them (see [`_registration`]).
"""

import importlib
from typing import TYPE_CHECKING

from ._registration import install_auto_registration

__version__ = "0.1.0"

# name -> submodule that defines it
_LAZY_ATTRIBUTES = {
    "BaSamConfig": "configuration_basam",
    "BaSamVisionConfig": "configuration_basam",
    "BaSamModel": "modeling_basam",
    "BaSamPreTrainedModel": "modeling_basam",
    "BaSamVisionAttention": "modeling_basam",
    "BaSamVisionEncoder": "modeling_basam",
    "BaSamVisionSdpaAttention": "modeling_basam",
    "BaSamImageProcessor": "processing_basam",
    "BaSamProcessor": "processing_basam",
    "processor_for_model": "processing_basam",
    "save_pretrained_with_processor": "processing_basam",
}

if TYPE_CHECKING:
    from .configuration_basam import BaSamConfig, BaSamVisionConfig
    from .modeling_basam import (
        BaSamModel,
        BaSamPreTrainedModel,
        BaSamVisionAttention,
        BaSamVisionEncoder,
        BaSamVisionSdpaAttention,
    )
    from .processing_basam import (
        BaSamImageProcessor,
        BaSamProcessor,
        processor_for_model,
        save_pretrained_with_processor,
    )


def __getattr__(name: str):
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))


install_auto_registration()

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
