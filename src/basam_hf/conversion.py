"""Turning checkpoints into BA-SAM: any transformers SAM checkpoint, Meta's original SAM checkpoints (segment-anything's
layout) and checkpoints of the official BA-SAM code."""

import copy
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoImageProcessor
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig

from .bias import attention_scale_factor
from .configuration_basam import BaSamConfig
from .constants import BA_PARAMETER_NAMES, is_ba_parameter  # noqa: F401 (re-exported)
from .modeling_basam import BaSamModel
from .pos_embed import resize_position_embeddings
from .processing_basam import normalisation_settings, processor_for_model, save_pretrained_with_processor
from .references import resolve_model


# Parameters that BA-SAM adds to SAM; the only keys a SAM checkpoint may lack. Initialised as documented in
# BaSamVisionConfig: coefficient = coefficient_init (0.1), slopes = ALiBi slopes * bias_slope_scale.
def convert_sam_to_basam(
    source: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    num_attention_heads: int | None = None,
    **ba_settings,
) -> BaSamModel:
    """Load a SAM checkpoint (repo id, folder or segment-anything file) as BA-SAM, checking that every SAM weight was
    loaded.

    Args:
        source: a `SamModel` (or BA-SAM) checkpoint, e.g. `"facebook/sam-vit-base"` or a local folder; `"default"`
            is the model embedded in basam-hf (so `convert-sam default OUT` saves it as a folder); or a file of
            Meta's segment-anything (`sam_vit_b_01ec64.pth`, ...), converted by
            [`convert_segment_anything_checkpoint`].
        output_dir: if given, save the converted model there (safetensors, config with `auto_map`, code files) with
            a `BaSamProcessor` (any input size; the source's normalisation settings if it has a processor).
        num_attention_heads: segment-anything files only: the encoder's heads, if its weights cannot tell them.
        **ba_settings: BA-SAM fields (`bias_mode`, `attention_scaling`, ...), see `BaSamVisionConfig`.

    Raises:
        ValueError: if the checkpoint has weights BA-SAM does not use, or lacks SAM weights (they would be left
            random).
    """
    if Path(source).is_file():
        return convert_segment_anything_checkpoint(
            source, output_dir, num_attention_heads=num_attention_heads, **ba_settings
        )
    if num_attention_heads is not None:
        raise ValueError(
            f"num_attention_heads applies to segment-anything checkpoint files only; {source} has a config that "
            "sets it."
        )
    source = resolve_model(source)
    model, info = BaSamModel.from_pretrained(source, output_loading_info=True, **ba_settings)
    not_loaded = sorted(key for key in info["missing_keys"] if not is_ba_parameter(key))
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(str(item) for item in info.get("mismatched_keys", []))
    if not_loaded or unexpected or mismatched:
        raise ValueError(
            f"{source} is not a complete SAM checkpoint for this configuration: "
            f"missing {not_loaded[:10]}, unexpected {unexpected[:10]}, mismatched shapes {mismatched[:10]}."
        )
    if output_dir is not None:
        _save_converted(model, output_dir, **_source_processor_settings(source))
    return model


def _resample_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A relative-position table `(L, C)` resampled to `length` rows as SAM's `get_rel_pos` does at run time."""
    return F.interpolate(table.T[None].float(), size=length, mode="linear")[0].T.to(table.dtype)


def rebase_image_size(model: BaSamModel, image_size: int) -> BaSamModel:
    """The same weights as a model whose own input size is `image_size`, e.g. to train it at that size.

    Sets `image_size` and `pretrain_image_size` (the size it is now meant for, which the log-length factor and
    pretrain-grid distances refer to) of the vision config and the prompt encoder's `image_size`, and resamples the
    absolute position embeddings and the global layers' relative-position tables to the new token grid exactly as
    the model resamples them at run time: with BA off, the rebased model at `image_size` computes what `model`
    computes there (up to float rounding of the prompt coordinates).
    """
    patch_size = model.config.vision_config.patch_size
    if image_size <= 0 or image_size % patch_size:
        raise ValueError(f"image_size must be a positive multiple of the patch size {patch_size}, got {image_size}.")
    config = copy.deepcopy(model.config)
    config.vision_config.image_size = config.vision_config.pretrain_image_size = image_size
    config.prompt_encoder_config.image_size = image_size
    config.prompt_encoder_config.image_embedding_size = image_size // patch_size
    rebased = BaSamModel(config).to(model.dtype)
    shapes = {name: tensor.shape for name, tensor in rebased.state_dict().items()}
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.shape != shapes[name]:
            if name.endswith("pos_embed"):
                tensor = resize_position_embeddings(tensor, shapes[name][1:3])
            elif ".rel_pos_" in name:
                tensor = _resample_rel_pos(tensor, shapes[name][0])
        state[name] = tensor
    rebased.load_state_dict(state)
    return rebased.train(model.training)


