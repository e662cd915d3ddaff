"""COCO-style objects and COCO instances files: per-object dicts (a list of them, or a dict of per-object lists as
`datasets` stores them) with polygon or RLE segmentations, and the official layout of an instances JSON file with its
images folder, one sample per non-crowd object."""

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .codecs import _make_sample, _open_image, binarize_mask, polygons_to_mask, rle_decode
from .dataset import SampleError, SegmentationDataset

# Keys of one COCO-style object.
SEGMENTATION_KEYS = ("segmentation", "segmentations", "mask", "masks", "rle", "polygon", "polygons")
OBJECT_ID_KEYS = ("id", "ids", "annotation_id", "object_id")
CROWD_KEYS = ("iscrowd", "iscrowds", "is_crowd")


def coco_objects(value: Any) -> list[dict]:
    """The objects of an annotations value: a list of per-object dicts, or a dict of per-object lists (as `datasets`
    stores a sequence of structs)."""
    if value is None:
        return []
    if isinstance(value, dict):
        lengths = {len(v) for v in value.values() if isinstance(v, (list, tuple, np.ndarray))}
        if len(lengths) > 1:
            raise ValueError(f"Annotation lists of different lengths: { {k: len(v) for k, v in value.items()} }")
        count = lengths.pop() if lengths else 0
        return [{key: items[i] for key, items in value.items()} for i in range(count)]
    return [dict(obj) for obj in value]


def _is_crowd(obj: dict) -> bool:
    """Whether a COCO object is a crowd region (`iscrowd`): not one object, so no prompt describes it."""
    return any(bool(obj.get(key)) for key in CROWD_KEYS)


def _object_id(obj: dict, default: int) -> Any:
    """The object's own id (`id`, ...), else `default` (its position)."""
    return next((obj[key] for key in OBJECT_ID_KEYS if obj.get(key) is not None), default)


def _object_mask(obj: dict, height: int, width: int, sample_id: str) -> np.ndarray:
    key = next((key for key in SEGMENTATION_KEYS if obj.get(key) is not None), None)
    if key is None:
        raise SampleError(
            sample_id, f"the object has no segmentation (looked for {SEGMENTATION_KEYS}); keys: {list(obj)}"
        )
    segmentation = obj[key]
    if isinstance(segmentation, (list, tuple)) and not segmentation:
        raise SampleError(sample_id, f"the object's {key} is empty (a box-only annotation?)")
    try:
        if isinstance(segmentation, dict) and "counts" in segmentation:
            mask = rle_decode(segmentation)
        elif isinstance(segmentation, (Image.Image, np.ndarray)) and np.ndim(segmentation) == 2:
            mask = binarize_mask(segmentation, sample_id)
        else:
            mask = polygons_to_mask(segmentation, height, width)
    except SampleError:
        raise
    except Exception as error:
        raise SampleError(sample_id, f"cannot decode the segmentation: {type(error).__name__}: {error}") from error
    if mask.shape != (height, width):
        raise SampleError(
            sample_id, f"segmentation size {mask.shape[0]}x{mask.shape[1]} differs from image size {height}x{width}"
        )
    return mask


