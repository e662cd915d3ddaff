"""Image processor and processor for BA-SAM at any input size, and a pure-torch non-maximum suppression.

The input size `S` is chosen per instance (`BaSamImageProcessor(size=512)`) or per call (`processor(image, size=512)`):
the longest image edge is resized to `S` and the image is padded (bottom/right) to a square whose side is `S` rounded
up to a multiple of the patch size, so any positive integer `S` works and multiples of the patch size waste nothing.
Prompts are mapped with the resize actually applied to each image, and masks are mapped back to the original image
size from the size of the masks themselves, so no setting has to be kept in sync by hand.

Imports only numpy, torch and transformers, so that `save_pretrained` ships this file as remote code.
"""

import numbers
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput, SizeDict
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorKwargs, SamImageProcessorPil
from transformers.models.sam.processing_sam import SamProcessor
from transformers.processing_utils import ProcessorMixin, Unpack

# SAM's mask decoder upsamples the image embedding 4x (two stride-2 transposed convolutions): its low-resolution masks
# are `4 * input_size / patch_size` pixels wide.
MASK_UPSCALING = 4
# Upper bound on the elements of the padded-size intermediate in `post_process_masks` (fp32: 256 MiB); larger mask
# batches are resized in chunks, which gives the same result.
_POST_PROCESS_CHUNK_ELEMENTS = 2**26


def check_size(value: Any, name: str = "size") -> int:
    """Return `value` as a positive `int`, or raise a `ValueError` naming `name`.

    Accepts an integer or a dict / `SizeDict` with the key `longest_edge` (SAM's size format).
    """
    if isinstance(value, (dict, SizeDict)):
        if value.get("longest_edge") is None or any(
            value.get(key) is not None for key in ("height", "width", "shortest_edge")
        ):
            raise ValueError(
                f"BA-SAM resizes the longest image edge: pass {name} as an int or {{'longest_edge': int}}, "
                f"got {value}."
            )
        value = value["longest_edge"]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}.")
    return int(value)