def deepen_encoder(model: BaSamModel, insert_after: Sequence[int], init_std: float = 0.02) -> BaSamModel:
    """The same model with a new windowed layer in its image encoder after each layer index in `insert_after`.

    Each new layer starts as the identity: its attention output projection and second MLP layer are zero, so its
    residual branches add nothing and the deeper model computes what `model` computes. The weights feeding those
    zeros (`qkv`, `mlp.lin1`) are drawn with std `init_std`, as a ViT's, so gradients reach the zeros and training
    grows the new layers (SAM's vision `initializer_range`, 1e-10, is meant for loading weights and would leave them
    nearly dead). Windowed layers are cheap at any size (global attention dominates the encoder's cost at 64 x 64
    tokens), so depth adds capacity at little speed cost. Global layers keep their attention and move to their new
    indices.
    """
    old = model.config.vision_config
    positions = sorted(set(insert_after))
    if not positions or positions[0] < 0 or positions[-1] >= old.num_hidden_layers:
        raise ValueError(
            f"insert_after must name layers of the encoder (0 to {old.num_hidden_layers - 1}), got {list(insert_after)}."
        )
    # New index of old layer i: i plus the number of layers inserted before it.
    moved = [i + sum(p < i for p in positions) for i in range(old.num_hidden_layers)]
    config = copy.deepcopy(model.config)
    config.vision_config.num_hidden_layers = old.num_hidden_layers + len(positions)
    config.vision_config.global_attn_indexes = [moved[i] for i in old.global_attn_indexes]
    deeper = BaSamModel(config).to(model.dtype)
    state = deeper.state_dict()
    layer_key = re.compile(r"^vision_encoder\.layers\.(\d+)\.")
    for name, tensor in model.state_dict().items():
        state[layer_key.sub(lambda found: f"vision_encoder.layers.{moved[int(found[1])]}.", name)] = tensor
    for index in sorted(set(range(config.vision_config.num_hidden_layers)) - set(moved)):
        prefix = f"vision_encoder.layers.{index}."
        for branch_input in ("attn.qkv", "mlp.lin1"):
            torch.nn.init.normal_(state[f"{prefix}{branch_input}.weight"], std=init_std)
            state[f"{prefix}{branch_input}.bias"].zero_()
        for branch_output in ("attn.proj", "mlp.lin2"):
            state[f"{prefix}{branch_output}.weight"].zero_()
            state[f"{prefix}{branch_output}.bias"].zero_()
    deeper.load_state_dict(state)
    return deeper.train(model.training)


def _save_converted(model: BaSamModel, output_dir: str | os.PathLike, **processor_settings) -> None:
    """Save the model (safetensors, config with `auto_map`, code files) and a [`BaSamProcessor`] next to it, so
    pipelines work on the output folder at any input size and without torchvision (SAM's processors need it for mask
    generation)."""
    save_pretrained_with_processor(model, str(output_dir), processor=processor_for_model(model, **processor_settings))


def _source_processor_settings(source: str | os.PathLike) -> dict:
    """The normalisation settings of the source's image processor; none (SAM's defaults) for a bare weights folder."""
    try:
        source_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return {}
    return normalisation_settings(source_processor)


