"""Placement checks of synthetic scenes, taken on a fixed check grid whatever the output size: distances to
boundaries, clean crossings, and region counts."""

import numpy as np

from .noise import _pixel_axis
from .shapes import _pixel_distance, _Shape, _shape_field

# Placement checks (areas, one region) run on a grid of about this many pixels per unit, whatever the output size,
# so they take the same decisions, and so draw the same random numbers, at every resolution.
_CANONICAL_SIDE = 128
_MIN_SIDE = 8


def _canonical_grid(extent: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = (max(_MIN_SIDE, round(_CANONICAL_SIDE * side)) for side in extent)
    return _pixel_axis(rows, extent[0]).coords(), _pixel_axis(cols, extent[1]).coords()


def _canonical_distance(shape: _Shape, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return _pixel_distance(_shape_field(shape, *grid))


def _border_distance(shape: tuple[int, int]) -> np.ndarray:
    """Signed pixel distance to the image border, negative inside."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None] + 0.5
    cols = np.arange(shape[1], dtype=np.float32)[None, :] + 0.5
    return np.maximum(np.maximum(-rows, rows - shape[0]), np.maximum(-cols, cols - shape[1]))


def _meets_cleanly(a: np.ndarray, b: np.ndarray, band: float = 1.5, min_sine: float = 0.34) -> bool:
    """Whether two boundaries (pixel distance fields) cross at 20 degrees or more wherever they come close.

    Where two boundaries run nearly parallel less than a check pixel apart, the region between them is invisible
    on the check grid but can be a separate sliver at a finer resolution: such placements are rejected.
    """
    ay, ax = np.gradient(a)
    by, bx = np.gradient(b)
    near = (np.abs(a) < band) & (np.abs(b) < band)
    sine = np.abs(ay * bx - ax * by) / np.maximum(np.hypot(ay, ax) * np.hypot(by, bx), 1e-12)
    return not np.any(near & (sine < min_sine))


def _count_regions(mask: np.ndarray) -> int:
    """Number of 8-connected regions of a boolean mask: union-find over the runs of each row."""
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # runs are [start, end), in row-major order
    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).tolist()
    starts, ends = starts.tolist(), ends.tolist()
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    regions = len(starts)
    for row in range(mask.shape[0] - 1):
        i, j = row_first[row], row_first[row + 1]
        i_stop, j_stop = row_first[row + 1], row_first[row + 2]
        while i < i_stop and j < j_stop:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # overlapping or diagonal neighbours
                a, b = root(i), root(j)
                if a != b:
                    parent[a] = b
                    regions -= 1
            # The run that ends first cannot touch any later run of the other row.
            end_i, end_j = ends[i], ends[j]
            if end_i <= end_j:
                i += 1
            if end_j <= end_i:
                j += 1
    return regions


def _single_region(mask: np.ndarray) -> bool:
    return bool(mask.any()) and _count_regions(mask) == 1


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    wide = out.copy()
    wide[:, 1:] |= out[:, :-1]
    wide[:, :-1] |= out[:, 1:]
    return wide
