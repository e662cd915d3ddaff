"""BaSamImageProcessor / BaSamProcessor at any input size, against SAM's processors and independent computations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_, tiny_config_kwargs
from transformers import AutoImageProcessor, AutoProcessor, SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil, _mask_to_rle

from basam_hf import (
    BaSamConfig,
    BaSamImageProcessor,
    BaSamModel,
    BaSamProcessor,
    processing_basam,
    processor_for_model,
)
from basam_hf.processing_basam import batched_nms, nms, rle_to_mask

PATCH = 8
PRETRAIN = 64  # tiny configs: image_size 64, patch 8 -> 8x8 embedding grid, 32x32 masks
# smaller / equal / larger than the pretraining size, wide and tall
IMAGE_SHAPES = [(30, 50), (64, 64), (100, 140), (90, 40)]


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def sam_image_processor(size: int) -> SamImageProcessorPil:
    """transformers' SAM image processor configured for a `size` input and PATCH-sized patches."""
    mask = size * 4 // PATCH
    return SamImageProcessorPil(
        size={"longest_edge": size},
        pad_size={"height": size, "width": size},
        mask_size={"longest_edge": mask},
        mask_pad_size={"height": mask, "width": mask},
    )


def resized_shape(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Independent statement of the resize rule: longest edge to `longest_edge`, aspect kept, halves round up."""
    scale = longest_edge / max(height, width)
    return math.floor(height * scale + 0.5), math.floor(width * scale + 0.5)


@pytest.fixture
def processor() -> BaSamImageProcessor:
    return BaSamImageProcessor(size=PRETRAIN, patch_size=PATCH)


# --- equality with transformers' SAM processors at the pretraining size ----------------------------------------------


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_pretraining_size_equals_sam_image_processor(processor, shape):
    image = make_image(*shape)
    segmentation = (make_image(*shape, seed=1)[..., 0] > 128).astype(np.uint8)
    ours = processor(image, segmentation_maps=segmentation, return_tensors="pt")
    sam = sam_image_processor(PRETRAIN)(image, segmentation_maps=segmentation, return_tensors="pt")
    assert set(ours) == set(sam)
    for key in sam:
        assert torch.equal(ours[key], sam[key]), key


def test_defaults_are_sams_defaults():
    ours, sam = BaSamImageProcessor(), SamImageProcessorPil()
    derived = ours.derived_sizes(ours.size, ours.patch_size)
    assert ours.size.longest_edge == sam.size.longest_edge == 1024
    for key in ("pad_size", "mask_size", "mask_pad_size"):
        assert dict(derived[key]) == dict(getattr(sam, key)), key
    image = make_image(48, 80)
    pixels = [processor(image, return_tensors="pt")["pixel_values"] for processor in (ours, sam)]
    assert torch.equal(*pixels)


def test_pretraining_size_equals_sam_processor_with_prompts(processor):
    images = [make_image(30, 50), make_image(90, 40, seed=2)]
    points = [[[4, 7], [25, 11]], [[30, 80]]]  # different point counts per image: padded with labels
    labels = [[1, 0], [1]]
    boxes = [[[1, 2, 40, 25]], [[3, 10, 35, 88]]]
    prompts = dict(input_points=points, input_labels=labels, input_boxes=boxes, return_tensors="pt")
    ours = BaSamProcessor(processor)(images, **prompts)
    sam = SamProcessor(sam_image_processor(PRETRAIN))(images, **prompts)
    assert set(ours) == set(sam)
    for key in sam:
        assert torch.equal(ours[key], sam[key]), key
        assert ours[key].dtype == sam[key].dtype, key


# --- other sizes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 96, 128, 100, 12])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_any_size_resizes_longest_edge_and_pads_to_a_patch_multiple(processor, size, shape):
    image = make_image(*shape)
    outputs = processor(image, segmentation_maps=image[..., 0], size=size, return_tensors="pt")
    side = math.ceil(size / PATCH) * PATCH  # non-multiples pad up to the next multiple of the patch size
    height, width = resized_shape(*shape, size)
    assert outputs["pixel_values"].shape == (1, 3, side, side)
    assert outputs["reshaped_input_sizes"].tolist() == [[height, width]]
    assert outputs["original_sizes"].tolist() == [list(shape)]
    assert outputs["labels"].shape == (1, side * 4 // PATCH, side * 4 // PATCH)  # 4x the embedding grid
    # Content: SAM's processor at this size (padded to `size` only), then zeros up to `side`.
    sam = sam_image_processor(size)(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(outputs["pixel_values"][..., :size, :size], sam)
    assert not outputs["pixel_values"][..., height:, :].any() and not outputs["pixel_values"][..., :, width:].any()


def test_per_call_size_leaves_the_instance_alone(processor):
    image = make_image(30, 50)
    assert processor(image, size=128, return_tensors="pt")["pixel_values"].shape[-1] == 128
    assert processor(image, size={"longest_edge": 32}, return_tensors="pt")["pixel_values"].shape[-1] == 32
    assert processor(image, return_tensors="pt")["pixel_values"].shape[-1] == PRETRAIN
    assert processor.size.longest_edge == PRETRAIN and processor.pad_size is None


def test_explicit_pad_size_overrides_the_derived_one():
    processor = BaSamImageProcessor(size=40, patch_size=PATCH, pad_size={"height": 64, "width": 64})
    assert processor(make_image(30, 50), return_tensors="pt")["pixel_values"].shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size", [32, 64, 128, 100])
def test_prompts_follow_the_per_call_size(processor, size):
    shapes = [(30, 50), (90, 40)]
    images = [make_image(*shape) for shape in shapes]
    points = [[[[4.0, 7.0], [49.0, 29.0]]], [[[0.0, 89.0], [39.0, 0.0]]]]
    boxes = [[[1.0, 2.0, 40.0, 25.0]], [[3.0, 10.0, 35.0, 88.0]]]
    outputs = BaSamProcessor(processor)(images, input_points=points, input_boxes=boxes, size=size, return_tensors="pt")
    for index, (height, width) in enumerate(shapes):
        new_height, new_width = resized_shape(height, width, size)
        ratio = torch.tensor([new_width / width, new_height / height], dtype=torch.float64)
        expected_points = torch.tensor(points[index], dtype=torch.float64) * ratio
        expected_boxes = torch.tensor(boxes[index], dtype=torch.float64) * ratio.repeat(2)
        torch.testing.assert_close(outputs["input_points"][index], expected_points)
        torch.testing.assert_close(outputs["input_boxes"][index], expected_boxes)
    assert outputs["input_points"].shape == (2, 1, 2, 2) and outputs["input_boxes"].shape == (2, 1, 4)


def test_processor_target_size_is_never_stale(processor):
    wrapped = BaSamProcessor(processor)
    assert wrapped.target_size == PRETRAIN
    processor.size = processor._standardize_kwargs(size=128)["size"]
    assert wrapped.target_size == 128


# --- masks back to the original image size ---------------------------------------------------------------------------


def test_post_process_masks_equals_sam_at_the_pretraining_size(processor):
    generator = torch.Generator().manual_seed(0)
    masks = torch.randn(2, 3, 3, 32, 32, generator=generator)
    original, reshaped = [(30, 50), (90, 40)], [(38, 64), (64, 28)]
    sam = sam_image_processor(PRETRAIN)
    for binarize in (True, False):
        ours = processor.post_process_masks(masks, original, reshaped, binarize=binarize)
        theirs = sam.post_process_masks(list(masks), original, reshaped, binarize=binarize)
        for mine, reference in zip(ours, theirs):
            assert mine.dtype == reference.dtype
            torch.testing.assert_close(mine, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [32, 128, 100])
@pytest.mark.parametrize("shape", [(30, 50), (90, 40), (140, 100)])
def test_post_process_masks_maps_a_known_region_back_at_any_size(processor, size, shape):
    """A low-res mask drawn from a rectangle of the original image comes back as that rectangle."""
    height, width = shape
    side = math.ceil(size / PATCH) * PATCH
    low_res = side * 4 // PATCH
    new_height, new_width = resized_shape(height, width, size)
    # rectangle in original pixels, then its logits on the low-res grid of the padded input (cell centres)
    top, bottom, left, right = height // 4, 3 * height // 4, width // 5, 3 * width // 5
    centres = (torch.arange(low_res) + 0.5) * side / low_res
    rows = (centres * height / new_height >= top) & (centres * height / new_height < bottom)
    cols = (centres * width / new_width >= left) & (centres * width / new_width < right)
    logits = torch.where(rows[:, None] & cols[None, :], 10.0, -10.0)[None, None]
    (mask,) = processor.post_process_masks(logits[None], [shape], [(new_height, new_width)])
    assert mask.shape == (1, 1, height, width) and mask.dtype == torch.bool
    # Away from the rectangle's border by more than one low-res cell (in original pixels), the mask must be exact.
    cell_rows, cell_cols = side / low_res * height / new_height, side / low_res * width / new_width
    y, x = torch.arange(height)[:, None] + 0.5, torch.arange(width)[None, :] + 0.5
    inside = (y > top + cell_rows) & (y < bottom - cell_rows) & (x > left + cell_cols) & (x < right - cell_cols)
    outside = (y < top - cell_rows) | (y > bottom + cell_rows) | (x < left - cell_cols) | (x > right + cell_cols)
    assert mask[0, 0][inside].all() and not mask[0, 0][outside].any()
    assert inside.any() and outside.any()
    # the inferred padded size is the one used in preprocessing
    (explicit,) = processor.post_process_masks(logits[None], [shape], [(new_height, new_width)], pad_size=side)
    assert torch.equal(mask, explicit)


def test_post_process_masks_in_chunks_gives_the_same_result(processor, monkeypatch):
    masks = torch.randn(1, 5, 3, 64, 64)
    args = ([(90, 40)], [(128, 57)])
    whole = processor.post_process_masks(masks, *args, binarize=False)[0]
    monkeypatch.setattr(processing_basam, "_POST_PROCESS_CHUNK_ELEMENTS", 128 * 128 * 2)
    chunked = processor.post_process_masks(masks, *args, binarize=False)[0]
    assert whole.shape == (5, 3, 90, 40) and torch.equal(whole, chunked)


def test_post_process_masks_rejects_a_wrong_pad_size(processor):
    with pytest.raises(ValueError, match="exceeds the padded input size"):
        processor.post_process_masks(torch.randn(1, 1, 3, 32, 32), [(30, 50)], [(77, 128)])


# --- NMS -------------------------------------------------------------------------------------------------------------


def brute_force_nms(boxes: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Textbook greedy NMS in plain Python: highest score first (ties in input order), drop IoU > threshold."""

    def iou(a, b):
        inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = inter_w * inter_h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else float("nan")

    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept, suppressed = [], set()
    for position, i in enumerate(order):
        if i in suppressed:
            continue
        kept.append(i)
        suppressed.update(j for j in order[position + 1 :] if iou(boxes[i], boxes[j]) > threshold)
    return kept


def random_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer boxes (as SAM's mask boxes) with duplicates, empty boxes and tied scores."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.randint(0, 20, (count, 2), generator=generator)
    size = torch.randint(0, 12, (count, 2), generator=generator)
    boxes = torch.cat([corner, corner + size], dim=1).float()
    boxes[count // 2] = boxes[0]  # an exact duplicate
    scores = torch.randint(0, 10, (count,), generator=generator).float() / 10  # many ties
    return boxes, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_brute_force(seed, threshold):
    boxes, scores = random_boxes(40, seed)
    expected = brute_force_nms(boxes.tolist(), scores.tolist(), threshold)
    assert nms(boxes, scores, threshold).tolist() == expected


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_matches_brute_force_per_category(seed):
    boxes, scores = random_boxes(60, seed)
    categories = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(seed))
    kept = []
    for category in range(3):
        members = torch.nonzero(categories == category).flatten().tolist()
        chosen = brute_force_nms([boxes[i].tolist() for i in members], [scores[i].item() for i in members], 0.5)
        kept += [members[i] for i in chosen]
    result = batched_nms(boxes, scores, categories, 0.5)
    assert sorted(result.tolist()) == sorted(kept)
    assert (scores[result][:-1] >= scores[result][1:]).all()  # highest score first, as torchvision


def test_nms_edge_cases():
    empty = torch.zeros(0, 4)
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]]), torch.tensor([0.2, 0.9]), 0.5).tolist() == [1]
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


