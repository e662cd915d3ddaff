"""`basam-hf segment` and the functions behind it, on a tiny random model."""

import inspect

import numpy as np
import pytest
import torch
from conftest import save_tiny_model
from PIL import Image

from basam_hf.cli import main
from basam_hf.configuration_basam import MASK_GENERATION_THRESHOLDS
from basam_hf.loading import load_model, load_processor
from basam_hf.segment import generate_masks, mask_generation_kwargs, overlay_masks, segment_image

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), seed=2)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))


def test_box_masks_equal_the_processor_and_model_path(model_dir, image):
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    masks, scores = segment_image(model, processor, image, boxes=[[5, 5, 60, 40], [10, 0, 89, 49]], size=128)
    assert masks.shape == (2, 50, 90) and masks.dtype == bool and scores.shape == (2,)
    # The same prediction, written out with the processor and the model directly.
    inputs = processor(
        images=image, input_boxes=[[[5.0, 5.0, 60.0, 40.0], [10.0, 0.0, 89.0, 49.0]]], size=128, return_tensors="pt"
    )
    assert inputs["pixel_values"].shape[-1] == 128
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0]
    assert np.array_equal(masks, expected[:, 0].numpy())


def test_single_point_keeps_the_best_of_three(model_dir, image):
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    masks, scores = segment_image(model, processor, image, points=[[30, 20]])
    inputs = processor(images=image, input_points=[[[[30.0, 20.0]]]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    assert scores[0] == pytest.approx(outputs.iou_scores.max().item(), abs=1e-6)
    assert masks.shape == (1, 50, 90)


def test_automatic_masks_at_another_size(model_dir, image):
    model = load_model(model_dir)
    masks, scores = generate_masks(
        model,
        load_processor(model_dir, model),
        image,
        size=96,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    assert masks.shape[1:] == (50, 90) and len(masks) == len(scores) >= 1
    assert list(scores) == sorted(scores, reverse=True)


def test_automatic_masks_equal_the_pipeline_with_the_iou_filter_first(model_dir, image):
    # generate_masks drops masks below pred_iou_thresh before the pipeline upsamples them; the pipeline itself,
    # without that shortcut, must return the same masks. The threshold is set so that some masks pass and some not.
    from transformers import pipeline
    from transformers.pipelines.mask_generation import MaskGenerationPipeline

    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    inputs = processor(
        images=image, input_points=[[[[x, y]] for x in (10, 45, 80) for y in (10, 40)]], return_tensors="pt"
    )
    with torch.no_grad():
        scores = model(**inputs).iou_scores.flatten()
    threshold = float(scores.median())
    kwargs = {"pred_iou_thresh": threshold, "stability_score_thresh": 0.0}
    masks, kept_scores = generate_masks(model, processor, image, points_per_side=6, **kwargs)
    reference = pipeline("mask-generation", model=model, image_processor=processor.image_processor)(
        image, points_per_crop=6, points_per_batch=64, **kwargs
    )
    assert 0 < len(masks) == len(reference["masks"])
    order = np.argsort(-np.asarray([float(score) for score in reference["scores"]]), kind="stable")
    assert np.array_equal(masks, np.stack([np.asarray(reference["masks"][i], dtype=bool) for i in order]))
    assert np.allclose(kept_scores, np.asarray([float(reference["scores"][i]) for i in order]))
    signature = inspect.signature(MaskGenerationPipeline._forward)
    for name, default in MASK_GENERATION_THRESHOLDS.items():
        assert signature.parameters[name].default == default


def test_mask_generation_thresholds_come_from_the_caller_then_the_config_then_the_pipeline(model_dir, image):
    model = load_model(model_dir)
    assert model.config.mask_generation is None
    assert mask_generation_kwargs(model) == MASK_GENERATION_THRESHOLDS
    model.config.mask_generation = {"pred_iou_thresh": 0.0}
    assert mask_generation_kwargs(model, stability_score_thresh=None) == {
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": MASK_GENERATION_THRESHOLDS["stability_score_thresh"],
    }
    assert mask_generation_kwargs(model, pred_iou_thresh=0.5)["pred_iou_thresh"] == 0.5
    # The recommendation reaches the pipeline: with both thresholds at 0 the grid keeps masks the defaults drop.
    keep_all = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    processor = load_processor(model_dir, model)
    model.config.mask_generation = keep_all
    recommended, _ = generate_masks(model, processor, image, points_per_side=4)
    explicit, _ = generate_masks(model, processor, image, points_per_side=4, **keep_all)
    assert len(recommended) >= 1 and np.array_equal(recommended, explicit)


def test_mask_generation_thresholds_are_validated_and_saved(tmp_path):
    from basam_hf import BaSamConfig

    config = BaSamConfig(mask_generation={"pred_iou_thresh": 0.6, "stability_score_thresh": 0.8})
    config.save_pretrained(tmp_path)
    assert BaSamConfig.from_pretrained(tmp_path).mask_generation == config.mask_generation
    with pytest.raises(ValueError, match="Unknown mask_generation threshold 'iou'"):
        BaSamConfig(mask_generation={"iou": 0.5})
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\]"):
        BaSamConfig(mask_generation={"pred_iou_thresh": 1.5})


def test_points_per_side_sets_the_grid(model_dir, image):
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    counts = {}
    for side in (1, 6):
        masks, _ = generate_masks(
            model, processor, image, points_per_side=side, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
        counts[side] = len(masks)
    assert counts[1] <= 3 < counts[6]  # one point gives at most SAM's three masks


def test_overlay_colours_only_the_masks(image):
    masks = np.zeros((1, 50, 90), dtype=bool)
    masks[0, 10:20, 10:30] = True
    overlay = np.asarray(overlay_masks(image, masks))
    original = np.asarray(image)
    assert np.array_equal(overlay[~masks[0]], original[~masks[0]])
    assert not np.array_equal(overlay[masks[0]], original[masks[0]])


def test_cli_writes_masks_and_overlay(model_dir, image, tmp_path, capsys):
    image.save(tmp_path / "image.png")
    output = tmp_path / "out"
    args = ["segment", str(tmp_path / "image.png"), "--model", model_dir, "--box", "5", "5", "60", "40"]
    assert main(args + ["--point", "30", "20", "--size", "96", "--output", str(output)]) == 0
    mask = Image.open(output / "mask_000.png")
    assert mask.size == (90, 50) and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert Image.open(output / "overlay.png").size == (90, 50)
    assert main(["segment", str(tmp_path / "image.png"), "--model", model_dir]) == 1
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["segment", str(tmp_path / "broken.png"), "--model", model_dir, "--box", "0", "0", "5", "5"]) == 1
    assert "error" in capsys.readouterr().err
