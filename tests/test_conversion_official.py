"""Official BA-SAM checkpoints (segment-anything key layout + a coefficient per block) convert to BaSamModel.

The reference below is an independent plain-torch forward of the official image encoder, written from its formulas:
patch conv, optional absolute position embedding, pre-norm blocks with windowed or global attention
`softmax((q * scale) @ k^T + coefficient * decomposed_rel_pos(q))`, MLP with GELU, neck conv1x1-LN2d-conv3x3-LN2d;
on global blocks `scale = head_dim**-0.5 * log(s**2 * 4096) / log(4096)` with `s = image_size // 1024`.
The encoder is tiny (hidden 32) but uses patch 16, so 1024 and 2048 px inputs are the official grids (64 and 128).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from basam_hf import BaSamModel, BaSamProcessor
from basam_hf.cli import main
from basam_hf.conversion import convert_official_checkpoint, load_official_state_dict

# One global layer between two windowed ones keeps 2048 px inputs (16384 tokens) affordable on a CPU.
HIDDEN, HEADS, DEPTH, WINDOW, GLOBAL_LAYERS, MLP, PATCH = 32, 2, 3, 3, (1,), 64, 16
PROMPT_DIM = 256  # SAM's prompt encoder and mask decoder, as the official builder makes them


def _official_shapes(
    build_size: int,
    abs_pos: bool,
    width: int = PROMPT_DIM,
    decoder_mlp: int = 2048,
    iou_hidden: int = PROMPT_DIM,
    iou_depth: int = 3,
    mask_channels: int = 16,
) -> dict[str, tuple]:
    """Key -> shape of an official BA-SAM checkpoint, written out in segment-anything's layout: `width` is the
    encoder's `out_chans` (prompt encoder and mask decoder follow it), the other sizes SAM's builder arguments."""
    grid, head_dim, d, c = build_size // PATCH, HIDDEN // HEADS, width, mask_channels
    shapes = {
        "image_encoder.patch_embed.proj.weight": (HIDDEN, 3, PATCH, PATCH),
        "image_encoder.patch_embed.proj.bias": (HIDDEN,),
    }
    if abs_pos:
        shapes["image_encoder.pos_embed"] = (1, grid, grid, HIDDEN)
    for i in range(DEPTH):
        size = grid if i in GLOBAL_LAYERS else WINDOW
        block = f"image_encoder.blocks.{i}."
        shapes |= {f"{block}norm{n}.{p}": (HIDDEN,) for n in (1, 2) for p in ("weight", "bias")}
        shapes |= {f"{block}attn.qkv.weight": (3 * HIDDEN, HIDDEN), f"{block}attn.qkv.bias": (3 * HIDDEN,)}
        shapes |= {f"{block}attn.proj.weight": (HIDDEN, HIDDEN), f"{block}attn.proj.bias": (HIDDEN,)}
        shapes |= {
            f"{block}attn.rel_pos_h": (2 * size - 1, head_dim),
            f"{block}attn.rel_pos_w": (2 * size - 1, head_dim),
        }
        shapes |= {f"{block}attn.coefficient": (1,)}
        shapes |= {f"{block}mlp.lin1.weight": (MLP, HIDDEN), f"{block}mlp.lin1.bias": (MLP,)}
        shapes |= {f"{block}mlp.lin2.weight": (HIDDEN, MLP), f"{block}mlp.lin2.bias": (HIDDEN,)}
    shapes |= {"image_encoder.neck.0.weight": (d, HIDDEN, 1, 1), "image_encoder.neck.2.weight": (d, d, 3, 3)}
    shapes |= {f"image_encoder.neck.{n}.{p}": (d,) for n in (1, 3) for p in ("weight", "bias")}

    shapes |= {"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, d // 2)}
    shapes |= {f"prompt_encoder.point_embeddings.{i}.weight": (1, d) for i in range(4)}
    shapes |= {"prompt_encoder.not_a_point_embed.weight": (1, d), "prompt_encoder.no_mask_embed.weight": (1, d)}
    for index, weight in {
        "0": (c // 4, 1, 2, 2),
        "1": (c // 4,),
        "3": (c, c // 4, 2, 2),
        "4": (c,),
        "6": (d, c, 1, 1),
    }.items():
        shapes |= {
            f"prompt_encoder.mask_downscaling.{index}.weight": weight,
            f"prompt_encoder.mask_downscaling.{index}.bias": (weight[0],),
        }

    def attention(prefix: str, inner: int) -> dict:
        proj = {f"{prefix}.{n}_proj.weight": (inner, d) for n in "qkv"} | {
            f"{prefix}.{n}_proj.bias": (inner,) for n in "qkv"
        }
        return proj | {f"{prefix}.out_proj.weight": (d, inner), f"{prefix}.out_proj.bias": (d,)}

    shapes |= {"mask_decoder.iou_token.weight": (1, d), "mask_decoder.mask_tokens.weight": (4, d)}
    for layer in range(2):
        prefix = f"mask_decoder.transformer.layers.{layer}."
        shapes |= attention(prefix + "self_attn", d)
        shapes |= attention(prefix + "cross_attn_token_to_image", d // 2) | attention(
            prefix + "cross_attn_image_to_token", d // 2
        )
        shapes |= {f"{prefix}norm{n}.{p}": (d,) for n in range(1, 5) for p in ("weight", "bias")}
        shapes |= {f"{prefix}mlp.lin1.weight": (decoder_mlp, d), f"{prefix}mlp.lin1.bias": (decoder_mlp,)}
        shapes |= {f"{prefix}mlp.lin2.weight": (d, decoder_mlp), f"{prefix}mlp.lin2.bias": (d,)}
    shapes |= attention("mask_decoder.transformer.final_attn_token_to_image", d // 2)
    shapes |= {f"mask_decoder.transformer.norm_final_attn.{p}": (d,) for p in ("weight", "bias")}
    shapes |= {
        "mask_decoder.output_upscaling.0.weight": (d, d // 4, 2, 2),
        "mask_decoder.output_upscaling.0.bias": (d // 4,),
    }
    shapes |= {"mask_decoder.output_upscaling.1.weight": (d // 4,), "mask_decoder.output_upscaling.1.bias": (d // 4,)}
    shapes |= {
        "mask_decoder.output_upscaling.3.weight": (d // 4, d // 8, 2, 2),
        "mask_decoder.output_upscaling.3.bias": (d // 8,),
    }
    heads = [(f"output_hypernetworks_mlps.{i}", (d, d, d // 8)) for i in range(4)]
    heads.append(("iou_prediction_head", (iou_hidden,) * (iou_depth - 1) + (4,)))
    for head, outputs in heads:
        for layer, (inputs, rows) in enumerate(zip((d,) + outputs, outputs)):
            shapes |= {
                f"mask_decoder.{head}.layers.{layer}.weight": (rows, inputs),
                f"mask_decoder.{head}.layers.{layer}.bias": (rows,),
            }
    return shapes


def official_state_dict(
    build_size: int = 1024, abs_pos: bool = False, seed: int = 0, **widths
) -> dict[str, torch.Tensor]:
    """A random official checkpoint: distinct values everywhere, coefficients well away from their 0.1 init.
    `widths`: the prompt encoder / mask decoder sizes of [`_official_shapes`]."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _official_shapes(build_size, abs_pos, **widths).items():
        std = 0.05 if "patch_embed" in key else 0.3
        state[key] = torch.randn(shape, generator=generator) * std
        if key.endswith(("norm1.weight", "norm2.weight", "neck.1.weight", "neck.3.weight")):
            state[key] += 1.0
        if key.endswith("coefficient"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
    return state


# ---------------------------------------------------------------------------------------------------------------
# Independent reference forward of the official image encoder.


def _relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """`(size, size, dim)`: entry `[i, j]` is the table row for offset `i - j`, the table linearly resized to
    `2 * size - 1` rows first if needed."""
    rows = 2 * size - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.T[None], size=rows, mode="linear")[0].T
    offsets = torch.arange(size)[:, None] - torch.arange(size)[None, :] + size - 1
    return table[offsets]