def test_nms_matches_torchvision_when_it_loads():
    torchvision_nms = processing_basam._torchvision_batched_nms()
    if torchvision_nms is None:
        pytest.skip("torchvision is not usable here (the pure-torch NMS is what runs)")
    for seed in range(4):
        boxes, _ = random_boxes(40, seed)
        scores = torch.rand(40, generator=torch.Generator().manual_seed(seed))  # no ties: order is unambiguous
        idxs = torch.zeros(40)
        assert batched_nms(boxes, scores, idxs, 0.6).tolist() == torchvision_nms(boxes, scores, idxs, 0.6).tolist()


def test_post_process_for_mask_generation_without_torchvision(processor, monkeypatch):
    monkeypatch.setattr(processing_basam, "_torchvision_batched_nms", lambda: None)
    masks = torch.zeros(4, 12, 20, dtype=torch.bool)
    masks[0, 2:8, 3:10] = True
    masks[1, 2:8, 3:11] = True  # near-duplicate of 0, lower score: suppressed
    masks[2, 9:12, 0:20] = True
    masks[3, 0:1, 19:20] = True  # a single pixel: a zero-area box
    boxes = torch.tensor([[3, 2, 9, 7], [3, 2, 10, 7], [0, 9, 19, 11], [19, 0, 19, 0]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.5])
    decoded, kept_scores, rles, kept_boxes = processor.post_process_for_mask_generation(
        _mask_to_rle(masks), scores, boxes, crops_nms_thresh=0.7
    )
    assert kept_scores.tolist() == pytest.approx([0.95, 0.9, 0.5])
    assert kept_boxes.tolist() == [boxes[2].tolist(), boxes[0].tolist(), boxes[3].tolist()]
    for array, index in zip(decoded, [2, 0, 3]):
        assert isinstance(array, np.ndarray) and np.array_equal(array, masks[index].numpy())
    assert len(rles) == 3