# Checkpoints of the official BA-SAM code (github.com/zongzi13545329/BA-SAM): segment-anything's key layout, whose
# image encoder has a `coefficient` in every block.
OFFICIAL_PRETRAIN_IMAGE_SIZE = 1024  # the official scale rule is relative to 1024 px (4096 tokens) at any build size
SAM_VIT_HEADS = {768: 12, 1024: 16, 1280: 16}  # ViT-B/L/H by hidden size, when no rel-pos table gives the head size
SAM_VIT_GLOBAL_LAYERS = {12: [2, 5, 8, 11], 24: [5, 11, 17, 23], 32: [7, 15, 23, 31]}  # by depth
SAM_WINDOW_SIZE = 14
OFFICIAL_ENCODER = "image_encoder."  # the image encoder's key prefix in segment-anything's layout


def _renamed_entries(module: str, names: dict[str, str]) -> tuple:
    """Rule renaming the entries `{module}.{i}.` of an `nn.Sequential` / `nn.ModuleList` to `{names[i]}.`."""
    return rf"\.{module}\.(\d+)\.", lambda match: f".{names[match[1]]}." if match[1] in names else match[0]


# (pattern, replacement), each applied once, in order, to every official key; the result is the transformers key.
OFFICIAL_KEY_RULES = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.blocks\.", ".layers."),
    (r"\.norm(\d)\.", r".layer_norm\1."),  # image encoder norm1/2; mask decoder transformer norm1..4
    _renamed_entries("neck", {"0": "neck.conv1", "1": "neck.layer_norm1", "2": "neck.conv2", "3": "neck.layer_norm2"}),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.point_embeddings\.", ".point_embed."),
    _renamed_entries(
        "mask_downscaling",
        {
            "0": "mask_embed.conv1",
            "1": "mask_embed.layer_norm1",
            "3": "mask_embed.conv2",
            "4": "mask_embed.layer_norm2",
            "6": "mask_embed.conv3",
        },
    ),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    _renamed_entries("output_upscaling", {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}),
)
# SAM's MLP heads: official layers.0, 1, ..., depth - 1 are proj_in, layers.0, ..., layers.{depth - 3}, proj_out in
# transformers. The hypernetwork MLPs have 3 layers; the IoU head has `iou_head_depth` (3 in SAM).
OFFICIAL_MLP_LAYER = re.compile(r"(iou_prediction_head|output_hypernetworks_mlps\.\d+)\.layers\.(\d+)\.")


def official_to_hf_key(key: str, iou_head_depth: int = 3) -> str:
    """The transformers (BA-SAM) name of an official / segment-anything state-dict key."""
    for pattern, replacement in OFFICIAL_KEY_RULES:
        key = re.sub(pattern, replacement, key, count=1)

    def mlp_layer(match: re.Match) -> str:
        depth, index = iou_head_depth if match[1] == "iou_prediction_head" else 3, int(match[2])
        if index >= depth:
            return match[0]  # no such layer: the key stays unused and is reported
        name = "proj_in" if index == 0 else "proj_out" if index == depth - 1 else f"layers.{index - 1}"
        return f"{match[1]}.{name}."

    return OFFICIAL_MLP_LAYER.sub(mlp_layer, key, count=1)


