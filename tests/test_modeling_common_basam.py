"""transformers' generic model test-suite (`ModelTesterMixin`) run on `BaSamModel`, with BA off and with BA on, plus
the checks of SAM's own `SamModelTest`.

The suite is not shipped in transformers' wheel: `scripts/fetch_transformers_tests.py` extracts it from the sdist of
the installed version into `.cache/transformers-tests/` (or `$BASAM_TRANSFORMERS_TESTS_DIR`); `scripts/test.sh`
runs it before pytest. Without it this module is skipped. The sdist has no per-model tests
(`tests/models/sam/test_modeling_sam.py`), so `SamModelTest`'s own tests are rewritten in `BaSamModelTest`.
"""

import math
import os
import re
import sys
import tempfile
import unittest
import warnings
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest
import torch
import transformers
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
from transformers.models.sam.modeling_sam import SamVisionSdpaAttention

from basam_hf import BaSamConfig, BaSamModel, BaSamVisionAttention, BaSamVisionConfig, BaSamVisionSdpaAttention

TESTS_DIR = Path(
    os.environ.get(
        "BASAM_TRANSFORMERS_TESTS_DIR", Path(__file__).resolve().parent.parent / ".cache" / "transformers-tests"
    )
)
_marker = TESTS_DIR / "transformers_tests" / "VERSION"
if not _marker.is_file():
    pytest.skip(
        f"transformers' generic tests are not in {TESTS_DIR}: run `python scripts/fetch_transformers_tests.py`",
        allow_module_level=True,
    )
if _marker.read_text().strip() != transformers.__version__:
    pytest.skip(
        f"{TESTS_DIR} holds the tests of transformers {_marker.read_text().strip()}, but {transformers.__version__} "
        "is installed: run `python scripts/fetch_transformers_tests.py`",
        allow_module_level=True,
    )
sys.path.insert(0, str(TESTS_DIR))

with warnings.catch_warnings():
    # transformers' CI markers (flash attention, torch.compile), meaningless here and not registered.
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    from transformers_tests.test_configuration_common import ConfigTester
    from transformers_tests.test_modeling_common import (
        TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION,
        ModelTesterMixin,
        floats_tensor,
    )


class BaSamModelTester:
    """Tiny BA-SAM configs and inputs: a 4x4 token grid (32 px, patch 8), one windowed layer whose window (3) needs
    padding and one global layer, and point + box prompts. `ba_kwargs` are the BA-SAM fields of the vision config."""

    def __init__(self, parent, ba_kwargs=None, batch_size=2, image_size=32, patch_size=8, hidden_size=32):
        self.parent = parent
        self.ba_kwargs = dict(ba_kwargs or {})
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = 3
        self.hidden_size = hidden_size
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.window_size = 3
        self.global_attn_indexes = [1]
        self.output_channels = 32  # also the width of the prompt encoder and the mask decoder
        self.decoder_num_hidden_layers = 2
        self.decoder_num_attention_heads = 4
        self.grid_size = image_size // patch_size
        self.seq_length = self.grid_size**2
        self.point_batch_size = 1
        self.is_training = True  # the training tests run on BaSamModelWithLoss

    def get_config(self) -> BaSamConfig:
        vision_config = {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "mlp_dim": 64,
            "output_channels": self.output_channels,
            "num_pos_feats": self.output_channels // 2,
            "window_size": self.window_size,
            "global_attn_indexes": self.global_attn_indexes,
            # SAM's default (1e-10) makes every activation ~0, so outputs would not depend on the attention at all.
            "initializer_range": 0.02,
            **self.ba_kwargs,
        }
        prompt_encoder_config = {
            "hidden_size": self.output_channels,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "mask_input_channels": 4,
        }
        mask_decoder_config = {
            "hidden_size": self.output_channels,
            "mlp_dim": 64,
            "num_hidden_layers": self.decoder_num_hidden_layers,
            "num_attention_heads": self.decoder_num_attention_heads,
            "iou_head_hidden_dim": 32,
        }
        return BaSamConfig(
            vision_config=vision_config,
            prompt_encoder_config=prompt_encoder_config,
            mask_decoder_config=mask_decoder_config,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        # A positive, a negative and a "not a point" (-1) point plus a box: every prompt embedding but the mask's.
        input_points = floats_tensor([self.batch_size, self.point_batch_size, 3, 2], scale=self.image_size - 1)
        input_labels = torch.tensor([1, 0, -1]).repeat(self.batch_size, self.point_batch_size, 1)
        corners = floats_tensor([self.batch_size, self.point_batch_size, 2, 2], scale=self.image_size - 1)
        input_boxes = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)  # (x1, y1, x2, y2)
        return self.get_config(), pixel_values, input_points, input_labels, input_boxes

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_points, input_labels, input_boxes = self.prepare_config_and_inputs()
        inputs_dict = {
            "pixel_values": pixel_values,
            "input_points": input_points,
            "input_labels": input_labels,
            "input_boxes": input_boxes,
        }
        return config, inputs_dict

    def expected_vision_attention_shapes(self) -> list[tuple[int, int, int]]:
        """`(batch * windows * heads, keys, keys)` per layer: windowed layers attend within padded windows."""
        windows = math.ceil(self.grid_size / self.window_size) ** 2
        heads = self.num_attention_heads
        return [
            (self.batch_size * heads, self.seq_length, self.seq_length)
            if i in self.global_attn_indexes
            else (self.batch_size * windows * heads, self.window_size**2, self.window_size**2)
            for i in range(self.num_hidden_layers)
        ]


