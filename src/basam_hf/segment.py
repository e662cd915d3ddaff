"""Segmenting one image: from box / point prompts, or automatic mask generation, at any input size."""

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .constants import AUTOMATIC_PROMPTS_PER_BATCH, MASK_GENERATION_THRESHOLDS, POINTS_PER_SIDE
from .data import to_rgb

# Prompt coordinates go to the model in float32 whatever its dtype: SAM's prompt encoder normalises them by the input
# size and casts them to its own dtype only then. Cast before, bfloat16 would round pixel coordinates between 512 and
# 1024 to multiples of 4 (the default model in bfloat16 on 6 held-out scenes at 1024 px, box prompts: mean mask IoU
# with float32 0.998, worst scene 0.998, with float32 prompts; 0.996, worst 0.987, with bfloat16 prompts).
PROMPT_DTYPE = torch.float32

# Distinct, colour-blind-friendly overlay colours (Okabe-Ito), cycled over the masks.
OVERLAY_COLORS = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
# Prompt markers: object points, background points.
POSITIVE_COLOR = (0, 200, 70)
NEGATIVE_COLOR = (230, 30, 30)


def _coordinates(values: Sequence[float], count: int, what: str) -> list[float]:
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{what} must have {count} coordinates, got {len(values)}: {values}.")
    try:
        values = [float(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError(f"{what} has a coordinate that is not a number: {values}.") from None
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"{what} has a coordinate that is not a finite number: {values}.")
    return values


def _number(value: float) -> str:
    return f"{value:g}"


def model_inputs(inputs, model) -> dict:
    """The model's keyword arguments from a processor's output: pixels in the model's dtype, prompt coordinates in
    float32 (see `PROMPT_DTYPE`), all on the model's device; prompts the processor did not give are `None`."""
    device = model.device
    return {
        "pixel_values": inputs["pixel_values"].to(device, model.dtype),
        "input_points": inputs["input_points"].to(device, PROMPT_DTYPE) if "input_points" in inputs else None,
        "input_labels": inputs["input_labels"].to(device) if "input_labels" in inputs else None,
        "input_boxes": inputs["input_boxes"].to(device, PROMPT_DTYPE) if "input_boxes" in inputs else None,
    }


def check_prompts(
    width: int,
    height: int,
    *,
    boxes: Sequence[Sequence[float]] | None = None,
    points: Sequence[Sequence[float]] | None = None,
) -> tuple[list[list[float]] | None, list[list[float]] | None, list[str]]:
    """Prompts in pixels of a `width` x `height` image, checked: what [`segment_image`] (and so `basam-hf segment`
    and the demo) accepts.

    A box `(x1, y1, x2, y2)` needs `x2 > x1` and `y2 > y1`; a box reaching outside the image is clipped to it (the
    image spans `0..width` x `0..height`), and a note says so. A box or a point entirely outside the image means
    nothing and is refused, as are coordinates that are not finite numbers.

    Returns:
        `(boxes, points, notes)`: the boxes (clipped) and points as float lists (`None` where none were given), and
        one note per clipped box.

    Raises:
        ValueError: naming the prompt (1-based) and what is wrong with it.
    """
    notes = []
    checked_boxes = None
    if boxes:
        checked_boxes = []
        for number, box in enumerate(boxes, start=1):
            x1, y1, x2, y2 = _coordinates(box, 4, f"Box {number}")
            shown = f"Box {number} ({', '.join(map(_number, (x1, y1, x2, y2)))})"
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"{shown} is empty: a box is X1 Y1 X2 Y2 with X2 > X1 and Y2 > Y1.")
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise ValueError(f"{shown} lies entirely outside the {width}x{height} image.")
            clipped = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
            if clipped != [x1, y1, x2, y2]:
                notes.append(
                    f"{shown} reaches outside the {width}x{height} image: clipped to "
                    f"({', '.join(map(_number, clipped))})."
                )
            checked_boxes.append(clipped)
    checked_points = None
    if points:
        checked_points = []
        for number, point in enumerate(points, start=1):
            x, y = _coordinates(point, 2, f"Point {number}")
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"Point {number} ({_number(x)}, {_number(y)}) lies outside the {width}x{height} image."
                )
            checked_points.append([x, y])
    return checked_boxes, checked_points, notes


