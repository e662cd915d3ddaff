"""BaSamConfig: fields, validation, serialisation, top-level aliases."""

import pytest
from transformers import SamConfig

from basam_hf import BaSamConfig, BaSamVisionConfig
from basam_hf.configuration_basam import BA_CHOICES


def test_defaults():
    vision = BaSamConfig().vision_config
    assert isinstance(vision, BaSamVisionConfig)
    assert (vision.attention_scaling, vision.bias_mode, vision.bias_distance) == (
        "log_length",
        "distance",
        "manhattan",
    )
    assert (vision.distance_unit, vision.bias_layers, vision.learnable_slopes) == ("pretrain_grid", "global", False)
    assert vision.bias_slope_scale == 1.0 and vision.pretrain_image_size == 1024


@pytest.mark.parametrize("field", sorted(BA_CHOICES))
def test_invalid_choice_names_field_value_and_choices(field):
    with pytest.raises(ValueError) as error:
        BaSamVisionConfig(**{field: "bogus"})
    message = str(error.value)
    assert field in message and "'bogus'" in message
    assert all(repr(choice) in message for choice in BA_CHOICES[field])


@pytest.mark.parametrize(
    "field, value", [("pretrain_image_size", 0), ("attention_memory_budget_mb", -1), ("bias_slope_scale", "big")]
)
def test_invalid_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        BaSamVisionConfig(**{field: value})


def test_coefficient_needs_rel_pos():
    with pytest.raises(ValueError, match="use_rel_pos"):
        BaSamVisionConfig(bias_mode="coefficient", use_rel_pos=False)


def test_top_level_aliases_set_the_vision_config():
    config = BaSamConfig(bias_mode="coefficient", attention_scaling="none")
    assert config.vision_config.bias_mode == "coefficient" and config.attention_scaling == "none"
    config.bias_layers = "all"
    assert config.vision_config.bias_layers == "all"
    with pytest.raises(ValueError, match="bias_layers"):
        config.bias_layers = "some"
    assert config.vision_config.bias_layers == "all"  # a rejected value leaves the config valid


def test_round_trip_through_dict_keeps_ba_fields_and_auto_map():
    config = BaSamConfig(vision_config=dict(bias_distance="euclidean", bias_slope_scale=0.25, learnable_slopes=True))
    data = config.to_dict()
    assert data["model_type"] == "basam" and "bias_mode" not in data  # BA fields live in the vision config only
    assert set(data["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForMaskGeneration"}
    restored = BaSamConfig.from_dict(data)
    assert restored.vision_config.ba_settings() == config.vision_config.ba_settings()


def test_from_a_sam_config():
    sam = SamConfig(vision_config=dict(hidden_size=64, num_attention_heads=4))
    config = BaSamConfig.from_dict(sam.to_dict(), bias_mode="none")
    assert isinstance(config.vision_config, BaSamVisionConfig)
    assert config.vision_config.hidden_size == 64 and config.bias_mode == "none"
    assert BaSamConfig(vision_config=sam.vision_config).vision_config.hidden_size == 64
