"""Photographic composites: held out by source photo, reproducible, with exact visible masks; the prompts and the
dataset plumbing that training on them uses."""

import numpy as np
import pytest

from basam_hf import composites
from basam_hf.composites import PHOTOS, SPLITS, compose, composite_segmentation_dataset, photos
from basam_hf.data import SegmentationDataset, concatenate_segmentation_datasets, deep_pixel, prompts_from_mask
from basam_hf.synthetic import random_shape_coverage
from basam_hf.training import MIXED_PROMPT, batch_prompt, usable_sample_indices

pytest.importorskip("skimage")


def test_every_photo_is_in_exactly_one_split_and_loads():
    assert {photo.split for photo in PHOTOS} == set(SPLITS)
    assert len({photo.name for photo in PHOTOS}) == len(PHOTOS)
    for photo in PHOTOS:
        pixels = composites.load_photo(photo.name)
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8 and min(pixels.shape[:2]) >= 150


@pytest.mark.parametrize("split", SPLITS)
def test_composites_use_only_the_photos_of_their_split(monkeypatch, split):
    used = set()
    load = composites.load_photo

    def spy(name):
        used.add(name)
        return load(name)

    monkeypatch.setattr(composites, "load_photo", spy)
    composites.photo_segments.cache_clear()  # segmentations cached by other tests would hide their photo loads
    try:
        for seed in range(4):
            compose(seed, split)
    finally:
        composites.photo_segments.cache_clear()  # computed from the spy
    allowed = {photo.name for photo in photos(split)} | {s.name for s in composites.SILHOUETTES if split == "train"}
    assert used and used <= allowed


def test_composites_are_reproducible_and_their_masks_are_visible_disjoint_objects():
    for seed in range(4):
        first, again = compose(seed, "test"), compose(seed, "test")
        assert np.array_equal(np.asarray(first["image"]), np.asarray(again["image"]))
        height, width = first["image"].height, first["image"].width
        assert composites.MIN_SIDE // 4 <= min(height, width) and max(height, width) <= composites.MAX_SIDE
        stack = np.stack(first["masks"])
        assert stack.shape[1:] == (height, width) and stack.dtype == bool
        assert (stack.sum(axis=(1, 2)) >= 64).all()
        assert stack.sum(axis=0).max() == 1  # occlusion: a pixel shows one object at most
        assert all(np.array_equal(a, b) for a, b in zip(first["masks"], again["masks"]))
    assert not np.array_equal(np.asarray(compose(0, "test")["image"]), np.asarray(compose(1, "test")["image"]))


def test_objects_are_scaled_to_their_area_and_thin_ones_stay_within_a_few_image_sides():
    height, width, area = 300, 400, 0.2 * 300 * 400
    disc = random_shape_coverage(np.random.default_rng(0), 64, "ellipse")
    h, w = composites._object_size(disc, area, 1.25, height, width)
    assert abs(h / w - 1.25**2 * disc.shape[0] / disc.shape[1]) < 0.05  # stretched: taller by 1.25, narrower by it
    assert abs(disc.sum() * h * w / disc.size - area) < 0.03 * area  # covers the area asked for
    line = np.zeros((500, 500), np.float32)
    line[250, :] = 1.0  # a one-pixel line across its box: its area alone would scale the box to ~60 image sides
    for stretch in (0.75, 1.0, 1.3):
        h, w = composites._object_size(line, area, stretch, height, width)
        limit = composites._MAX_EXTENT
        assert h <= limit * height + 1 and w <= limit * width + 1 and max(h / height, w / width) > limit - 0.01


def test_a_composite_with_a_thin_segment_stays_small():
    """Validation composite 16 of seed 102 drew a thin segment whose area-scaled box was 118 image sides wide (a
    MemoryError); now its box spans at most three."""
    scene = compose(composites.composite_seeds(17, 102)[16], "val")
    assert all(mask.shape == (scene["image"].height, scene["image"].width) for mask in scene["masks"])


def test_paste_masks_are_the_visible_parts():
    """An object hides what it covers of earlier masks; its own mask is its coverage >= 0.5, clipped to the image."""
    canvas = np.zeros((20, 30, 3), np.float32)
    masks = []
    first = np.zeros((10, 10), np.float32)
    first[2:8, 2:8] = 1.0
    composites._paste(canvas, masks, first, np.full((10, 10, 3), 100.0, np.float32), 5, 5)
    second = np.full((10, 10), 0.6, np.float32)  # alpha 0.6 >= 0.5: counts as covering
    composites._paste(canvas, masks, second, np.full((10, 10, 3), 200.0, np.float32), 10, 25)  # half outside
    expected_first = np.zeros((20, 30), bool)
    expected_first[7:13, 7:13] = True
    expected_second = np.zeros((20, 30), bool)
    expected_second[10:20, 25:30] = True
    assert np.array_equal(masks[0], expected_first & ~expected_second)
    assert np.array_equal(masks[1], expected_second)
    assert np.allclose(canvas[15, 27], 0.6 * 200.0) and np.allclose(canvas[8, 8], 100.0)