def _count_entries(weights: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many entries `{prefix}.{i}.` an `nn.Sequential` / `nn.ModuleList` of the state dict has (0 if none)."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return 1 + max((int(match[1]) for key in weights if (match := pattern.match(key))), default=-1)


def load_official_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: `.safetensors`, or a pickle (`.pth`, ...) read with
    `torch.load(path, map_location="cpu", weights_only=True)` only, so no code from the file ever runs.

    A state dict wrapped in a dict under `"state_dict"` or `"model"` (as the official training script saves it, next
    to `epoch`, `optimizer`, ...) is unwrapped, and DataParallel's `module.` prefixes are removed.

    Raises:
        ValueError: if the pickle needs arbitrary code (not a plain state dict), or the file is corrupt or truncated.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    try:
        if path.suffix == ".safetensors":
            content = load_file(path)
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = (str(error).partition("WeightsUnpickler error:")[2].strip().splitlines() or [""])[0]
        if "GLOBAL" not in reason and "add_safe_globals" not in reason:  # e.g. "Unsupported operand": not a pickle
            raise ValueError(f"{path} is corrupt or truncated ({reason or error}).") from error
        raise ValueError(
            f"{path} is not a plain state dict: unpickling it needs arbitrary code ({reason.split('. ')[0]}). "
            "basam-hf loads checkpoints with torch.load(weights_only=True) and will not unpickle arbitrary code. "
            "If you trust the file, save its tensors as a plain state dict yourself, e.g. "
            "torch.save(torch.load(path, weights_only=False)['state_dict'], 'plain.pth')."
        ) from error
    except Exception as error:  # torch and safetensors raise many types for damaged files
        raise ValueError(f"{path} is corrupt or truncated ({type(error).__name__}: {error}).") from error
    if isinstance(content, Mapping):
        wrapped = [content[key] for key in ("state_dict", "model") if isinstance(content.get(key), Mapping)]
        content = wrapped[0] if wrapped else content
    if not isinstance(content, Mapping) or not content:
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors).")
    not_tensors = sorted(str(key) for key, value in content.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path} is not a state dict: these entries are not tensors: {_listing(not_tensors)}.")
    return {key.removeprefix("module."): value for key, value in content.items()}


def official_config(
    weights: Mapping[str, torch.Tensor],
    image_size: int | None = None,
    num_attention_heads: int | None = None,
    global_attn_indexes: list[int] | None = None,
    drop_rel_pos: bool = False,
    attention_scaling: str = "official",
) -> BaSamConfig:
    """The [`BaSamConfig`] of an official BA-SAM state dict: [`segment_anything_config`] with a coefficient in every
    layer and the official scale rule relative to 1024 px. See [`convert_official_checkpoint`] for the arguments."""
    return segment_anything_config(
        weights,
        image_size,
        num_attention_heads,
        global_attn_indexes,
        drop_rel_pos,
        bias_mode="coefficient",
        bias_layers="all",
        attention_scaling=attention_scaling,
        pretrain_image_size=OFFICIAL_PRETRAIN_IMAGE_SIZE,
    )


def segment_anything_config(
    weights: Mapping[str, torch.Tensor],
    image_size: int | None = None,
    num_attention_heads: int | None = None,
    global_attn_indexes: list[int] | None = None,
    drop_rel_pos: bool = False,
    **ba_settings,
) -> BaSamConfig:
    """The [`BaSamConfig`] of a state dict in segment-anything's key layout, with the BA settings `ba_settings` (the
    package defaults otherwise).

    Every width comes from the weights: the image encoder's, and those of the prompt encoder and mask decoder, which
    follow the encoder's output width (`out_chans`, the neck's); the decoder's MLP, IoU-head and mask-embedding
    widths, its depth and its number of mask tokens are read from their weights too. The encoder's heads come from
    its rel-pos tables, whose width is the head size (64 in SAM ViT-B/L/H: 12, 16 and 16 heads); its global layers
    from their tables' lengths (`2 * grid - 1` rows against `2 * window - 1`); its input size from `pos_embed`. Only
    the decoder's attention heads (SAM's 8) and layer-norm epsilon (1e-5) are not in the weights. See
    [`convert_official_checkpoint`] for the arguments."""
    _check_segment_anything_layout(weights)
    vision_config = _official_encoder_config(
        weights, image_size, num_attention_heads, global_attn_indexes, drop_rel_pos, ba_settings
    )
    width = vision_config["output_channels"]
    return BaSamConfig(
        vision_config=vision_config,
        prompt_encoder_config=_official_prompt_encoder_config(
            weights, width, vision_config["image_size"], vision_config["patch_size"]
        ),
        mask_decoder_config=_official_mask_decoder_config(weights, width),
    )


def _check_segment_anything_layout(weights: Mapping[str, torch.Tensor]) -> None:
    """Raise a `ValueError` unless the state dict has the image-encoder weights every config field is read from."""
    required = [f"{OFFICIAL_ENCODER}{name}.weight" for name in ("patch_embed.proj", "blocks.0.mlp.lin1", "neck.0")]
    lacking = [key for key in required if key not in weights]
    if lacking:
        hint = (
            " It has transformers' key names: give the folder holding it and its config.json instead."
            if any(key.startswith("vision_encoder.") for key in weights)
            else ""
        )
        raise ValueError(
            f"Not a SAM checkpoint in segment-anything's key layout: it lacks {', '.join(lacking)}. "
            f"Its first keys are {_listing(sorted(weights), 5)}.{hint}"
        )


