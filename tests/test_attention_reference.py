"""BaSamVisionAttention (eager) and BaSamVisionSdpaAttention against a plain-torch re-derivation of BA-SAM's logits,
written here from the formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VISION

from basam_hf import BaSamVisionConfig
from basam_hf.modeling_basam import BASAM_VISION_ATTENTION_CLASSES, BaSamVisionAttention

MODES = {
    "off": dict(bias_mode="none", attention_scaling="none"),
    "distance": dict(bias_mode="distance"),
    "distance-euclidean-pretrain-grid": dict(
        bias_mode="distance", bias_distance="euclidean", distance_unit="pretrain_grid", bias_slope_scale=0.5
    ),
    "distance-learnable": dict(bias_mode="distance", learnable_slopes=True, distance_unit="pretrain_grid"),
    "coefficient": dict(bias_mode="coefficient", coefficient_init=0.3),
    "distance-no-relpos": dict(bias_mode="distance", use_rel_pos=False),
    "official-scale": dict(bias_mode="none", attention_scaling="official"),
}


def reference_logits(attn: BaSamVisionAttention, x: torch.Tensor, settings: dict, window: int) -> torch.Tensor:
    """Logits `(B, heads, N, N)` of one layer, from the formulas, looping over token pairs where it is clearer."""
    batch, height, width, channels = x.shape
    heads = attn.num_attention_heads
    head_dim = channels // heads
    qkv = x.reshape(batch, height * width, channels) @ attn.qkv.weight.T + attn.qkv.bias
    q, k, _ = qkv.reshape(batch, height * width, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    config = BaSamVisionConfig(**{**TINY_VISION, **settings})

    # Scale: head_dim**-0.5 times log(N)/log(N_train) on global layers.
    train_side = window or config.pretrain_image_size // config.patch_size
    mode = config.attention_scaling if window == 0 else "none"
    factor = 1.0
    if mode == "log_length":
        factor = math.log(height * width) / math.log(train_side**2)
    elif mode == "official":
        factor = math.log((height // train_side) ** 2 * train_side**2) / math.log(train_side**2)
    logits = (q @ k.transpose(-1, -2)) * head_dim**-0.5 * factor

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    has_bias = window == 0 or config.bias_layers == "all"
    if config.use_rel_pos:
        # SAM's decomposed rel-pos with the unscaled query: q . Rh[dy] + q . Rw[dx], tables resized to 2*side - 1.
        def table(rel_pos, side):
            return F.interpolate(rel_pos.T[None], size=2 * side - 1, mode="linear")[0].T

        table_h, table_w = table(attn.rel_pos_h, height), table(attn.rel_pos_w, width)
        dy = ys[:, None] - ys[None, :] + height - 1
        dx = xs[:, None] - xs[None, :] + width - 1
        rel = torch.einsum("bhnc,nmc->bhnm", q, table_h[dy]) + torch.einsum("bhnc,nmc->bhnm", q, table_w[dx])
        if has_bias and config.bias_mode == "coefficient":
            rel = rel * config.coefficient_init
        logits = logits + rel
    if has_bias and config.bias_mode == "distance":
        slopes = torch.tensor([config.bias_slope_scale * 2 ** (-8 * (h + 1) / heads) for h in range(heads)])
        unit_y = unit_x = 1.0
        if config.distance_unit == "pretrain_grid":
            unit_y, unit_x = train_side / height, train_side / width
        dy = (ys[:, None] - ys[None, :]).abs().float() * unit_y
        dx = (xs[:, None] - xs[None, :]).abs().float() * unit_x
        distance = dy + dx if config.bias_distance == "manhattan" else torch.sqrt(dy**2 + dx**2)
        logits = logits - slopes[:, None, None] * distance
    return logits


def reference_output(attn, x, logits):
    batch, height, width, channels = x.shape
    heads = attn.num_attention_heads
    qkv = x.reshape(batch, height * width, channels) @ attn.qkv.weight.T + attn.qkv.bias
    v = qkv.reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)[2]
    out = logits.softmax(-1) @ v  # (B, heads, N, d)
    out = out.permute(0, 2, 1, 3).reshape(batch, height, width, channels)
    return out @ attn.proj.weight.T + attn.proj.bias


def build_attention(settings: dict, window: int, implementation: str) -> BaSamVisionAttention:
    config = BaSamVisionConfig(**{**TINY_VISION, **settings})
    config._attn_implementation = implementation
    attn = BASAM_VISION_ATTENTION_CLASSES[implementation](config, window).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in attn.named_parameters():
            if name not in ("coefficient", "slopes"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return attn


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layer", ["global", "windowed", "global-2x", "global-non-square"])
def test_attention_matches_reference(mode, layer, implementation):
    settings = dict(MODES[mode], bias_layers="all")
    window = 3 if layer == "windowed" else 0
    grid = {"global": (8, 8), "windowed": (3, 3), "global-2x": (16, 16), "global-non-square": (16, 8)}[layer]
    if mode == "official-scale" and layer == "global-non-square":
        pytest.skip("the official scale is defined for square inputs only (tested in test_bias)")
    attn = build_attention(settings, window, implementation)
    x = torch.randn(2, *grid, TINY_VISION["hidden_size"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected_logits = reference_logits(attn, x, settings, window)
        output, weights = attn(x)
    torch.testing.assert_close(output, reference_output(attn, x, expected_logits), atol=1e-5, rtol=1e-5)
    if implementation == "eager":
        expected = expected_logits.softmax(-1).reshape_as(weights)
        torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-5)
    else:
        assert weights is None


@pytest.mark.parametrize("mode", list(MODES))
def test_bias_layers_global_leaves_windowed_layers_as_sam(mode):
    """With bias_layers="global", a windowed layer computes SAM's attention whatever the mode."""
    settings = dict(MODES[mode], bias_layers="global")
    attn = build_attention(settings, 3, "eager")
    x = torch.randn(1, 3, 3, TINY_VISION["hidden_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sam_logits = reference_logits(attn, x, dict(MODES["off"], use_rel_pos=settings.get("use_rel_pos", True)), 3)
        output, _ = attn(x)
    torch.testing.assert_close(output, reference_output(attn, x, sam_logits), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_eager_and_sdpa_agree(mode):
    x = torch.randn(2, 16, 16, TINY_VISION["hidden_size"], generator=torch.Generator().manual_seed(4))
    eager, sdpa = (build_attention(dict(MODES[mode], bias_layers="all"), 0, impl) for impl in ("eager", "sdpa"))
    with torch.no_grad():
        torch.testing.assert_close(eager(x)[0], sdpa(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_chunked_attention_equals_unchunked(mode):
    """A tiny memory budget forces query chunks of a size that does not divide N (N = 256 here)."""
    x = torch.randn(2, 16, 16, TINY_VISION["hidden_size"], generator=torch.Generator().manual_seed(5))
    whole = build_attention(dict(MODES[mode], bias_layers="all"), 0, "sdpa")
    chunked = build_attention(dict(MODES[mode], bias_layers="all", attention_memory_budget_mb=0.1), 0, "sdpa")
    rows = int(0.1 * 2**20) // (2 * 4 * 256 * 4)
    assert 256 % rows != 0 and rows < 256
    with torch.no_grad():
        torch.testing.assert_close(chunked(x)[0], whole(x)[0], atol=1e-5, rtol=1e-5)


def test_no_full_bias_is_built_above_the_budget(monkeypatch):
    """Every additive bias handed to SDPA is a query chunk: at most budget-many bytes, never (B, heads, N, N)."""
    budget_mb = 0.05
    attn = build_attention(dict(MODES["distance"], attention_memory_budget_mb=budget_mb), 0, "sdpa")
    shapes = []
    sdpa = F.scaled_dot_product_attention

    def recording_sdpa(query, key, value, attn_mask=None, **kwargs):
        shapes.append(
            (tuple(query.shape), None if attn_mask is None else attn_mask.numel() * attn_mask.element_size())
        )
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    x = torch.randn(1, 32, 32, TINY_VISION["hidden_size"])
    with torch.no_grad():
        attn(x)
    num_tokens = 32 * 32
    assert len(shapes) > 1
    assert sum(shape[2] for shape, _ in shapes) == num_tokens
    assert all(nbytes is not None and nbytes <= budget_mb * 2**20 for _, nbytes in shapes)
    assert all(shape[2] < num_tokens for shape, _ in shapes)


def test_distance_pieces_are_cached_per_grid():
    attn = build_attention(MODES["distance"], 0, "sdpa")
    x8, x16 = torch.randn(1, 8, 8, 32), torch.randn(1, 16, 16, 32)
    with torch.no_grad():
        attn(x8)
        first = attn._distance_cache[(8, 8, x8.device, x8.dtype)]
        attn(x8)
        attn(x16)
    assert attn._distance_cache[(8, 8, x8.device, x8.dtype)] is first
    assert (16, 16, x16.device, x16.dtype) in attn._distance_cache
