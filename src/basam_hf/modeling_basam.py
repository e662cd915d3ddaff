"""PyTorch BA-SAM: SAM with bias-mode attention and length-consistent scaling, at any input resolution.

Imports only torch, transformers and this package's remote-code-safe modules (relatively), so that
`save_pretrained` ships a self-contained model loadable with `trust_remote_code=True`.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.sam.modeling_sam import (
    SamImageSegmentationOutput,
    SamMaskDecoder,
    SamMLPBlock,
    SamModel,
    SamPositionalEmbedding,
    SamPreTrainedModel,
    SamPromptEncoder,
    SamVisionAttention,
    SamVisionEncoder,
    SamVisionEncoderOutput,
    SamVisionLayer,
    SamVisionNeck,
    SamVisionSdpaAttention,
)
from transformers.processing_utils import Unpack
from transformers.utils import logging
from transformers.utils.generic import TransformersKwargs, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .bias import alibi_slopes, attention_scale_factor, axis_distances, distance_units, manhattan_bias_terms
from .chunked_attention import (
    attention_bias_chunk,
    chunked_biased_attention,
    query_chunk_rows,
    query_chunks,
)
from .configuration_basam import BaSamConfig, BaSamVisionConfig
from .pos_embed import rescale_prompt_coordinates, resize_position_embeddings

logger = logging.get_logger(__name__)

_MAX_CACHED_GRIDS = 8


class BaSamVisionAttention(SamVisionAttention):
    """SAM's vision attention with BA-SAM's scale factor and distance / coefficient bias: the eager implementation.

    Signature and return values are those of [`SamVisionAttention`]: the attention weights are materialized and
    returned. [`BaSamVisionSdpaAttention`] is the SDPA implementation; as in SAM, [`BaSamVisionLayer`] builds the class
    of `config._attn_implementation` (see `BASAM_VISION_ATTENTION_CLASSES`). The BA terms (scale, bias) are computed
    here for both.
    """

    def __init__(self, config: BaSamVisionConfig, window_size: int):
        super().__init__(config, window_size)
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.patch_size = config.patch_size
        is_global = window_size == 0
        pretrain_grid = config.pretrain_image_size // config.patch_size
        # Windowed layers attend to window_size**2 keys at every input size: their training grid is the window.
        self.train_grid_size = (pretrain_grid, pretrain_grid) if is_global else (window_size, window_size)
        # The official scaling applies to global blocks only; log_length gives factor 1 on windows anyway.
        self.attention_scaling = config.attention_scaling if is_global else "none"
        has_bias = is_global or config.bias_layers == "all"
        self.bias_mode = config.bias_mode if has_bias else "none"
        self.bias_distance = config.bias_distance
        self.distance_unit = config.distance_unit
        self.bias_slope_scale = config.bias_slope_scale
        if self.bias_mode == "coefficient":
            # Shape (1,) as in the official code, so converted checkpoints load as they are.
            self.coefficient = nn.Parameter(torch.full((1,), float(config.coefficient_init)))
        if self.bias_mode == "distance" and config.learnable_slopes:
            self.slopes = nn.Parameter(alibi_slopes(self.num_attention_heads, config.bias_slope_scale))
        self._distance_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def _head_slopes(self, device: torch.device) -> torch.Tensor:
        """The heads' slopes in float32 (the bias is computed in float32 and rounded once to the model's dtype)."""
        if hasattr(self, "slopes"):
            return self.slopes.float()
        return alibi_slopes(self.num_attention_heads, self.bias_slope_scale).to(device=device)

    def _distance_tables(self, height: int, width: int, device: torch.device, dtype: torch.dtype):
        """Per-axis distance tables of the current grid in float32 (and, with fixed slopes, the Manhattan bias terms,
        computed in float32 and rounded once to `dtype`); cached per (grid, device, dtype) because they depend on
        nothing else. In bfloat16, positions above 256 and distance units like 0.4 are not exact: computing there
        would round at every step."""
        cache_key = (height, width, device, dtype)
        cached = self._distance_cache.get(cache_key)
        if cached is None:
            unit_h, unit_w = distance_units(self.distance_unit, (height, width), self.train_grid_size)
            row = axis_distances(height, unit_h, device, torch.float32)
            col = axis_distances(width, unit_w, device, torch.float32)
            cached = (row, col)
            if self.bias_distance == "manhattan" and not hasattr(self, "slopes"):
                terms = manhattan_bias_terms(self._head_slopes(device), row, col)
                cached = (row, col, *(term.to(dtype) for term in terms))
            if len(self._distance_cache) >= _MAX_CACHED_GRIDS:
                self._distance_cache.clear()
            self._distance_cache[cache_key] = cached
        return cached

    def _decomposed_terms(self, query: torch.Tensor, height: int, width: int):
        """Row and column bias terms `(B|1, heads, N, H)` and `(B|1, heads, N, W)` (or `None`): SAM's decomposed
        rel-pos (times the coefficient) plus the Manhattan distance penalty, which has the same form."""
        batch_size, num_heads, num_tokens, _ = query.shape
        rel_h = rel_w = None
        if self.use_rel_pos:
            table_h = self.get_rel_pos(height, height, self.rel_pos_h)
            table_w = self.get_rel_pos(width, width, self.rel_pos_w)
            if self.bias_mode == "coefficient":
                table_h, table_w = table_h * self.coefficient, table_w * self.coefficient
            grid_query = query.reshape(batch_size * num_heads, height, width, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", grid_query, table_h.to(query.dtype))
            rel_w = torch.einsum("bhwc,wkc->bhwk", grid_query, table_w.to(query.dtype))
            rel_h = rel_h.reshape(batch_size, num_heads, height, width, height)
            rel_w = rel_w.reshape(batch_size, num_heads, height, width, width)
        if self.bias_mode == "distance" and self.bias_distance == "manhattan":
            tables = self._distance_tables(height, width, query.device, query.dtype)
            if len(tables) == 4:
                row_term, col_term = tables[2], tables[3]
            else:
                terms = manhattan_bias_terms(self._head_slopes(query.device), *tables)  # learned slopes: float32
                row_term, col_term = (term.to(query.dtype) for term in terms)
            row_term = row_term[None, :, :, None, :]  # (1, heads, H, 1, H): depends on the query row only
            col_term = col_term[None, :, None, :, :]  # (1, heads, 1, W, W): depends on the query column only
            if rel_h is None:
                shape = (1, num_heads, height, width)
                rel_h, rel_w = row_term.expand(*shape, height), col_term.expand(*shape, width)
            else:
                # In place: rel_h / rel_w are fresh tensors here, and a copy would double them at high resolution.
                rel_h, rel_w = rel_h.add_(row_term), rel_w.add_(col_term)
        if rel_h is None:
            return None, None
        return rel_h.reshape(-1, num_heads, num_tokens, height), rel_w.reshape(-1, num_heads, num_tokens, width)

    def _euclidean_terms(self, height: int, width: int, query: torch.Tensor):
        """`(slopes, row_distances, col_distances)` in float32 for a Euclidean distance bias, else `None`."""
        if self.bias_mode != "distance" or self.bias_distance != "euclidean":
            return None
        row, col = self._distance_tables(height, width, query.device, query.dtype)[:2]
        return self._head_slopes(query.device), row, col

    def _bias_chunk(self, rel_h, rel_w, rows: slice, height: int, width: int, query: torch.Tensor, out=None):
        """Additive attention bias of the query rows `rows` against all keys: `(B|1, heads, rows, N)` or `None`.

        `out`, a `(B|1, heads, >= rows, H, W)` buffer, receives the row + column terms instead of a new tensor."""
        euclidean = self._euclidean_terms(height, width, query)
        return attention_bias_chunk(rel_h, rel_w, euclidean, rows, (height, width), query.dtype, out)

    def attention_scale(self, height: int, width: int) -> float:
        """Softmax scale of the query-key term for a `height x width` token grid."""
        factor = attention_scale_factor(self.attention_scaling, (height, width), self.train_grid_size, self.patch_size)
        return self.scale * factor

    def _project_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of a `(B, H, W, C)` input, each `(B, heads, H * W, head_dim)`."""
        batch_size, height, width, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
        # Contiguous like SAM's: matmuls over the same memory layout pick the same BLAS kernels, so BA off stays
        # bit-identical to SAM on every CPU (strided views did not on AMD).
        return qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)

    def _merge_heads(self, attn_output: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The output projection of a `(B, heads, H * W, head_dim)` attention output, as `(B, H, W, C)`."""
        batch_size = attn_output.shape[0]
        attn_output = attn_output.reshape(batch_size, self.num_attention_heads, height, width, -1)
        attn_output = attn_output.permute(0, 2, 3, 1, 4).reshape(batch_size, height, width, -1)
        return self.proj(attn_output)

    def forward(self, hidden_states: torch.Tensor, output_attentions=None) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, height, width, _ = hidden_states.shape
        num_tokens = height * width
        query, key, value = self._project_qkv(hidden_states)
        rel_h, rel_w = self._decomposed_terms(query, height, width)
        attn_weights = (query * self.attention_scale(height, width)) @ key.transpose(-2, -1)
        bias = self._bias_chunk(rel_h, rel_w, slice(None), height, width, query)
        if bias is not None:
            attn_weights = attn_weights + bias
        attn_weights = F.softmax(attn_weights, dtype=torch.float32, dim=-1).to(query.dtype)
        # Returned in SAM's (B * heads, N, N) layout, and the output computed from that very tensor, so gradients
        # reach the returned weights (a reshape taken after use would be outside the graph).
        attn_weights = attn_weights.reshape(batch_size * self.num_attention_heads, num_tokens, num_tokens)
        attn_probs = F.dropout(attn_weights, p=self.dropout, training=self.training)
        attn_output = attn_probs.reshape(batch_size, self.num_attention_heads, num_tokens, num_tokens) @ value
        return self._merge_heads(attn_output, height, width), attn_weights


class BaSamVisionSdpaAttention(BaSamVisionAttention, SamVisionSdpaAttention):
    """[`BaSamVisionAttention`] computed with `scaled_dot_product_attention`, as [`SamVisionSdpaAttention`] is SAM's.

    Global attention runs in query chunks sized by `config.attention_memory_budget_mb`, each with its own slice of
    the bias, so no `(heads, N, N)` score or bias tensor is built for a long sequence. With autograd, a biased
    attention runs [`chunked_biased_attention`], whose backward recomputes each chunk: training is bounded by the same
    budget. Returns `None` as the attention weights (use `attn_implementation="eager"` to get them).
    """

    def forward(self, hidden_states: torch.Tensor, output_attentions=False) -> tuple[torch.Tensor, None]:
        if output_attentions:
            logger.warning_once(
                f"{self.__class__.__name__} does not return attention weights: they are `None`. Load the model with "
                "`attn_implementation='eager'` to get them."
            )
        _, height, width, _ = hidden_states.shape
        query, key, value = self._project_qkv(hidden_states)
        rel_h, rel_w = self._decomposed_terms(query, height, width)
        dropout = self.dropout if self.training else 0.0
        attn_output = self._chunked_sdpa(
            query, key, value, rel_h, rel_w, (height, width), self.attention_scale(height, width), dropout
        )
        return self._merge_heads(attn_output, height, width), None

    def _chunked_sdpa(self, query, key, value, rel_h, rel_w, grid_size, scale: float, dropout: float) -> torch.Tensor:
        """SDPA over query chunks, each with its own slice of the bias, so memory is bounded by the budget; with
        autograd, [`chunked_biased_attention`] bounds the backward by the same budget."""
        batch_size, num_heads, num_tokens, _ = query.shape
        euclidean = self._euclidean_terms(*grid_size, query)
        needs_bias = rel_h is not None or euclidean is not None
        if not needs_bias:
            # SDPA's fused kernels save only Q, K, V, the output and the log-sum-exp: memory-bounded already.
            return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scale)
        budget = self.config.attention_memory_budget_mb
        inputs = (query, key, value, rel_h, rel_w, None if euclidean is None else euclidean[0])
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            if dropout == 0.0:
                return chunked_biased_attention(query, key, value, rel_h, rel_w, euclidean, scale, grid_size, budget)
            logger.warning_once(
                "Attention dropout > 0 in training: the attention backward keeps every (heads, N, N) probability "
                "tensor (memory grows with N**2). Set attention_dropout=0 (SAM's value) for the memory-bounded one."
            )
        rows = query_chunk_rows(budget, batch_size, num_heads, num_tokens, query.element_size())
        if rows >= num_tokens:
            bias = attention_bias_chunk(rel_h, rel_w, euclidean, slice(None), grid_size, query.dtype)
            return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=scale)
        # Without autograd, one bias buffer serves every chunk: a fresh budget-sized tensor per chunk is a new mapping
        # the kernel zero-fills page by page (measured: ~20% of the CPU time at 2048), and it would briefly coexist
        # with the previous chunk's bias (2x the budget). `out=` does not support autograd, hence the condition.
        needs_grad = torch.is_grad_enabled() and rel_h is not None and (rel_h.requires_grad or rel_w.requires_grad)
        chunks = list(query_chunks(num_tokens, rows))
        buffer = None
        if rel_h is not None and not needs_grad:
            buffer = query.new_empty(rel_h.shape[0], num_heads, chunks[0].stop, *grid_size)
        output = query.new_empty(query.shape)
        for chunk in chunks:
            bias = attention_bias_chunk(rel_h, rel_w, euclidean, chunk, grid_size, query.dtype, buffer)
            output[:, :, chunk] = F.scaled_dot_product_attention(
                query[:, :, chunk], key, value, attn_mask=bias, dropout_p=dropout, scale=scale
            )
            del bias  # never two chunk biases alive at once
        return output


BASAM_VISION_ATTENTION_CLASSES = {
    "eager": BaSamVisionAttention,
    "sdpa": BaSamVisionSdpaAttention,
}


class BaSamVisionLayer(SamVisionLayer):
    """[`SamVisionLayer`] whose attention is the BA-SAM class of `config._attn_implementation` (same parameter
    names): [`BaSamVisionAttention`] (eager) or [`BaSamVisionSdpaAttention`]."""

    def __init__(self, config: BaSamVisionConfig, window_size: int):
        # Built here instead of by SamVisionLayer.__init__, which would construct and discard a SAM attention.
        GradientCheckpointingLayer.__init__(self)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = BASAM_VISION_ATTENTION_CLASSES[config._attn_implementation](config, window_size)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SamMLPBlock(config)
        self.window_size = window_size


class BaSamPreTrainedModel(SamPreTrainedModel):
    config_class = BaSamConfig
    config: BaSamConfig
    _no_split_modules = ["SamVisionLayer", "BaSamVisionLayer"]

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, BaSamVisionAttention):
            if hasattr(module, "coefficient"):
                init.constant_(module.coefficient, module.config.coefficient_init)
            if hasattr(module, "slopes"):
                init.copy_(module.slopes, alibi_slopes(module.num_attention_heads, module.bias_slope_scale))
            module._distance_cache.clear()

    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs):
        """[`PreTrainedModel.set_attn_implementation`], which sets the configs, plus the vision attention classes.

        As in SAM, the class of a vision attention is chosen from its config when the layer is built; this switches
        each to the class of its config's new implementation. Both classes hold the same parameters and state, so
        the module is kept (weights, device, dtype) and only its class changes.
        """
        super().set_attn_implementation(attn_implementation, **kwargs)
        for module in self.modules():
            if isinstance(module, BaSamVisionAttention):
                module.__class__ = BASAM_VISION_ATTENTION_CLASSES[module.config._attn_implementation]


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int, patch_size: int) -> None:
    """Raise a clear `ValueError` for inputs the patch embedding cannot take."""
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have shape (batch, channels, height, width), got {tuple(pixel_values.shape)}."
        )
    _, channels, height, width = pixel_values.shape
    if channels != num_channels:
        raise ValueError(f"pixel_values has {channels} channels; the model expects {num_channels}.")
    if height < patch_size or width < patch_size or height % patch_size or width % patch_size:
        raise ValueError(
            f"Input size {height}x{width} is not a positive multiple of the patch size {patch_size}: resize or pad "
            f"the image to a multiple of {patch_size} (SamProcessor does this when its `pad_size` is such a multiple)."
        )


class BaSamVisionEncoder(BaSamPreTrainedModel, SamVisionEncoder):
    """SAM's ViT image encoder with BA-SAM attention, at any input size that is a multiple of the patch size.

    The absolute position embeddings are resized (bicubic) to the current token grid; the relative-position tables
    are interpolated per call by the attention, as in SAM.
    """

    config_class = BaSamVisionConfig
    config: BaSamVisionConfig

    def __init__(self, config: BaSamVisionConfig):
        # Skip SamVisionEncoder.__init__, which would build SAM attention layers only to replace them.
        super(SamVisionEncoder, self).__init__(config)
        self.config = config
        self.image_size = config.image_size
        self.patch_embed = BaSamPatchEmbeddings(config)
        self.pos_embed = None
        if config.use_abs_pos:
            grid = config.image_size // config.patch_size
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.hidden_size))
        self.layers = nn.ModuleList(
            BaSamVisionLayer(config, window_size=0 if i in config.global_attn_indexes else config.window_size)
            for i in range(config.num_hidden_layers)
        )
        self.neck = SamVisionNeck(config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, pixel_values: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple | SamVisionEncoderOutput:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        hidden_states = self.patch_embed(pixel_values)
        if self.pos_embed is not None:
            hidden_states = hidden_states + resize_position_embeddings(self.pos_embed, hidden_states.shape[1:3])
        for layer_module in self.layers:
            hidden_states = layer_module(hidden_states)
        return SamVisionEncoderOutput(last_hidden_state=self.neck(hidden_states))


class BaSamPatchEmbeddings(nn.Module):
    """Patch embedding without SAM's fixed-size check: any multiple of the patch size is accepted."""

    def __init__(self, config: BaSamVisionConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixel_values(pixel_values, self.num_channels, self.patch_size)
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class BaSamPromptEncoder(SamPromptEncoder):
    """[`SamPromptEncoder`] for any input size: prompts given in pixels of the current `input_image_size` are mapped
    to the configured frame, and the dense no-mask embedding takes the current embedding grid."""

    def forward(
        self,
        input_points: torch.Tensor | None,
        input_labels: torch.Tensor | None,
        input_boxes: torch.Tensor | None,
        input_masks: torch.Tensor | None,
        input_image_size: tuple[int, int] | None = None,
        image_embedding_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reference = (self.input_image_size, self.input_image_size)
        if input_image_size is not None and tuple(input_image_size) != reference:
            if input_points is not None:
                input_points = rescale_prompt_coordinates(input_points, input_image_size, reference)
            if input_boxes is not None:
                boxes = rescale_prompt_coordinates(
                    input_boxes.reshape(*input_boxes.shape[:-1], 2, 2), input_image_size, reference
                )
                input_boxes = boxes.reshape(input_boxes.shape)
        sparse, dense = super().forward(input_points, input_labels, input_boxes, input_masks)
        if (
            input_masks is None
            and image_embedding_size is not None
            and dense.shape[-2:] != tuple(image_embedding_size)
        ):
            dense = dense[..., :1, :1].expand(-1, -1, *image_embedding_size)
        return sparse, dense


class BaSamModel(BaSamPreTrainedModel, SamModel):
    """SAM with bias-mode attention (BA-SAM), usable at any input resolution.

    A [`SamModel`] (so every SAM tool accepts it) whose image encoder uses [`BaSamVisionAttention`]. With
    `bias_mode="none"` and `attention_scaling="none"` it computes exactly what `SamModel` computes. The input size is
    that of `pixel_values` (any multiple of the patch size); prompts are in pixels of that input.
    """

    config_class = BaSamConfig
    config: BaSamConfig

    def __init__(self, config: BaSamConfig):
        # Skip SamModel.__init__, which would build a SAM image encoder only to replace it.
        super(SamModel, self).__init__(config)
        self.shared_image_embedding = SamPositionalEmbedding(config.vision_config)
        self.vision_encoder = BaSamVisionEncoder(config.vision_config)
        self.prompt_encoder = BaSamPromptEncoder(config)
        # The mask decoder is not a PreTrainedModel, so it reads the attention implementation from its config.
        config.mask_decoder_config._attn_implementation = config._attn_implementation
        self.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
        self.post_init()

    def get_image_wide_positional_embeddings(self, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Dense positional embedding `(1, C, h, w)` of the image-embedding grid (the configured one by default)."""
        if grid_size is None:
            size = self.config.prompt_encoder_config.image_embedding_size
            grid_size = (size, size)
        height, width = grid_size
        weight = self.shared_image_embedding.positional_embedding
        y_embed = (torch.arange(height, device=weight.device, dtype=weight.dtype) + 0.5) / height
        x_embed = (torch.arange(width, device=weight.device, dtype=weight.dtype) + 0.5) / width
        coords = torch.stack(torch.meshgrid(x_embed, y_embed, indexing="xy"), dim=-1)
        return self.shared_image_embedding(coords).permute(2, 0, 1).unsqueeze(0)

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.LongTensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.LongTensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        multimask_output: bool = True,
        attention_similarity: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SamImageSegmentationOutput:
        r"""
        Same arguments and outputs as [`SamModel.forward`], at any input size: `input_points` and `input_boxes` are in
        pixels of `pixel_values` (for `image_embeddings`, of an input of `patch_size` times the embedding grid), and
        `input_masks` are 4x the embedding grid.
        """
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("Provide exactly one of pixel_values and image_embeddings.")
        if input_points is not None and input_points.ndim != 4:
            raise ValueError(
                "input_points must be a 4D tensor (batch_size, point_batch_size, points_per_mask, 2), "
                f"got shape {tuple(input_points.shape)}."
            )
        if input_boxes is not None and input_boxes.ndim != 3:
            raise ValueError(
                f"input_boxes must be a 3D tensor (batch_size, num_boxes, 4), got {tuple(input_boxes.shape)}."
            )
        if input_points is not None and input_boxes is not None and input_points.shape[1] != input_boxes.shape[1]:
            raise ValueError(
                f"Provide as many boxes as point groups per image: got {input_points.shape[1]} and {input_boxes.shape[1]}."
            )

        vision_attentions = vision_hidden_states = None
        if pixel_values is not None:
            vision_outputs = self.vision_encoder(pixel_values, **kwargs)
            image_embeddings = vision_outputs.last_hidden_state
            vision_hidden_states, vision_attentions = vision_outputs.hidden_states, vision_outputs.attentions
        batch_size = image_embeddings.shape[0]
        grid_size = tuple(image_embeddings.shape[-2:])
        patch_size = self.config.vision_config.patch_size
        input_image_size = (grid_size[0] * patch_size, grid_size[1] * patch_size)

        if input_points is not None and input_labels is None:
            input_labels = torch.ones_like(input_points[:, :, :, 0], dtype=torch.int, device=input_points.device)
        if input_points is not None and input_points.shape[0] != batch_size:
            raise ValueError(
                f"The batch size of the image embeddings ({batch_size}) and of input_points ({input_points.shape[0]}) "
                "differ; pass several points for one image as input_points of shape (1, point_batch, points, 2)."
            )

        sparse_embeddings, dense_embeddings = self.prompt_encoder(
            input_points=input_points,
            input_labels=input_labels,
            input_boxes=input_boxes,
            input_masks=input_masks,
            input_image_size=input_image_size,
            image_embedding_size=grid_size,
        )
        image_positional_embeddings = self.get_image_wide_positional_embeddings(grid_size).repeat(batch_size, 1, 1, 1)
        low_res_masks, iou_predictions = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=image_positional_embeddings,
            sparse_prompt_embeddings=sparse_embeddings,
            dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask_output,
            attention_similarity=attention_similarity,
            target_embedding=target_embedding,
        )
        return SamImageSegmentationOutput(
            iou_scores=iou_predictions,
            pred_masks=low_res_masks,
            vision_hidden_states=vision_hidden_states,
            vision_attentions=vision_attentions,
        )


# Remote code: save_pretrained copies this file and its imports next to the weights (see configuration_basam).
BaSamModel.register_for_auto_class("AutoModelForMaskGeneration")

__all__ = [
    "BaSamModel",
    "BaSamPreTrainedModel",
    "BaSamVisionAttention",
    "BaSamVisionEncoder",
    "BaSamVisionSdpaAttention",
]
