"""Where segmentation datasets come from: image folders (`images/` + `masks/`), Hub ids and `save_to_disk` folders
(one mask per row, or COCO-style objects), and the paper datasets' presets (COCO instances files are
[`basam_hf.data.coco`]'s). Each becomes a [`basam_hf.data.SegmentationDataset`]; the conversions are
[`basam_hf.data.codecs`]'s."""

import functools
import multiprocessing
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .coco import _is_crowd, _object_id, _object_mask, coco_objects
from .codecs import _make_sample, _open_image
from .dataset import SampleError, SegmentationDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
# Columns tried, in order, when no mask column is given (only `Image` features qualify, so a class-label column named
# `label` is never mistaken for a mask).
MASK_COLUMN_CANDIDATES = ("mask", "label", "gt", "annotation", "segmentation", "segmentation_mask")
ID_COLUMN_CANDIDATES = ("id", "image_id", "name", "file_name", "filename")


@dataclass(frozen=True)
class DatasetPreset:
    """Where a paper dataset lives on the Hub and how its columns map to image / mask / objects.

    `verified` names the facts read from the dataset's card or viewer (`"splits"`, `"columns"`); the others are
    expectations. A `default_split` of `None` means the card gives no splits: the only split is used, else `--split`
    is asked for with the splits found. Columns are checked on every load either way, and a mismatch raises an error
    that names the preset, the expected and the available columns; a `mask_column` of `None` means the card names
    none: the first `Image` column among [`MASK_COLUMN_CANDIDATES`] is used, and the error lists the columns found.
    """

    name: str
    hub_id: str
    default_split: str | None
    splits: tuple[str, ...]
    image_column: str = "image"
    mask_column: str | None = "mask"
    annotations_column: str | None = None
    id_column: str | None = None
    verified: tuple[str, ...] = ()
    license: str | None = None
    notes: str = ""


# Facts from the datasets' cards and viewer pages (checked 2026-12), see the README's dataset table.
PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset(
            "duts",
            "nobg/DUTS",
            "test",
            ("train", "test"),
            verified=("splits", "columns"),
            license="cc-by-nc-4.0",
            notes="DUTS-TR 10,553 / DUTS-TE 5,019 images (salient objects); the paper evaluates on DUTS-TE. Masks are "
            "single-channel binary; their value range (0/1 or 0/255) is not on the card (both are read).",
        ),
        DatasetPreset(
            "cod10k",
            "nobg/COD10K",
            "test",
            ("train", "test"),
            verified=("splits", "columns"),
            notes="COD10K only (CAMO and CHAMELEON removed): 3,040 train / 2,026 test camouflaged-object images, "
            "masks mode L.",
        ),
        DatasetPreset(
            "dis5k",
            "nobg/DIS5K",
            None,
            (),
            mask_column=None,
            license="apache-2.0",
            notes="The card gives no splits and no columns (it lists Document, Image and Text modalities: expect extra "
            "columns); no Hub copy with the DIS-VD / DIS-TE1..4 splits was found (the official code evaluates on "
            "DIS-TE3). An alternative with known splits and columns, for training: preset dis5k-train "
            "(unography/DIS5K-train).",
        ),
        DatasetPreset(
            "dis5k-train",
            "unography/DIS5K-train",
            "train",
            ("train",),
            verified=("splits", "columns"),
            notes="DIS5K training images only: one train split of 4,990 rows, no validation or test split.",
        ),
        DatasetPreset(
            "isic2016",
            "MedOtter/ISIC2016",
            None,
            (),
            id_column="image_id",
            verified=("columns",),
            notes="The card gives no splits (the challenge's are 900 train / 379 test); images 576 to 4,290 px wide; "
            "also has a bool in_isic2018_train. MedOtter/ISIC2017 and MedOtter/ISIC2018 have the same layout.",
        ),
        DatasetPreset(
            "isic2018",
            "surajbijjahalli/ISIC2018",
            "test",
            ("train", "validation", "test"),
            mask_column="label",
            verified=("splits", "columns"),
            notes="2,594 train / 100 validation / 1,000 test skin-lesion images; the mask is the `label` Image column "
            "(not a class label). 13.9 GB download.",
        ),
    )
}
# Presets that were removed, with what to use instead.
REMOVED_PRESETS = {
    "coco2017": "No Hub copy of COCO 2017 has both the images and per-object masks (NaiveDev/coco-2017-instance has "
    "boxes and categories only). Download the official val2017 images and annotations and use --coco-annotations "
    "annotations/instances_val2017.json --images val2017/ (Python: load_coco_dataset).",
}


