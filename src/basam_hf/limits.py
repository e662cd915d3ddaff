"""Input limits checked before any heavy work: image pixels (from the file header) and input sizes (from the memory a
model would need at that size, estimated from its config).

Nothing heavy is imported: the command line runs these checks before it loads a model.
"""

import json
import math
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import references
from .constants import SEGMENT_MAX_PIXELS

DEFAULT_MAX_PIXELS = SEGMENT_MAX_PIXELS  # see constants.py
_GB = 1024**3


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


@contextmanager
def _without_bomb_check():
    """PIL's decompression-bomb check off (it warns at 89 and refuses at 179 megapixels, with a message naming
    neither the file nor an option): [`open_image`] applies its own limit from the header instead."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, hint: str = "pass max_pixels"):
    """The image at `path`, decoded, after checking from its header alone that it has at most `max_pixels` pixels
    (`None`: no limit).

    Raises:
        ValueError: naming the file: too many pixels (its size, the limit and `hint`, how to raise it), not an image,
            or a file that cannot be decoded (e.g. a truncated JPEG).
    """
    from PIL import Image, UnidentifiedImageError

    with _without_bomb_check():
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise ValueError(f"{path} is not an image file that PIL can read (PNG, JPEG, WebP, TIFF, ...)") from None
        except FileNotFoundError:
            raise
        except (OSError, SyntaxError) as error:  # e.g. a JPEG cut short inside its header
            raise ValueError(f"cannot decode the image {path}: {error}") from None
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            image.close()
            raise ValueError(
                f"the image {path} is {width}x{height} ({_megapixels(width * height)}), above the limit of "
                f"{_megapixels(max_pixels)}: downscale it, or {hint} {width * height} to accept it"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"cannot decode the image {path}: {error}") from None
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Memory at an input size


def read_model_config(model: str | os.PathLike) -> dict | None:
    """The `config.json` of a local model folder or of `default`, as a dict; `None` for a Hub id (not fetched here:
    loading the model reports an unreachable Hub in one line) or a folder without one."""
    folder = references.DEFAULT_MODEL_DIR if str(model) == references.DEFAULT_MODEL_NAME else Path(model).expanduser()
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _widths(vision: Mapping[str, Any]) -> tuple[int, int]:
    """The encoder's hidden and MLP widths (SAM ViT-B's where the config does not say)."""
    hidden = vision.get("hidden_size", 768)
    return hidden, vision.get("mlp_dim", 4 * hidden)


def _weights_bytes(vision: Mapping[str, Any]) -> int:
    """float32 weights of the image encoder (which dominates SAM's parameters)."""
    hidden, mlp = _widths(vision)
    return 4 * vision.get("num_hidden_layers", 12) * (4 * hidden * hidden + 2 * hidden * mlp)


def estimate_memory(config: Mapping[str, Any], size: int, prompts: int = 1) -> int:
    """Bytes a forward pass at input size `size` needs, roughly, for a model config (`config.json` as a dict).

    The terms grow with the token count `N = (size / patch_size)**2`: the padded input image (float32, a few copies
    while it is resized and normalised), the encoder's activations (residual stream, q/k/v, MLP: about 8 hidden-size
    and 2 MLP-size vectors per token), the neck, the mask decoder's upscaled embedding per prompt (`prompts` in one
    batch: 16 for automatic mask generation), plus the attention budget (`attention_memory_budget_mb`, what global
    attention's query chunks may take) and the weights. Checked against measurements: ViT-B at 2048 px with a box
    needs about 1.6 GB by this estimate and peaked at 1.6 GB; with --automatic at 1536 px, 1.4 GB against a 2.2 GB
    peak (the automatic post-processing at image size is not counted).
    """
    vision = config.get("vision_config", config)
    patch = vision.get("patch_size", 16)
    side = math.ceil(size / patch) * patch
    tokens = (side // patch) ** 2
    hidden, mlp = _widths(vision)
    channels = vision.get("output_channels", 256)
    pixels = 4 * 3 * side * side * 4
    encoder = 4 * tokens * (8 * hidden + 2 * mlp)
    decoder = 4 * tokens * channels * (4 + 2 * max(1, prompts))
    budget = int(vision.get("attention_memory_budget_mb", 256.0) * 2**20)
    return pixels + encoder + decoder + budget + _weights_bytes(vision)


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or `None` where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def largest_size(config: Mapping[str, Any], memory: int, prompts: int = 1) -> int:
    """The largest input size (a multiple of the patch size) whose [`estimate_memory`] fits in `memory` bytes."""
    patch = config.get("vision_config", config).get("patch_size", 16)
    low, high = 1, 1
    while estimate_memory(config, high * 2 * patch, prompts) <= memory and high < 2**20:
        high *= 2
    high *= 2
    while low < high - 1:  # estimate(low * patch) fits, estimate(high * patch) does not (or low is the smallest)
        middle = (low + high) // 2
        low, high = (middle, high) if estimate_memory(config, middle * patch, prompts) <= memory else (low, middle)
    return low * patch


def check_size(
    config: Mapping[str, Any] | None, size: int, option: str, prompts: int = 1, memory: int | None = None
) -> None:
    """Refuse `size` when its [`estimate_memory`] exceeds `memory` (default: this machine's physical memory).
    `option` names the setting in the message (e.g. `--size`). Without a config nothing is checked.

    Raises:
        ValueError: one line with the estimate, the memory and the largest size that fits.
    """
    memory = physical_memory() if memory is None else memory
    if config is None or memory is None:
        return
    needed = estimate_memory(config, size, prompts)
    if needed > memory:
        raise ValueError(
            f"{option} {size} would need about {needed / _GB:,.0f} GB of memory (estimated from the model's config: "
            f"activations at that size plus its {config.get('vision_config', config).get('attention_memory_budget_mb', 256.0):g} MB "
            f"attention budget), more than this machine's {memory / _GB:.0f} GB: use {option} "
            f"{largest_size(config, memory, prompts)} or less"
        )


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "check_size",
    "estimate_memory",
    "largest_size",
    "open_image",
    "physical_memory",
    "read_model_config",
]