def _official_encoder_config(
    weights: Mapping[str, torch.Tensor],
    image_size: int | None,
    num_attention_heads: int | None,
    global_attn_indexes: list[int] | None,
    drop_rel_pos: bool,
    ba_settings: dict,
) -> dict:
    """The image encoder's config fields, each read from the weights unless given, with the BA settings."""
    encoder = OFFICIAL_ENCODER
    patch_embed = weights[f"{encoder}patch_embed.proj.weight"]
    hidden_size, num_channels, patch_size = patch_embed.shape[0], patch_embed.shape[1], patch_embed.shape[-1]
    depth = _count_entries(weights, f"{encoder}blocks")
    tables = {i: weights.get(f"{encoder}blocks.{i}.attn.rel_pos_h") for i in range(depth)}
    tables = {i: table for i, table in tables.items() if table is not None}
    rows = {i: table.shape[0] for i, table in tables.items()}
    global_attn_indexes, window_size = _official_attention_layout(rows, depth, global_attn_indexes)
    pos_embed = weights.get(f"{encoder}pos_embed")
    global_rows = [rows[i] for i in rows if i in global_attn_indexes]
    image_size = _official_image_size(pos_embed, global_rows, patch_size, image_size, drop_rel_pos)
    if ba_settings.get("attention_scaling") == "official":  # fail now, not at the first forward, below pretraining
        grid, pretrain_grid = (
            image_size // patch_size,
            ba_settings.get("pretrain_image_size", image_size) // patch_size,
        )
        attention_scale_factor("official", (grid, grid), (pretrain_grid, pretrain_grid), patch_size)
    if num_attention_heads is None:
        num_attention_heads = _official_encoder_heads(tables, hidden_size)
    width = weights[f"{encoder}neck.0.weight"].shape[0]  # out_chans: the image embedding, prompts, mask decoder
    return {
        "hidden_size": hidden_size,
        "num_hidden_layers": depth,
        "num_attention_heads": num_attention_heads,
        "mlp_dim": weights[f"{encoder}blocks.0.mlp.lin1.weight"].shape[0],
        "output_channels": width,
        "num_pos_feats": _dim(weights, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 1, width // 2),
        "num_channels": num_channels,
        "patch_size": patch_size,
        "image_size": image_size,
        "qkv_bias": f"{encoder}blocks.0.attn.qkv.bias" in weights,
        "use_abs_pos": pos_embed is not None,
        "use_rel_pos": True,
        "window_size": window_size,
        "global_attn_indexes": list(global_attn_indexes),
        "layer_norm_eps": 1e-6,
        **ba_settings,
    }


def _official_attention_layout(
    rows: dict[int, int], depth: int, global_attn_indexes: list[int] | None
) -> tuple[list[int], int]:
    """The global-attention layers (unless given) and the window size, from the lengths `rows` of the layers' rel-pos
    tables: global layers have `2 * grid - 1` rows, windowed ones `2 * window - 1`."""
    if global_attn_indexes is None:
        if len(set(rows.values())) == 2:
            global_attn_indexes = [i for i in rows if rows[i] == max(rows.values())]
        elif depth in SAM_VIT_GLOBAL_LAYERS:
            global_attn_indexes = SAM_VIT_GLOBAL_LAYERS[depth]
        else:
            raise ValueError(
                f"Cannot tell the global-attention layers of this {depth}-layer encoder: pass global_attn_indexes."
            )
    windowed_rows = {rows[i] for i in rows if i not in global_attn_indexes}
    window_size = (windowed_rows.pop() + 1) // 2 if len(windowed_rows) == 1 else SAM_WINDOW_SIZE
    return global_attn_indexes, window_size


def _official_image_size(
    pos_embed: torch.Tensor | None,
    global_rows: list[int],
    patch_size: int,
    image_size: int | None,
    drop_rel_pos: bool,
) -> int:
    """The input size the official model was built at, where its position tables (`pos_embed`, the global layers'
    rel-pos tables of `global_rows` rows) tell it; a given `image_size` must agree with the tables that are kept."""
    built_grid = pos_embed.shape[1] if pos_embed is not None else (max(global_rows) + 1) // 2 if global_rows else None
    built_size = built_grid * patch_size if built_grid else None
    if image_size is None:
        return built_size or OFFICIAL_PRETRAIN_IMAGE_SIZE
    if built_size and image_size != built_size and (pos_embed is not None or (global_rows and not drop_rel_pos)):
        raise ValueError(
            f"image_size={image_size} does not match the checkpoint, whose position tables were built for "
            f"{built_size}px inputs. Leave image_size unset (it is inferred); the model runs at any input size anyway."
        )
    return image_size


def _official_encoder_heads(tables: Mapping[int, torch.Tensor], hidden_size: int) -> int:
    """The encoder's attention heads: the hidden size over the rel-pos tables' width (the head size), else SAM's
    ViT-B/L/H heads by hidden size."""
    head_dims = {table.shape[1] for table in tables.values()}
    heads = hidden_size // head_dims.pop() if len(head_dims) == 1 else SAM_VIT_HEADS.get(hidden_size)
    if heads is None:
        raise ValueError(
            f"Cannot tell the number of attention heads of hidden size {hidden_size}: pass num_attention_heads."
        )
    return heads


def _official_prompt_encoder_config(
    weights: Mapping[str, torch.Tensor], width: int, image_size: int, patch_size: int
) -> dict:
    """SAM's prompt encoder of width `width` with the mask-input channels and point embeddings of the weights."""
    return {
        "hidden_size": width,
        "image_size": image_size,
        "patch_size": patch_size,
        "mask_input_channels": _dim(weights, "prompt_encoder.mask_downscaling.3.weight", 0, 16),
        "num_point_embeddings": _count_entries(weights, "prompt_encoder.point_embeddings") or 4,
    }


def _dim(weights: Mapping[str, torch.Tensor], key: str, dim: int, default: int) -> int:
    """Size of dimension `dim` of a weight; `default` when the checkpoint lacks the weight (it is then reported as
    missing when loading)."""
    return weights[key].shape[dim] if key in weights else default


def _official_mask_decoder_config(weights: Mapping[str, torch.Tensor], width: int) -> dict:
    """SAM's mask decoder of width `width` with the depth, MLP, IoU-head and mask-token sizes of the weights."""
    decoder = "mask_decoder."
    cross_width = _dim(
        weights, f"{decoder}transformer.layers.0.cross_attn_token_to_image.q_proj.weight", 0, width // 2
    )
    heads = SamMaskDecoderConfig.num_attention_heads  # SAM's 8: not in the weights
    if width % heads or cross_width % heads or width % cross_width:
        raise ValueError(
            f"The mask decoder's attention widths ({width}, cross-attention {cross_width}) do not fit SAM's {heads} "
            "heads with a whole downsampling rate: not a segment-anything mask decoder."
        )
    return {
        "hidden_size": width,
        # segment-anything's two-way transformer normalises with nn.LayerNorm's default epsilon, 1e-5 (transformers'
        # SAM configs say 1e-6, which shifts masks by up to 1e-4 where the decoder's activations are small).
        "layer_norm_eps": 1e-5,
        "mlp_dim": _dim(weights, f"{decoder}transformer.layers.0.mlp.lin1.weight", 0, 8 * width),
        "num_hidden_layers": _count_entries(weights, f"{decoder}transformer.layers") or 2,
        "num_attention_heads": heads,
        "attention_downsample_rate": width // cross_width,
        "num_multimask_outputs": _dim(weights, f"{decoder}mask_tokens.weight", 0, 4) - 1,
        "iou_head_hidden_dim": _dim(weights, f"{decoder}iou_prediction_head.layers.0.weight", 0, width),
        "iou_head_depth": _count_entries(weights, f"{decoder}iou_prediction_head.layers") or 3,
    }


def convert_official_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    num_attention_heads: int | None = None,
    global_attn_indexes: list[int] | None = None,
    drop_rel_pos: bool = False,
    attention_scaling: str = "official",
) -> BaSamModel:
    """Convert a checkpoint of the official BA-SAM code (github.com/zongzi13545329/BA-SAM) to a [`BaSamModel`].

    The result has `bias_mode="coefficient"` and `bias_layers="all"` (the official encoder has a learnable coefficient
    on the rel-pos bias of every block) and, by default, `attention_scaling="official"` (its floor rule
    `image_size // 1024`, relative to 1024 px). Every key of the checkpoint must be used and every weight of the
    model must come from it, else a `ValueError` lists the offending keys. The official code computes its scale from
    the size it was built at, the converted model from the size of each input: the two agree at the build size.

    The file is read with `torch.load(path, map_location="cpu", weights_only=True)` only (or as `.safetensors`):
    basam-hf never unpickles arbitrary code. See [`load_official_state_dict`] for the accepted layouts.

    Args:
        checkpoint: path of the `.pth` / `.safetensors` file.
        output_dir: if given, save the model there (safetensors, config with `auto_map`, code files) with a
            `BaSamProcessor`.
        image_size: input size the official model was built at (its `--image_size`); inferred from the global
            rel-pos tables (or `pos_embed`), else 1024. The converted model runs at any size regardless.
        num_attention_heads: inferred from the rel-pos tables (whose width is the head size), else from SAM's
            ViT-B/L/H table by hidden size.
        global_attn_indexes: inferred from the rel-pos table sizes, else SAM's ViT-B/L/H layers by depth.
        drop_rel_pos: mirror the official evaluation script (`val.py`), which drops the `rel_pos` tables of its own
            checkpoints before loading them (non-strictly): the tables stay zero, so the rel-pos bias is zero and the
            coefficient has no effect. Without it, the tables are loaded as the training script does.
        attention_scaling: `"official"`, or `"log_length"` (defined at every size, also below 1024) or `"none"`.

    Raises:
        ValueError: unreadable, non-plain or corrupt file; unused, missing or mismatched keys;
            `attention_scaling="official"` below 1024 px.
    """
    weights = load_official_state_dict(checkpoint)
    if not _has_ba_coefficients(weights):
        raise ValueError(
            f"{checkpoint} has no BA coefficients (attn.coefficient): a plain SAM checkpoint in segment-anything's "
            "layout, not one of the official BA-SAM code. Convert it with convert_sam_to_basam (basam-hf convert-sam)."
        )
    processor_settings = _pop_normalisation(weights)
    config = official_config(
        weights, image_size, num_attention_heads, global_attn_indexes, drop_rel_pos, attention_scaling
    )
    if drop_rel_pos:
        weights = {key: value for key, value in weights.items() if "rel_pos" not in key}
    return _build_from_segment_anything(config, weights, checkpoint, output_dir, processor_settings, drop_rel_pos)


