"""Attention with an additive, decomposed bias in query chunks, in inference and in training.

The bias of query `i` and key `(kh, kw)` is `rel_h[i, kh] + rel_w[i, kw]` (SAM's decomposed relative positions, BA's
Manhattan distance terms folded in) plus, optionally, a Euclidean distance penalty `-slope_h * dist(i, k)`. Nothing of
shape `(heads, N, N)` is ever built: scores and bias exist for one chunk of query rows at a time.

[`chunked_biased_attention`] is the training path, a FlashAttention-style `torch.autograd.Function`: its forward
keeps the inputs, the output and each row's log-sum-exp; its backward recomputes scores and softmax chunk by chunk and
returns the gradients of query, key, value, the row / column bias terms and the slopes. Imported by
`modeling_basam.py` (relatively, so that `save_pretrained` ships this file as remote code): torch only.
"""

from collections.abc import Iterator

import torch

from .bias import euclidean_bias, euclidean_distances

# Euclidean penalty: (slopes (heads,), row distances (H, H), column distances (W, W)), all float32.
Euclidean = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def query_chunk_rows(budget_mb: float, batch_size: int, num_heads: int, num_keys: int, element_size: int) -> int:
    """Number of query rows whose `(batch, heads, rows, keys)` scores fit in `budget_mb` MiB (at least 1)."""
    row_bytes = batch_size * num_heads * num_keys * element_size
    return max(1, int(budget_mb * 2**20) // row_bytes)


def query_chunks(num_tokens: int, rows: int) -> Iterator[slice]:
    """Slices of at most `rows` query rows covering `num_tokens`, balanced (4 x 1024 rows rather than 3 x 1365 + 1)
    so that every kernel call runs on an efficient size."""
    num_chunks = -(-num_tokens // rows)
    rows = -(-num_tokens // num_chunks)
    for start in range(0, num_tokens, rows):
        yield slice(start, min(start + rows, num_tokens))


def attention_bias_chunk(
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    euclidean: Euclidean | None,
    rows: slice,
    grid_size: tuple[int, int],
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Additive bias of the query rows `rows` against all keys: `(B|1, heads, rows, N)`, or `None` without terms.

    Args:
        rel_h, rel_w: row and column terms `(B|1, heads, N, H)` and `(B|1, heads, N, W)`, or `None`.
        euclidean: the Euclidean penalty's float32 pieces, or `None`; its bias is rounded once to `dtype`.
        out: a `(B|1, heads, >= rows, H, W)` buffer receiving the row + column terms instead of a new tensor (which
            records no autograd graph).
    """
    bias = None
    if rel_h is not None:
        row_term, col_term = rel_h[:, :, rows, :, None], rel_w[:, :, rows, None, :]
        if out is None:
            bias = row_term + col_term
        else:
            bias = torch.add(row_term, col_term, out=out[:, :, : row_term.shape[2]])
        bias = bias.reshape(*bias.shape[:3], grid_size[0] * grid_size[1])
    if euclidean is not None:
        euclid = euclidean_bias(*euclidean, rows, dtype=dtype)[None]
        bias = euclid if bias is None else bias + euclid
    return bias


def _chunk_scores(query_rows, key, rel_h_rows, rel_w_rows, distance, slopes, scale: float, grid_size) -> torch.Tensor:
    """`scale * Q_r K^T + bias_r` of one chunk, `(B, heads, rows, N)`, the bias added in place (no bias tensor)."""
    scores = torch.matmul(query_rows, key.transpose(-2, -1)).mul_(scale)
    if rel_h_rows is not None:
        grid_scores = scores.view(*scores.shape[:3], *grid_size)
        grid_scores.add_(rel_h_rows[..., None]).add_(rel_w_rows[..., None, :])
    if distance is not None:
        scores.add_(distance.to(scores.dtype) * -slopes.to(scores.dtype)[:, None, None])
    return scores


def _flash_cpu(query: torch.Tensor) -> bool:
    """Whether PyTorch's fused CPU attention kernel (output and log-sum-exp, additive mask) serves `query`."""
    return query.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


class ChunkedBiasedAttention(torch.autograd.Function):
    """`softmax(scale * Q K^T + B) V` with the decomposed bias `B`, in query chunks, with a recomputing backward.

    Forward, per chunk `r`: `S_r = scale Q_r K^T + B_r`, `L_r = logsumexp(S_r)`, `O_r = exp(S_r - L_r) V`; saved:
    Q, K, V, O, L and the small bias pieces. Backward, per chunk: recompute `P_r = exp(S_r - L_r)`,
    `dV += P_r^T dO_r`, `dS_r = P_r * (dO_r V^T - rowsum(dO_r * O_r))`, `dQ_r = scale dS_r K`,
    `dK += scale dS_r^T Q_r`; the bias gradients are row / column sums of `dS_r` seen as `(rows, H, W)` and, for the
    Euclidean slopes, `-sum(dS_r * dist_r)` per head. Only one chunk's `(B, heads, rows, N)` tensors are alive.
    """

    @staticmethod
    def forward(ctx, query, key, value, rel_h, rel_w, slopes, row_distances, col_distances, scale, grid_size, budget):
        batch_size, num_heads, num_tokens, _ = query.shape
        euclidean = None if slopes is None else (slopes, row_distances, col_distances)
        rows = query_chunk_rows(budget, batch_size, num_heads, num_tokens, query.element_size())
        output = torch.empty_like(query)
        lse = query.new_empty(query.shape[:3], dtype=torch.promote_types(query.dtype, torch.float32))
        chunks = list(query_chunks(num_tokens, rows))
        # No autograd in here, so one bias buffer serves every chunk (see BaSamVisionSdpaAttention._chunked_sdpa).
        buffer = None if rel_h is None else query.new_empty(rel_h.shape[0], num_heads, chunks[0].stop, *grid_size)
        for chunk in chunks:
            bias = attention_bias_chunk(rel_h, rel_w, euclidean, chunk, grid_size, query.dtype, buffer)
            if _flash_cpu(query):
                # The fused CPU kernel (what SDPA runs for a float mask) returns the log-sum-exp the backward needs.
                out, chunk_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    query[:, :, chunk], key, value, attn_mask=bias, scale=scale
                )
            else:
                scores = torch.matmul(query[:, :, chunk], key.transpose(-2, -1)).mul_(scale).float().add_(bias)
                chunk_lse = torch.logsumexp(scores, dim=-1)
                out = torch.matmul(scores.sub_(chunk_lse[..., None]).exp_().to(value.dtype), value)
            output[:, :, chunk], lse[:, :, chunk] = out, chunk_lse
            del bias
        ctx.save_for_backward(query, key, value, output, lse, rel_h, rel_w, slopes, row_distances, col_distances)
        ctx.scale, ctx.grid_size, ctx.budget = scale, grid_size, budget
        return output

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, output, lse, rel_h, rel_w, slopes, row_distances, col_distances = ctx.saved_tensors
        scale, grid_size = ctx.scale, ctx.grid_size
        bias_needs_grad = any(ctx.needs_input_grad[3:6])
        euclidean = None if slopes is None else (slopes, row_distances, col_distances)
        if not bias_needs_grad and _flash_cpu(query):
            # A fixed bias: the fused CPU backward gives dQ, dK, dV, per chunk, without a score tensor.
            def bias_chunk(rows):
                return attention_bias_chunk(rel_h, rel_w, euclidean, rows, grid_size, query.dtype)

            grads = _fused_backward(grad_output, query, key, value, output, lse, bias_chunk, scale, ctx.budget)
            return (*grads, *([None] * 8))

        # The bias needs a gradient, which no PyTorch kernel returns: recompute per chunk by hand.
        grads = _recomputing_backward(ctx, grad_output, query, key, value, output, lse, rel_h, rel_w, euclidean)
        return (*grads, None, None, None, None, None)


def _recomputing_backward(ctx, grad_output, query, key, value, output, lse, rel_h, rel_w, euclidean):
    """dQ, dK, dV, d rel_h, d rel_w, d slopes (`None` where not needed), recomputing scores and probabilities per
    chunk, in float32 (or float64) whatever the inputs' dtype."""
    scale, grid_size, needs = ctx.scale, ctx.grid_size, ctx.needs_input_grad
    compute = torch.promote_types(query.dtype, torch.float32)
    q, k, v = query.to(compute), key.to(compute), value.to(compute)
    grad_out = grad_output.to(compute)
    batch_size, num_heads, num_tokens, _ = q.shape
    # Two (B, heads, rows, N) tensors are alive at once (probabilities and their gradient): each gets half.
    rows = query_chunk_rows(ctx.budget / 2, batch_size, num_heads, num_tokens, q.element_size())
    delta = (grad_out * output.to(compute)).sum(-1, keepdim=True)  # D = rowsum(dO * O)
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
    grad_rel_h = grad_rel_w = grad_slopes = None
    if needs[3] or needs[4]:
        grad_rel_h = q.new_zeros(batch_size, num_heads, num_tokens, grid_size[0])
        grad_rel_w = q.new_zeros(batch_size, num_heads, num_tokens, grid_size[1])
    if needs[5]:
        grad_slopes = q.new_zeros(batch_size * num_heads)
    slopes = None if euclidean is None else euclidean[0]
    for chunk in query_chunks(num_tokens, rows):
        distance = None if euclidean is None else euclidean_distances(*euclidean[1:], chunk)
        rel_rows = (None, None) if rel_h is None else (rel_h[:, :, chunk], rel_w[:, :, chunk])
        probs = _chunk_scores(q[:, :, chunk], k, *rel_rows, distance, slopes, scale, grid_size)
        probs = probs.sub_(lse[:, :, chunk, None]).exp_()
        grad_v += probs.transpose(-2, -1) @ grad_out[:, :, chunk]
        grad_scores = torch.matmul(grad_out[:, :, chunk], v.transpose(-2, -1))
        grad_scores = grad_scores.sub_(delta[:, :, chunk]).mul_(probs)  # dS = P * (dP - D), in place
        del probs
        grad_q[:, :, chunk] = torch.matmul(grad_scores, k).mul_(scale)
        grad_k += torch.matmul(grad_scores.transpose(-2, -1), q[:, :, chunk]).mul_(scale)
        if grad_rel_h is not None:
            grid_grad = grad_scores.view(*grad_scores.shape[:3], *grid_size)
            grad_rel_h[:, :, chunk] = grid_grad.sum(-1)
            grad_rel_w[:, :, chunk] = grid_grad.sum(-2)
        if grad_slopes is not None:
            # -sum(dS * dist) per (batch, head), as a matrix-vector product: no product tensor.
            grad_slopes -= grad_scores.reshape(batch_size * num_heads, -1) @ distance.to(compute).reshape(-1)
        del grad_scores
    if grad_rel_h is not None:
        grad_rel_h, grad_rel_w = _reduce_to(grad_rel_h, rel_h), _reduce_to(grad_rel_w, rel_w)
    if grad_slopes is not None:
        grad_slopes = grad_slopes.view(batch_size, num_heads).sum(0).to(slopes.dtype)
    return grad_q.to(query.dtype), grad_k.to(key.dtype), grad_v.to(value.dtype), grad_rel_h, grad_rel_w, grad_slopes


def _fused_backward(grad_output, query, key, value, output, lse, bias_chunk, scale: float, budget_mb: float):
    """dQ, dK, dV of a chunked attention whose bias needs no gradient, from PyTorch's fused CPU backward per chunk
    (rows are independent; the key and value gradients are sums over the chunks). `bias_chunk(rows)` builds the
    bias of a chunk."""
    batch_size, num_heads, num_tokens, _ = query.shape
    rows = query_chunk_rows(budget_mb, batch_size, num_heads, num_tokens, query.element_size())
    grad_q, grad_k, grad_v = torch.empty_like(query), torch.zeros_like(key), torch.zeros_like(value)
    for chunk in query_chunks(num_tokens, rows):
        chunk_q, chunk_k, chunk_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_output[:, :, chunk].contiguous(),
            query[:, :, chunk],
            key,
            value,
            output[:, :, chunk],
            lse[:, :, chunk],
            0.0,
            False,
            attn_mask=bias_chunk(chunk),
            scale=scale,
        )
        grad_q[:, :, chunk] = chunk_q
        grad_k += chunk_k
        grad_v += chunk_v
    return grad_q, grad_k, grad_v


def _reduce_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`grad` summed over the batch when `like` is shared by the batch (shape `(1, ...)`), in `like`'s dtype."""
    if like.shape[0] == 1 and grad.shape[0] != 1:
        grad = grad.sum(0, keepdim=True)
    return grad.to(like.dtype)


def chunked_biased_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    euclidean: Euclidean | None,
    scale: float,
    grid_size: tuple[int, int],
    budget_mb: float,
) -> torch.Tensor:
    """Biased attention `(B, heads, N, head_dim)` of `(B, heads, N, head_dim)` inputs whose forward and backward hold
    at most `budget_mb` MiB of `(B, heads, rows, N)` tensors at a time ([`ChunkedBiasedAttention`])."""
    slopes, row_distances, col_distances = (None, None, None) if euclidean is None else euclidean
    return ChunkedBiasedAttention.apply(
        query, key, value, rel_h, rel_w, slopes, row_distances, col_distances, scale, tuple(grid_size), budget_mb
    )
