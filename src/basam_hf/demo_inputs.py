"""What the demo page takes in, without Gradio: prompts (clicks become points or box corners, kept in pixels of the
original image as plain dicts so that Gradio can keep them in a per-session `gr.State`, shown as JSON and drawn on
the image), images (read upright, with a pixel limit) and the input sizes the page offers."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from .constants import DEMO_MAX_PIXELS
from .data import to_rgb

POSITIVE = "object point (+)"
NEGATIVE = "background point (-)"
BOX = "box (click two corners)"
PROMPT_MODES = (POSITIVE, NEGATIVE, BOX)
# The page starts in box mode: the embedded default model's boxes beat its single clicks (README).
DEFAULT_PROMPT_MODE = BOX
# Colours (Okabe-Ito, as in `basam_hf.segment`): object points, background points, box.
POSITIVE_COLOR, NEGATIVE_COLOR, BOX_COLOR = (0, 158, 115), (213, 94, 0), (86, 180, 233)


def empty_prompts() -> dict:
    """No prompt yet: `points` `[[x, y], ...]` with `labels` (1 object, 0 background), one `box`, and the first
    `corner` of a box being drawn."""
    return {"points": [], "labels": [], "box": None, "corner": None}


def add_click(prompts: Mapping[str, Any], x: float, y: float, mode: str) -> dict:
    """The prompts after a click at `(x, y)` (original-image pixels): a point, or a box corner; the second corner
    completes the box (one box at a time: a new box replaces the old one)."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"Unknown prompt mode {mode!r}; choose one of {list(PROMPT_MODES)}.")
    prompts = json.loads(json.dumps(prompts))  # a copy: Gradio states must not be changed in place
    x, y = round(float(x)), round(float(y))
    if mode == BOX:
        if prompts["corner"] is None:
            prompts["corner"] = [x, y]
        else:
            x0, y0 = prompts["corner"]
            prompts["box"] = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
            prompts["corner"] = None
    else:
        prompts["points"].append([x, y])
        prompts["labels"].append(1 if mode == POSITIVE else 0)
    return prompts


def undo_click(prompts: Mapping[str, Any]) -> dict:
    """The prompts without the latest addition: a pending box corner, else the last point, else the box."""
    prompts = json.loads(json.dumps(prompts))
    if prompts["corner"] is not None:
        prompts["corner"] = None
    elif prompts["points"]:
        prompts["points"].pop()
        prompts["labels"].pop()
    else:
        prompts["box"] = None
    return prompts


def prompts_text(prompts: Mapping[str, Any]) -> str:
    """The prompts as JSON, shown in the page: exactly what the model receives (in original-image pixels)."""
    shown = {"points": prompts["points"], "labels": prompts["labels"], "box": prompts["box"]}
    if prompts.get("corner") is not None:
        shown["box_first_corner"] = prompts["corner"]
    return json.dumps(shown)


def has_prompt(prompts: Mapping[str, Any]) -> bool:
    return bool(prompts["points"]) or prompts["box"] is not None


def draw_prompts(image: Image.Image, prompts: Mapping[str, Any]) -> Image.Image:
    """A copy of `image` with the points (green: object, orange: background) and the box drawn on it."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(0.012 * max(canvas.size)))
    line = max(2, radius // 2)
    if prompts["box"] is not None:
        draw.rectangle(prompts["box"], outline=BOX_COLOR, width=line)
    if prompts.get("corner") is not None:
        x, y = prompts["corner"]
        draw.line([x - radius, y, x + radius, y], fill=BOX_COLOR, width=line)
        draw.line([x, y - radius, x, y + radius], fill=BOX_COLOR, width=line)
    for (x, y), label in zip(prompts["points"], prompts["labels"]):
        color = POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255), width=1)
    return canvas


# ---------------------------------------------------------------------------------------------------------------------
# Images and input sizes


def read_image(path: str | os.PathLike, max_pixels: int = DEMO_MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB image from a file, upright as browsers show it (EXIF orientation applied), so that clicked pixels
    are image pixels.

    Raises:
        ValueError: with a message for the page: not an image, or more than `max_pixels` pixels (checked from the
            header, before decoding).
    """
    name = Path(path).name
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(_too_large(width, height, max_pixels))
            image = ImageOps.exif_transpose(image)  # a loaded copy, independent of the file
            return to_rgb(image).copy()
    except Image.DecompressionBombError as error:
        raise ValueError(f"{name} is too large to decode safely ({error}).") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        reason = str(error).replace(str(path), name)
        raise ValueError(
            f"Could not read {name} as an image ({reason}). Use a PNG, JPEG, WebP or TIFF file."
        ) from None


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width}x{height} = {width * height / 1e6:.1f} megapixels; this demo accepts up to "
        f"{max_pixels / 1e6:.1f} megapixels (basam-hf demo --max-pixels). Downscale it and try again."
    )


@dataclass(frozen=True)
class SizeRange:
    """Input sizes (longest edge) offered by the page: multiples of the patch size from `minimum` to `maximum`."""

    minimum: int
    maximum: int
    default: int
    step: int

    @classmethod
    def for_model(
        cls,
        image_size: int,
        patch_size: int,
        minimum: int | None = None,
        maximum: int | None = None,
        default: int | None = None,
    ) -> "SizeRange":
        """Half to twice the model's size by default (512-2048 for SAM): BA-SAM's point is sizes other than the
        pretraining one, and the largest costs about 10x the default on a CPU."""
        minimum = minimum if minimum is not None else max(patch_size, image_size // 2 // patch_size * patch_size)
        maximum = maximum if maximum is not None else 2 * image_size
        default = default if default is not None else min(max(image_size, minimum), maximum)
        for name, value in (("minimum", minimum), ("maximum", maximum), ("default", default)):
            if value <= 0 or value % patch_size:
                raise ValueError(f"The {name} input size must be a positive multiple of {patch_size}, got {value}.")
        if not minimum <= default <= maximum:
            raise ValueError(
                f"Input sizes must satisfy minimum <= default <= maximum, got {minimum}, {default}, {maximum}."
            )
        return cls(minimum, maximum, default, patch_size)

    def check(self, size: float) -> int:
        """`size` as an int, or a `ValueError` for the page (not a multiple of the patch size, out of range)."""
        if size is None or float(size) != int(size):
            raise ValueError(f"The input size must be a whole number of pixels, got {size}.")
        size = int(size)
        if size % self.step:
            raise ValueError(f"The input size must be a multiple of the patch size {self.step}, got {size}.")
        if not self.minimum <= size <= self.maximum:
            raise ValueError(f"The input size must be between {self.minimum} and {self.maximum}, got {size}.")
        return size


__all__ = [
    "BOX",
    "DEFAULT_PROMPT_MODE",
    "NEGATIVE",
    "POSITIVE",
    "PROMPT_MODES",
    "SizeRange",
    "add_click",
    "draw_prompts",
    "empty_prompts",
    "has_prompt",
    "prompts_text",
    "read_image",
    "undo_click",
]