def load_coco_dataset(
    annotations: str | os.PathLike, images: str | os.PathLike, *, max_samples: int | None = None
) -> SegmentationDataset:
    """One sample per non-crowd object of a COCO instances file and its images folder.

    This is the official COCO layout (`annotations/instances_val2017.json` with `val2017/`) and what CVAT, Label
    Studio and Roboflow export as COCO. Every entry of the file's `annotations` becomes a sample with the mask of its
    `segmentation`: polygons, RLE with an uncompressed `counts` list, or COCO's compressed `counts` string. Samples
    are named `"{image id}#{annotation id}"` and come in the order of the file's `images`, then of its annotations.
    `iscrowd` objects are left out (a crowd region is not one object) and counted in `info["excluded_crowd_objects"]`.
    An image is `images / file_name`, else the file of that name directly in `images` (exports whose `file_name`
    keeps a folder of their own).

    A sample that cannot be used raises [`SampleError`] when read, as every source of this module does: an image
    missing from the folder or unreadable, an image of another size than the file gives, an object without a
    segmentation.

    Args:
        annotations: the COCO instances JSON file.
        images: the folder holding its images.
        max_samples: keep the first `max_samples` samples.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: not a COCO instances file (no `images` / `annotations` lists, entries without ids), or none of its
            annotated images is in the folder.
    """
    path, folder = Path(annotations), Path(images)
    if not path.is_file():
        raise FileNotFoundError(f"No COCO annotations file at {path}.")
    if not folder.is_dir():
        raise FileNotFoundError(f"No images folder at {folder}.")
    if max_samples is not None and max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}.")
    samples, excluded_crowd = _coco_samples(_read_coco_file(path), path)
    ids = [f"{entry['id']}#{_object_id(obj, index)}" for index, (entry, obj) in enumerate(samples)]
    samples, ids = samples[:max_samples], ids[:max_samples]
    files, missing = _coco_image_files([entry for entry, _ in samples], folder, path.name)

    def read(index: int) -> dict:
        sample_id, (entry, obj) = ids[index], samples[index]
        file = files[entry["id"]]
        if file is None:
            raise SampleError(sample_id, f"image {entry['file_name']} of {path.name} is not in {folder}")
        image = _open_image(file, sample_id, "image")
        listed = (entry.get("height"), entry.get("width"))
        if None not in listed and tuple(map(int, listed)) != (image.height, image.width):
            raise SampleError(
                sample_id,
                f"the image is {image.height}x{image.width} but {path.name} gives {listed[0]}x{listed[1]} (height x "
                "width)",
            )
        return _make_sample(sample_id, image, _object_mask(obj, image.height, image.width, sample_id))

    info = {
        "kind": "coco",
        "source": str(path),
        "split": None,
        "images": str(folder),
        "num_samples": len(ids),
        "excluded_crowd_objects": excluded_crowd,
        "missing_images": len(missing),
    }
    return SegmentationDataset(ids, read, info)


def _read_coco_file(path: Path) -> dict:
    """The content of a COCO instances file, which must hold `images` and `annotations` lists."""
    try:
        content = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not a JSON file ({error}).") from error
    if not isinstance(content, dict) or not all(
        isinstance(content.get(key), list) for key in ("images", "annotations")
    ):
        found = sorted(content) if isinstance(content, dict) else f"a JSON {type(content).__name__}"
        raise ValueError(
            f"{path} is not a COCO instances file: it needs 'images' and 'annotations' lists; found {found}."
        )
    return content


def _coco_samples(content: dict, path: Path) -> tuple[list[tuple[dict, dict]], int]:
    """The `(image entry, object)` pairs of the non-crowd objects, in the order of the file's images then of its
    annotations, and how many crowd objects were left out. Annotations of no listed image are ignored, with a warning."""
    entries = {}
    for entry in content["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise ValueError(f"{path}: an entry of 'images' has no 'id' or 'file_name': {str(entry)[:120]}")
        entries[entry["id"]] = entry
    objects: dict[Any, list[dict]] = {image_id: [] for image_id in entries}
    excluded_crowd, orphans = 0, 0
    for obj in content["annotations"]:
        if not isinstance(obj, dict) or obj.get("image_id") not in objects:
            orphans += 1
        elif _is_crowd(obj):
            excluded_crowd += 1
        else:
            objects[obj["image_id"]].append(obj)
    if orphans:
        warnings.warn(f"{orphans} annotations in {path} belong to no image of its 'images' list and are ignored.")
    samples = [(entries[image_id], obj) for image_id, image_objects in objects.items() for obj in image_objects]
    if not samples:
        raise ValueError(
            f"{path} has no object to use: {len(content['annotations'])} annotations, {excluded_crowd} of them crowd "
            "regions (left out)."
        )
    return samples, excluded_crowd


def _coco_image_files(entries: list[dict], folder: Path, source: str) -> tuple[dict[Any, Path | None], list[str]]:
    """The file of each image entry by image id (None when the folder lacks it) and the names of the missing ones;
    warns of missing images, and raises when all are missing (the wrong folder). `source` names the file."""
    names = {entry["id"]: str(entry["file_name"]) for entry in entries}
    files = {image_id: _locate_image(folder, name) for image_id, name in names.items()}
    missing = sorted(names[image_id] for image_id, file in files.items() if file is None)
    if files and len(missing) == len(files):
        raise ValueError(
            f"None of the {len(files)} annotated images of {source} is in {folder} (e.g. {missing[0]}): give the "
            "folder that holds them (--images)."
        )
    if missing:
        warnings.warn(
            f"{len(missing)} images of {source} are not in {folder}; their objects are skipped: {missing[:5]}"
        )
    return files, missing


def _locate_image(folder: Path, file_name: str) -> Path | None:
    """`folder / file_name`, else the file of that name directly in `folder` (exports whose `file_name` keeps a folder
    of their own); None if neither exists."""
    for candidate in (folder / file_name, folder / Path(file_name).name):
        if candidate.is_file():
            return candidate
    return None
