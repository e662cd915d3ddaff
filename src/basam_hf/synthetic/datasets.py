"""Datasets and folders of synthetic samples: `datasets.Dataset`s of PNGs, on disk or in memory, segmentation datasets
rendered when read, and image folders."""

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..data import SegmentationDataset, write_image_folder
from .render import _parse_size, render_sample, sample_id

if TYPE_CHECKING:
    import datasets

_DATASET_SEED_STRIDE = 1_000_003  # sample i of a dataset with seed s uses seed s * stride + i


def dataset_seeds(num_samples: int, seed: int = 0) -> list[int]:
    """Sample seeds of a dataset: `seed * 1_000_003 + i`, so datasets with different seeds share no sample."""
    if num_samples < 0 or num_samples > _DATASET_SEED_STRIDE:
        raise ValueError(f"num_samples must be in [0, {_DATASET_SEED_STRIDE}], got {num_samples}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    return [seed * _DATASET_SEED_STRIDE + i for i in range(num_samples)]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: noisy images barely compress anyway
    return buffer.getvalue()


_CHUNK_SAMPLES = 1024  # samples per Arrow table of make_synthetic_dataset


def make_synthetic_dataset(
    num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "datasets.Dataset":
    """A `datasets.Dataset` with features `image`, `mask` (`datasets.Image`, PNG) and `id` (string).

    `knobs` go to `render_sample` (`clutter`, `occluders`, `noise`, `blur`). The PNGs are held in memory (about
    0.15 MB per 256 px sample).
    """
    import datasets  # imported here: rendering does not need it, and it is slow to import

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "id": datasets.Value("string")})
    seeds = dataset_seeds(num_samples, seed)
    # In chunks: one Arrow binary array holds at most 2 GiB (4,000 samples at 512 px are more).
    chunks = []
    for start in range(0, max(len(seeds), 1), _CHUNK_SAMPLES):
        columns: dict[str, list] = {"image": [], "mask": [], "id": []}
        for sample_seed in seeds[start : start + _CHUNK_SAMPLES]:
            sample = render_sample(sample_seed, size, **knobs)
            columns["image"].append({"bytes": _png_bytes(sample["image"]), "path": None})
            columns["mask"].append({"bytes": _png_bytes(sample["mask"]), "path": None})
            columns["id"].append(sample["id"])
        chunks.append(datasets.Dataset.from_dict(columns, features=features))
    return chunks[0] if len(chunks) == 1 else datasets.concatenate_datasets(chunks)


def save_synthetic_dataset(
    path: str | Path, num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "datasets.Dataset":
    """`make_synthetic_dataset(...)` saved with `save_to_disk(path)`; returns the dataset."""
    dataset = make_synthetic_dataset(num_samples, size, seed, **knobs)
    dataset.save_to_disk(str(path))
    return dataset


def synthetic_segmentation_dataset(
    num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "SegmentationDataset":
    """The samples of `make_synthetic_dataset(...)` as a [`basam_hf.data.SegmentationDataset`], rendered when read
    (nothing is encoded or stored): for evaluating at many sizes without writing a dataset per size."""
    seeds = dataset_seeds(num_samples, seed)

    def read(index: int) -> dict:
        sample = render_sample(seeds[index], size, **knobs)
        return {"id": sample["id"], "image": sample["image"], "mask": np.asarray(sample["mask"]) > 127}

    info = {"source": f"synthetic(seed={seed})", "split": None, "size": list(_parse_size(size)), "knobs": knobs}
    # Every scene has an object of at least 3 % of the image: for training's sample check.
    info.update(nonempty_masks=True, min_image_side=min(_parse_size(size)))
    return SegmentationDataset([sample_id(s) for s in seeds], read, info)


def write_synthetic_image_folder(
    path: str | Path, num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> Path:
    """Write `path/images/<id>.png` (RGB) and `path/masks/<id>.png` (L, 0/255); returns `path`."""
    return write_image_folder(synthetic_segmentation_dataset(num_samples, size, seed, **knobs), path, progress=False)
