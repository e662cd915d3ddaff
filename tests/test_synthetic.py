"""Synthetic segmentation data: determinism, one object of bounded size, resolution independence, dataset layouts."""

import random
from collections import deque

import datasets
import numpy as np
import pytest
from PIL import Image

import basam_hf.synthetic.datasets as synthetic_datasets
from basam_hf.synthetic import (
    MAX_OBJECT_AREA,
    MIN_OBJECT_AREA,
    dataset_seeds,
    make_synthetic_dataset,
    render_sample,
    sample_id,
    save_synthetic_dataset,
    write_synthetic_image_folder,
)
from basam_hf.synthetic.checks import _count_regions


def as_bool(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) > 127


def downsampled(mask: Image.Image, factor: int) -> np.ndarray:
    """Majority vote over `factor x factor` blocks."""
    values = np.asarray(mask, np.float32) / 255.0
    height, width = values.shape
    return values.reshape(height // factor, factor, width // factor, factor).mean((1, 3)) >= 0.5


def flood_fill_regions(mask: np.ndarray) -> int:
    """8-connected regions by breadth-first search: the slow reference for `_count_regions`."""
    seen = np.zeros_like(mask)
    regions = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        regions += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return regions


def test_sample_types_and_values():
    sample = render_sample(0, 64)
    assert sample["image"].mode == "RGB" and sample["image"].size == (64, 64)
    assert sample["mask"].mode == "L" and sample["mask"].size == (64, 64)
    assert set(np.unique(np.asarray(sample["mask"]))) == {0, 255}
    assert sample["id"] == sample_id(0) == "syn-00000000"


def test_same_seed_same_bytes_and_different_seeds_differ():
    first, again, other = render_sample(3, 96), render_sample(3, 96), render_sample(4, 96)
    assert first["image"].tobytes() == again["image"].tobytes()
    assert first["mask"].tobytes() == again["mask"].tobytes()
    assert first["image"].tobytes() != other["image"].tobytes()
    assert first["mask"].tobytes() != other["mask"].tobytes()


def test_global_random_state_is_untouched():
    np.random.seed(123)
    random.seed(123)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    render_sample(5, 64)
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_count_regions_matches_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(300):
        mask = rng.random(tuple(rng.integers(1, 16, 2))) < rng.uniform(0.1, 0.9)
        assert _count_regions(mask) == flood_fill_regions(mask)


def test_object_is_one_region_of_bounded_area():
    for seed in range(50):
        mask = as_bool(render_sample(seed, 128, noise=0.0, blur=0.0)["mask"])
        assert MIN_OBJECT_AREA <= mask.mean() <= MAX_OBJECT_AREA, seed
        assert _count_regions(mask) == 1, seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_scene_at_256_and_1024(seed):
    small, large = render_sample(seed, 256, noise=0.0), render_sample(seed, 1024, noise=0.0)
    assert (downsampled(large["mask"], 4) == as_bool(small["mask"])).mean() >= 0.97
    # The picture too, not only the mask (the blur scales with the size; without noise only rasterisation differs).
    large_image = np.asarray(large["image"].resize((256, 256), Image.Resampling.BOX), np.float32)
    assert np.abs(large_image - np.asarray(small["image"], np.float32)).mean() < 4.0


@pytest.mark.parametrize("size", [(96, 160), (160, 96)])
def test_non_square_sizes(size):
    height, width = size
    sample = render_sample(7, size)
    assert sample["image"].size == sample["mask"].size == (width, height)
    mask = as_bool(sample["mask"])
    assert MIN_OBJECT_AREA <= mask.mean() <= MAX_OBJECT_AREA
    assert _count_regions(mask) == 1
    double = render_sample(7, (2 * height, 2 * width), noise=0.0)
    assert (downsampled(double["mask"], 2) == mask).mean() >= 0.97


def test_knobs_keep_the_object_and_occluders_only_hide_parts_of_it():
    hidden_somewhere = False
    for seed in range(6):
        default = as_bool(render_sample(seed, 96)["mask"])
        plain = render_sample(seed, 96, clutter=0, noise=0.0, blur=0.0)
        assert np.array_equal(as_bool(plain["mask"]), default)
        unoccluded = as_bool(render_sample(seed, 96, occluders=0)["mask"])
        assert not (default & ~unoccluded).any()
        hidden_somewhere |= bool((unoccluded & ~default).any())
    assert hidden_somewhere


def test_noise_and_blur_change_the_image_only():
    noisy, clean = render_sample(8, 64, noise=0.1), render_sample(8, 64, noise=0.0, blur=0.0)
    assert noisy["image"].tobytes() != clean["image"].tobytes()
    assert noisy["mask"].tobytes() == clean["mask"].tobytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"size": 4},
        {"size": (64,)},
        {"size": 64.0},
        {"clutter": -1},
        {"occluders": -1},
        {"noise": -0.1},
        {"blur": -1.0},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        render_sample(**{"seed": 0, "size": 64, **kwargs})


