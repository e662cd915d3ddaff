"""Model references: what `--model` / `from_pretrained` names (a Hub repo id, a local folder, or `default`, the
BA-SAM model embedded in the package) and what a local folder holds (a model, or a peft adapter).

Imports nothing heavy: the command line, the model cards and the Hub code all start here.
"""

import os
from pathlib import Path

# The embedded default model (safetensors + config + processor files) ships in the package's `default/` folder.
DEFAULT_MODEL_NAME = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def resolve_model(name: str | os.PathLike) -> str:
    """What `from_pretrained` should load for `name`: `default` -> the package's embedded model folder; anything else
    (a Hub repo id or a local folder) unchanged.

    Raises:
        FileNotFoundError: for `default` when this installation has no embedded model yet.
    """
    if str(name) != DEFAULT_MODEL_NAME:
        return str(name)
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"The embedded default BA-SAM model is not in this installation ({DEFAULT_MODEL_DIR} has no config.json). "
            "Pass a Hub repo id or a local model folder instead of `default`, e.g. one made with "
            "`basam-hf convert-sam facebook/sam-vit-base OUTPUT_DIR`."
        )
    return str(DEFAULT_MODEL_DIR)


def is_local_path(name: str | os.PathLike | None) -> bool:
    """Whether `name` names an existing local file or folder (so it is not a Hub repo id for the card's metadata)."""
    return name is not None and Path(name).expanduser().exists()


def hub_id_or_none(name: str | os.PathLike | None) -> str | None:
    """`name` if it can be a Hub repo id (not a local path, not `default`), else `None`."""
    if name is None or is_local_path(name) or str(name) == DEFAULT_MODEL_NAME:
        return None
    return str(name)


# A peft adapter folder (`finetune --train lora`, see basam_hf.lora).
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a saved peft adapter (it has an `adapter_config.json`)."""
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file()


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_MODEL_NAME",
    "hub_id_or_none",
    "is_adapter_folder",
    "is_local_path",
    "resolve_model",
]