def test_rle_round_trip():
    masks = torch.rand(5, 7, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    masks[0] = True
    masks[1] = False
    for mask, rle in zip(masks, _mask_to_rle(masks)):
        assert np.array_equal(rle_to_mask(rle), mask.numpy())


# --- bad inputs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -64, 64.5, 64.0, True, "64", {"height": 64, "width": 64}, {"shortest_edge": 64}])
def test_bad_size_raises_value_error(processor, size):
    with pytest.raises(ValueError, match="size"):
        processor(make_image(30, 50), size=size)
    with pytest.raises(ValueError, match="size"):
        BaSamImageProcessor(size=size)


@pytest.mark.parametrize("patch_size", [0, -8, 8.5])
def test_bad_patch_size_raises_value_error(patch_size):
    with pytest.raises(ValueError, match="patch_size"):
        BaSamImageProcessor(patch_size=patch_size)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((0, 10, 3), "empty image"),
        ((10, 0, 3), "empty image"),
        ((0, 0, 3), "empty image"),
        ((5, 40, 3), "smaller than one"),
        ((40, 7, 3), "smaller than one"),
        ((2000, 8, 3), "too elongated"),
    ],
)
def test_bad_images_raise_value_error(processor, shape, message):
    with pytest.raises(ValueError, match=message):
        processor(np.zeros(shape, dtype=np.uint8), size=PRETRAIN)