def test_dataset_seeds_do_not_overlap():
    assert dataset_seeds(3, 2) == [2_000_006, 2_000_007, 2_000_008]
    assert not set(dataset_seeds(1000, 0)) & set(dataset_seeds(1000, 1))
    with pytest.raises(ValueError):
        dataset_seeds(2_000_000, 0)


def test_make_dataset_features_and_rows():
    dataset = make_synthetic_dataset(3, size=64, seed=1, clutter=2)
    assert len(dataset) == 3
    assert isinstance(dataset.features["image"], datasets.Image)
    assert isinstance(dataset.features["mask"], datasets.Image)
    assert dataset.features["id"] == datasets.Value("string")
    assert dataset["id"] == [sample_id(s) for s in dataset_seeds(3, 1)]
    row, reference = dataset[1], render_sample(1_000_004, 64, clutter=2)
    assert row["id"] == reference["id"]
    assert row["image"].mode == "RGB" and row["mask"].mode == "L"
    assert row["image"].tobytes() == reference["image"].tobytes()  # PNG is lossless
    assert row["mask"].tobytes() == reference["mask"].tobytes()


def test_make_dataset_in_chunks_holds_the_same_rows(monkeypatch):
    """Rows are built in Arrow tables of `_CHUNK_SAMPLES` (one binary array holds at most 2 GiB): chunking changes
    nothing a reader sees."""
    whole = make_synthetic_dataset(5, size=32, seed=2)
    monkeypatch.setattr(synthetic_datasets, "_CHUNK_SAMPLES", 2)
    chunked = make_synthetic_dataset(5, size=32, seed=2)
    assert chunked.features == whole.features and chunked["id"] == whole["id"]
    for before, after in zip(whole, chunked):
        assert after["image"].tobytes() == before["image"].tobytes()
        assert after["mask"].tobytes() == before["mask"].tobytes()
    assert len(make_synthetic_dataset(0, size=32)) == 0


def test_save_to_disk_round_trip(tmp_path):
    saved = save_synthetic_dataset(tmp_path / "synthetic", 2, size=(48, 64), seed=3)
    loaded = datasets.load_from_disk(str(tmp_path / "synthetic"))
    assert loaded.features == saved.features
    assert loaded["id"] == saved["id"]
    for before, after in zip(saved, loaded):
        assert after["image"].size == (64, 48)
        assert after["image"].tobytes() == before["image"].tobytes()
        assert after["mask"].tobytes() == before["mask"].tobytes()


def test_image_folder_layout(tmp_path):
    root = write_synthetic_image_folder(tmp_path / "folder", 3, size=64, seed=2)
    names = [f"{sample_id(s)}.png" for s in dataset_seeds(3, 2)]
    assert sorted(p.name for p in (root / "images").iterdir()) == names
    assert sorted(p.name for p in (root / "masks").iterdir()) == names
    reference = render_sample(dataset_seeds(3, 2)[0], 64)
    with Image.open(root / "images" / names[0]) as image, Image.open(root / "masks" / names[0]) as mask:
        assert image.mode == "RGB" and mask.mode == "L"
        assert image.tobytes() == reference["image"].tobytes()
        assert mask.tobytes() == reference["mask"].tobytes()