def convert_segment_anything_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    num_attention_heads: int | None = None,
    **ba_settings,
) -> BaSamModel:
    """Convert one of Meta's original SAM checkpoints (segment-anything's layout: `sam_vit_b_01ec64.pth`,
    `sam_vit_l_0b3195.pth`, `sam_vit_h_4b8939.pth` or a fine-tuned SAM saved the same way) to a [`BaSamModel`].

    Dimensions, depth, heads, global layers and input size are inferred from the weights (see
    [`segment_anything_config`]); the BA settings are `ba_settings`, the package defaults (`BA_DEFAULTS`) otherwise;
    `bias_mode="none", attention_scaling="none"` is SAM itself. Every key of the checkpoint must be used and every SAM
    weight of the model must come from it; BA-SAM's own parameters start at their documented initial values.
    `checkpoint` is read and `output_dir` written as by [`convert_official_checkpoint`] (weights-only loading: no
    code from the file ever runs).

    Args:
        num_attention_heads: the encoder's heads, when its weights have no rel-pos table to tell the head size.
        **ba_settings: BA-SAM fields (`bias_mode`, `attention_scaling`, ...), see `BaSamVisionConfig`.

    Raises:
        ValueError: unreadable, non-plain or corrupt file; not segment-anything's layout; a checkpoint of the
            official BA-SAM code (use [`convert_official_checkpoint`]); unused, missing or mismatched keys.
    """
    weights = load_official_state_dict(checkpoint)
    if _has_ba_coefficients(weights):
        raise ValueError(
            f"{checkpoint} has BA coefficients (attn.coefficient): a checkpoint of the official BA-SAM code. Convert "
            "it with convert_official_checkpoint (basam-hf convert-official)."
        )
    processor_settings = _pop_normalisation(weights)
    config = segment_anything_config(weights, num_attention_heads=num_attention_heads, **ba_settings)
    return _build_from_segment_anything(config, weights, checkpoint, output_dir, processor_settings)


