"""Where models come from: repo ids, local folders, and `default`, the BA-SAM model embedded in the package."""

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


__all__ = ["DEFAULT_MODEL_DIR", "DEFAULT_MODEL_NAME", "resolve_model"]