@torch.no_grad()
def segment_image(
    model,
    processor,
    image: Image.Image,
    *,
    boxes: Sequence[Sequence[float]] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks for prompts in original-image pixels: one mask per box, or one mask for all the points together.

    Args:
        boxes: `(x1, y1, x2, y2)` boxes.
        points: `(x, y)` points, with `labels` 1 (object, the default) or 0 (background).
        size: model input size (longest edge); the processor's own size by default. The model input is a square of
            `size` rounded up to a multiple of the patch size (the image resized, then padded).

    Prompts are checked by [`check_prompts`]: one that cannot mean anything raises a `ValueError`; a box reaching
    outside the image is clipped to it, with a `UserWarning`.

    Returns:
        `masks` `(n, height, width)` bool at the image size and `scores` `(n,)` (SAM's predicted IoU).
    """
    if not boxes and not points:
        raise ValueError("Give at least one box or one point.")
    if points and labels is not None and len(labels) != len(points):
        raise ValueError(f"Got {len(points)} points but {len(labels)} labels.")
    if labels is not None and any(label not in (0, 1) for label in labels):
        raise ValueError(f"Point labels are 1 (object) or 0 (background), got {list(labels)}.")
    image = to_rgb(image)
    boxes, points, notes = check_prompts(image.width, image.height, boxes=boxes, points=points)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    processor_kwargs = {}
    if boxes:
        processor_kwargs["input_boxes"] = [boxes]
    if points:
        labels = [1] * len(points) if labels is None else [int(label) for label in labels]
        # With boxes, SAM pairs one point group per box; without, all points describe one object.
        groups = len(boxes) if boxes else 1
        processor_kwargs["input_points"] = [[points] * groups]
        processor_kwargs["input_labels"] = [[labels] * groups]
    if size is not None:
        processor_kwargs["size"] = size
    inputs = processor(images=image, return_tensors="pt", **processor_kwargs)
    single_point = bool(points) and not boxes and len(points) == 1
    # One point is ambiguous: take SAM's three masks and keep the best-scored one. Masks are post-processed in float32.
    outputs = model(**model_inputs(inputs, model), multimask_output=single_point)
    masks = processor.post_process_masks(
        outputs.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0]
    scores = outputs.iou_scores[0].float().cpu()
    best = scores.argmax(dim=-1)
    index = torch.arange(masks.shape[0])
    return masks[index, best].numpy().astype(bool), scores[index, best].numpy()


def generate_masks(
    model,
    processor,
    image: Image.Image,
    *,
    size: int | None = None,
    points_per_side: int = POINTS_PER_SIDE,
    points_per_batch: int = AUTOMATIC_PROMPTS_PER_BATCH,
    **pipeline_kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic mask generation (a `points_per_side` x `points_per_side` grid of point prompts, filtered and
    de-duplicated) with transformers' `mask-generation` pipeline; `pipeline_kwargs` go to the call
    (`pred_iou_thresh`, `stability_score_thresh`, ...). The pipeline calls the grid side `points_per_crop` and
    ignores names it does not know, so the side is passed under that name here. Thresholds not given (or `None`)
    are the model's recommended ones, else the pipeline's ([`mask_generation_kwargs`]).

    The model runs in its own dtype; its outputs are converted to float32 before the pipeline upsamples, scores
    and filters them ([`float32_outputs`]). Masks the pipeline's `pred_iou_thresh` filter would drop are dropped
    before it upsamples them ([`confident_outputs`]): the result is the same, and most of the post-processing is
    saved (most of a grid's masks fail the threshold). With the batch size below, 256 grid prompts on one photo at
    1024 px took 5.9 s on 2 threads instead of the plain pipeline's 14.3 s, measured in one run.

    `points_per_batch` defaults to 16, not the pipeline's 64: the mask decoder repeats the image embedding per prompt,
    and with 64 prompts at 1024 px each activation of the default model (64 x 4,096 tokens x 64 channels) is above
    glibc's mmap threshold, so every operation maps fresh pages (256 grid prompts at 1024 px on one thread: 11 s of
    system time with 64 per batch, 2.6 s with 16, the same user time).

    Returns:
        `masks` `(n, height, width)` bool and `scores` `(n,)`, best first.
    """
    from transformers import pipeline  # transformers.pipelines imports slowly; only --automatic needs it

    image_processor = processor.image_processor
    if size is not None:
        image_processor = type(image_processor).from_dict(
            {**image_processor.to_dict(), "size": {"longest_edge": size}}
        )
    generator = pipeline("mask-generation", model=model, image_processor=image_processor, device=model.device)
    pipeline_kwargs = mask_generation_kwargs(model, **pipeline_kwargs)
    pred_iou_thresh = pipeline_kwargs["pred_iou_thresh"]
    with float32_outputs(model), confident_outputs(model, pred_iou_thresh):
        result = generator(
            to_rgb(image), points_per_crop=points_per_side, points_per_batch=points_per_batch, **pipeline_kwargs
        )
    masks = np.stack([np.asarray(mask, dtype=bool) for mask in result["masks"]]) if result["masks"] else None
    scores = np.asarray([float(score) for score in result["scores"]])
    if masks is None:
        return np.zeros((0, image.height, image.width), dtype=bool), scores
    order = np.argsort(-scores, kind="stable")
    return masks[order], scores[order]


def mask_generation_kwargs(model, **given) -> dict:
    """The pipeline arguments of automatic mask generation: `given` (`None` values left out), then the thresholds the
    model's config recommends (`BaSamConfig.mask_generation`), then the pipeline's defaults."""
    recommended = getattr(model.config, "mask_generation", None) or {}
    given = {name: value for name, value in given.items() if value is not None}
    return {**MASK_GENERATION_THRESHOLDS, **recommended, **given}


@contextmanager
def confident_outputs(model, pred_iou_thresh: float) -> Iterator[None]:
    """While active, a one-image `model(...)` call returns only the masks whose predicted IoU exceeds
    `pred_iou_thresh` (at least one, so that shapes stay non-empty), as `pred_masks` `(1, kept, 1, h, w)` and
    `iou_scores` `(1, kept, 1)`: the mask-generation pipeline upsamples every mask to the image size before its
    `filter_masks` drops those below the threshold, which then costs nothing."""

    def keep_confident(module, args, output):
        if not isinstance(output, dict) or output.get("pred_masks") is None or output["pred_masks"].shape[0] != 1:
            return output
        scores = output["iou_scores"].flatten()
        keep = torch.nonzero(scores > pred_iou_thresh).flatten()
        if keep.numel() == 0:
            keep = scores.argmax().reshape(1)  # fails the threshold in the pipeline too; keeps the shapes valid
        output["pred_masks"] = output["pred_masks"].flatten(1, 2)[:, keep, None]
        output["iou_scores"] = scores[keep].reshape(1, -1, 1)
        return output

    handle = model.register_forward_hook(keep_confident)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def float32_outputs(model) -> Iterator[None]:
    """While active, `model(...)` returns its `pred_masks` and `iou_scores` in float32, whatever the model's dtype:
    for code that post-processes them in the dtype it gets (transformers' mask-generation pipeline upsamples,
    thresholds and scores stability in it), so that a bfloat16 / float16 model's masks are post-processed as a
    float32 model's are."""

    def to_float32(module, args, output):
        for name in ("pred_masks", "iou_scores"):
            if isinstance(output, dict) and output.get(name) is not None:  # a ModelOutput (not return_dict=False)
                output[name] = output[name].float()
        return output

    handle = model.register_forward_hook(to_float32)
    try:
        yield
    finally:
        handle.remove()


def _contrasting_order(image: np.ndarray) -> list[tuple[int, int, int]]:
    """`OVERLAY_COLORS`, farthest from the image's mean colour first: the first mask stands out on golden, green or
    blue subjects alike."""
    mean = image.reshape(-1, 3).mean(axis=0)
    return sorted(OVERLAY_COLORS, key=lambda color: -float(np.abs(np.asarray(color) - mean).sum()))


def _edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_masks(image: Image.Image, masks: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with each mask blended in a colour of its own (the first one the farthest from the image's mean
    colour) and a two-tone outline inside its edge (white, then black), visible on light and dark images alike.
    Pixels outside the masks are unchanged."""
    canvas = np.asarray(to_rgb(image), dtype=np.float32).copy()
    colors = _contrasting_order(canvas)
    for index, mask in enumerate(masks):
        color = np.asarray(colors[index % len(colors)], dtype=np.float32)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * color
        edge = _edge(mask)
        canvas[edge] = 255.0
        canvas[_edge(mask & ~edge)] = 0.0
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))


def draw_prompts(
    image: Image.Image,
    boxes: Sequence[Sequence[float]] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
) -> Image.Image:
    """A copy of `image` with the prompts drawn: boxes as a two-tone outline (black, white inside), object points as
    green discs and background points as red squares, both ringed in white (a different shape, not only a different
    colour)."""
    canvas = to_rgb(image).copy()
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(0.012 * max(canvas.size)))
    line = max(1, radius // 3)
    for x1, y1, x2, y2 in boxes or ():
        draw.rectangle([x1 - line, y1 - line, x2 + line, y2 + line], outline=(0, 0, 0), width=line)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 255, 255), width=line)
    labels = [1] * len(points or ()) if labels is None else labels
    for (x, y), label in zip(points or (), labels):
        corners = [x - radius, y - radius, x + radius, y + radius]
        if label == 1:
            draw.ellipse(corners, fill=POSITIVE_COLOR, outline=(255, 255, 255), width=line)
        else:
            draw.rectangle(corners, fill=NEGATIVE_COLOR, outline=(255, 255, 255), width=line)
    return canvas


def save_masks(
    masks: np.ndarray,
    image: Image.Image,
    output_dir: str | Path,
    stem: str = "mask",
    *,
    boxes: Sequence[Sequence[float]] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
) -> list[Path]:
    """Write `stem_000.png`, `stem_001.png`, ... (0/255; at least 3 digits, so the names sort in order) and
    `overlay.png` (the masks, then the prompts, [`draw_prompts`]) into `output_dir`; return the paths written. Files
    of the same name are replaced: the command line decides first whether it may ([`basam_hf.outputs`])."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"The output {output_dir} is a file, not a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(masks) - 1)))
    paths = []
    for index, mask in enumerate(masks):
        path = output_dir / f"{stem}_{index:0{digits}d}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        paths.append(path)
    overlay = output_dir / "overlay.png"
    draw_prompts(overlay_masks(image, masks), boxes, points, labels).save(overlay)
    return paths + [overlay]
