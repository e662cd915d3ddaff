"""A plain SAM checkpoint becomes BA-SAM with every SAM weight loaded; the CLI wraps the same function."""

import json

import pytest
import torch
from conftest import BA_OFF, randomize_, tiny_config_kwargs
from safetensors.torch import load_file
from transformers import SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel
from basam_hf.cli import main
from basam_hf.conversion import convert_sam_to_basam, deepen_encoder, rebase_image_size


@pytest.fixture
def sam_folder(tmp_path):
    model = randomize_(SamModel(SamConfig(**tiny_config_kwargs())))
    model.save_pretrained(tmp_path / "sam")
    return tmp_path / "sam", model


@pytest.mark.parametrize(
    "settings, new_keys",
    [
        (dict(bias_mode="distance"), set()),
        (
            dict(bias_mode="coefficient", bias_layers="all"),
            {"vision_encoder.layers.0.attn.coefficient", "vision_encoder.layers.1.attn.coefficient"},
        ),
        (dict(bias_mode="distance", learnable_slopes=True), {"vision_encoder.layers.1.attn.slopes"}),
    ],
)
def test_every_sam_weight_is_loaded(sam_folder, tmp_path, settings, new_keys):
    folder, sam = sam_folder
    convert_sam_to_basam(folder, tmp_path / "out", **settings)
    sam_weights = load_file(folder / "model.safetensors")
    converted = load_file(tmp_path / "out" / "model.safetensors")
    assert set(converted) - set(sam_weights) == new_keys
    for key, value in sam_weights.items():
        assert torch.equal(converted[key], value), key
    loaded = BaSamModel.from_pretrained(tmp_path / "out")
    assert loaded.config.vision_config.bias_mode == settings["bias_mode"]


def test_incomplete_checkpoint_is_rejected(sam_folder, tmp_path):
    folder, sam = sam_folder
    weights = load_file(folder / "model.safetensors")
    del weights["vision_encoder.layers.0.attn.qkv.weight"]
    from safetensors.torch import save_file

    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="layers.0.attn.qkv.weight"):
        convert_sam_to_basam(folder)


def test_cli_convert_sam_and_info(sam_folder, tmp_path, capsys):
    folder, _ = sam_folder
    assert (
        main(
            [
                "convert-sam",
                str(folder),
                str(tmp_path / "cli"),
                "--bias-mode",
                "coefficient",
                "--attention-scaling",
                "none",
            ]
        )
        == 0
    )
    assert main(["info", str(tmp_path / "cli")]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["model_type"] == "basam" and info["bias_mode"] == "coefficient" and info["attention_scaling"] == "none"


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and "basam-hf 0.1.0" in capsys.readouterr().out


@pytest.mark.parametrize("size", [96, 40])  # a larger and a smaller grid (12 x 12, 5 x 5 tokens; windows of 3)
def test_rebase_image_size_computes_what_the_model_computes_at_that_size(size, tmp_path):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_OFF)))).eval()
    rebased = rebase_image_size(model, size)
    vision, grid = rebased.config.vision_config, size // 8
    assert (vision.image_size, vision.pretrain_image_size, rebased.config.prompt_encoder_config.image_size) == (
        size,
        size,
        size,
    )
    assert rebased.vision_encoder.pos_embed.shape[1:3] == (grid, grid)
    assert rebased.vision_encoder.layers[1].attn.rel_pos_h.shape[0] == 2 * grid - 1  # the global layer
    assert rebased.vision_encoder.layers[0].attn.rel_pos_h.shape[0] == 2 * 3 - 1  # windows keep their tables
    rebased.save_pretrained(tmp_path / "rebased")
    reloaded = BaSamModel.from_pretrained(tmp_path / "rebased").eval()
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        pixel_values=torch.randn(2, 3, size, size, generator=generator),
        input_boxes=torch.tensor([[[3.0, 5.0, size - 9.0, size - 2.0]], [[10.0, 1.0, 30.0, 33.0]]]),
        multimask_output=False,
    )
    with torch.no_grad():
        expected, actual = model(**inputs), reloaded(**inputs)
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual.iou_scores, expected.iou_scores, atol=1e-5, rtol=1e-5)


