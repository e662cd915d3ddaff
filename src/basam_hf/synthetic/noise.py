"""Coordinates and noise of synthetic scenes: sample positions in scene units, smooth noise evaluated at exact unit
coordinates (a random grid resized bicubically by PIL), and Gaussian pixel noise drawn by table look-up."""

import math
from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

import numpy as np
from PIL import Image

_NOISE_PAD = 2  # noise grid nodes beyond each image edge: bicubic interpolation reads 2 nodes on each side


@dataclass(frozen=True)
class _Noise:
    """Smooth noise: random values on a grid of `cell`-unit spacing, interpolated bicubically."""

    grid: Image.Image  # mode "F", (rows, cols) nodes; node (i, j) sits at ((i - pad) * cell, (j - pad) * cell) units
    cell: float


@dataclass(frozen=True)
class _Axis:
    """Sample positions along one axis: sample `j` sits at `origin + (j + 0.5) * step` units."""

    origin: float
    count: int
    step: float

    def coords(self) -> np.ndarray:
        return (self.origin + (np.arange(self.count, dtype=np.float64) + 0.5) * self.step).astype(np.float32)


def _noise_eval(noise: _Noise, y: _Axis, x: _Axis) -> np.ndarray:
    """Noise on the grid `y x x`, shape `(y.count, x.count)` float32.

    PIL's float resize samples the grid at output position `j` from source position `box0 + (j + 0.5) * scale`
    (source pixel `k` centred at `k + 0.5`), so the box below puts every sample at its exact unit coordinate: the
    result depends on the coordinates only, not on how many pixels cover them (while pixels are finer than cells).
    """
    pad_px = _NOISE_PAD + 0.5
    box_y0, box_x0 = y.origin / noise.cell + pad_px, x.origin / noise.cell + pad_px
    box = (box_x0, box_y0, box_x0 + x.count * x.step / noise.cell, box_y0 + y.count * y.step / noise.cell)
    return np.array(noise.grid.resize((x.count, y.count), Image.Resampling.BICUBIC, box=box))  # writable copy


def _noise_grid_shape(extent: tuple[float, float], cell: float) -> tuple[int, int]:
    # Depends on the extent (the aspect ratio) only, never on the pixel count.
    return tuple(math.ceil(side / cell) + 2 * _NOISE_PAD + 1 for side in extent)


def _random_noise(rng: np.random.Generator, extent: tuple[float, float], cell: float, octaves: int = 1) -> _Noise:
    """Noise with `octaves` octaves (cells `cell`, `cell / 2`, ...; amplitudes 1, 1/2, ...) folded into one grid."""
    values = rng.uniform(-1.0, 1.0, _noise_grid_shape(extent, cell)).astype(np.float32)
    noise = _Noise(Image.fromarray(values, "F"), cell)
    for octave in range(1, octaves):
        fine_cell = cell / 2**octave
        rows, cols = _noise_grid_shape(extent, fine_cell)
        first = -(_NOISE_PAD + 0.5) * fine_cell  # the fine grid's nodes, as sample positions
        coarse = _noise_eval(noise, _Axis(first, rows, fine_cell), _Axis(first, cols, fine_cell))
        values = coarse + rng.uniform(-1.0, 1.0, (rows, cols)) * 0.5**octave
        noise = _Noise(Image.fromarray(values.astype(np.float32), "F"), fine_cell)
    return noise


def _pixel_axis(count: int, side: float, start: int = 0, stop: int | None = None) -> _Axis:
    """Pixels `start:stop` of an axis of `count` pixels spanning `side` units."""
    step = side / count
    return _Axis(start * step, (count if stop is None else stop) - start, step)


@cache
def _gaussian_table() -> np.ndarray:
    """The 65536 quantiles `(k + 0.5) / 65536` of the standard normal: 16 random bits -> one Gaussian draw."""
    normal = NormalDist()
    return np.array([normal.inv_cdf((k + 0.5) / 65536) for k in range(65536)], np.float32)


def _add_noise(pixels: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`pixels` (uint8) plus Gaussian noise of standard deviation `sigma` (intensity levels), rounded and clipped.

    Drawn by table look-up from random 16-bit codes (Gaussian to 4.3 sigma): several times faster than
    `standard_normal` at a million pixels.
    """
    table = np.rint(_gaussian_table() * sigma).astype(np.int16)
    codes = np.frombuffer(rng.bytes(2 * pixels.size), "<u2").reshape(pixels.shape)
    noisy = table[codes]
    noisy += pixels
    return np.clip(noisy, 0, 255).astype(np.uint8)