def _write_sample(dataset: SegmentationDataset, root: Path, max_side: int | None, index: int) -> None:
    """Write sample `index` of `dataset` into the image folder `root` (see [`write_image_folder`])."""
    sample_id, sample = dataset.ids[index], dataset[index]
    image, mask = sample["image"], Image.fromarray(np.asarray(sample["mask"], dtype=np.uint8) * 255)
    scale = max_side / max(image.size) if max_side else 1.0
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        mask = mask.resize(size, Image.Resampling.NEAREST)
    image.save(root / "images" / f"{sample_id}.png", compress_level=1)
    # The mask last, through a temporary name: a mask on disk means the sample is complete.
    mask_file = root / "masks" / f"{sample_id}.png"
    partial = mask_file.with_suffix(".partial")  # not an image suffix: never read as a mask
    mask.save(partial, format="PNG", compress_level=1)
    os.replace(partial, mask_file)


_FORKED_WRITE: Callable[[int], None] | None = None  # what forked workers of write_image_folder call


def _forked_write(index: int) -> None:
    _FORKED_WRITE(index)


def write_image_folder(
    dataset: SegmentationDataset,
    path: str | os.PathLike,
    max_side: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> Path:
    """Write every sample of `dataset` as `path/images/<id>.png` and `path/masks/<id>.png` (L, 0/255), the image
    folder [`load_segmentation_dataset`] reads. With `max_side`, larger samples are shrunk to that longest side (image
    bilinear, mask nearest): a dataset made when read (photo composites) is then rendered once, small, and shared by
    several runs. A sample whose mask is on disk is kept, so an interrupted write resumes; returns `path`.
    `num_workers` > 0 renders in that many forked processes (Linux and macOS; a dataset reading through a closure
    does not pickle, a forked worker inherits it)."""
    global _FORKED_WRITE
    root = Path(path)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    todo = [i for i, sample_id in enumerate(dataset.ids) if not (root / "masks" / f"{sample_id}.png").is_file()]
    write = functools.partial(_write_sample, dataset, root, max_side)
    bar = tqdm(total=len(todo), desc=f"writing {root.name}", disable=not progress)
    if num_workers > 0 and len(todo) > 1:
        _FORKED_WRITE = write
        try:
            with multiprocessing.get_context("fork").Pool(num_workers) as pool:
                for _ in pool.imap_unordered(_forked_write, todo, chunksize=4):
                    bar.update()
        finally:
            _FORKED_WRITE = None
    else:
        for index in todo:
            write(index)
            bar.update()
    bar.close()
    return root


def load_segmentation_dataset(
    source: str | os.PathLike | None,
    split: str | None = None,
    *,
    preset: str | None = None,
    image_column: str | None = None,
    mask_column: str | None = None,
    annotations_column: str | None = None,
    max_samples: int | None = None,
    id_column: str | None = None,
) -> SegmentationDataset:
    """Load a segmentation dataset as one sample per object.

    Args:
        source: a Hub dataset id (`datasets.load_dataset`), a `save_to_disk` folder (`datasets.load_from_disk`), or a
            folder with `images/` and `masks/` holding files of the same stem (any image extension). With a `preset`,
            `None` means the preset's Hub id; a local folder with the preset's columns also works.
        split: split name; defaults to the preset's split, or to the only split when there is one.
        preset: a key of [`PRESETS`] giving the Hub id, default split and column mapping.
        image_column, mask_column: column names (override the preset). Without either, `image` and the first `Image`
            column among `mask`, `label`, `gt`, ... are used.
        annotations_column: a COCO-style objects column; each non-crowd object becomes a sample with its own mask.
        max_samples: keep the first `max_samples` samples (after expanding objects).
        id_column: column giving sample ids (default: the preset's, else `id` / `image_id` / `name` / ... when
            unique, else the row index).

    Raises:
        ValueError: for an unknown preset or split, a missing column (naming it and the available ones), or an
            empty image folder.
    """
    preset_info = _get_preset(preset)
    explicit_columns = {
        "--image-column": image_column,
        "--mask-column": mask_column,
        "--annotations-column": annotations_column,
        "--id-column": id_column,
    }
    if preset_info is not None:
        source = preset_info.hub_id if source is None else source
        split = preset_info.default_split if split is None else split
        if image_column is None:
            image_column = preset_info.image_column
        if mask_column is None and annotations_column is None:
            mask_column, annotations_column = preset_info.mask_column, preset_info.annotations_column
        id_column = preset_info.id_column if id_column is None else id_column
    if source is None:
        raise ValueError("Give a dataset (Hub id, save_to_disk folder or image folder) or a preset.")
    if max_samples is not None and max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}.")
    path = Path(source)
    if path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir():
        given = [option for option, value in explicit_columns.items() if value is not None]
        if given:
            raise ValueError(
                f"{source} is an image folder (images/ + masks/, ids from file stems): {given} do not apply."
            )
        dataset = _image_folder_dataset(path, max_samples)
    else:
        hf_dataset, split = _load_hf_dataset(str(source), split, path.is_dir() and _is_saved_dataset(path))
        columns = _resolve_columns(
            hf_dataset, str(source), split, preset_info, image_column, mask_column, annotations_column, id_column
        )
        dataset = _hf_segmentation_dataset(hf_dataset, columns, max_samples)
        dataset.info.update(split=split)
    dataset.info.update(source=str(source), preset=preset)
    return dataset


