"""The pure BA functions, against values and formulas stated in the issues and the paper."""

import math

import pytest
import torch

from basam_hf.bias import alibi_slopes, attention_scale_factor, axis_distances, distance_units, manhattan_bias_terms

GRID_1024 = (64, 64)


@pytest.mark.parametrize(
    "image_size, expected",
    [
        (1024, 1.0),
        (1536, 1.0),  # floor rule: 1536 // 1024 == 1
        (2048, 7 / 6),  # log_4096(4 * 4096) = 14 / 12
        (3072, math.log(9 * 4096) / math.log(4096)),
        (4096, 4 / 3),
    ],
)
def test_official_scale_factor(image_size, expected):
    grid = (image_size // 16, image_size // 16)
    assert attention_scale_factor("official", grid, GRID_1024, 16) == pytest.approx(expected, rel=1e-12)


def test_official_scale_below_pretraining_size_explains_the_fix():
    with pytest.raises(ValueError, match="log_length"):
        attention_scale_factor("official", (32, 32), GRID_1024, 16)


@pytest.mark.parametrize("image_size", [256, 512, 1024, 1536, 2048, 3072, 4096])
def test_log_length_scale_is_log_ratio_and_matches_official_at_multiples(image_size):
    side = image_size // 16
    factor = attention_scale_factor("log_length", (side, side), GRID_1024, 16)
    assert factor == pytest.approx(math.log(side * side) / math.log(4096), rel=1e-12)
    if image_size % 1024 == 0:
        assert factor == pytest.approx(attention_scale_factor("official", (side, side), GRID_1024, 16), rel=1e-12)


def test_log_length_scale_non_square():
    assert attention_scale_factor("log_length", (64, 128), GRID_1024) == pytest.approx(
        math.log(64 * 128) / math.log(4096)
    )
    assert attention_scale_factor("none", (64, 128), GRID_1024) == 1.0


def test_alibi_slopes_are_geometric():
    slopes = alibi_slopes(12, scale=0.5)
    expected = torch.tensor([0.5 * 2 ** (-8 * (h + 1) / 12) for h in range(12)])
    torch.testing.assert_close(slopes, expected)
    assert slopes.dtype == torch.float32


def test_manhattan_terms_sum_to_the_distance_penalty():
    slopes = alibi_slopes(3)
    unit_h, unit_w = distance_units("pretrain_grid", (4, 6), (8, 8))
    assert (unit_h, unit_w) == (2.0, 8 / 6)
    rows, cols = manhattan_bias_terms(slopes, axis_distances(4, unit_h), axis_distances(6, unit_w))
    for h in range(3):
        for y1, x1, y2, x2 in [(0, 0, 3, 5), (1, 2, 1, 2), (2, 5, 0, 1)]:
            penalty = -slopes[h] * (abs(y1 - y2) * unit_h + abs(x1 - x2) * unit_w)
            assert (rows[h, y1, y2] + cols[h, x1, x2]).item() == pytest.approx(penalty.item(), rel=1e-6)


def test_distance_unit_token_is_one_cell():
    assert distance_units("token", (4, 6), (8, 8)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="distance_unit"):
        distance_units("pixels", (4, 6), (8, 8))
