"""BaSamModel as a SAM: identical to SamModel with BA off, different with BA on, Auto-class registration."""

import pytest
import torch
from conftest import BA_OFF, randomize_, tiny_config_kwargs
from transformers import AutoModel, AutoModelForMaskGeneration, SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel

PROMPTS = {
    "points": lambda inputs: dict(input_points=inputs["input_points"], input_labels=inputs["input_labels"]),
    "boxes": lambda inputs: dict(input_boxes=torch.tensor([[[4.0, 6.0, 40.0, 50.0]], [[1.0, 2.0, 60.0, 30.0]]])),
    "points+boxes": lambda inputs: dict(
        input_points=inputs["input_points"],
        input_labels=inputs["input_labels"],
        input_boxes=torch.tensor([[[4.0, 6.0, 40.0, 50.0]], [[1.0, 2.0, 60.0, 30.0]]]),
    ),
    "mask": lambda inputs: dict(
        input_points=inputs["input_points"], input_labels=inputs["input_labels"], input_masks=torch.randn(2, 1, 32, 32)
    ),
}


def sam_and_basam(implementation: str, **ba_settings):
    sam = randomize_(SamModel(SamConfig(**tiny_config_kwargs(), attn_implementation=implementation))).eval()
    basam = BaSamModel(BaSamConfig(**tiny_config_kwargs(**ba_settings), attn_implementation=implementation)).eval()
    missing, unexpected = basam.load_state_dict(sam.state_dict(), strict=False)
    assert not unexpected and all(key.endswith(("coefficient", "slopes")) for key in missing)
    return sam, basam


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_ba_off_equals_sam(implementation, prompt, sample_inputs):
    sam, basam = sam_and_basam(implementation, **BA_OFF)
    inputs = dict(pixel_values=sample_inputs["pixel_values"], **PROMPTS[prompt](sample_inputs))
    with torch.no_grad():
        expected, actual = sam(**inputs), basam(**inputs)
    assert expected.pred_masks.abs().max() > 0.1  # a real signal, not a constant
    assert (actual.pred_masks - expected.pred_masks).abs().max() <= 1e-6
    assert (actual.iou_scores - expected.iou_scores).abs().max() <= 1e-6


def test_ba_off_equals_sam_image_embeddings_and_attentions(sample_inputs):
    sam, basam = sam_and_basam("eager", **BA_OFF)
    with torch.no_grad():
        expected = sam(**sample_inputs, output_attentions=True, output_hidden_states=True)
        actual = basam(**sample_inputs, output_attentions=True, output_hidden_states=True)
        assert torch.equal(
            sam.get_image_embeddings(sample_inputs["pixel_values"]),
            basam.get_image_embeddings(sample_inputs["pixel_values"]),
        )
    for mine, theirs in zip(actual.vision_attentions, expected.vision_attentions, strict=True):
        assert (mine - theirs).abs().max() <= 1e-6
    assert len(actual.vision_hidden_states) == len(expected.vision_hidden_states)


@pytest.mark.parametrize(
    "settings",
    [
        dict(bias_mode="distance"),
        dict(bias_mode="coefficient", bias_layers="all"),
        dict(bias_mode="distance", bias_distance="euclidean"),
    ],
)
def test_ba_on_changes_outputs(settings, sample_inputs):
    sam, basam = sam_and_basam("sdpa", **settings)
    pixel_values = sample_inputs["pixel_values"]
    with torch.no_grad():
        difference = sam.get_image_embeddings(pixel_values) - basam.get_image_embeddings(pixel_values)
    assert difference.abs().max() > 1e-3


def test_is_a_sam_model_and_new_parameters_are_initialised_as_documented():
    model = BaSamModel(
        BaSamConfig(**tiny_config_kwargs(bias_mode="coefficient", bias_layers="all", coefficient_init=0.25))
    )
    assert isinstance(model, SamModel)
    coefficients = [layer.attn.coefficient for layer in model.vision_encoder.layers]
    assert all(torch.equal(c, torch.tensor([0.25])) for c in coefficients)
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs(learnable_slopes=True, bias_slope_scale=2.0)))
    slopes = model.vision_encoder.layers[1].attn.slopes  # the global layer
    torch.testing.assert_close(slopes.detach(), torch.tensor([2 * 2 ** (-8 * (h + 1) / 4) for h in range(4)]))
    assert not hasattr(model.vision_encoder.layers[0].attn, "slopes")  # bias_layers="global"


def test_auto_classes_resolve_to_basam_when_installed(tmp_path):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs())))
    model.save_pretrained(tmp_path)
    for auto in (AutoModel, AutoModelForMaskGeneration):
        loaded = auto.from_pretrained(tmp_path)
        assert type(loaded) is BaSamModel
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
            assert torch.equal(a, b), name


def test_learnable_slopes_and_coefficients_are_saved_and_loaded(tmp_path):
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs(learnable_slopes=True, bias_layers="all")))
    with torch.no_grad():
        model.vision_encoder.layers[0].attn.slopes.fill_(0.123)
    model.save_pretrained(tmp_path)
    loaded = BaSamModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.vision_encoder.layers[0].attn.slopes, torch.full((4,), 0.123))


def test_pixel_values_errors_are_clear():
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs())).eval()
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model.get_image_embeddings(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.get_image_embeddings(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        model.get_image_embeddings(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="exactly one"):
        model()
