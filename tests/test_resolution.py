"""The whole model at input sizes other than the pretraining size."""

import pytest
import torch
from conftest import BA_OFF, randomize_, tiny_config_kwargs
from transformers import SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel
from basam_hf.pos_embed import rescale_prompt_coordinates, resize_position_embeddings


@pytest.fixture(scope="module")
def model():
    return randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs()))).eval()


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (64, 64), (96, 96), (128, 128), (64, 128), (40, 96)])
def test_any_size_gives_consistent_shapes(model, size):
    height, width = size
    pixel_values = torch.randn(2, 3, height, width)
    points = torch.tensor([[[[3.0, 5.0]]], [[[width - 1.0, height - 1.0]]]])
    boxes = torch.tensor([[[0.0, 0.0, width / 2, height / 2]], [[1.0, 2.0, width - 1.0, height - 1.0]]])
    grid = (height // 8, width // 8)
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)
        outputs = model(image_embeddings=embeddings, input_points=points, input_boxes=boxes)
        masked = model(
            pixel_values=pixel_values, input_points=points, input_masks=torch.randn(2, 1, 4 * grid[0], 4 * grid[1])
        )
    assert embeddings.shape == (2, 16, *grid)
    assert outputs.pred_masks.shape == (2, 1, 3, 4 * grid[0], 4 * grid[1])
    assert masked.pred_masks.shape == outputs.pred_masks.shape
    assert torch.isfinite(outputs.pred_masks).all() and torch.isfinite(outputs.iou_scores).all()


def test_pretraining_size_with_ba_off_is_sam_and_other_sizes_do_not_need_a_config_change():
    sam = randomize_(SamModel(SamConfig(**tiny_config_kwargs()))).eval()
    basam = BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_OFF))).eval()
    basam.load_state_dict(sam.state_dict())
    pixel_values, points = torch.randn(1, 3, 64, 64), torch.tensor([[[[10.0, 20.0]]]])
    with torch.no_grad():
        assert torch.equal(
            sam(pixel_values=pixel_values, input_points=points).pred_masks,
            basam(pixel_values=pixel_values, input_points=points).pred_masks,
        )
        with pytest.raises(ValueError):
            sam(pixel_values=torch.randn(1, 3, 128, 128))  # SAM cannot; BA-SAM can
        basam(pixel_values=torch.randn(1, 3, 128, 128), input_points=points)


def test_points_are_embedded_relative_to_the_current_input_size(model):
    """A prompt at pixel p of an S-pixel input is embedded at (p + 0.5) / S, as SAM does at 1024."""
    encoder = model.prompt_encoder
    points = torch.tensor([[[[7.0, 30.0], [100.0, 3.0]]]])
    labels = torch.tensor([[[1, 1]]])
    for size in [(64, 64), (128, 128), (32, 128)]:
        with torch.no_grad():
            sparse, dense = encoder(
                points, labels, None, None, input_image_size=size, image_embedding_size=(size[0] // 8, size[1] // 8)
            )
            normalized = (points + 0.5) / torch.tensor([size[1], size[0]])
            expected = encoder.shared_embedding(normalized) + encoder.point_embed[1].weight
        torch.testing.assert_close(sparse[:, :, :2], expected, atol=1e-5, rtol=1e-5)
        assert dense.shape[-2:] == (size[0] // 8, size[1] // 8)


def test_boxes_are_embedded_relative_to_the_current_input_size(model):
    encoder = model.prompt_encoder
    boxes = torch.tensor([[[4.0, 6.0, 90.0, 20.0]]])
    with torch.no_grad():
        sparse, _ = encoder(None, None, boxes, None, input_image_size=(32, 128))
        corners = (boxes.reshape(1, 1, 2, 2) + 0.5) / torch.tensor([128.0, 32.0])
        expected = encoder.shared_embedding(corners)
        expected[:, :, 0] += encoder.point_embed[2].weight[0]
        expected[:, :, 1] += encoder.point_embed[3].weight[0]
    torch.testing.assert_close(sparse, expected, atol=1e-5, rtol=1e-5)


def test_image_wide_positional_embeddings_match_sam_at_the_configured_grid(model):
    sam = SamModel(SamConfig(**tiny_config_kwargs()))
    sam.shared_image_embedding.load_state_dict(model.shared_image_embedding.state_dict())
    assert torch.equal(model.get_image_wide_positional_embeddings(), sam.get_image_wide_positional_embeddings())
    assert model.get_image_wide_positional_embeddings((4, 12)).shape == (1, 16, 4, 12)


def test_position_embeddings_resize_only_when_the_grid_changes():
    pos = torch.randn(1, 8, 8, 6)
    assert resize_position_embeddings(pos, (8, 8)) is pos
    resized = resize_position_embeddings(pos.to(torch.bfloat16), (16, 4))
    assert resized.shape == (1, 16, 4, 6) and resized.dtype == torch.bfloat16
    # A constant field stays constant under any resampling.
    torch.testing.assert_close(resize_position_embeddings(torch.ones(1, 8, 8, 2), (13, 5)), torch.ones(1, 13, 5, 2))


def test_prompt_rescaling_is_identity_at_the_reference_size():
    coords = torch.rand(1, 1, 3, 2) * 64
    assert rescale_prompt_coordinates(coords, (64, 64), (64, 64)) is coords
    mapped = rescale_prompt_coordinates(coords, (32, 128), (64, 64))
    torch.testing.assert_close((mapped + 0.5) / 64, (coords + 0.5) / torch.tensor([128.0, 32.0]))


def test_windowed_layers_pad_at_any_grid(model):
    """A 5x7 grid is not a multiple of the window (3): windows are padded as in SAM; gradients flow."""
    pixel_values = torch.randn(1, 3, 40, 56, requires_grad=True)
    model.train()
    try:
        model.vision_encoder(pixel_values).last_hidden_state.sum().backward()
    finally:
        model.eval()
    assert pixel_values.grad is not None and torch.isfinite(pixel_values.grad).all()