def test_random_shape_coverage_fits_its_square():
    rng = np.random.default_rng(0)
    for _ in range(10):
        coverage = random_shape_coverage(rng, 64)
        assert coverage.shape == (64, 64) and coverage.min() >= 0.0 and coverage.max() <= 1.0
        assert (coverage >= 0.5).mean() > 0.03
        border = np.concatenate([coverage[0], coverage[-1], coverage[:, 0], coverage[:, -1]])
        assert (border >= 0.5).mean() < 0.1  # the shape may touch the square, not run along its side


def test_composite_dataset_targets_one_of_the_composite_objects():
    dataset = composite_segmentation_dataset(3, "val", seed=5)
    assert len(set(dataset.ids)) == 3 and dataset.info["nonempty_masks"]
    for index in range(3):
        sample = dataset[index]
        scene = compose(composites.composite_seeds(3, 5)[index], "val")
        assert any(np.array_equal(sample["mask"], mask) for mask in scene["masks"])
        assert sample["image"].size == scene["image"].size


def test_deep_pixel_lands_inside_and_prefers_the_interior():
    mask = np.zeros((40, 60), bool)
    mask[5:35, 10:50] = True
    rng = np.random.default_rng(0)
    clicks = np.stack([deep_pixel(mask, rng) for _ in range(400)])
    assert mask[clicks[:, 1].astype(int), clicks[:, 0].astype(int)].all()
    # Distance to the object's edge: drawn proportionally to it, the mean is well above a uniform draw's.
    depth = np.minimum.reduce([clicks[:, 1] - 5 + 1, 35 - clicks[:, 1], clicks[:, 0] - 10 + 1, 50 - clicks[:, 0]])
    rows, cols = np.nonzero(mask)
    uniform = np.minimum.reduce([rows - 5 + 1, 35 - rows, cols - 10 + 1, 50 - cols]).mean()
    assert depth.mean() > 1.2 * uniform
    prompt = prompts_from_mask(mask, "click", np.random.default_rng(1))
    assert prompt["labels"].tolist() == [1] and mask[int(prompt["points"][0, 1]), int(prompt["points"][0, 0])]


def test_batch_prompt_is_the_run_prompt_or_a_seeded_mix():
    assert batch_prompt("box", 0.1, 0, seed=0, epoch=0, batch_index=3) == ("box", 0.1, 0)
    draws = [batch_prompt(MIXED_PROMPT, 0.0, 0, seed=0, epoch=1, batch_index=i) for i in range(600)]
    assert draws == [batch_prompt(MIXED_PROMPT, 0.0, 0, seed=0, epoch=1, batch_index=i) for i in range(600)]
    kinds = [prompt.split(":")[0] for prompt, _, _ in draws]
    for kind, share in (("box", 0.40), ("click", 0.35), ("points", 0.25)):
        assert abs(kinds.count(kind) / len(kinds) - share) < 0.06, kind
    for prompt, jitter, negatives in draws:
        if prompt == "box":
            assert 0.0 <= jitter <= 0.1 and negatives == 0
        if prompt.startswith("points:"):
            assert int(prompt.split(":")[1]) + negatives >= 2  # one click alone is the `click` kind
    assert draws != [batch_prompt(MIXED_PROMPT, 0.0, 0, seed=1, epoch=1, batch_index=i) for i in range(600)]


def _dataset(prefix: str, count: int, read=None) -> SegmentationDataset:
    ids = [f"{prefix}{i}" for i in range(count)]
    return SegmentationDataset(ids, read or (lambda i: {"id": ids[i]}), {"source": prefix})


def test_concatenated_datasets_read_from_their_parts():
    joined = concatenate_segmentation_datasets(_dataset("a", 2), _dataset("b", 3))
    assert joined.ids == ["a0", "a1", "b0", "b1", "b2"]
    assert [joined[i]["id"] for i in range(5)] == joined.ids
    assert joined.info["source"] == "a + b"


def test_generated_datasets_are_not_decoded_to_check_them():
    class Accelerator:
        from contextlib import nullcontext

        def split_between_processes(self, items):
            return self.nullcontext(items)

    def unreadable(index):
        raise AssertionError("read")

    generated = _dataset("g", 4, unreadable)
    generated.info.update(nonempty_masks=True, min_image_side=64)
    assert usable_sample_indices(generated, 16, Accelerator()) == ([0, 1, 2, 3], [])
    with pytest.raises(AssertionError):  # a patch larger than the promised side: checked as any dataset
        usable_sample_indices(generated, 128, Accelerator())
