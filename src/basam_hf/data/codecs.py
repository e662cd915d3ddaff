"""Decoding what datasets store: images of any mode to 8-bit RGB, masks to booleans, COCO RLE (uncompressed counts
and the compressed string) and polygons, without pycocotools; image files opened, and samples made, with errors that
name the sample. The rules are in [`basam_hf.data`]'s docstring."""

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..processing_basam import rle_to_mask
from .dataset import SampleError

# ---------------------------------------------------------------------------------------------------------------------
# Image and mask conversion


def to_rgb(image: Image.Image | np.ndarray, sample_id: str = "?") -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image of any mode or an HxW / HxWxC array (see the module docstring)."""
    if isinstance(image, np.ndarray):
        return Image.fromarray(_array_to_rgb(image, sample_id, wide_int_is_16bit=False))
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_black(image.convert("RGBA"))
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_array_to_rgb(np.asarray(image), sample_id, wide_int_is_16bit=True))
    return image.convert("RGB")


def _composite_on_black(image: Image.Image) -> Image.Image:
    black = Image.new("RGBA", image.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, image).convert("RGB")


def _array_to_rgb(array: np.ndarray, sample_id: str, wide_int_is_16bit: bool = False) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first arrays
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise SampleError(sample_id, f"cannot read an image array of shape {array.shape}")
    array = _to_uint8(array, wide_int_is_16bit)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        alpha = array[..., 3:].astype(np.uint32)
        return ((array[..., :3].astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)  # on black, rounded
    return array


def _to_uint8(array: np.ndarray, wide_int_is_16bit: bool) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        return np.clip(np.rint(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8)
    is_16bit = wide_int_is_16bit or array.dtype in (np.uint16, np.int16) or (array.size and array.max() > 255)
    if not is_16bit:
        return np.clip(array, 0, 255).astype(np.uint8)  # 8-bit values stored in a wider integer array
    # 16-bit data: I;16 images, uint16 arrays, PIL's 32-bit "I" mode (16-bit PNGs may load as "I"), rounded.
    return ((np.clip(array.astype(np.int64), 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)


def binarize_mask(mask: Image.Image | np.ndarray, sample_id: str = "?") -> np.ndarray:
    """A boolean HxW object mask from a mask image or array (rule in the module docstring)."""
    if isinstance(mask, Image.Image):
        if mask.mode == "1":
            return np.asarray(mask, dtype=bool)
        if mask.mode == "P":
            return np.asarray(mask) > 0  # palette indices are labels, not intensities
        if mask.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "RGBX"):
            mask = mask.convert("L")
        array = np.asarray(mask)
    else:
        array = np.asarray(mask)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            array = np.asarray(Image.fromarray(_array_to_rgb(array, sample_id)).convert("L"))
        elif array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise SampleError(sample_id, f"a mask must be one channel (height x width), got shape {array.shape}")
    if array.dtype == bool:
        return array.copy()
    if array.size and array.min() >= 0 and array.max() <= 1 and np.all((array == 0) | (array == 1)):
        return array == 1  # 0/1 label masks of any type
    if np.issubdtype(array.dtype, np.floating):
        return array > (0.5 if array.size and np.nanmax(array) <= 1.0 else 127.5)
    if array.dtype == np.uint8 or array.dtype == np.int8:
        return array > 127
    if (isinstance(mask, Image.Image) and mask.mode.startswith("I")) or array.dtype in (np.uint16, np.int16):
        return array > 32767
    return array > (32767 if array.max() > 255 else 127)  # wider integers: 16-bit data if above 8-bit range


def rle_decode(rle: dict) -> np.ndarray:
    """Decode a COCO RLE `{"size": [height, width], "counts": ...}`: counts as a list of run lengths (uncompressed)
    or as COCO's compressed string / bytes. Runs are column-major and start with background."""
    height, width = (int(side) for side in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes, bytearray)):
        counts = rle_string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE run lengths sum to {counts.sum()}, expected {height}x{width} = {height * width}")
    return rle_to_mask({"size": (height, width), "counts": counts})


def rle_string_to_counts(encoded: str | bytes) -> list[int]:
    """Run lengths of COCO's compressed RLE string: each count is a variable-length signed number in 5-bit groups
    (characters offset by 48, bit 0x20 = more groups follow, 0x10 of the last group = sign), and counts after the
    second are stored as differences from the count two places earlier."""
    data = encoded.encode("ascii") if isinstance(encoded, str) else bytes(encoded)
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            group = data[position] - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # negative: sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def polygons_to_mask(polygons: Any, height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (`[[x1, y1, x2, y2, ...], ...]` or one flat list) in pixel coordinates, where pixel
    (col, row) covers [col, col+1) x [row, row+1): a pixel is inside a polygon when its centre is (even-odd rule;
    a centre on a left edge is inside, on a right edge outside), and in the object when inside any of its polygons."""
    polygons = list(polygons)
    if polygons and np.isscalar(polygons[0]):
        polygons = [polygons]
    mask = np.zeros((height, width), dtype=bool)
    centres_x = np.arange(width) + 0.5
    for polygon in polygons:
        vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(vertices) < 3:
            continue
        start, stop = vertices, np.roll(vertices, -1, axis=0)
        rows = range(max(0, int(np.floor(vertices[:, 1].min()))), min(height, int(np.ceil(vertices[:, 1].max())) + 1))
        for row in rows:
            centre_y = row + 0.5
            # Edges crossing this row's centre line (half-open in y, so a vertex on the line counts once).
            crossing = (start[:, 1] <= centre_y) != (stop[:, 1] <= centre_y)
            if not crossing.any():
                continue
            a, b = start[crossing], stop[crossing]
            xs = np.sort(a[:, 0] + (centre_y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1]))
            mask[row] |= np.searchsorted(xs, centres_x, side="right") % 2 == 1
    return mask


# ---------------------------------------------------------------------------------------------------------------------
# Image files and samples


def _open_image(location: Path | dict | bytes, sample_id: str, role: str) -> Image.Image:
    """Open and fully decode an image file, `datasets` image dict (`bytes` / `path`) or raw bytes."""
    try:
        if isinstance(location, dict):
            location = location.get("bytes") or location.get("path")
        if isinstance(location, (bytes, bytearray)):
            image = Image.open(io.BytesIO(location))
        elif location is None:
            raise ValueError("no image data (neither bytes nor path)")
        else:
            image = Image.open(location)
        image.load()  # decode now, so a truncated file fails here and not later
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise SampleError(sample_id, f"cannot read the {role}: {type(error).__name__}: {error}") from error
    return image


def _make_sample(sample_id: str, image: Image.Image | np.ndarray, mask: Image.Image | np.ndarray) -> dict:
    """The sample `{"id", "image": RGB PIL image, "mask": bool array}` of an image and a mask of the same size."""
    rgb = to_rgb(image, sample_id)
    binary = mask if isinstance(mask, np.ndarray) and mask.dtype == bool else binarize_mask(mask, sample_id)
    if binary.shape != (rgb.height, rgb.width):
        raise SampleError(
            sample_id,
            f"mask size {binary.shape[0]}x{binary.shape[1]} differs from image size {rgb.height}x{rgb.width} "
            "(height x width)",
        )
    return {"id": sample_id, "image": rgb, "mask": binary}