def _has_ba_coefficients(weights: Mapping[str, torch.Tensor]) -> bool:
    return any(key.endswith(".attn.coefficient") for key in weights)


def _pop_normalisation(weights: dict[str, torch.Tensor]) -> dict:
    """Sam's normalisation buffers, removed from `weights` if saved: the processor's `image_mean` and `image_std`
    (segment-anything's are on 0-255 pixels). Meta's files lack them (non-persistent buffers): SAM's defaults."""
    buffers = {"image_mean": "pixel_mean", "image_std": "pixel_std"}
    return {
        setting: (weights.pop(name).flatten() / 255).tolist() for setting, name in buffers.items() if name in weights
    }


def _build_from_segment_anything(
    config: BaSamConfig,
    weights: dict,
    source,
    output_dir: str | os.PathLike | None,
    processor_settings: dict,
    drop_rel_pos: bool = False,
) -> BaSamModel:
    """The model of `config` holding `weights` (segment-anything names), saved to `output_dir` if given."""
    model = BaSamModel(config).eval()
    _load_segment_anything_weights(model, weights, source, drop_rel_pos)
    if output_dir is not None:
        _save_converted(model, output_dir, **processor_settings)
    return model


def _load_segment_anything_weights(model: BaSamModel, weights: dict, source, drop_rel_pos: bool) -> None:
    """Load `weights` (segment-anything names) into `model`, or raise a `ValueError` listing every unused, missing
    or mismatched key. BA parameters the model has and the checkpoint lacks keep their initial values, unless the
    checkpoint has BA coefficients (the official code's: then every layer's must be there)."""
    expected = model.state_dict()
    new_ba_parameters = not _has_ba_coefficients(weights)
    state, unused = {}, []
    for key, value in weights.items():
        name = official_to_hf_key(key, model.config.mask_decoder_config.iou_head_depth)
        if name in expected and name not in state:
            state[name] = value
        else:
            unused.append(key)
    unused.sort()
    # SAM's single random-feature matrix serves both the prompt encoder and the image-wide positional embedding.
    if "prompt_encoder.shared_embedding.positional_embedding" in state:
        state["shared_image_embedding.positional_embedding"] = state[
            "prompt_encoder.shared_embedding.positional_embedding"
        ]
    missing = sorted(
        name
        for name in expected
        if name not in state
        and not (drop_rel_pos and ".rel_pos_" in name)
        and not (new_ba_parameters and is_ba_parameter(name))
    )
    mismatched = sorted(
        f"{name} {tuple(value.shape)} (model: {tuple(expected[name].shape)})"
        for name, value in state.items()
        if value.shape != expected[name].shape
    )
    if unused or missing or mismatched:
        problems = [
            f"{label} ({len(keys)}): {_listing(keys)}"
            for label, keys in (
                ("checkpoint keys with no place in the model", unused),
                ("model weights (transformers names) missing from the checkpoint", missing),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise ValueError(f"{source} does not match the BA-SAM model inferred from it.\n" + "\n".join(problems))
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
        if drop_rel_pos:
            for name, parameter in model.named_parameters():
                if ".rel_pos_" in name:
                    parameter.zero_()


def _listing(keys: list[str], limit: int = 20) -> str:
    """`keys` as a comma-separated list, cut after `limit` entries."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")