class BaSamModelWithLoss(BaSamModel):
    """Test-only `BaSamModel` that also returns a scalar `loss` (a reduction of its masks and IoU scores).

    Like SAM, BA-SAM has no training head, so its output has no loss; transformers' generic training and gradient
    checkpointing tests backpropagate `outputs.loss`. This adds one and changes nothing else, so those tests check
    BA-SAM's own forward and backward (gradient checkpointing included).
    """

    def __init__(self, config):
        super().__init__(config)
        # The test prompts have no mask, so the mask embedding gets no gradient; frozen parameters are exempt from the
        # generic check that every trainable parameter gets one.
        self.prompt_encoder.mask_embed.requires_grad_(False)

    def forward(self, **kwargs):
        outputs = super().forward(**kwargs)
        outputs["loss"] = outputs.pred_masks.float().square().mean() + outputs.iou_scores.float().mean()
        return outputs


BA_OFF = {"bias_mode": "none", "attention_scaling": "none"}


def _skip_redundant_sdpa_variants(test_class):
    """Skip the `test_eager_matches_sdpa_inference` variants that repeat another one for SAM, which takes no attention
    mask: padding side and mask only select which output rows are compared, so each is a subset of the variant of the
    same dtype and kernels without a mask (the `output_attentions` variant is kept)."""
    for index, (name, dtype, padding_side, use_mask, output_attentions, kernels) in enumerate(
        TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION
    ):
        if output_attentions or (padding_side == "left" and not use_mask):
            continue
        kept = f"{dtype}_pad_left_no_attn_mask{'_sdpa_kernels' if kernels else ''}"
        pattern = rf"test_eager_matches_sdpa_inference_0*{index}_{re.escape(name)}"
        for method in [m for m in dir(test_class) if re.fullmatch(pattern, m)]:
            reason = f"SAM has no attention mask: this variant repeats, on fewer outputs, the {kept} variant"
            setattr(test_class, method, unittest.skip(reason)(lambda self: None))
    return test_class