def _get_preset(name: str | None) -> DatasetPreset | None:
    if name is None:
        return None
    try:
        return PRESETS[name.lower()]
    except KeyError:
        if name.lower() in REMOVED_PRESETS:
            raise ValueError(f"The {name} preset was removed: {REMOVED_PRESETS[name.lower()]}") from None
        raise ValueError(f"Unknown dataset preset {name!r}; available: {', '.join(PRESETS)}.") from None


# ---------------------------------------------------------------------------------------------------------------------
# Image folders


def _image_folder_dataset(root: Path, max_samples: int | None) -> SegmentationDataset:
    images = _files_by_stem(root / "images")
    masks = _files_by_stem(root / "masks")
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {root / 'images'}.")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        warnings.warn(f"{len(orphans)} masks in {root / 'masks'} have no image and are ignored: {orphans[:5]}")
    ids = sorted(images)[:max_samples]

    def read(index: int) -> dict:
        sample_id = ids[index]
        if sample_id not in masks:
            raise SampleError(sample_id, f"no mask file masks/{sample_id}.* for images/{images[sample_id].name}")
        image = _open_image(images[sample_id], sample_id, "image")
        mask = _open_image(masks[sample_id], sample_id, "mask")
        return _make_sample(sample_id, image, mask)

    info = {"kind": "image_folder", "split": None, "image_column": "images/", "mask_column": "masks/"}
    info["num_samples"] = len(ids)
    return SegmentationDataset(ids, read, info)


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() not in IMAGE_EXTENSIONS or not file.is_file():
            continue
        if file.stem in files:
            raise ValueError(
                f"Two files with the stem {file.stem!r} in {folder}: {files[file.stem].name}, {file.name}."
            )
        files[file.stem] = file
    return files