def test_rebase_image_size_rejects_a_size_off_the_patch_grid():
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs()))
    with pytest.raises(ValueError, match="multiple of the patch size 8, got 60"):
        rebase_image_size(model, 60)


def test_processor_of_a_rebased_model_follows_its_size_and_keeps_the_normalisation(tmp_path):
    """load_processor on a model rebased to another size: the saved processor's input size would feed the model
    images of its old size, so only its normalisation is kept."""
    from basam_hf import save_pretrained_with_processor
    from basam_hf.loading import load_processor
    from basam_hf.processing_basam import processor_for_model

    model = BaSamModel(BaSamConfig(**tiny_config_kwargs()))
    size = model.config.vision_config.image_size
    saved = processor_for_model(model, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.5, 0.5])
    save_pretrained_with_processor(model, str(tmp_path / "model"), processor=saved)
    assert load_processor(tmp_path / "model", model).image_processor.size.longest_edge == size  # as saved
    rebased = rebase_image_size(model, 2 * size)
    image_processor = load_processor(tmp_path / "model", rebased).image_processor
    assert image_processor.size.longest_edge == 2 * size
    assert list(image_processor.image_mean) == [0.1, 0.2, 0.3] and list(image_processor.image_std) == [0.5] * 3
    # A size chosen for the saved model itself stays.
    save_pretrained_with_processor(model, str(tmp_path / "at-2x"), processor=processor_for_model(model, 2 * size))
    assert load_processor(tmp_path / "at-2x", model).image_processor.size.longest_edge == 2 * size


@pytest.mark.parametrize("ba", [BA_OFF, dict(bias_mode="coefficient", bias_layers="all")])
def test_deepen_encoder_starts_as_the_same_model_and_its_new_layers_learn(ba, tmp_path):
    # Layers 0 (windowed) and 1 (global); a ViT's initializer_range, so only the zeros make the new layers identities.
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**ba, initializer_range=0.02)))).eval()
    deeper = deepen_encoder(model, [0, 1])
    vision = deeper.config.vision_config
    assert (vision.num_hidden_layers, vision.global_attn_indexes) == (4, [2])
    assert [layer.window_size for layer in deeper.vision_encoder.layers] == [3, 3, 0, 3]
    old_layers = model.vision_encoder.layers
    for old, new in [(0, 0), (1, 2)]:  # the old layers' weights, at their new places
        for (name, value), (_, moved) in zip(
            old_layers[old].state_dict().items(), deeper.vision_encoder.layers[new].state_dict().items()
        ):
            assert torch.equal(value, moved), (old, name)
    deeper.save_pretrained(tmp_path / "deeper")
    reloaded = BaSamModel.from_pretrained(tmp_path / "deeper").eval()
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        pixel_values=torch.randn(2, 3, 64, 64, generator=generator),
        input_boxes=torch.tensor([[[3.0, 5.0, 55.0, 62.0]], [[10.0, 1.0, 30.0, 33.0]]]),
        multimask_output=False,
    )
    with torch.no_grad():
        expected = model(**inputs)
    actual = reloaded(**inputs)
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(actual.iou_scores, expected.iou_scores, atol=1e-6, rtol=1e-6)
    actual.pred_masks.square().mean().backward()
    for index in (1, 3):  # the new layers: their zero output weights get gradients, so training grows them
        layer = reloaded.vision_encoder.layers[index]
        assert layer.attn.proj.weight.grad.abs().sum() > 0 and layer.mlp.lin2.weight.grad.abs().sum() > 0


def test_deepen_encoder_rejects_a_layer_it_does_not_have():
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs()))
    with pytest.raises(ValueError, match=r"layers of the encoder \(0 to 1\), got \[2\]"):
        deepen_encoder(model, [2])
