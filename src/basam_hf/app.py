"""Interactive BA-SAM demo (Gradio): click points or draw a box on an image, then compare BA-SAM's mask with the
mask of the same weights with BA switched off, at an input size of your choice.

Gradio is optional (`pip install "basam-hf[demo]"`): it is imported only by [`build_demo`] and the `basam-hf demo`
command, so the prediction helpers here ([`add_click`], [`draw_prompts`], [`predict`], ...) work without it. The
prompts a user clicks are kept in pixels of the original image, which is what [`basam_hf.segment.segment_image`]
takes, so the page and the Python API give the very same mask for the same prompt and size.
"""

import argparse
import atexit
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from .constants import BA_OFF
from .constants import DEMO_MAX_FILE_SIZE as DEFAULT_MAX_FILE_SIZE
from .constants import DEMO_MAX_PIXELS as DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

POSITIVE = "object point (+)"
NEGATIVE = "background point (-)"
BOX = "box (click two corners)"
PROMPT_MODES = (POSITIVE, NEGATIVE, BOX)
# The page starts in box mode: the embedded default model's boxes beat its single clicks (README).
DEFAULT_PROMPT_MODE = BOX
# Bundled samples: (seed, (height, width)) of `basam_hf.synthetic.render_sample`, rendered at start-up (deterministic).
SAMPLE_SCENES = ((1, (320, 320)), (3, (256, 384)), (4, (384, 288)))
# Real photos among the samples when the package that ships them is installed (scikit-image, in the `train` / `dev`
# extras): test-split photos of `basam_hf.composites`, which no training run has seen.
SAMPLE_PHOTOS = ("coffee", "camera")
# BA settings the page can change; the others stay as the model has them.
UI_BA_FIELDS = ("bias_mode", "attention_scaling", "bias_slope_scale")
GRADIO_MISSING = 'The demo needs Gradio: pip install "basam-hf[demo]" (or: pip install "gradio>=5").'
# Colours (Okabe-Ito, as in `basam_hf.segment`): object points, background points, box.
POSITIVE_COLOR, NEGATIVE_COLOR, BOX_COLOR = (0, 158, 115), (213, 94, 0), (86, 180, 233)


