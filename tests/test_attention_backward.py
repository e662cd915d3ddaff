"""The memory-bounded attention backward: the chunked autograd function against plain autograd of the formula, and
the whole model (chunked, gradient checkpointing) against eager without checkpointing, for every BA mode."""

import pytest
import torch
import torch.nn.functional as F
from conftest import BA_OFF, TINY_VISION, randomize_, tiny_config_kwargs

from basam_hf import BaSamConfig, BaSamModel
from basam_hf.bias import axis_distances, euclidean_distances
from basam_hf.chunked_attention import chunked_biased_attention, query_chunk_rows

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_attention(query, key, value, rel_h, rel_w, euclidean, scale, grid_size):
    """`softmax(scale Q K^T + B) V` with the whole `(B, heads, N, N)` bias built from the formula."""
    scores = scale * query @ key.transpose(-2, -1)
    if rel_h is not None:
        scores = scores + (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
    if euclidean is not None:
        slopes, row, col = euclidean
        scores = scores - slopes[:, None, None] * euclidean_distances(row, col, slice(None))
    return scores.softmax(-1) @ value


def attention_inputs(grid_size, batch=2, heads=3, head_dim=5, shared_bias=False, dtype=torch.float32):
    """Random inputs of one attention call (the bias terms of batch 1 when `shared_bias`), requiring gradients."""
    generator = torch.Generator().manual_seed(0)
    tokens = grid_size[0] * grid_size[1]

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()

    qkv = [draw(batch, heads, tokens, head_dim) for _ in range(3)]
    bias_batch = 1 if shared_bias else batch
    rel_h, rel_w = draw(bias_batch, heads, tokens, grid_size[0]), draw(bias_batch, heads, tokens, grid_size[1])
    slopes = (torch.rand(heads, generator=generator, dtype=dtype) + 0.1).requires_grad_()
    distances = (axis_distances(grid_size[0], 0.7, dtype=dtype), axis_distances(grid_size[1], 1.3, dtype=dtype))
    return qkv, rel_h, rel_w, (slopes, *distances)


@pytest.mark.parametrize("terms", ["decomposed", "euclidean", "both", "decomposed-shared"])
def test_chunked_function_gradients_equal_autograd_of_the_formula(terms):
    grid_size = (7, 5)
    (query, key, value), rel_h, rel_w, euclidean = attention_inputs(grid_size, shared_bias=terms.endswith("shared"))
    if terms == "euclidean":
        rel_h = rel_w = None
    if terms.startswith("decomposed"):
        euclidean = None
    budget_mb = 0.0035  # 4 rows per forward chunk, 2 per backward chunk: 35 rows split unevenly
    assert query_chunk_rows(budget_mb, 2, 3, 35, 4) == 4
    grad_output = torch.randn(query.shape, generator=torch.Generator().manual_seed(1))
    leaves = [
        t for t in (query, key, value, rel_h, rel_w, None if euclidean is None else euclidean[0]) if t is not None
    ]

    expected = reference_attention(query, key, value, rel_h, rel_w, euclidean, 0.4, grid_size)
    expected_grads = torch.autograd.grad(expected, leaves, grad_output)
    actual = chunked_biased_attention(query, key, value, rel_h, rel_w, euclidean, 0.4, grid_size, budget_mb)
    actual_grads = torch.autograd.grad(actual, leaves, grad_output)

    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_chunked_function_passes_gradcheck_in_float64():
    grid_size = (3, 2)
    (query, key, value), rel_h, rel_w, (slopes, row, col) = attention_inputs(grid_size, 1, 2, 3, dtype=torch.float64)

    def attention(query, key, value, rel_h, rel_w, slopes):
        return chunked_biased_attention(query, key, value, rel_h, rel_w, (slopes, row, col), 0.7, grid_size, 1e-4)

    assert torch.autograd.gradcheck(attention, (query, key, value, rel_h, rel_w, slopes))


def test_a_bias_without_gradient_uses_the_fused_backward():
    """Fixed bias terms (no gradient): the query, key and value gradients still equal autograd's."""
    grid_size = (6, 4)
    (query, key, value), rel_h, rel_w, euclidean = attention_inputs(grid_size)
    rel_h, rel_w = rel_h.detach(), rel_w.detach()
    euclidean = (euclidean[0].detach(), *euclidean[1:])
    grad_output = torch.randn(query.shape, generator=torch.Generator().manual_seed(1))
    expected = torch.autograd.grad(
        reference_attention(query, key, value, rel_h, rel_w, euclidean, 0.4, grid_size),
        (query, key, value),
        grad_output,
    )
    output = chunked_biased_attention(query, key, value, rel_h, rel_w, euclidean, 0.4, grid_size, 0.002)
    for got, want in zip(torch.autograd.grad(output, (query, key, value), grad_output), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_training_saves_no_quadratic_tensor():
    """What autograd keeps for the backward of a global layer is O(N * (head_dim + H + W)), never (heads, N, N)."""
    grid_size = (24, 20)
    tokens = grid_size[0] * grid_size[1]
    (query, key, value), rel_h, rel_w, euclidean = attention_inputs(grid_size, batch=1, heads=2)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        output = chunked_biased_attention(query, key, value, rel_h, rel_w, euclidean, 0.4, grid_size, 0.05)
    output.sum().backward()
    assert saved and max(saved) < tokens * tokens  # one head's N x N would be 230,400 elements
    assert all(t.grad is not None for t in (query, key, value, rel_h, rel_w, euclidean[0]))


BA_MODES = {
    "off": BA_OFF,
    "distance-manhattan": dict(bias_mode="distance"),
    "distance-euclidean": dict(bias_mode="distance", bias_distance="euclidean", distance_unit="pretrain_grid"),
    "learnable-manhattan": dict(bias_mode="distance", learnable_slopes=True, bias_layers="all"),
    "learnable-euclidean": dict(bias_mode="distance", bias_distance="euclidean", learnable_slopes=True),
    "coefficient": dict(bias_mode="coefficient", coefficient_init=0.3, bias_layers="all"),
}


def training_gradients(model: BaSamModel) -> dict[str, torch.Tensor]:
    """Gradients of every parameter after one BCE loss on box prompts, for a non-square batch of two images."""
    generator = torch.Generator().manual_seed(3)
    pixel_values = torch.randn(2, 3, 64, 40, generator=generator).double()  # an 8 x 5 token grid
    boxes = torch.tensor([[[4.0, 6.0, 30.0, 50.0]], [[10.0, 2.0, 38.0, 60.0]]], dtype=torch.float64)
    outputs = model(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
    target = (torch.rand(outputs.pred_masks.shape, generator=generator) > 0.5).double()
    F.binary_cross_entropy_with_logits(outputs.pred_masks, target).backward()
    return {name: param.grad for name, param in model.named_parameters() if param.grad is not None}


def _counting(forward, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    return counted


@pytest.mark.parametrize("mode", list(BA_MODES))
def test_memory_bounded_training_gradients_equal_eager(mode, monkeypatch):
    """The vision attention in chunked sdpa (a budget that splits every attention into uneven chunks) with gradient
    checkpointing on, against eager without checkpointing: every parameter's gradient within 1e-4 of its largest
    entry.

    In float64: the mask decoder of a tiny random model has attention gradients 1e-7 of the largest, where the
    float32 rounding of either path (eager's softmax is float32 even then) alone reaches 1e-4. The mask decoder runs
    the same (eager) code in both models: what differs is the image encoder's attention and checkpointing."""
    settings = dict(BA_MODES[mode], attention_memory_budget_mb=0.004)  # global layer: 3 rows per chunk, of 40
    config = BaSamConfig(**tiny_config_kwargs(**settings), attn_implementation="eager")
    reference = randomize_(BaSamModel(config)).double().train()
    bounded = randomize_(BaSamModel(config)).double().train()
    bounded.vision_encoder.set_attn_implementation("sdpa")
    assert all(type(layer.attn).__name__ == "BaSamVisionSdpaAttention" for layer in bounded.vision_encoder.layers)
    bounded.activation_checkpointing_enable()

    # Checkpointing really recomputes: each vision layer's attention runs twice (forward, then again in backward).
    calls = []
    for layer in bounded.vision_encoder.layers:
        monkeypatch.setattr(layer.attn, "forward", _counting(layer.attn.forward, calls))
    actual = training_gradients(bounded)
    assert len(calls) == 2 * TINY_VISION["num_hidden_layers"]
    expected = training_gradients(reference)

    assert actual.keys() == expected.keys()
    has_ba_parameters = "learnable" in mode or mode == "coefficient"
    assert any(name.endswith(("slopes", "coefficient")) for name in expected) == has_ba_parameters
    largest = max(grad.abs().max() for grad in expected.values())
    for name, want in expected.items():
        got = actual[name]
        if name.endswith("k_proj.bias") or not want.any():
            # Exactly zero in exact arithmetic: key biases (softmax ignores a shift shared by all keys) and the
            # output heads of masks the loss does not use.
            assert got.abs().max() <= 1e-9 * largest, (name, float(got.abs().max()), float(largest))
            continue
        relative = (got - want).abs().max() / want.abs().max()
        assert relative <= 1e-4, (name, float(relative))