@_skip_redundant_sdpa_variants
class BaSamModelTest(ModelTesterMixin, unittest.TestCase):
    """The generic tests with BA off (`BaSamModel` must behave as `SamModel`); the BA-on variants below subclass it
    with other `ba_kwargs`.

    Rewritten here, as transformers does for SAM, where the generic test assumes another model layout: attention
    and hidden-state outputs (SAM's are `vision_attentions`, `vision_hidden_states`, `mask_decoder_attentions`), an
    `nn.Embedding` input layer (SAM's is a patch-embedding convolution) and SDPA dispatch to a language sub-model (SAM
    has a vision encoder and a mask decoder). The training tests run unchanged on `BaSamModelWithLoss`.

    SAM's `SamModelTest` (transformers' tests/models/sam, not in the sdist) adds `test_model`,
    `test_get_image_features` and `test_image_hidden_states`, rewritten below, and overrides `test_config`,
    `test_model_get_set_embeddings`, `test_attention_outputs` and `test_sdpa_can_dispatch_composite_models` (SDPA
    attention classes by name), whose checks the versions below include. It skips the training tests and
    `test_retain_grad_hidden_states_attentions` ("does not support training"), which run here, and its pipeline tests
    (tests/test_pipeline.py runs the mask-generation pipeline); `test_model_from_pretrained` is skipped below.
    """

    all_model_classes = (BaSamModel,)
    ba_kwargs: ClassVar[dict] = BA_OFF
    test_resize_embeddings = False  # no token embeddings: the input layer is a patch-embedding convolution
    test_can_init_all_missing_weights_before_2023 = True  # our config file has no copyright year: run it anyway
    _is_composite = True

    @classmethod
    def setUpClass(cls):
        # The tensors are tiny: intra-op threads cost more than they save (twice the CPU time with 2 threads).
        cls._num_threads = torch.get_num_threads()
        torch.set_num_threads(1)

    @classmethod
    def tearDownClass(cls):
        torch.set_num_threads(cls._num_threads)

    def setUp(self):
        # BaSamModel is the base model of "basam" (registered with AutoModel) as SamModel is of "sam", but the generic
        # tests that only run on base models read transformers' static name table, which registration leaves alone:
        # without this they would pass without running (e.g. test_model_forward_default_config_values).
        patcher = mock.patch.dict(MODEL_MAPPING_NAMES, {BaSamConfig.model_type: BaSamModel.__name__})
        patcher.start()
        self.addCleanup(patcher.stop)
        self.model_tester = BaSamModelTester(self, self.ba_kwargs)
        self.config_tester = ConfigTester(
            self, config_class=BaSamConfig, has_text_modality=False, common_properties=["initializer_range"]
        )
        self.vision_config_tester = ConfigTester(
            self, config_class=BaSamVisionConfig, has_text_modality=False, hidden_size=32, **self.ba_kwargs
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_vision_config(self):
        self.vision_config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        # SAM's input layer is the patch embedding (a convolution), not an `nn.Embedding`; there is no output layer.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = BaSamModel(config)
        self.assertIs(model.get_input_embeddings(), model.vision_encoder.patch_embed)
        self.assertIsNone(model.get_output_embeddings())

    def test_model(self):
        # SAM's check: pixel values alone (no prompt) give one prompt's three masks and IoU scores per image.
        tester = self.model_tester
        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        outputs = self._forward(BaSamModel(config), {"pixel_values": inputs_dict["pixel_values"]})
        self.assertEqual(tuple(outputs.iou_scores.shape), (tester.batch_size, 1, 3))
        self.assertEqual(tuple(outputs.pred_masks.shape[:3]), (tester.batch_size, 1, 3))

    def test_get_image_features(self):
        tester = self.model_tester
        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        model = BaSamModel(config).eval()
        with torch.no_grad():
            embeddings = model.get_image_embeddings(inputs_dict["pixel_values"])
        expected = (tester.batch_size, tester.output_channels, tester.grid_size, tester.grid_size)
        self.assertEqual(tuple(embeddings.shape), expected)

    def test_image_hidden_states(self):
        # The vision encoder alone, with a dict and with a tuple output: the patch embedding and each layer's output.
        tester = self.model_tester
        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        model = BaSamModel(config).eval()
        expected = [(tester.batch_size, tester.grid_size, tester.grid_size, tester.hidden_size)] * (
            tester.num_hidden_layers + 1
        )
        for return_dict in (True, False):
            with torch.no_grad():
                outputs = model.vision_encoder(
                    inputs_dict["pixel_values"], output_hidden_states=True, return_dict=return_dict
                )
            self.assertListEqual([tuple(h.shape) for h in outputs[1]], expected)

    @unittest.skip(
        reason="SamModelTest's (@slow) loads facebook/sam-vit-huge from the Hub, and this suite downloads nothing; "
        "loading SAM checkpoints into BaSamModel is tested on tiny saved SamModels in tests/test_conversion_sam.py"
    )
    def test_model_from_pretrained(self):
        pass

    def test_ba_settings_reach_attention(self):
        # Each variant must run the attention it names: bias, BA parameters and scale per layer (windowed layers keep
        # SAM's scale; the tester's image size differs from the pretraining size, so a BA scale is not SAM's).
        tester = self.model_tester
        config, _ = tester.prepare_config_and_inputs_for_common()
        vision_config = config.vision_config
        for index, layer in enumerate(BaSamModel(config).vision_encoder.layers):
            attention, is_global = layer.attn, index in tester.global_attn_indexes
            bias_mode = vision_config.bias_mode if is_global or vision_config.bias_layers == "all" else "none"
            self.assertEqual(attention.bias_mode, bias_mode)
            self.assertEqual(hasattr(attention, "coefficient"), bias_mode == "coefficient")
            self.assertEqual(hasattr(attention, "slopes"), bias_mode == "distance" and vision_config.learnable_slopes)
            size = tester.grid_size if is_global else tester.window_size
            scaled = is_global and vision_config.attention_scaling != "none"
            self.assertEqual(attention.attention_scale(size, size) != attention.scale, scaled)

    def _forward(self, model, inputs_dict, **kwargs):
        model.eval()
        with torch.no_grad():
            return model(**self._prepare_for_class(inputs_dict, BaSamModel), **kwargs)

    def _check_attentions(self, outputs):
        tester = self.model_tester
        self.assertListEqual(
            [tuple(attention.shape) for attention in outputs.vision_attentions],
            tester.expected_vision_attention_shapes(),
        )
        for attention in outputs.vision_attentions:  # softmax rows, padding keys included
            torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
        self.assertEqual(len(outputs.mask_decoder_attentions), tester.decoder_num_hidden_layers)
        for attention in outputs.mask_decoder_attentions:
            self.assertEqual(tuple(attention.shape[:2]), (tester.batch_size, tester.point_batch_size))

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = BaSamModel._from_config(config, attn_implementation="eager")
        outputs = self._forward(model, inputs_dict, output_attentions=True)
        self._check_attentions(outputs)
        self.assertIsNone(outputs.vision_hidden_states)
        num_outputs = len(outputs)

        # through the config, and with the hidden states too: they are added before the attentions
        config = model.config
        config.output_attentions = True
        self._set_subconfig_attributes(config, "output_attentions", True)
        outputs = self._forward(BaSamModel(config), inputs_dict)
        self._check_attentions(outputs)
        outputs = self._forward(BaSamModel(config), inputs_dict, output_hidden_states=True)
        self._check_attentions(outputs)
        self.assertEqual(len(outputs), num_outputs + 1)
        self.assertIs(outputs[-2], outputs.vision_attentions)

    def test_hidden_states_output(self):
        tester = self.model_tester
        config, inputs_dict = tester.prepare_config_and_inputs_for_common()
        expected = [(tester.batch_size, tester.grid_size, tester.grid_size, tester.hidden_size)] * (
            tester.num_hidden_layers + 1
        )
        outputs = self._forward(BaSamModel(config), inputs_dict, output_hidden_states=True)
        self.assertListEqual([tuple(h.shape) for h in outputs.vision_hidden_states], expected)

        config.output_hidden_states = True
        self._set_subconfig_attributes(config, "output_hidden_states", True)
        outputs = self._forward(BaSamModel(config), inputs_dict)
        self.assertListEqual([tuple(h.shape) for h in outputs.vision_hidden_states], expected)

    def test_retain_grad_hidden_states_attentions(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = BaSamModel._from_config(config, attn_implementation="eager")
        outputs = model(**inputs_dict, output_hidden_states=True, output_attentions=True)
        retained = [
            outputs.vision_hidden_states[0],
            *outputs.vision_attentions,  # a windowed and a global layer
            outputs.mask_decoder_attentions[0],
        ]
        for tensor in retained:
            tensor.retain_grad()
        outputs.pred_masks.flatten()[0].backward()
        for tensor in retained:
            self.assertIsNotNone(tensor.grad)

    def _run_with_loss(self, test):
        self.all_model_classes = (BaSamModelWithLoss,)
        test()

    def test_training(self):
        self._run_with_loss(super().test_training)

    def test_training_gradient_checkpointing(self):
        self._run_with_loss(super().test_training_gradient_checkpointing)

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self._run_with_loss(super().test_training_gradient_checkpointing_use_reentrant_false)

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self._run_with_loss(super().test_training_gradient_checkpointing_use_reentrant_true)

    def _check_vision_attention_classes(self, model, implementation: str):
        """Every vision attention is BA-SAM's class of `implementation`; as SamModelTest checks for SAM, a class name
        contains "SdpaAttention" exactly in an SDPA model."""
        attentions = [m for m in model.modules() if isinstance(m, BaSamVisionAttention)]
        self.assertEqual(len(attentions), self.model_tester.num_hidden_layers)
        expected = BaSamVisionSdpaAttention if implementation == "sdpa" else BaSamVisionAttention
        for attention in attentions:
            self.assertIs(type(attention), expected)
            self.assertEqual(isinstance(attention, SamVisionSdpaAttention), implementation == "sdpa")
            self.assertEqual(attention.config._attn_implementation, implementation)
        has_sdpa_class = any("SdpaAttention" in type(m).__name__ for m in model.modules())
        self.assertEqual(has_sdpa_class, implementation == "sdpa")

    def test_sdpa_can_dispatch_composite_models(self):
        # The generic test looks for a language sub-model; SAM's sub-models are the vision encoder and mask decoder.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as tmpdirname:
            BaSamModel(config).save_pretrained(tmpdirname)
            model_sdpa = BaSamModel.from_pretrained(tmpdirname)
            model_eager = BaSamModel.from_pretrained(tmpdirname, attn_implementation="eager")
        for model, implementation in ((model_sdpa, "sdpa"), (model_eager, "eager")):
            self.assertEqual(model.config._attn_implementation, implementation)
            self.assertEqual(model.vision_encoder.config._attn_implementation, implementation)
            self.assertEqual(model.mask_decoder.config._attn_implementation, implementation)
            self._check_vision_attention_classes(model, implementation)

        # Only the eager path materializes attention weights: both paths ran, and they agree.
        outputs_sdpa = self._forward(model_sdpa, inputs_dict, output_attentions=True, output_hidden_states=True)
        outputs_eager = self._forward(model_eager, inputs_dict, output_attentions=True, output_hidden_states=True)
        self.assertFalse(outputs_sdpa.vision_attentions)
        self.assertEqual(len(outputs_eager.vision_attentions), self.model_tester.num_hidden_layers)
        torch.testing.assert_close(outputs_sdpa.vision_hidden_states[-1], outputs_eager.vision_hidden_states[-1])
        torch.testing.assert_close(outputs_sdpa.pred_masks, outputs_eager.pred_masks)

    def test_set_attn_implementation_switches_vision_attention(self):
        # The attention class is chosen when a layer is built; switching the implementation of a built model (as the
        # generic eager-vs-SDPA tests do) must switch the classes too, not only the configs.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = BaSamModel._from_config(config, attn_implementation="eager")
        expected = self._forward(model, inputs_dict, output_attentions=True)
        self.assertEqual(len(expected.vision_attentions), self.model_tester.num_hidden_layers)
        for implementation in ("sdpa", "eager"):
            model.set_attn_implementation(implementation)
            self._check_vision_attention_classes(model, implementation)
            outputs = self._forward(model, inputs_dict, output_attentions=True)
            self.assertEqual(bool(outputs.vision_attentions), implementation == "eager")
            torch.testing.assert_close(outputs.pred_masks, expected.pred_masks)


class BaSamDistanceLogLengthModelTest(BaSamModelTest):
    """BA on: fixed-slope Manhattan distance bias on the global layer and log-length scaling (pretrained at 24 px, run
    at 32 px, so the scale factor is not 1)."""

    ba_kwargs: ClassVar[dict] = {"bias_mode": "distance", "attention_scaling": "log_length", "pretrain_image_size": 24}


class BaSamCoefficientAllLayersModelTest(BaSamModelTest):
    """BA on: the official coefficient mode on every layer, windowed ones included, with the official scaling
    (pretrained at 16 px, run at 32 px)."""

    ba_kwargs: ClassVar[dict] = {
        "bias_mode": "coefficient",
        "bias_layers": "all",
        "attention_scaling": "official",
        "pretrain_image_size": 16,
    }


class BaSamLearnableSlopesModelTest(BaSamModelTest):
    """BA on: learnable ALiBi slopes (trainable, saved with the weights) on all layers, Euclidean distance, measured
    on the pretraining grid; a tiny memory budget makes SDPA run the global layer in query chunks."""

    ba_kwargs: ClassVar[dict] = {
        "bias_mode": "distance",
        "learnable_slopes": True,
        "bias_layers": "all",
        "bias_distance": "euclidean",
        "distance_unit": "pretrain_grid",
        "attention_scaling": "log_length",
        "pretrain_image_size": 16,
        "attention_memory_budget_mb": 0.002,
    }
