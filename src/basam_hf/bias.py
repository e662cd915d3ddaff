"""Pure functions for BA-SAM's attention: the softmax scale factor, ALiBi slopes and grid-distance biases.

They hold no module state, so they can be unit-tested directly and re-derived independently. Imported by
`modeling_basam.py` (relatively, so that `save_pretrained` ships this file as remote code): torch only.
"""

import math

import torch


def attention_scale_factor(
    mode: str,
    grid_size: tuple[int, int],
    train_grid_size: tuple[int, int],
    patch_size: int = 16,
) -> float:
    """Multiplier of SAM's softmax scale `head_dim**-0.5` for a layer attending over `grid_size` tokens.

    Args:
        mode: `"none"` (factor 1), `"log_length"` (`log(N) / log(N_train)`, Su's entropy-invariant scaling) or
            `"official"` (the official BA-SAM floor rule, `log(s**2 * N_train) / log(N_train)` with
            `s = image_side // pretrain_side`).
        grid_size: `(height, width)` of the token grid the layer attends over.
        train_grid_size: that grid at the pretraining input size.
        patch_size: pixels per token, to express the official rule in image sizes.
    """
    if mode == "none" or tuple(grid_size) == tuple(train_grid_size):
        return 1.0
    train_keys = train_grid_size[0] * train_grid_size[1]
    if train_keys <= 1:
        return 1.0  # log(1) = 0: a one-token pretraining grid defines no length to be consistent with
    if mode == "log_length":
        return math.log(grid_size[0] * grid_size[1]) / math.log(train_keys)
    if mode == "official":
        if grid_size[0] != grid_size[1] or train_grid_size[0] != train_grid_size[1]:
            raise ValueError(
                f"attention_scaling='official' is defined for square inputs only, got a {grid_size[0]}x{grid_size[1]} "
                "token grid; pad the image to a square or use attention_scaling='log_length'."
            )
        length_scale = grid_size[0] // train_grid_size[0]
        if length_scale == 0:
            raise ValueError(
                f"attention_scaling='official' is undefined below the pretraining size (input "
                f"{grid_size[0] * patch_size}px < {train_grid_size[0] * patch_size}px: the official code divides by "
                "zero there); use attention_scaling='log_length', which is defined at every size."
            )
        return math.log(length_scale**2 * train_keys) / math.log(train_keys)
    raise ValueError(f"Invalid attention_scaling={mode!r}; allowed values are 'none', 'log_length', 'official'.")


def alibi_slopes(num_heads: int, scale: float = 1.0) -> torch.Tensor:
    """ALiBi's geometric head slopes `scale * 2**(-8 * (h + 1) / num_heads)`, shape `(num_heads,)`, float32."""
    exponents = torch.arange(1, num_heads + 1, dtype=torch.float32) * (-8.0 / num_heads)
    return scale * torch.pow(2.0, exponents)


def distance_units(unit: str, grid_size: tuple[int, int], train_grid_size: tuple[int, int]) -> tuple[float, float]:
    """Length of one token step along (rows, columns) in the chosen distance unit.

    `"token"`: 1 cell of the current grid. `"pretrain_grid"`: `train / current` cells, i.e. distances measured on the
    grid seen at the pretraining size, so a penalty covers the same image fraction at every resolution.
    """
    if unit == "token":
        return 1.0, 1.0
    if unit == "pretrain_grid":
        return train_grid_size[0] / grid_size[0], train_grid_size[1] / grid_size[1]
    raise ValueError(f"Invalid distance_unit={unit!r}; allowed values are 'token', 'pretrain_grid'.")


def axis_distances(length: int, unit: float = 1.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """`|i - j| * unit` for positions `i, j` along one axis of `length` tokens, shape `(length, length)`."""
    positions = torch.arange(length, device=device, dtype=dtype)
    return (positions[:, None] - positions[None, :]).abs() * unit


def manhattan_bias_terms(
    slopes: torch.Tensor, row_distances: torch.Tensor, col_distances: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column terms of `-m_h * (|dy| + |dx|)`: shapes `(heads, H, H)` and `(heads, W, W)`.

    The bias of query `(y, x)` and key `(y', x')` is `row[h, y, y'] + col[h, x, x']`: the same decomposition as SAM's
    relative-position bias, so it is added to SAM's `rel_h` / `rel_w` and never needs an N x N tensor.
    """
    slopes = slopes.to(row_distances.dtype)[:, None, None]
    return -slopes * row_distances, -slopes * col_distances


def euclidean_distances(row_distances: torch.Tensor, col_distances: torch.Tensor, query_rows: slice) -> torch.Tensor:
    """`sqrt(dy**2 + dx**2)` of the flattened queries `query_rows` against all keys: `(rows, H * W)`, in the
    distances' dtype (the Euclidean penalty's slope gradient is the sum of the score gradient times this)."""
    height, width = row_distances.shape[0], col_distances.shape[0]
    queries = torch.arange(height * width, device=row_distances.device)[query_rows]
    dy = row_distances[queries // width]  # (rows, H)
    dx = col_distances[queries % width]  # (rows, W)
    return torch.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2).reshape(len(queries), height * width)


def euclidean_bias(
    slopes: torch.Tensor,
    row_distances: torch.Tensor,
    col_distances: torch.Tensor,
    query_rows: slice,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`-m_h * sqrt(dy**2 + dx**2)` for the flattened queries `query_rows` against all keys: `(heads, rows, H * W)`.

    Euclidean distance does not split into row and column terms, so it is built per query chunk. It is computed in
    the distances' dtype (float32 in the model) and returned in `dtype` (default the same), rounded once: a
    bfloat16 model gets the float32 bias rounded to bfloat16, without a float32 copy of the whole chunk when no
    gradient is needed.
    """
    distance = euclidean_distances(row_distances, col_distances, query_rows)
    num_queries, num_keys = distance.shape
    negative_slopes = -slopes.to(distance.dtype)[:, None, None]
    if dtype is None or dtype == distance.dtype:
        return negative_slopes * distance
    if torch.is_grad_enabled() and negative_slopes.requires_grad:  # `out=` has no autograd
        return (negative_slopes * distance).to(dtype)
    out = distance.new_empty((len(negative_slopes), num_queries, num_keys), dtype=dtype)
    return torch.mul(negative_slopes, distance, out=out)  # computed in the inputs' dtype, rounded on store