# ---------------------------------------------------------------------------------------------------------------------
# Datasets from the Hub or save_to_disk


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _load_hf_dataset(source: str, split: str | None, saved: bool):
    import datasets  # imports slowly; only Hub and saved datasets need it

    try:
        loaded = datasets.load_from_disk(source) if saved else datasets.load_dataset(source, split=split)
    except ValueError as error:
        if split is not None and "split" in str(error).lower():
            raise ValueError(f"Dataset {source} has no split {split!r}: {error}") from error
        raise
    except Exception as error:
        raise OSError(
            f"Could not load dataset {source!r} ({type(error).__name__}: {error}). Hub ids need network access or "
            "the datasets cache; local data: a save_to_disk folder, or a folder with images/ and masks/."
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None:
            if len(names) != 1:
                raise ValueError(f"Dataset {source} has splits {names}; choose one with --split.")
            split = names[0]
        if split not in loaded:
            raise ValueError(f"Dataset {source} has no split {split!r}; available splits: {names}.")
        loaded = loaded[split]
    return loaded, split


@dataclass
class _Columns:
    image: str
    mask: str | None
    annotations: str | None
    id: str | None
    notes: list[str] = field(default_factory=list)


def _resolve_columns(
    dataset,
    source: str,
    split: str | None,
    preset: DatasetPreset | None,
    image_column: str | None,
    mask_column: str | None,
    annotations_column: str | None,
    id_column: str | None,
) -> _Columns:
    import datasets  # imports slowly; only Hub and saved datasets need it

    available = list(dataset.column_names)
    image_column = image_column or "image"
    if mask_column is not None and annotations_column is not None:
        raise ValueError("Give either a mask column or an annotations column, not both.")
    if mask_column is None and annotations_column is None:
        image_features = [
            name
            for name in MASK_COLUMN_CANDIDATES
            if name in available and name != image_column and isinstance(dataset.features[name], datasets.Image)
        ]
        if not image_features:
            raise ValueError(
                f"No mask column found in {source} (split {split}); available columns: {available}. Pass "
                "--mask-column NAME (or --annotations-column for COCO-style objects)."
            )
        mask_column = image_features[0]
    for role, name in (("image", image_column), ("mask", mask_column), ("annotations", annotations_column)):
        if name is not None and name not in available:
            unverified = " (unverified)" if preset and "columns" not in preset.verified else ""
            origin = f"preset {preset.name!r}{unverified} expects" if preset else "the"
            raise ValueError(
                f"Column {name!r} ({origin} {role} column) is not in dataset {source} (split {split}); available "
                f"columns: {available}. Pass --{role}-column NAME (`{role}_column=` in Python) to map it."
            )
    if id_column is not None and id_column not in available:
        raise ValueError(f"Id column {id_column!r} is not in dataset {source}; available columns: {available}.")
    return _Columns(image_column, mask_column, annotations_column, id_column)


def _hf_segmentation_dataset(dataset, columns: _Columns, max_samples: int | None) -> SegmentationDataset:
    import datasets  # imports slowly; only Hub and saved datasets need it

    # Decode images ourselves: errors then name the sample, and reading ids or annotations decodes nothing.
    for name in (columns.image, columns.mask):
        if name is not None and isinstance(dataset.features[name], datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    row_ids = _row_ids(dataset, columns)
    info = {
        "kind": "datasets",
        "image_column": columns.image,
        "mask_column": columns.mask,
        "annotations_column": columns.annotations,
        "id_column": columns.id,
    }
    if columns.annotations is None:
        ids = row_ids[:max_samples]

        def read(index: int) -> dict:
            row = _get_row(dataset, index, ids[index])
            image = _to_image(row[columns.image], ids[index], "image")
            return _make_sample(ids[index], image, _to_image(row[columns.mask], ids[index], "mask"))

        info["num_samples"] = len(ids)
        return SegmentationDataset(ids, read, info)

    objects: list[tuple[int, int]] = []  # (row, object index)
    ids, excluded_crowd = [], 0
    for row_index, value in enumerate(dataset[columns.annotations]):
        for object_index, obj in enumerate(coco_objects(value)):
            if _is_crowd(obj):
                excluded_crowd += 1
                continue
            objects.append((row_index, object_index))
            ids.append(f"{row_ids[row_index]}#{_object_id(obj, object_index)}")
        if max_samples is not None and len(ids) >= max_samples:
            break
    objects, ids = objects[:max_samples], ids[:max_samples]

    def read_object(index: int) -> dict:
        row_index, object_index = objects[index]
        row = _get_row(dataset, row_index, ids[index])
        image = _to_image(row[columns.image], ids[index], "image")
        obj = coco_objects(row[columns.annotations])[object_index]
        mask = _object_mask(obj, image.height, image.width, ids[index])
        return _make_sample(ids[index], image, mask)

    info.update(num_samples=len(ids), excluded_crowd_objects=excluded_crowd)
    return SegmentationDataset(ids, read_object, info)


def _get_row(dataset, index: int, sample_id: str) -> dict:
    try:
        return dataset[index]
    except Exception as error:
        raise SampleError(sample_id, f"cannot read row {index}: {type(error).__name__}: {error}") from error


def _row_ids(dataset, columns: _Columns) -> list[str]:
    """Sample ids per row: the id column, else the first unique candidate column, else the row index."""
    names = [columns.id] if columns.id else [name for name in ID_COLUMN_CANDIDATES if name in dataset.column_names]
    for name in names:
        values = [str(value) for value in dataset[name]]
        if len(set(values)) == len(values):
            return values
        if name == columns.id:
            raise ValueError(f"Id column {name!r} has duplicate values; ids must be unique.")
    return [str(index) for index in range(len(dataset))]


def _to_image(value: Any, sample_id: str, role: str) -> Image.Image | np.ndarray:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (dict, bytes, bytearray, str)):
        return _open_image(value, sample_id, role)
    if value is None:
        raise SampleError(sample_id, f"the {role} is missing (None)")
    try:
        return np.asarray(value)
    except Exception as error:
        raise SampleError(sample_id, f"cannot read the {role} ({type(value).__name__}): {error}") from error