# ---------------------------------------------------------------------------------------------------------------------
# Prompts (plain dicts, so that Gradio can keep them in a per-session `gr.State`)


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
# Images, sizes and samples


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB image from a file, upright as browsers show it (EXIF orientation applied), so that clicked pixels
    are image pixels.

    Raises:
        ValueError: with a message for the page: not an image, or more than `max_pixels` pixels (checked from the
            header, before decoding).
    """
    from .data import to_rgb

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


def write_sample_images(folder: str | os.PathLike) -> list[Path]:
    """Write the bundled samples into `folder` as PNG: the synthetic scenes [`SAMPLE_SCENES`] (deterministic), then
    the photos [`SAMPLE_PHOTOS`] where their package is installed."""
    from .synthetic import render_sample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, size in SAMPLE_SCENES:
        path = folder / f"synthetic_scene_{seed}.png"
        if not path.is_file():
            render_sample(seed, size)["image"].save(path)
        paths.append(path)
    for name in SAMPLE_PHOTOS:
        path = folder / f"photo_{name}.png"
        if not path.is_file():
            try:
                from .composites import load_photo

                Image.fromarray(load_photo(name)).save(path)
            except (ImportError, FileNotFoundError):  # scikit-image (or scipy) missing, or another version
                continue
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Models and prediction


class DemoModels:
    """The demo's model, its processor, and the same weights under other BA settings (loaded on first use, the
    last `max_variants` kept): BA off for the comparison, and whatever the page's BA settings ask for."""

    def __init__(
        self,
        name: str | os.PathLike | None = "default",
        max_variants: int = 2,
        ba_settings: Mapping[str, Any] | None = None,
        *,
        dtype=None,
        torch_dtype=None,
    ):
        """`name`: a repo id, folder, `default`, a [`basam_hf.references.ModelChoice`], or `None` for the photo model
        ([`basam_hf.references.choose_model`], as `basam-hf demo` without `--model`). `ba_settings` (BA fields, e.g.
        `{"bias_mode": "none"}`) replace the model's own: the page starts from them (`basam-hf demo --bias-mode ...`).
        `dtype` (or `torch_dtype`): `"float32"`, `"bfloat16"` or `"float16"` for the model and its variants (see
        [`basam_hf.loading.load_model_and_processor`]); default the saved dtype."""
        from .loading import load_model_and_processor
        from .references import ModelChoice, choose_model

        self.choice = name if isinstance(name, ModelChoice) else choose_model(name)
        self.name = self.choice.name
        self.model, self.processor, _ = load_model_and_processor(
            self.choice.model, ba_settings=self.choice.settings(ba_settings), dtype=dtype, torch_dtype=torch_dtype
        )
        self.vision_config = self.model.config.vision_config
        self.max_variants = max_variants
        self._variants: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def settings(self) -> dict:
        """The model's own values of the BA settings the page offers."""
        return {name: getattr(self.vision_config, name) for name in UI_BA_FIELDS}

    def bias_mode_choices(self) -> list[str]:
        """`distance` and `none`; `coefficient` only for a model that has learned coefficients (elsewhere it would
        start from the initial value, which says nothing about BA-SAM)."""
        return ["coefficient", "none"] if self.vision_config.bias_mode == "coefficient" else ["distance", "none"]

    def attention_scaling_choices(self) -> list[str]:
        own = self.vision_config.attention_scaling
        return ["log_length", "none"] + (["official"] if own == "official" else [])

    def has_fixed_slopes(self) -> bool:
        """Whether the slope scale means something: distance bias with fixed (not learned) slopes."""
        return self.vision_config.bias_mode == "distance" and not self.vision_config.learnable_slopes

    def warm_up(self, size: int) -> None:
        """One small prediction with the model and with its BA-off copy, so that the first Run's times measure the
        models rather than one-off start-up costs (and the BA-off copy is loaded before anyone waits for it)."""
        image = Image.new("RGB", (size, size), (128, 128, 128))
        prompts = add_click(empty_prompts(), size // 2, size // 2, POSITIVE)
        for model in (self.model, self.variant(**BA_OFF)):
            segment_prompts(model, self.processor, image, prompts, size)

    def variant(self, **settings) -> Any:
        """The model with `settings` (BA fields) instead of its own; the model itself when they are its own."""
        overrides = {
            name: value
            for name, value in settings.items()
            if value is not None and value != getattr(self.vision_config, name)
        }
        if not overrides:
            return self.model
        key = tuple(sorted(overrides.items()))
        with self._lock:
            if key in self._variants:
                self._variants.move_to_end(key)
                return self._variants[key]
            from .loading import ba_variant

            variant = ba_variant(self.model, **overrides)
            self._variants[key] = variant
            while len(self._variants) > self.max_variants:
                self._variants.popitem(last=False)
            return variant


@dataclass
class Prediction:
    """BA-SAM's mask and the BA-off mask for one prompt, with SAM's predicted IoUs and the seconds each took."""

    ba_mask: np.ndarray
    off_mask: np.ndarray
    ba_score: float
    off_score: float
    ba_seconds: float
    off_seconds: float
    size: int
    settings: dict

    @property
    def masks_iou(self) -> float:
        from .metrics import binary_iou

        return binary_iou(self.ba_mask, self.off_mask)


def segment_prompts(
    model, processor, image: Image.Image, prompts: Mapping[str, Any], size: int
) -> tuple[np.ndarray, float]:
    """One mask `(height, width)` bool and its predicted IoU for the prompts ([`basam_hf.segment.segment_image`])."""
    from .segment import segment_image

    if not has_prompt(prompts):
        raise ValueError("Click at least one point or draw a box on the image first.")
    masks, scores = segment_image(
        model,
        processor,
        image,
        boxes=[prompts["box"]] if prompts["box"] is not None else None,
        points=prompts["points"] or None,
        labels=prompts["labels"] or None,
        size=size,
    )
    return masks[0], float(scores[0])


def predict(
    models: DemoModels,
    image: Image.Image,
    prompts: Mapping[str, Any],
    size: int,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> Prediction:
    """BA-SAM (the model with `settings`, default its own) and the same weights with BA off, on one prompt."""
    progress = progress or (lambda fraction, message: None)
    settings = {**models.settings, **{k: v for k, v in (settings or {}).items() if v is not None}}
    if not has_prompt(prompts):
        raise ValueError("Click at least one point or draw a box on the image first.")
    progress(0.0, f"BA-SAM ({settings['bias_mode']}, {settings['attention_scaling']}) at {size} px")
    ba_model = models.variant(**settings)
    start = time.perf_counter()
    ba_mask, ba_score = segment_prompts(ba_model, models.processor, image, prompts, size)
    ba_seconds = time.perf_counter() - start
    progress(0.5, f"BA off (plain SAM) at {size} px")
    off_model = models.variant(**BA_OFF)
    start = time.perf_counter()
    off_mask, off_score = segment_prompts(off_model, models.processor, image, prompts, size)
    off_seconds = time.perf_counter() - start
    progress(1.0, "done")
    return Prediction(ba_mask, off_mask, ba_score, off_score, ba_seconds, off_seconds, size, settings)


def mask_overlay(image: Image.Image, mask: np.ndarray, prompts: Mapping[str, Any]) -> Image.Image:
    """The image with the mask blended in and the prompts drawn on top."""
    from .segment import overlay_masks

    return draw_prompts(overlay_masks(image, mask[None]), prompts)


def mask_png(mask: np.ndarray) -> Image.Image:
    """The mask as the PNG the page offers for download: mode L, 255 object, 0 background, at the image size."""
    return Image.fromarray(mask.astype(np.uint8) * 255, "L")


def results_markdown(prediction: Prediction) -> str:
    """The scores table shown under the masks."""
    settings = prediction.settings
    ba_label = f"BA-SAM ({settings['bias_mode']}, {settings['attention_scaling']})"
    ba_area, off_area = int(prediction.ba_mask.sum()), int(prediction.off_mask.sum())
    return (
        f"| at {prediction.size} px | {ba_label} | BA off (plain SAM) |\n|---|---|---|\n"
        f"| predicted IoU | {prediction.ba_score:.3f} | {prediction.off_score:.3f} |\n"
        f"| time | {prediction.ba_seconds:.2f} s | {prediction.off_seconds:.2f} s |\n"
        f"| mask area | {ba_area} px | {off_area} px |\n\n"
        f"IoU between the two masks: **{prediction.masks_iou:.3f}**"
    )


# ---------------------------------------------------------------------------------------------------------------------
# The Gradio page


def _import_gradio():
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError(GRADIO_MISSING) from error
    return gr


def _short(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _page_error(gr, message: str) -> Exception:
    """A `gr.Error` shown in the page; not printed again on the server (expected errors need no stack trace there;
    unexpected ones are logged by [`_readable_errors`])."""
    try:
        return gr.Error(message, print_exception=False)
    except TypeError:  # Gradio versions without print_exception
        return gr.Error(message)


def _readable_errors(function: Callable) -> Callable:
    """Errors as a short message in the page (`gr.Error`), never a stack trace; unexpected ones are logged in full
    on the server."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        gr = _import_gradio()
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as error:
            raise _page_error(gr, _short(error)) from None
        except MemoryError:
            raise _page_error(gr, "Out of memory: choose a smaller input size or a smaller image.") from None
        except Exception as error:
            logger.exception("demo: %s failed", function.__name__)
            raise _page_error(gr, f"{type(error).__name__}: {_short(error)}") from None

    return wrapper


def _upload_path(value: Any) -> str | None:
    """The file path of an image component's raw value (a FileData dict, an object with `.path`, or a path)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get("path")
    return str(getattr(value, "path", value))


def build_demo(
    model: str | os.PathLike = "default",
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    models: DemoModels | None = None,
    ba_settings: Mapping[str, Any] | None = None,
    dtype=None,
    torch_dtype=None,
):
    """The demo page (a `gr.Blocks`, queued, one prediction at a time) for a BA-SAM repo id, folder or `default`.

    Args:
        min_size, max_size, size: the input-size slider (longest edge; default half to twice the model's size).
        max_pixels: larger images are refused with a message.
        models: an already loaded [`DemoModels`] (else loaded from `model`, with `ba_settings`).
        ba_settings: BA fields replacing the model's own settings (the page starts from them).
        dtype: `"float32"`, `"bfloat16"` or `"float16"` (or `torch_dtype`, its alias) to load `model` in; default
            the saved dtype. Not used with `models`.

    Raises:
        ImportError: without Gradio (the message gives the pip command).
        FileNotFoundError, OSError, ValueError: when the model cannot be loaded (e.g. `default` not installed).
    """
    gr = _import_gradio()
    models = (
        models
        if models is not None
        else DemoModels(model, ba_settings=ba_settings, dtype=dtype, torch_dtype=torch_dtype)
    )
    vision = models.vision_config
    sizes = SizeRange.for_model(vision.image_size, vision.patch_size, min_size, max_size, size)
    models.warm_up(sizes.minimum)
    work_dir = Path(tempfile.mkdtemp(prefix="basam-demo-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)  # samples and mask files live as long as the page
    samples = write_sample_images(work_dir / "samples")
    masks_dir = work_dir / "masks"
    own = models.settings

    def cleared():
        return None, empty_prompts(), None, prompts_text(empty_prompts()), *_no_results()

    def new_image(value):
        path = _upload_path(value)
        if path is None:
            return cleared()
        image = read_image(path, max_pixels)
        prompts = empty_prompts()
        return image, prompts, image, prompts_text(prompts), *_no_results()

    def click(image, prompts, mode, event: gr.SelectData):
        if image is None:
            raise ValueError("Upload or pick an image first.")
        x, y = event.index[:2]
        x, y = min(max(int(x), 0), image.width - 1), min(max(int(y), 0), image.height - 1)
        prompts = add_click(prompts, x, y, mode)
        return draw_prompts(image, prompts), prompts, prompts_text(prompts)

    def undo(image, prompts):
        prompts = undo_click(prompts)
        return (draw_prompts(image, prompts) if image is not None else None), prompts, prompts_text(prompts)

    def clear(image):
        prompts = empty_prompts()
        return image, prompts, prompts_text(prompts), *_no_results()

    def run(image, prompts, input_size, bias_mode, attention_scaling, slope_scale, progress=gr.Progress()):  # noqa
        if image is None:
            raise ValueError("Upload an image or pick a sample first.")
        input_size = sizes.check(input_size)
        settings = {"bias_mode": bias_mode, "attention_scaling": attention_scaling}
        if models.has_fixed_slopes():
            settings["bias_slope_scale"] = float(slope_scale)
        result = predict(models, image, prompts, input_size, settings, lambda f, text: progress(f, desc=text))
        run_dir = _fresh_run_dir(masks_dir)
        ba_path = run_dir / f"mask_ba-sam_{input_size}px.png"
        off_path = run_dir / f"mask_ba-off_{input_size}px.png"
        mask_png(result.ba_mask).save(ba_path)
        mask_png(result.off_mask).save(off_path)
        return (
            mask_overlay(image, result.ba_mask, prompts),
            mask_overlay(image, result.off_mask, prompts),
            str(ba_path),
            str(off_path),
            results_markdown(result),
        )

    description = (
        f"Model **{models.name}** ({str(models.model.dtype).removeprefix('torch.')}): pretrained at "
        f"{vision.pretrain_image_size} px, patch {vision.patch_size}; BA: "
        f"`{own['bias_mode']}` bias, `{own['attention_scaling']}` attention scaling.\n\n"
        "Pick a sample or upload an image, click points on it (or two corners of a box), choose the input size and "
        "press **Run**: left, BA-SAM's mask; right, the mask of the same weights with BA switched off (plain SAM)."
    )
    with gr.Blocks(title="BA-SAM demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# BA-SAM: bias-mode attention for SAM at any input size")
        gr.Markdown(description)
        image_state = gr.State(None)
        prompts_state = gr.State(empty_prompts())
        # Created here, shown in the right-hand column below: the samples (left column) update them.
        ba_image = gr.Image(
            label="BA-SAM", type="pil", format="png", interactive=False, elem_id="basam-ba", render=False
        )
        off_image = gr.Image(
            label="BA off (plain SAM)", type="pil", format="png", interactive=False, elem_id="basam-off", render=False
        )
        ba_file = gr.File(label="BA-SAM mask (PNG)", interactive=False, elem_id="basam-ba-file", render=False)
        off_file = gr.File(label="BA-off mask (PNG)", interactive=False, elem_id="basam-off-file", render=False)
        scores = gr.Markdown(elem_id="basam-scores", render=False)
        with gr.Row():
            with gr.Column(scale=1):
                input_image = gr.Image(
                    label="Image: click to add prompts",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    format="png",
                    elem_id="basam-input",
                )
                mode = gr.Radio(
                    list(PROMPT_MODES), value=DEFAULT_PROMPT_MODE, label="A click adds", elem_id="basam-mode"
                )
                with gr.Row():
                    undo_button = gr.Button("Undo last", size="sm")
                    clear_button = gr.Button("Clear prompts", size="sm")
                prompt_box = gr.Textbox(
                    value=prompts_text(empty_prompts()),
                    label="Prompts sent to the model (original-image pixels)",
                    interactive=False,
                    elem_id="basam-prompts",
                )
                input_size = gr.Slider(
                    sizes.minimum,
                    sizes.maximum,
                    value=sizes.default,
                    step=sizes.step,
                    label=f"Input size (longest edge, multiple of {sizes.step}; the model was trained at "
                    f"{vision.pretrain_image_size})",
                    elem_id="basam-size",
                )
                with gr.Accordion("BA settings of the left mask", open=False):
                    bias_mode = gr.Radio(models.bias_mode_choices(), value=own["bias_mode"], label="bias mode")
                    attention_scaling = gr.Radio(
                        models.attention_scaling_choices(), value=own["attention_scaling"], label="attention scaling"
                    )
                    own_scale = float(own["bias_slope_scale"])  # --bias-slope-scale may lie outside 0.25-4
                    slope_scale = gr.Slider(
                        min(0.25, own_scale),
                        max(4.0, own_scale),
                        value=own_scale,
                        step=0.25,
                        label="slope scale (distance bias)",
                        visible=models.has_fixed_slopes(),
                    )
                run_button = gr.Button("Run", variant="primary", elem_id="basam-run")
                samples_slot = gr.Column()
            with gr.Column(scale=2):
                with gr.Row():
                    ba_image.render()
                    off_image.render()
                with gr.Row():
                    ba_file.render()
                    off_file.render()
                scores.render()

        results = [ba_image, off_image, ba_file, off_file, scores]
        image_outputs = [image_state, prompts_state, input_image, prompt_box, *results]
        with samples_slot:
            # Raw values (preprocess=False) here and on upload: the file is read by `read_image`, so bad or huge
            # files get a readable message.
            gr.Examples(
                examples=[[str(path)] for path in samples],
                inputs=[input_image],
                outputs=image_outputs,
                fn=_readable_errors(new_image),
                run_on_click=True,
                cache_examples=False,
                preprocess=False,
                label="Samples (synthetic scenes)",
                elem_id="basam-samples",
            )
        input_image.upload(_readable_errors(new_image), input_image, image_outputs, preprocess=False)
        input_image.clear(_readable_errors(cleared), None, image_outputs)
        input_image.select(
            _readable_errors(click), [image_state, prompts_state, mode], [input_image, prompts_state, prompt_box]
        )
        undo_button.click(
            _readable_errors(undo), [image_state, prompts_state], [input_image, prompts_state, prompt_box]
        )
        clear_button.click(_readable_errors(clear), image_state, [input_image, prompts_state, prompt_box, *results])
        run_button.click(
            _readable_errors(run),
            [image_state, prompts_state, input_size, bias_mode, attention_scaling, slope_scale],
            results,
        )
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def _no_results() -> tuple:
    return None, None, None, None, ""


def _fresh_run_dir(root: Path, keep_seconds: float = 3600) -> Path:
    """A new folder for one run's mask files; folders of runs older than `keep_seconds` are removed."""
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > keep_seconds:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


# ---------------------------------------------------------------------------------------------------------------------
# basam-hf demo


def run_demo_command(args: argparse.Namespace, ba_settings: Mapping[str, Any] | None = None) -> int:
    """`basam-hf demo` (its arguments: [`basam_hf.cli.add_demo_command`]; `ba_settings`: the BA options given, which
    the command line reads from `args`): build the page and serve it until interrupted. A model that cannot be loaded
    or bad sizes raise (`OSError`, `ValueError`): `basam_hf.cli.main` prints them in one line."""
    try:
        _import_gradio()
    except ImportError as error:
        print(f"basam-hf demo: error: {error}", file=sys.stderr)
        return 1
    from .cli import print_model_note
    from .loading import model_line

    # Without --model: SAM ViT-B when cached or reachable, else the embedded model with a note (as `segment`).
    models = DemoModels(args.model, ba_settings=ba_settings, dtype=getattr(args, "dtype", None))
    print_model_note(args, models.choice)
    demo = build_demo(
        min_size=args.min_size, max_size=args.max_size, size=args.size, max_pixels=args.max_pixels, models=models
    )
    print(model_line(models.name, models.vision_config, [args.size] if args.size else None), flush=True)
    print(f"Starting the BA-SAM demo of {models.name} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    # SIGTERM (service managers, the tests) ends the process like Ctrl-C, so exit handlers remove the files.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            show_error=True,
            ssr_mode=False,
            max_file_size=args.max_file_size,
            quiet=True,
        )
    except OSError as error:  # port taken, address not available
        print(f"basam-hf demo: error: {error} (choose another --port or --host)", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "BOX",
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_MAX_PIXELS",
    "NEGATIVE",
    "POSITIVE",
    "DemoModels",
    "Prediction",
    "SizeRange",
    "add_click",
    "build_demo",
    "draw_prompts",
    "empty_prompts",
    "mask_overlay",
    "mask_png",
    "predict",
    "prompts_text",
    "read_image",
    "undo_click",
    "write_sample_images",
]
