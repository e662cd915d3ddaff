"""Meta's original SAM checkpoints (segment-anything's `.pth` layout) convert to BA-SAM with `convert-sam FILE OUT`.

The reference is segment-anything's own modules (`pip install segment-anything`, code only): a tiny random SAM built
from them is saved as a state dict, converted offline, and with BA off the converted model's image embeddings, masks
and IoU scores must equal segment-anything's on the same inputs and prompts.
"""

import importlib
import importlib.util
import sys
import types
from functools import partial
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from basam_hf import BaSamModel
from basam_hf.cli import main
from basam_hf.conversion import convert_sam_to_basam

# Input 160 px with patch 16: a 10 x 10 grid, so the 4 x 4 windows need padding. Heads 2 with head size 16 (not SAM's
# 64), so the converter must read the head size from the rel-pos tables. The prompt width is 32: SAM's 8 decoder heads.
IMAGE_SIZE, PATCH, HIDDEN, HEADS, DEPTH, WINDOW, GLOBAL_LAYERS = 160, 16, 32, 2, 4, 4, (1, 3)
PROMPT_DIM, MASK_CHANNELS, DECODER_MLP, IOU_HIDDEN = 32, 16, 48, 24
BA_OFF = ["--bias-mode", "none", "--attention-scaling", "none"]


def segment_anything_modeling() -> types.ModuleType:
    """`segment_anything.modeling`, imported without running `segment_anything/__init__.py`.

    The package's `__init__` imports its predictor and automatic mask generator, which import torchvision (not
    loadable with this CPU torch); the modeling subpackage needs only torch. An empty stand-in for the top-level
    package, pointing at its folder, lets Python import the subpackage alone; `patch.dict` removes both from
    `sys.modules` again afterwards.
    """
    spec = importlib.util.find_spec("segment_anything")
    if spec is None:
        pytest.skip("segment-anything is not installed (pip install segment-anything, in the dev extra)")
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    with mock.patch.dict(sys.modules, {"segment_anything": package}):
        return importlib.import_module("segment_anything.modeling")


def segment_anything_sam(
    image_size: int, embed_dim: int, depth: int, num_heads: int, global_layers: tuple, window: int, **sizes
) -> torch.nn.Module:
    """A SAM from segment-anything's modules, built as its `_build_sam` builds ViT-B/L/H (patch 16, MLP ratio 4,
    prompt width 256, decoder MLP 2048, 8 decoder heads) unless `sizes` says otherwise; in eval mode."""
    modeling = segment_anything_modeling()
    sizes = dict(mlp_ratio=4, prompt_dim=256, mask_channels=16, decoder_mlp=2048, iou_hidden=256) | sizes
    grid = image_size // PATCH
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=image_size,
            patch_size=PATCH,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=sizes["mlp_ratio"],
            out_chans=sizes["prompt_dim"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=window,
            global_attn_indexes=global_layers,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=sizes["prompt_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=sizes["mask_channels"],
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=sizes["prompt_dim"], mlp_dim=sizes["decoder_mlp"], num_heads=8
            ),
            transformer_dim=sizes["prompt_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=sizes["iou_hidden"],
        ),
    )
    return sam.eval()


@torch.no_grad()
def tiny_segment_anything(seed: int = 0) -> torch.nn.Module:
    """A tiny SAM from segment-anything's modules with random values in every weight."""
    sam = segment_anything_sam(
        IMAGE_SIZE,
        HIDDEN,
        DEPTH,
        HEADS,
        GLOBAL_LAYERS,
        WINDOW,
        mlp_ratio=2,
        prompt_dim=PROMPT_DIM,
        mask_channels=MASK_CHANNELS,
        decoder_mlp=DECODER_MLP,
        iou_hidden=IOU_HIDDEN,
    )
    # SAM zero-initialises its rel-pos tables and position embedding: random values everywhere make each weight count.
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in sam.named_parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.05 if "patch_embed" in name else 0.3))
        if name.endswith(("norm1.weight", "norm2.weight", "neck.1.weight", "neck.3.weight")):
            parameter += 1.0
        # The decoder's first layer normalises its self-attention output alone (no residual): kept small, as in SAM
        # ViT-B at initialisation, it makes the outputs depend on the layer norms' epsilon (nn.LayerNorm's 1e-5 in
        # segment-anything's two-way transformer).
        if name.startswith("mask_decoder.transformer.layers.0.self_attn.out_proj."):
            parameter *= 0.03
    return sam