def _attention(x, weights, block, factor, use_tables, chunk=2048):
    batch, height, width, channels = x.shape
    tokens, head_dim = height * width, channels // HEADS
    qkv = F.linear(
        x.reshape(batch, tokens, channels), weights[f"{block}attn.qkv.weight"], weights[f"{block}attn.qkv.bias"]
    )
    q, k, v = qkv.reshape(batch, tokens, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
    if use_tables:
        coefficient = weights[f"{block}attn.coefficient"]
        table_h = coefficient * _relative_table(weights[f"{block}attn.rel_pos_h"], height)  # (H, H, d)
        table_w = coefficient * _relative_table(weights[f"{block}attn.rel_pos_w"], width)  # (W, W, d)
        grid_q = q.reshape(batch, HEADS, height, width, head_dim)
        # row term [b, h, y, x, y'] = q[b, h, y, x] . table_h[y, y']; column term likewise with x, x'
        row = (grid_q.permute(2, 0, 1, 3, 4) @ table_h.transpose(1, 2)[:, None, None]).permute(1, 2, 0, 3, 4)
        col = (grid_q.permute(3, 0, 1, 2, 4) @ table_w.transpose(1, 2)[:, None, None]).permute(1, 2, 3, 0, 4)
        row, col = row.reshape(batch, HEADS, tokens, height), col.reshape(batch, HEADS, tokens, width)
    out = torch.empty_like(q)
    scale = head_dim**-0.5 * factor
    keys_t, v = k.transpose(-1, -2).contiguous(), v.contiguous()
    for start in range(0, tokens, chunk):  # query chunks, in place: 2048 px inputs have 16384 tokens
        rows = slice(start, start + chunk)
        logits = (q[:, :, rows] * scale) @ keys_t
        if use_tables:
            grid_logits = logits.view(batch, HEADS, -1, height, width)  # key index -> (key row, key column)
            grid_logits += row[:, :, rows, :, None]
            grid_logits += col[:, :, rows, None, :]
        logits -= logits.amax(dim=-1, keepdim=True)
        probabilities = logits.exp_()
        probabilities /= probabilities.sum(dim=-1, keepdim=True)
        out[:, :, rows] = probabilities @ v
    out = out.transpose(1, 2).reshape(batch, height, width, channels)
    return F.linear(out, weights[f"{block}attn.proj.weight"], weights[f"{block}attn.proj.bias"])


def _in_windows(x, window, function):
    """Apply `function` to non-overlapping `window x window` tiles of `x` (B, H, W, C), zero-padded at the end."""
    batch, height, width, channels = x.shape
    padded = F.pad(x, (0, 0, 0, -width % window, 0, -height % window))
    rows, cols = padded.shape[1] // window, padded.shape[2] // window
    tiles = (
        padded.reshape(batch, rows, window, cols, window, channels)
        .transpose(2, 3)
        .reshape(-1, window, window, channels)
    )
    tiles = function(tiles).reshape(batch, rows, cols, window, window, channels).transpose(2, 3)
    return tiles.reshape(batch, rows * window, cols * window, channels)[:, :height, :width]


def _layer_norm_2d(x, weight, bias, eps=1e-6):
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


@torch.no_grad()
def reference_image_embeddings(weights, pixel_values, rel_pos=True):
    """The official encoder at input size `pixel_values.shape[-1]`; `rel_pos=False`: tables at zero (val.py)."""
    w, enc = weights, "image_encoder."
    x = F.conv2d(pixel_values, w[f"{enc}patch_embed.proj.weight"], w[f"{enc}patch_embed.proj.bias"], stride=PATCH)
    x = x.permute(0, 2, 3, 1)
    if f"{enc}pos_embed" in w:
        x = x + w[f"{enc}pos_embed"]
    length_scale = pixel_values.shape[-1] // 1024
    global_factor = math.log(length_scale**2 * 4096) / math.log(4096)
    for i in range(DEPTH):
        block = f"{enc}blocks.{i}."
        h = F.layer_norm(x, (HIDDEN,), w[f"{block}norm1.weight"], w[f"{block}norm1.bias"], eps=1e-6)
        if i in GLOBAL_LAYERS:
            h = _attention(h, w, block, global_factor, rel_pos)
        else:
            h = _in_windows(h, WINDOW, lambda tiles, block=block: _attention(tiles, w, block, 1.0, rel_pos))
        x = x + h
        h = F.layer_norm(x, (HIDDEN,), w[f"{block}norm2.weight"], w[f"{block}norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, w[f"{block}mlp.lin1.weight"], w[f"{block}mlp.lin1.bias"])),
            w[f"{block}mlp.lin2.weight"],
            w[f"{block}mlp.lin2.bias"],
        )
        x = x + h
    x = _layer_norm_2d(
        F.conv2d(x.permute(0, 3, 1, 2), w[f"{enc}neck.0.weight"]), w[f"{enc}neck.1.weight"], w[f"{enc}neck.1.bias"]
    )
    return _layer_norm_2d(
        F.conv2d(x, w[f"{enc}neck.2.weight"], padding=1), w[f"{enc}neck.3.weight"], w[f"{enc}neck.3.bias"]
    )


# ---------------------------------------------------------------------------------------------------------------


def _save_pth(tmp_path, content, name="official.pth"):
    path = tmp_path / name
    torch.save(content, path)
    return path


def _pixels(size, seed=3):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "build_size, input_size, drop_rel_pos",
    [
        (1024, 1024, False),  # training script: tables loaded
        (1024, 1024, True),  # evaluation script: tables dropped, coefficient without effect
        pytest.param(2048, 2048, False, marks=pytest.mark.slow),  # built (and trained) at 2048: 255-row global tables
        pytest.param(1024, 2048, True, marks=pytest.mark.slow),  # val.py at 2048 on a 1024 checkpoint (tables dropped)
    ],
)
def test_image_embeddings_match_official_forward(tmp_path, build_size, input_size, drop_rel_pos):
    weights = official_state_dict(build_size)
    model = convert_official_checkpoint(_save_pth(tmp_path, weights), drop_rel_pos=drop_rel_pos)
    pixels = _pixels(input_size)
    with torch.no_grad():
        ours = model.get_image_embeddings(pixels)
    expected = reference_image_embeddings(weights, pixels, rel_pos=not drop_rel_pos)
    assert ours.shape == expected.shape == (1, PROMPT_DIM, input_size // PATCH, input_size // PATCH)
    # float32: both sides round differently by ~1e-5 (each is that far from float64); the bound is 5e-5
    assert (ours - expected).abs().max() <= 5e-5
    if input_size == 1024 and not drop_rel_pos:  # the same function: equal up to float64 rounding
        with torch.no_grad():
            ours = model.double().get_image_embeddings(pixels.double())
        weights64 = {key: value.double() for key, value in weights.items()}
        assert (
            ours - reference_image_embeddings(weights64, pixels.double(), rel_pos=not drop_rel_pos)
        ).abs().max() <= 1e-10


def test_absolute_position_embedding_is_kept(tmp_path):
    weights = official_state_dict(1024, abs_pos=True)
    model = convert_official_checkpoint(_save_pth(tmp_path, weights))
    assert model.config.vision_config.use_abs_pos
    pixels = _pixels(1024)
    with torch.no_grad():
        ours = model.get_image_embeddings(pixels)
    assert (ours - reference_image_embeddings(weights, pixels)).abs().max() <= 5e-5


# Official key -> transformers key, written out independently of the converter's rules.
EXPECTED_NAMES = {
    "image_encoder.patch_embed.proj.weight": "vision_encoder.patch_embed.projection.weight",
    "image_encoder.blocks.1.norm1.weight": "vision_encoder.layers.1.layer_norm1.weight",
    "image_encoder.blocks.2.norm2.bias": "vision_encoder.layers.2.layer_norm2.bias",
    "image_encoder.blocks.2.attn.qkv.weight": "vision_encoder.layers.2.attn.qkv.weight",
    "image_encoder.blocks.0.attn.proj.bias": "vision_encoder.layers.0.attn.proj.bias",
    "image_encoder.blocks.1.attn.rel_pos_h": "vision_encoder.layers.1.attn.rel_pos_h",
    "image_encoder.blocks.0.attn.rel_pos_w": "vision_encoder.layers.0.attn.rel_pos_w",
    "image_encoder.blocks.0.attn.coefficient": "vision_encoder.layers.0.attn.coefficient",
    "image_encoder.blocks.1.attn.coefficient": "vision_encoder.layers.1.attn.coefficient",
    "image_encoder.blocks.2.mlp.lin1.bias": "vision_encoder.layers.2.mlp.lin1.bias",
    "image_encoder.blocks.2.mlp.lin2.weight": "vision_encoder.layers.2.mlp.lin2.weight",
    "image_encoder.neck.0.weight": "vision_encoder.neck.conv1.weight",
    "image_encoder.neck.1.bias": "vision_encoder.neck.layer_norm1.bias",
    "image_encoder.neck.2.weight": "vision_encoder.neck.conv2.weight",
    "image_encoder.neck.3.weight": "vision_encoder.neck.layer_norm2.weight",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "prompt_encoder.shared_embedding.positional_embedding",
    "prompt_encoder.point_embeddings.3.weight": "prompt_encoder.point_embed.3.weight",
    "prompt_encoder.not_a_point_embed.weight": "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.no_mask_embed.weight": "prompt_encoder.no_mask_embed.weight",
    "prompt_encoder.mask_downscaling.0.weight": "prompt_encoder.mask_embed.conv1.weight",
    "prompt_encoder.mask_downscaling.1.bias": "prompt_encoder.mask_embed.layer_norm1.bias",
    "prompt_encoder.mask_downscaling.3.weight": "prompt_encoder.mask_embed.conv2.weight",
    "prompt_encoder.mask_downscaling.4.weight": "prompt_encoder.mask_embed.layer_norm2.weight",
    "prompt_encoder.mask_downscaling.6.bias": "prompt_encoder.mask_embed.conv3.bias",
    "mask_decoder.iou_token.weight": "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight": "mask_decoder.mask_tokens.weight",
    "mask_decoder.transformer.layers.0.self_attn.q_proj.weight": "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
    "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias": "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
    "mask_decoder.transformer.layers.1.norm3.weight": "mask_decoder.transformer.layers.1.layer_norm3.weight",
    "mask_decoder.transformer.layers.0.norm4.bias": "mask_decoder.transformer.layers.0.layer_norm4.bias",
    "mask_decoder.transformer.layers.1.mlp.lin2.weight": "mask_decoder.transformer.layers.1.mlp.lin2.weight",
    "mask_decoder.transformer.final_attn_token_to_image.k_proj.weight": "mask_decoder.transformer.final_attn_token_to_image.k_proj.weight",
    "mask_decoder.transformer.norm_final_attn.weight": "mask_decoder.transformer.layer_norm_final_attn.weight",
    "mask_decoder.output_upscaling.0.weight": "mask_decoder.upscale_conv1.weight",
    "mask_decoder.output_upscaling.1.bias": "mask_decoder.upscale_layer_norm.bias",
    "mask_decoder.output_upscaling.3.weight": "mask_decoder.upscale_conv2.weight",
    "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight": "mask_decoder.output_hypernetworks_mlps.2.proj_in.weight",
    "mask_decoder.output_hypernetworks_mlps.2.layers.1.bias": "mask_decoder.output_hypernetworks_mlps.2.layers.0.bias",
    "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight": "mask_decoder.output_hypernetworks_mlps.3.proj_out.weight",
    "mask_decoder.iou_prediction_head.layers.0.bias": "mask_decoder.iou_prediction_head.proj_in.bias",
    "mask_decoder.iou_prediction_head.layers.1.weight": "mask_decoder.iou_prediction_head.layers.0.weight",
    "mask_decoder.iou_prediction_head.layers.2.weight": "mask_decoder.iou_prediction_head.proj_out.weight",
}


def _assert_every_weight_lands_once(weights: dict, model: BaSamModel) -> None:
    """Every checkpoint tensor is in the model once and every model weight is a checkpoint tensor (the random feature
    matrix twice: transformers keeps a copy for the image-wide positional embedding)."""

    def fingerprints(tensors):
        return sorted((tuple(tensor.shape), tensor.double().sum().item()) for tensor in tensors)

    state = model.state_dict()
    assert torch.equal(
        state.pop("shared_image_embedding.positional_embedding"),
        weights["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )
    assert fingerprints(weights.values()) == fingerprints(state.values())


def test_every_key_lands_in_its_place_and_config_is_inferred(tmp_path):
    weights = official_state_dict()
    model = convert_official_checkpoint(_save_pth(tmp_path, weights))
    state = model.state_dict()
    for official, name in EXPECTED_NAMES.items():
        assert torch.equal(state[name], weights[official]), (official, name)
    _assert_every_weight_lands_once(weights, model)
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_attention_heads, vision.num_hidden_layers, vision.mlp_dim) == (
        HIDDEN,
        HEADS,
        DEPTH,
        MLP,
    )
    assert (vision.window_size, list(vision.global_attn_indexes), vision.image_size, vision.use_abs_pos) == (
        WINDOW,
        list(GLOBAL_LAYERS),
        1024,
        False,
    )
    assert (vision.bias_mode, vision.bias_layers, vision.attention_scaling, vision.pretrain_image_size) == (
        "coefficient",
        "all",
        "official",
        1024,
    )


def test_prompt_encoder_and_mask_decoder_widths_come_from_the_weights(tmp_path):
    """A neck of 32 channels (SAM's is 256): the prompt encoder and mask decoder follow it; the decoder's MLP, the
    IoU head (width and depth) and the mask embedding have their own sizes, all read from the weights."""
    widths = dict(width=32, decoder_mlp=48, iou_hidden=24, iou_depth=4, mask_channels=8)
    weights = official_state_dict(**widths)
    model = convert_official_checkpoint(_save_pth(tmp_path, weights))
    _assert_every_weight_lands_once(weights, model)
    state = model.state_dict()
    head = "mask_decoder.iou_prediction_head"
    for official, name in {
        "layers.0": "proj_in",
        "layers.1": "layers.0",
        "layers.2": "layers.1",
        "layers.3": "proj_out",
    }.items():
        assert torch.equal(state[f"{head}.{name}.weight"], weights[f"{head}.{official}.weight"]), official
    config = model.config
    assert (config.vision_config.output_channels, config.vision_config.num_pos_feats) == (32, 16)
    assert (config.prompt_encoder_config.hidden_size, config.prompt_encoder_config.mask_input_channels) == (32, 8)
    decoder = config.mask_decoder_config
    assert (decoder.hidden_size, decoder.mlp_dim, decoder.iou_head_hidden_dim, decoder.iou_head_depth) == (
        32,
        48,
        24,
        4,
    )
    assert (decoder.num_hidden_layers, decoder.attention_downsample_rate, decoder.num_multimask_outputs) == (2, 2, 3)
    points = torch.tensor([[[[300.0, 500.0]]]])
    with torch.no_grad():
        outputs = model(
            pixel_values=_pixels(1024), input_points=points, input_labels=torch.ones(1, 1, 1, dtype=torch.long)
        )
    assert outputs.pred_masks.shape == (1, 1, 3, 256, 256) and outputs.iou_scores.shape == (1, 1, 3)
    assert torch.isfinite(outputs.pred_masks).all() and torch.isfinite(outputs.iou_scores).all()


def test_round_trip_through_saved_folder(tmp_path):
    weights = official_state_dict()
    weights["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)  # Sam's buffers, if saved
    weights["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    model = convert_official_checkpoint(_save_pth(tmp_path, weights), tmp_path / "out")
    loaded = BaSamModel.from_pretrained(tmp_path / "out")
    pixels = _pixels(1024)
    with torch.no_grad():
        assert (loaded.get_image_embeddings(pixels) - model.get_image_embeddings(pixels)).abs().max() <= 1e-5
    processor = BaSamProcessor.from_pretrained(tmp_path / "out")
    assert processor.image_processor.image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert processor.image_processor.image_std == pytest.approx([0.229, 0.224, 0.225])


def test_wrapped_prefixed_and_safetensors_checkpoints(tmp_path):
    weights = official_state_dict()
    training_checkpoint = {  # as the official train.py saves it (with DataParallel's prefixes)
        "epoch": 3,
        "model": "sam",
        "state_dict": {f"module.{key}": value for key, value in weights.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "best_mae": 0.05,
        "path_helper": {"ckpt_path": "logs/x"},
    }
    save_file(weights, tmp_path / "official.safetensors")
    assert load_official_state_dict(_save_pth(tmp_path, training_checkpoint)).keys() == weights.keys()
    assert load_official_state_dict(_save_pth(tmp_path, {"model": weights}, "m.pth")).keys() == weights.keys()
    model = convert_official_checkpoint(tmp_path / "official.safetensors")
    assert torch.equal(
        model.vision_encoder.layers[2].attn.coefficient, weights["image_encoder.blocks.2.attn.coefficient"]
    )


class _Custom:  # a pickle that needs this class: arbitrary code to a weights-only loader
    pass


def test_pickle_needing_code_is_refused(tmp_path):
    path = _save_pth(tmp_path, {"state_dict": official_state_dict(), "args": _Custom()})
    with pytest.raises(ValueError, match="not a plain state dict.*will not unpickle arbitrary code"):
        convert_official_checkpoint(path)


@pytest.mark.parametrize("name", ["truncated.pth", "truncated.safetensors"])
def test_corrupt_file_is_named(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".pth"):
        torch.save(official_state_dict(), path)
    else:
        save_file(official_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{name} is corrupt or truncated"):
        convert_official_checkpoint(path)


def test_missing_and_unused_keys_are_listed(tmp_path):
    weights = official_state_dict()
    del weights["image_encoder.blocks.2.attn.coefficient"], weights["mask_decoder.iou_token.weight"]
    weights["image_encoder.blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        convert_official_checkpoint(_save_pth(tmp_path, weights))
    message = str(error.value)
    assert "vision_encoder.layers.2.attn.coefficient" in message and "mask_decoder.iou_token.weight" in message
    assert "image_encoder.blocks.0.attn.extra" in message


def test_drop_rel_pos_zeroes_tables_and_accepts_checkpoints_without_them(tmp_path):
    weights = official_state_dict()
    model = convert_official_checkpoint(_save_pth(tmp_path, weights), drop_rel_pos=True)
    assert all(
        not layer.attn.rel_pos_h.any() and not layer.attn.rel_pos_w.any() for layer in model.vision_encoder.layers
    )
    # Without tables nothing tells the global layers or the head size: SAM's ViT-B/L/H values, else overrides.
    no_tables = _save_pth(
        tmp_path, {key: value for key, value in weights.items() if "rel_pos" not in key}, "no_tables.pth"
    )
    with pytest.raises(ValueError, match="global_attn_indexes"):
        convert_official_checkpoint(no_tables, drop_rel_pos=True)
    overrides = {"global_attn_indexes": list(GLOBAL_LAYERS), "num_attention_heads": HEADS}
    with pytest.raises(ValueError, match="vision_encoder.layers.0.attn.rel_pos_h"):
        convert_official_checkpoint(no_tables, **overrides)  # the training script's strict loading needs them
    converted = convert_official_checkpoint(no_tables, drop_rel_pos=True, **overrides)
    vision = converted.config.vision_config
    assert (vision.image_size, vision.window_size, vision.num_attention_heads) == (1024, 14, HEADS)


def test_official_scaling_below_1024_asks_for_log_length(tmp_path):
    model = convert_official_checkpoint(_save_pth(tmp_path, official_state_dict()))
    with pytest.raises(ValueError, match="log_length"), torch.no_grad():
        model.get_image_embeddings(_pixels(512))
    small = _save_pth(tmp_path, official_state_dict(512), "small.pth")
    with pytest.raises(ValueError, match="log_length"):
        convert_official_checkpoint(small)
    converted = convert_official_checkpoint(small, attention_scaling="log_length")
    with torch.no_grad():
        assert converted.get_image_embeddings(_pixels(512)).shape == (1, PROMPT_DIM, 32, 32)


def test_cli_convert_official(tmp_path, capsys):
    path = _save_pth(tmp_path, official_state_dict())
    assert main(["convert-official", str(path), str(tmp_path / "cli"), "--drop-rel-pos"]) == 0
    loaded = BaSamModel.from_pretrained(tmp_path / "cli")
    assert loaded.config.vision_config.bias_mode == "coefficient"
    assert not loaded.vision_encoder.layers[1].attn.rel_pos_h.any()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert-official", str(bad), str(tmp_path / "bad")]) == 1
    assert "bad.pth is corrupt or truncated" in capsys.readouterr().err