# --- saving, loading, and the model ----------------------------------------------------------------------------------


def test_save_and_load_keeps_the_size_derived(tmp_path):
    config = BaSamConfig(**tiny_config_kwargs())
    processor = processor_for_model(config)
    assert processor.image_processor.size.longest_edge == PRETRAIN and processor.image_processor.patch_size == PATCH
    processor.save_pretrained(tmp_path)
    for loaded in (BaSamProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is BaSamProcessor and type(loaded.image_processor) is BaSamImageProcessor
        assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    image_processor = AutoImageProcessor.from_pretrained(tmp_path, size=128)
    assert type(image_processor) is BaSamImageProcessor
    assert image_processor(make_image(30, 50), return_tensors="pt")["pixel_values"].shape == (1, 3, 128, 128)


@pytest.mark.parametrize("size", [PRETRAIN, 2 * PRETRAIN, PRETRAIN // 2, 100])
def test_sam_processor_flow_gives_masks_at_the_original_size(size):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs()))).eval()
    processor = processor_for_model(model)
    images = [make_image(30, 50), make_image(90, 40, seed=3)]
    inputs = processor(
        images,
        input_points=[[[10, 12]], [[20, 70]]],
        input_boxes=[[[2, 3, 40, 25]], [[5, 50, 30, 85]]],
        size=size,
        return_tensors="pt",
    )
    with torch.no_grad():
        outputs = model(**inputs)
    side = math.ceil(size / PATCH) * PATCH
    assert outputs.pred_masks.shape == (2, 1, 3, side // 2, side // 2)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    assert [tuple(mask.shape) for mask in masks] == [(1, 3, 30, 50), (1, 3, 90, 40)]
    # the same masks as resizing the logits by hand: up to the padded input, crop, down to the original
    for mask, original, reshaped, logits in zip(
        masks, inputs["original_sizes"].tolist(), inputs["reshaped_input_sizes"].tolist(), outputs.pred_masks
    ):
        manual = F.interpolate(logits, (side, side), mode="bilinear", align_corners=False)
        manual = manual[..., : reshaped[0], : reshaped[1]]
        manual = F.interpolate(manual, original, mode="bilinear", align_corners=False)
        assert torch.equal(mask, manual > 0)