def padded_input_size(size: int, patch_size: int) -> int:
    """Side of the square model input for a longest edge of `size`: `size` rounded up to a multiple of `patch_size`."""
    return -(-size // patch_size) * patch_size


class BaSamImageProcessorKwargs(SamImageProcessorKwargs, total=False):
    r"""
    patch_size (`int`, *optional*, defaults to 16):
        Patch size of the image encoder. The images are padded to a multiple of it, and it relates the
        low-resolution masks to the input size (masks are `4 / patch_size` times the input size).
    """

    patch_size: int


class BaSamImageProcessor(SamImageProcessorPil):
    r"""
    SAM's image processor (PIL backend, no torchvision needed) for an input size chosen per instance or per call.

    `size` is the longest edge `S` in pixels (an int or `{"longest_edge": S}`); images are padded to a square of side
    `S` rounded up to a multiple of `patch_size`. `pad_size`, `mask_size` and `mask_pad_size` default to `None`,
    meaning derived from `S` at each call (masks are 4x the embedding grid); set them only to override.
    With `size=1024, patch_size=16` the outputs equal [`SamImageProcessor`]'s defaults.

    Images with a side smaller than `patch_size`, empty images and non-positive or non-integer sizes raise a
    `ValueError`. `post_process_for_mask_generation` uses torchvision's NMS when it loads, else [`batched_nms`].
    """

    valid_kwargs = BaSamImageProcessorKwargs
    patch_size = 16
    pad_size = None
    mask_size = None
    mask_pad_size = None

    def __init__(self, **kwargs: Unpack[BaSamImageProcessorKwargs]):
        _check_size_kwargs(kwargs)
        super().__init__(**kwargs)

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        **kwargs: Unpack[BaSamImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        segmentation_maps (`ImageInput`, *optional*):
            The segmentation maps to preprocess (resized to 4x the embedding grid, like the predicted masks).
        """
        # Checked before transformers' type validation, which raises a non-ValueError for e.g. `size=512.5`.
        _check_size_kwargs(kwargs)
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _standardize_kwargs(self, size=None, mask_size=None, patch_size=None, **kwargs) -> dict:
        # An int size is the longest edge, as in SAM, not a square (transformers' default reading of an int).
        if size is not None:
            size = SizeDict(longest_edge=check_size(size, "size"))
        if mask_size is not None:
            mask_size = SizeDict(longest_edge=check_size(mask_size, "mask_size"))
        kwargs = super()._standardize_kwargs(size=size, mask_size=mask_size, **kwargs)
        if patch_size is not None:
            kwargs["patch_size"] = check_size(patch_size, "patch_size")
        return kwargs

    def _preprocess_image_like_inputs(self, images, segmentation_maps, *args, **kwargs) -> BatchFeature:
        # Derived here, per call, so that a per-call `size` also moves the padding and the mask sizes.
        kwargs.update(self.derived_sizes(kwargs["size"], kwargs["patch_size"], **_pick(kwargs, _DERIVED_KEYS)))
        return super()._preprocess_image_like_inputs(images, segmentation_maps, *args, **kwargs)

    @staticmethod
    def derived_sizes(
        size: SizeDict | int,
        patch_size: int,
        pad_size: SizeDict | None = None,
        mask_size: SizeDict | None = None,
        mask_pad_size: SizeDict | None = None,
    ) -> dict[str, SizeDict]:
        """`pad_size`, `mask_size` and `mask_pad_size` for the longest edge `size`; given values are kept."""
        longest_edge = check_size(size)
        side = padded_input_size(longest_edge, patch_size)
        mask_side = side * MASK_UPSCALING // patch_size
        if pad_size is None:
            pad_size = SizeDict(height=side, width=side)
        if mask_size is None:
            # Rounded half up, as the image resize rounds its sides.
            mask_size = SizeDict(longest_edge=max(1, int(longest_edge * MASK_UPSCALING / patch_size + 0.5)))
        if mask_pad_size is None:
            mask_pad_size = SizeDict(height=mask_side, width=mask_side)
        return {"pad_size": pad_size, "mask_size": mask_size, "mask_pad_size": mask_pad_size}

    def _preprocess(self, images: list[np.ndarray], do_resize: bool, size: SizeDict, patch_size: int, **kwargs):
        for image in images:
            self._check_image_size(tuple(image.shape[-2:]), size.longest_edge if do_resize else None, patch_size)
        return super()._preprocess(images, do_resize=do_resize, size=size, **kwargs)

    def _check_image_size(self, image_size: tuple[int, int], longest_edge: int | None, patch_size: int) -> None:
        height, width = image_size
        if height == 0 or width == 0:
            raise ValueError(f"Got an empty image of size {height}x{width} (height x width).")
        if height < patch_size or width < patch_size:
            raise ValueError(
                f"Image of size {height}x{width} is smaller than one {patch_size}x{patch_size} patch; such an image "
                "carries less than one token of content. Upscale it yourself if this is intended."
            )
        if longest_edge is not None and min(self._get_preprocess_shape(image_size, longest_edge)) < 1:
            raise ValueError(
                f"Image of size {height}x{width} is too elongated for size={longest_edge}: its short side would be "
                "resized to 0 pixels. Use a larger size or crop the image."
            )

    def post_process_masks(
        self,
        masks: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
        original_sizes: Sequence[Sequence[int]] | torch.Tensor | np.ndarray,
        reshaped_input_sizes: Sequence[Sequence[int]] | torch.Tensor | np.ndarray,
        mask_threshold: float = 0.0,
        binarize: bool = True,
        pad_size: int | dict[str, int] | SizeDict | None = None,
    ) -> list[torch.Tensor]:
        """Upscale low-resolution masks to the padded input, remove the padding and resize to the original image size.

        Args:
            masks (`list[torch.Tensor]` or `torch.Tensor`):
                Per image, masks `(..., h, w)` from the mask decoder (e.g. `outputs.pred_masks`).
            original_sizes (`list[tuple[int, int]]` or `torch.Tensor`):
                `(height, width)` of each image before preprocessing.
            reshaped_input_sizes (`list[tuple[int, int]]` or `torch.Tensor`):
                `(height, width)` of each image after resizing, before padding.
            mask_threshold (`float`, *optional*, defaults to 0.0):
                Logit threshold used when binarizing.
            binarize (`bool`, *optional*, defaults to `True`):
                Whether to return boolean masks instead of logits.
            pad_size (`int` or `dict`, *optional*):
                Padded input size `(height, width)`. Defaults to the instance's `pad_size` if set, else to the size the
                masks imply (`mask size * patch_size / 4`), which is right at every input size.

        Returns:
            `list[torch.Tensor]`: per image, masks `(..., height, width)` at the original image size.
        """
        original_sizes = _size_list(original_sizes)
        reshaped_input_sizes = _size_list(reshaped_input_sizes)
        if pad_size is None:
            pad_size = self.pad_size
        if isinstance(pad_size, numbers.Integral):
            pad_size = {"height": pad_size, "width": pad_size}
        output_masks = []
        for index, (original_size, reshaped_size) in enumerate(zip(original_sizes, reshaped_input_sizes)):
            mask = masks[index]
            if isinstance(mask, np.ndarray):
                mask = torch.from_numpy(mask)
            if not isinstance(mask, torch.Tensor) or mask.ndim < 2:
                raise TypeError("Masks must be torch tensors or numpy arrays of shape (..., height, width).")
            if pad_size is None:
                padded = tuple(side * self.patch_size // MASK_UPSCALING for side in mask.shape[-2:])
            else:
                padded = (pad_size["height"], pad_size["width"])
            if reshaped_size[0] > padded[0] or reshaped_size[1] > padded[1]:
                raise ValueError(
                    f"Resized image size {tuple(reshaped_size)} exceeds the padded input size {padded}: pass the "
                    "pad_size used in preprocessing, or check the processor's patch_size."
                )
            output_masks.append(_upscale_masks(mask, padded, reshaped_size, original_size, mask_threshold, binarize))
        return output_masks

    def post_process_for_mask_generation(
        self, all_masks: list[dict], all_scores: torch.Tensor, all_boxes: torch.Tensor, crops_nms_thresh: float = 0.7
    ) -> tuple[list[np.ndarray], torch.Tensor, list[dict], torch.Tensor]:
        """Non-maximum suppression over the RLE masks kept by `filter_masks`, then decoding of the survivors.

        Returns the decoded boolean masks, their scores, their RLEs and their boxes, highest score first.
        """
        nms_function = _torchvision_batched_nms() or batched_nms
        categories = torch.zeros(all_boxes.shape[0], device=all_boxes.device)  # one category: all masks compete
        keep = nms_function(all_boxes.float(), all_scores, categories, crops_nms_thresh)
        rle_masks = [all_masks[i] for i in keep.tolist()]
        return [rle_to_mask(rle) for rle in rle_masks], all_scores[keep], rle_masks, all_boxes[keep]


class BaSamProcessor(SamProcessor):
    r"""
    [`SamProcessor`] for [`BaSamImageProcessor`]: prompts (`input_points`, `input_boxes`, in pixels of the original
    image) are mapped with the resize applied to each image in this call, so `processor(image, input_points=...,
    size=512)` gives prompts in pixels of the 512 input. `target_size` always reads the image processor's size.
    """

    def __init__(self, image_processor: BaSamImageProcessor):
        # SamProcessor.__init__ would copy the size into `target_size` once; here it is a live property.
        ProcessorMixin.__init__(self, image_processor)

    @property
    def target_size(self) -> int:
        return self.image_processor.size["longest_edge"]

    def _normalize_and_convert(
        self,
        encoding_image_processor: BatchFeature,
        original_sizes,
        input_points: list[np.ndarray] | None = None,
        input_labels: list[np.ndarray] | None = None,
        input_boxes: list[np.ndarray] | None = None,
        return_tensors: str | None = "pt",
        point_pad_value: int | None = -10,
    ) -> BatchFeature:
        original_sizes = _size_list(original_sizes)
        reshaped_sizes = _size_list(encoding_image_processor["reshaped_input_sizes"])
        point_pad_value = self.point_pad_value if point_pad_value is None else point_pad_value

        def rescaled(prompts: list[np.ndarray], is_box: bool) -> list[np.ndarray]:
            # As SamProcessor: with as many prompt groups as images they pair up, otherwise all use the first image.
            pairs = range(len(prompts)) if len(prompts) == len(original_sizes) else [0] * len(prompts)
            return [
                rescale_coordinates(prompt, original_sizes[i], reshaped_sizes[i], is_box)
                for prompt, i in zip(prompts, pairs)
            ]

        outputs = {}
        if input_points is not None:
            input_points = rescaled(input_points, is_box=False)
            if input_labels is not None and len({points.shape for points in input_points}) > 1:
                input_points, input_labels = self._pad_points_and_labels(input_points, input_labels, point_pad_value)
            outputs["input_points"] = (np.array(input_points), 4)
        if input_labels is not None:
            outputs["input_labels"] = (np.array(input_labels), 3)
        if input_boxes is not None:
            outputs["input_boxes"] = (np.array(rescaled(input_boxes, is_box=True)), 3)
        for key, (array, ndim) in outputs.items():
            if return_tensors == "pt":
                array = torch.from_numpy(array)
                # A single point batch per image when the nesting level was left out, as SamProcessor does.
                array = array if array.ndim == ndim else array.unsqueeze(1)
            encoding_image_processor[key] = array
        return encoding_image_processor


def rescale_coordinates(
    coords: np.ndarray, original_size: Sequence[int], reshaped_size: Sequence[int], is_box: bool = False
) -> np.ndarray:
    """Map `(x, y)` pixel coordinates (or `(x1, y1, x2, y2)` boxes) of an image of `original_size = (height, width)`
    to the same image resized to `reshaped_size`; padding is at the bottom/right, so it does not shift them."""
    coords = np.asarray(coords, dtype=np.float64)
    ratio = np.array([reshaped_size[1] / original_size[1], reshaped_size[0] / original_size[0]])
    if is_box:
        return (coords.reshape(*coords.shape[:-1], 2, 2) * ratio).reshape(coords.shape)
    return coords * ratio


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, a pure-torch `torchvision.ops.nms`.

    Boxes are `(x1, y1, x2, y2)`. A box is dropped when its IoU with a kept, higher-scoring box is greater than
    `iou_threshold` (an undefined IoU, e.g. between two empty boxes, drops nothing). Returns the indices of the kept
    boxes, highest score first; equal scores keep their input order.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"Expected boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}.")
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    # One iteration per kept box: cost O(kept * N) and O(N) memory, never an N x N IoU matrix.
    while order.numel() > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        top_left = torch.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = torch.minimum(boxes[best, 2:], boxes[rest, 2:])
        intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
        iou = intersection / (areas[best] + areas[rest] - intersection)
        order = rest[~(iou > iou_threshold)]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """[`nms`] within each category of `idxs` (boxes of different categories never suppress each other), a pure-torch
    `torchvision.ops.batched_nms`. Returns kept indices, highest score first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = [members[nms(boxes[members], scores[members], iou_threshold)] for members in _category_members(idxs)]
    keep = torch.cat(keep)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed COCO RLE (`{"size": [h, w], "counts": [...]}`, column-major runs starting with zeros)."""
    height, width = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T


# The settings a processor carries over to another input size: how pixels are normalised.
NORMALISATION_KEYS = ("image_mean", "image_std", "rescale_factor", "resample", "do_convert_rgb")


def normalisation_settings(image_processor) -> dict:
    """`image_processor`'s [`NORMALISATION_KEYS`] that are set."""
    settings = {key: getattr(image_processor, key, None) for key in NORMALISATION_KEYS}
    return {key: value for key, value in settings.items() if value is not None}


def processor_for_model(model_or_config: Any, size: int | None = None, **image_processor_kwargs) -> BaSamProcessor:
    """A [`BaSamProcessor`] matching a BA-SAM / SAM model or config: its patch size, and its pretraining input size
    unless `size` is given."""
    config = getattr(model_or_config, "config", model_or_config)
    vision_config = getattr(config, "vision_config", config)
    size = vision_config.image_size if size is None else size
    image_processor = BaSamImageProcessor(size=size, patch_size=vision_config.patch_size, **image_processor_kwargs)
    return BaSamProcessor(image_processor)


def save_pretrained_with_processor(
    model: Any, save_directory: str, size: int | None = None, processor: BaSamProcessor | None = None, **kwargs
) -> BaSamProcessor:
    """Save `model` and a processor for it (by default [`processor_for_model`]) to `save_directory`, so that
    `pipeline("mask-generation", model=save_directory, trust_remote_code=True)` and `AutoProcessor` find both.
    `kwargs` go to `model.save_pretrained`. The weights get the file mode of the other files (see
    [`_follow_umask`]). Returns the processor."""
    model.save_pretrained(save_directory, **kwargs)
    processor = processor if processor is not None else processor_for_model(model, size)
    processor.save_pretrained(save_directory)
    _follow_umask(save_directory)
    return processor


def _follow_umask(directory: str | os.PathLike) -> None:
    """Give the weight files of `directory` the mode a new file gets under the umask (0644 under the usual 022):
    safetensors writes them through a private temporary file, so they arrive as 0600 while the config and code files
    next to them follow the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(directory).glob("*.safetensors"):
        os.chmod(path, 0o666 & ~umask)


_DERIVED_KEYS = ("pad_size", "mask_size", "mask_pad_size")


def _pick(kwargs: dict, keys: Sequence[str]) -> dict:
    return {key: kwargs.get(key) for key in keys}


def _check_size_kwargs(kwargs: dict) -> None:
    """Validate and normalize size-like kwargs in place: ints are longest edges for `size` and `mask_size`."""
    for name in ("size", "mask_size"):
        if kwargs.get(name) is not None:
            kwargs[name] = {"longest_edge": check_size(kwargs[name], name)}
    if kwargs.get("patch_size") is not None:
        kwargs["patch_size"] = check_size(kwargs["patch_size"], "patch_size")
    for name in ("pad_size", "mask_pad_size"):
        value = kwargs.get(name)
        if isinstance(value, SizeDict):
            kwargs[name] = dict(value)
        if value is not None and not isinstance(value, (dict, SizeDict)):
            side = check_size(value, name)
            kwargs[name] = {"height": side, "width": side}


def _size_list(sizes) -> list[tuple[int, int]]:
    if isinstance(sizes, (torch.Tensor, np.ndarray)):
        sizes = sizes.tolist()
    return [(int(size[0]), int(size[1])) for size in sizes]


def _upscale_masks(
    masks: torch.Tensor,
    padded_size: tuple[int, int],
    reshaped_size: tuple[int, int],
    original_size: tuple[int, int],
    mask_threshold: float,
    binarize: bool,
) -> torch.Tensor:
    """Masks `(..., h, w)` -> `(..., *original_size)` via the padded input size, in chunks of bounded memory."""
    leading_shape = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:])
    output = torch.empty(
        (flat.shape[0], 1, *original_size), dtype=torch.bool if binarize else flat.dtype, device=flat.device
    )
    step = max(1, _POST_PROCESS_CHUNK_ELEMENTS // (padded_size[0] * padded_size[1]))
    for start in range(0, flat.shape[0], step):
        chunk = F.interpolate(flat[start : start + step], padded_size, mode="bilinear", align_corners=False)
        chunk = chunk[..., : reshaped_size[0], : reshaped_size[1]]
        chunk = F.interpolate(chunk, original_size, mode="bilinear", align_corners=False)
        output[start : start + step] = chunk > mask_threshold if binarize else chunk
    return output.reshape(*leading_shape, *original_size)


def _category_members(idxs: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(idxs == category).flatten() for category in torch.unique(idxs)]


@lru_cache(maxsize=1)
def _torchvision_batched_nms() -> Callable | None:
    """torchvision's `batched_nms` if torchvision imports and its operators load; `None` otherwise (e.g. a CUDA build
    of torchvision next to a CPU build of torch fails with "operator torchvision::nms does not exist")."""
    try:
        from torchvision.ops import batched_nms as torchvision_batched_nms  # optional, and may not load

        torchvision_batched_nms(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1), 0.5)
    except Exception:
        return None
    return torchvision_batched_nms


# Written into the auto_map of saved processors, so `trust_remote_code=True` loads these classes from the saved folder.
BaSamImageProcessor.register_for_auto_class("AutoImageProcessor")
BaSamProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "BaSamImageProcessor",
    "BaSamProcessor",
    "batched_nms",
    "nms",
    "processor_for_model",
    "save_pretrained_with_processor",
]
