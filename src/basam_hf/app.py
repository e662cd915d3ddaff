"""Interactive BA-SAM demo (Gradio): click points or draw a box on an image, then compare BA-SAM's mask with the
mask of the same weights with BA switched off, at an input size of your choice.

Gradio is optional (`pip install "basam-hf[demo]"`): it is imported only by [`build_demo`] and the `basam-hf demo`
command, so the prediction functions here ([`predict`], [`mask_overlay`], ...) and the page's inputs
([`basam_hf.demo_inputs`]: prompts, images, sizes; importable from here too) work without it. The prompts a user
clicks are kept in pixels of the original image, which is what [`basam_hf.segment.segment_image`] takes, so the page
and the Python API give the very same mask for the same prompt and size.

The page is built in named pieces: [`build_demo`] loads the models and calls `_layout` (the components) and
`_connect_events` (each event to a method of [`DemoHandlers`], which hold what the events do).
"""

import argparse
import atexit
import functools
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
from PIL import Image

from .constants import BA_OFF
from .constants import DEMO_MAX_FILE_SIZE as DEFAULT_MAX_FILE_SIZE
from .constants import DEMO_MAX_PIXELS as DEFAULT_MAX_PIXELS
from .demo_inputs import (
    BOX,
    DEFAULT_PROMPT_MODE,
    NEGATIVE,
    NEGATIVE_COLOR,
    POSITIVE,
    POSITIVE_COLOR,
    PROMPT_MODES,
    SizeRange,
    add_click,
    draw_prompts,
    empty_prompts,
    has_prompt,
    prompts_text,
    read_image,
    undo_click,
)
from .loading import ba_variant, load_model_and_processor, model_line
from .metrics import binary_iou
from .references import ModelChoice, choose_model, print_model_note
from .segment import overlay_masks, segment_image
from .synthetic import render_sample

logger = logging.getLogger(__name__)

# Bundled samples: (seed, (height, width)) of `basam_hf.synthetic.render_sample`, rendered at start-up (deterministic).
SAMPLE_SCENES = ((1, (320, 320)), (3, (256, 384)), (4, (384, 288)))
# Real photos among the samples when the package that ships them is installed (scikit-image, in the `train` / `dev`
# extras): test-split photos of `basam_hf.composites`, which no training run has seen.
SAMPLE_PHOTOS = ("coffee", "camera")
# BA settings the page can change; the others stay as the model has them.
UI_BA_FIELDS = ("bias_mode", "attention_scaling", "bias_slope_scale")
GRADIO_MISSING = 'The demo needs Gradio: pip install "basam-hf[demo]" (or: pip install "gradio>=5").'

# ---------------------------------------------------------------------------------------------------------------------
# Samples


def write_sample_images(folder: str | os.PathLike) -> list[Path]:
    """Write the bundled samples into `folder` as PNG: the synthetic scenes [`SAMPLE_SCENES`] (deterministic), then
    the photos [`SAMPLE_PHOTOS`] where their package is installed."""
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
        return binary_iou(self.ba_mask, self.off_mask)