@pytest.fixture(scope="module")
def meta_checkpoint(tmp_path_factory):
    """segment-anything's tiny SAM and its state dict saved as Meta's files are (`torch.save(sam.state_dict())`)."""
    sam = tiny_segment_anything()
    path = tmp_path_factory.mktemp("meta") / "sam_vit_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def _prompts(image_size: int = IMAGE_SIZE) -> list[dict]:
    """Prompts as segment-anything takes them: points (coordinates in input pixels, labels), a box, a low-res mask;
    written for 160 px and scaled to `image_size`."""
    generator = torch.Generator().manual_seed(1)
    mask = torch.randn(1, 1, 4 * image_size // PATCH, 4 * image_size // PATCH, generator=generator)
    scale = image_size / 160
    return [
        dict(points=(torch.tensor([[[40.0, 95.5]]]) * scale, torch.tensor([[1]])), boxes=None, masks=None),
        dict(
            points=(torch.tensor([[[40.0, 95.5], [120.0, 20.0]]]) * scale, torch.tensor([[1, 0]])),
            boxes=None,
            masks=None,
        ),
        dict(points=None, boxes=torch.tensor([[12.0, 30.0, 131.0, 150.0]]) * scale, masks=None),
        dict(
            points=(torch.tensor([[[70.0, 80.0]]]) * scale, torch.tensor([[1]])),
            boxes=torch.tensor([[10.0, 5, 150, 99]]) * scale,
            masks=mask,
        ),
    ]


def _basam_prompts(prompt: dict) -> dict:
    """The same prompt as transformers' SAM takes it: a batch of one image with one prompt."""
    inputs = {}
    if prompt["points"] is not None:
        coordinates, labels = prompt["points"]
        inputs |= {"input_points": coordinates[:, None], "input_labels": labels[:, None]}
    if prompt["boxes"] is not None:
        inputs["input_boxes"] = prompt["boxes"][:, None]
    if prompt["masks"] is not None:
        inputs["input_masks"] = prompt["masks"]
    return inputs


@torch.no_grad()
def assert_same_outputs(sam: torch.nn.Module, model: BaSamModel, multimask: bool = True) -> None:
    """segment-anything's `sam` and the converted `model` give the same image embeddings, masks and IoU scores to
    1e-5 on one random preprocessed image and each of [`_prompts`]; each module of `sam` is called as `Sam.forward`
    calls it."""
    image_size = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    reference_embeddings = sam.image_encoder(pixels)
    embeddings = model.get_image_embeddings(pixels)
    torch.testing.assert_close(embeddings, reference_embeddings, rtol=0, atol=1e-5)
    for prompt in _prompts(image_size):
        sparse, dense = sam.prompt_encoder(**prompt)
        reference_masks, reference_scores = sam.mask_decoder(
            image_embeddings=reference_embeddings,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        outputs = model(image_embeddings=embeddings, multimask_output=multimask, **_basam_prompts(prompt))
        torch.testing.assert_close(outputs.pred_masks[:, 0], reference_masks, rtol=0, atol=1e-5)
        torch.testing.assert_close(outputs.iou_scores[:, 0], reference_scores, rtol=0, atol=1e-5)


def _encoder_layout(model: BaSamModel) -> tuple:
    vision = model.config.vision_config
    return (
        vision.image_size,
        vision.num_hidden_layers,
        vision.hidden_size,
        vision.num_attention_heads,
        vision.mlp_dim,
        list(vision.global_attn_indexes),
        vision.window_size,
    )


@pytest.mark.parametrize("multimask", [True, False])
def test_converted_checkpoint_equals_segment_anything(meta_checkpoint, tmp_path, multimask):
    sam, path = meta_checkpoint
    assert main(["convert-sam", str(path), str(tmp_path / "out"), *BA_OFF]) == 0
    model = BaSamModel.from_pretrained(tmp_path / "out").eval()
    assert _encoder_layout(model) == (IMAGE_SIZE, DEPTH, HIDDEN, HEADS, 2 * HIDDEN, list(GLOBAL_LAYERS), WINDOW)
    assert_same_outputs(sam, model, multimask)


@pytest.mark.slow
def test_vit_b_widths_are_inferred(tmp_path):
    """SAM ViT-B's encoder and SAM's prompt encoder and decoder, with segment-anything's own initialisation (the
    zero-initialised position tables drawn), at a 256 px input to stay fast: 16 x 16 tokens, so the 14 x 14 windows
    are padded and the global tables (31 rows) differ from the windowed ones (27)."""
    torch.manual_seed(0)
    sam = segment_anything_sam(256, embed_dim=768, depth=12, num_heads=12, global_layers=(2, 5, 8, 11), window=14)
    with torch.no_grad():
        for name, parameter in sam.image_encoder.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                parameter.normal_(std=0.02)
    torch.save(sam.state_dict(), tmp_path / "sam_vit_b.pth")
    model = convert_sam_to_basam(tmp_path / "sam_vit_b.pth", bias_mode="none", attention_scaling="none")
    assert _encoder_layout(model) == (256, 12, 768, 12, 3072, [2, 5, 8, 11], 14)
    assert_same_outputs(sam, model)


def test_python_entry_takes_the_file_and_starts_ba_parameters_at_their_documented_values(meta_checkpoint):
    sam, path = meta_checkpoint
    model = convert_sam_to_basam(path, bias_mode="coefficient", bias_layers="all", coefficient_init=0.25)
    assert all(layer.attn.coefficient.item() == 0.25 for layer in model.vision_encoder.layers)
    model = convert_sam_to_basam(path, bias_mode="distance", learnable_slopes=True)
    slopes = model.vision_encoder.layers[GLOBAL_LAYERS[0]].attn.slopes.detach()
    # ALiBi's slopes, as BaSamVisionConfig documents them
    torch.testing.assert_close(slopes, torch.tensor([2 ** (-8 * (h + 1) / HEADS) for h in range(HEADS)]))
    # The package's default BA settings otherwise; every SAM weight is the file's.
    default = convert_sam_to_basam(path)
    assert default.config.vision_config.bias_mode == "distance"
    torch.testing.assert_close(
        default.vision_encoder.layers[1].attn.rel_pos_h, sam.image_encoder.blocks[1].attn.rel_pos_h
    )


def test_nested_state_dict_and_safetensors_are_accepted(meta_checkpoint, tmp_path):
    sam, _ = meta_checkpoint
    state = sam.state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "nested.pth")
    save_file({key: value.contiguous() for key, value in state.items()}, tmp_path / "sam.safetensors")
    for name in ("nested.pth", "sam.safetensors"):
        model = convert_sam_to_basam(tmp_path / name, bias_mode="none", attention_scaling="none")
        torch.testing.assert_close(
            model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"], rtol=0, atol=0
        )


def _error_line(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


class _Custom:  # a pickle that needs this class: arbitrary code to a weights-only loader
    pass


def test_corrupt_or_code_pickles_give_the_loaders_error(meta_checkpoint, tmp_path, capsys):
    _, path = meta_checkpoint
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    line = _error_line(["convert-sam", str(truncated), str(tmp_path / "a")], capsys)
    assert "truncated.pth is corrupt or truncated" in line
    torch.save({"model": {}, "args": _Custom()}, tmp_path / "code.pth")
    line = _error_line(["convert-sam", str(tmp_path / "code.pth"), str(tmp_path / "b")], capsys)
    assert "not a plain state dict" in line and "will not unpickle arbitrary code" in line


def test_other_layouts_are_named(meta_checkpoint, tmp_path, capsys):
    sam, _ = meta_checkpoint
    torch.save({"backbone.conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    line = _error_line(["convert-sam", str(tmp_path / "other.pth"), str(tmp_path / "a")], capsys)
    assert (
        "Not a SAM checkpoint in segment-anything's key layout: it lacks image_encoder.patch_embed.proj.weight" in line
    )
    assert "backbone.conv.weight" in line

    state = sam.state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match="missing from the checkpoint \\(1\\): mask_decoder.iou_token.weight"):
        convert_sam_to_basam(tmp_path / "incomplete.pth")

    official = dict(sam.state_dict(), **{"image_encoder.blocks.0.attn.coefficient": torch.ones(1)})
    torch.save(official, tmp_path / "official.pth")
    line = _error_line(["convert-sam", str(tmp_path / "official.pth"), str(tmp_path / "b")], capsys)
    assert "convert-official" in line
    line = _error_line(["convert-official", str(tmp_path / "incomplete.pth"), str(tmp_path / "c")], capsys)
    assert "has no BA coefficients" in line and "convert-sam" in line