def segment_prompts(
    model, processor, image: Image.Image, prompts: Mapping[str, Any], size: int
) -> tuple[np.ndarray, float]:
    """One mask `(height, width)` bool and its predicted IoU for the prompts ([`basam_hf.segment.segment_image`])."""
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
        import gradio as gr  # optional: basam-hf[demo]
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
    if models is None:
        models = DemoModels(model, ba_settings=ba_settings, dtype=dtype, torch_dtype=torch_dtype)
    vision = models.vision_config
    sizes = SizeRange.for_model(vision.image_size, vision.patch_size, min_size, max_size, size)
    models.warm_up(sizes.minimum)
    work_dir = Path(tempfile.mkdtemp(prefix="basam-demo-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)  # samples and mask files live as long as the page
    samples = write_sample_images(work_dir / "samples")
    handlers = DemoHandlers(models, sizes, max_pixels, work_dir / "masks")
    with gr.Blocks(title="BA-SAM demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# BA-SAM: bias-mode attention for SAM at any input size")
        gr.Markdown(_description(models))
        page = _layout(gr, models, sizes)
        _connect_events(gr, page, handlers, samples)
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def _description(models: DemoModels) -> str:
    vision, own = models.vision_config, models.settings
    return (
        f"Model **{models.name}** ({str(models.model.dtype).removeprefix('torch.')}): pretrained at "
        f"{vision.pretrain_image_size} px, patch {vision.patch_size}; BA: "
        f"`{own['bias_mode']}` bias, `{own['attention_scaling']}` attention scaling.\n\n"
        "Pick a sample or upload an image, click points on it (or two corners of a box), choose the input size and "
        "press **Run**: left, BA-SAM's mask; right, the mask of the same weights with BA switched off (plain SAM)."
    )


# ---------------------------------------------------------------------------------------------------------------------
# The page's event handlers: plain functions of the components' values (Gradio adapters in `_connect_events`)


def _no_results() -> tuple:
    return None, None, None, None, ""


@dataclass
class DemoHandlers:
    """What the page's events do, with the models, the size range, the image limit and where mask files go."""

    models: DemoModels
    sizes: SizeRange
    max_pixels: int
    masks_dir: Path

    def cleared(self) -> tuple:
        """No image: empty state, prompts and results."""
        return None, empty_prompts(), None, prompts_text(empty_prompts()), *_no_results()

    def new_image(self, value) -> tuple:
        """An uploaded or sample image (a raw component value): read with its limits, prompts and results reset."""
        path = _upload_path(value)
        if path is None:
            return self.cleared()
        image = read_image(path, self.max_pixels)
        prompts = empty_prompts()
        return image, prompts, image, prompts_text(prompts), *_no_results()

    def click(self, image, prompts, mode: str, index) -> tuple:
        """A click at `index` (pixel `(x, y)` of the shown image) adds a point or a box corner."""
        if image is None:
            raise ValueError("Upload or pick an image first.")
        x, y = index[:2]
        x, y = min(max(int(x), 0), image.width - 1), min(max(int(y), 0), image.height - 1)
        prompts = add_click(prompts, x, y, mode)
        return draw_prompts(image, prompts), prompts, prompts_text(prompts)

    def undo(self, image, prompts) -> tuple:
        prompts = undo_click(prompts)
        return (draw_prompts(image, prompts) if image is not None else None), prompts, prompts_text(prompts)

    def clear(self, image) -> tuple:
        prompts = empty_prompts()
        return image, prompts, prompts_text(prompts), *_no_results()

    def run(self, image, prompts, input_size, bias_mode, attention_scaling, slope_scale, progress=None) -> tuple:
        """BA-SAM's and the BA-off mask for the prompts: overlays, PNG files and the scores table."""
        if image is None:
            raise ValueError("Upload an image or pick a sample first.")
        input_size = self.sizes.check(input_size)
        settings = {"bias_mode": bias_mode, "attention_scaling": attention_scaling}
        if self.models.has_fixed_slopes():
            settings["bias_slope_scale"] = float(slope_scale)
        result = predict(self.models, image, prompts, input_size, settings, progress)
        run_dir = _fresh_run_dir(self.masks_dir)
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


# ---------------------------------------------------------------------------------------------------------------------
# The page's layout


@dataclass
class _Page:
    """The components the events read and write."""

    image_state: Any
    prompts_state: Any
    input_image: Any
    mode: Any
    undo_button: Any
    clear_button: Any
    prompt_box: Any
    input_size: Any
    ba_controls: list
    run_button: Any
    samples_slot: Any
    results: list  # BA-SAM overlay, BA-off overlay, their PNG files, the scores table


def _result_components(gr) -> list:
    """The results, created unrendered: they are shown in the right-hand column, but the samples (left) update
    them."""
    image = functools.partial(gr.Image, type="pil", format="png", interactive=False, render=False)
    return [
        image(label="BA-SAM", elem_id="basam-ba"),
        image(label="BA off (plain SAM)", elem_id="basam-off"),
        gr.File(label="BA-SAM mask (PNG)", interactive=False, elem_id="basam-ba-file", render=False),
        gr.File(label="BA-off mask (PNG)", interactive=False, elem_id="basam-off-file", render=False),
        gr.Markdown(elem_id="basam-scores", render=False),
    ]


def _ba_controls(gr, models: DemoModels) -> list:
    """Bias mode, attention scaling and slope scale of the left mask, starting from the model's own."""
    own = models.settings
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
    return [bias_mode, attention_scaling, slope_scale]


def _layout(gr, models: DemoModels, sizes: SizeRange) -> _Page:
    """Left: the image, prompt controls, input size, BA settings, Run and the samples; right: the results."""
    state = (gr.State(None), gr.State(empty_prompts()))  # the image and its prompts, per session
    results = _result_components(gr)
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
            mode = gr.Radio(list(PROMPT_MODES), value=DEFAULT_PROMPT_MODE, label="A click adds", elem_id="basam-mode")
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
                f"{models.vision_config.pretrain_image_size})",
                elem_id="basam-size",
            )
            ba_controls = _ba_controls(gr, models)
            run_button = gr.Button("Run", variant="primary", elem_id="basam-run")
            samples_slot = gr.Column()
        with gr.Column(scale=2):
            for row in (results[:2], results[2:4]):
                with gr.Row():
                    for component in row:
                        component.render()
            results[4].render()
    controls = (input_image, mode, undo_button, clear_button, prompt_box, input_size, ba_controls, run_button)
    return _Page(*state, *controls, samples_slot, results)


# ---------------------------------------------------------------------------------------------------------------------
# Events


def _connect_events(gr, page: _Page, handlers: DemoHandlers, samples: list[Path]) -> None:
    """Each event calls its handler, errors shown as a short message in the page ([`_readable_errors`])."""

    # Gradio passes the click position and a progress tracker to parameters annotated / defaulted like these.
    def click(image, prompts, mode, event: gr.SelectData):
        return handlers.click(image, prompts, mode, event.index)

    def run(image, prompts, input_size, bias_mode, attention_scaling, slope_scale, progress=gr.Progress()):  # noqa
        report = lambda fraction, text: progress(fraction, desc=text)  # noqa: E731
        return handlers.run(image, prompts, input_size, bias_mode, attention_scaling, slope_scale, report)

    image_outputs = [page.image_state, page.prompts_state, page.input_image, page.prompt_box, *page.results]
    prompt_outputs = [page.input_image, page.prompts_state, page.prompt_box]
    with page.samples_slot:
        # Raw values (preprocess=False) here and on upload: the file is read by `read_image`, so bad or huge
        # files get a readable message.
        gr.Examples(
            examples=[[str(path)] for path in samples],
            inputs=[page.input_image],
            outputs=image_outputs,
            fn=_readable_errors(handlers.new_image),
            run_on_click=True,
            cache_examples=False,
            preprocess=False,
            label="Samples (synthetic scenes)",
            elem_id="basam-samples",
        )
    page.input_image.upload(_readable_errors(handlers.new_image), page.input_image, image_outputs, preprocess=False)
    page.input_image.clear(_readable_errors(handlers.cleared), None, image_outputs)
    page.input_image.select(_readable_errors(click), [page.image_state, page.prompts_state, page.mode], prompt_outputs)
    page.undo_button.click(_readable_errors(handlers.undo), [page.image_state, page.prompts_state], prompt_outputs)
    page.clear_button.click(_readable_errors(handlers.clear), page.image_state, [*prompt_outputs, *page.results])
    page.run_button.click(
        _readable_errors(run),
        [page.image_state, page.prompts_state, page.input_size, *page.ba_controls],
        page.results,
    )


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
    # Without --model: SAM ViT-B when cached or reachable, else the embedded model with a note (as `segment`).
    models = DemoModels(args.model, ba_settings=ba_settings, dtype=getattr(args, "dtype", None))
    print_model_note("demo", models.choice)
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
    "NEGATIVE_COLOR",
    "POSITIVE",
    "POSITIVE_COLOR",
    "DemoHandlers",
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
