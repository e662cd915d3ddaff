"""Synthetic segmentation data: one textured object among clutter, partly occluded, rendered at any resolution.

A scene is drawn from `numpy.random.default_rng` streams spawned from the seed and described in normalised
coordinates whose unit is `sqrt(height * width)` pixels (for the reduced aspect ratio): the image spans
`(height, width) / sqrt(height * width)` units, its area is 1, and shape areas are image fractions. Only then is it
rasterised, so a seed gives the same scene at 256 and at 1024 px (only the per-pixel noise differs). Each random part
has its own stream, so changing `clutter` or `noise` leaves the object, its mask and the background unchanged, and
`occluders` only changes which parts of the object are hidden.

Placement decisions (object area, one region, occluders that leave one region) are taken on a fixed check grid of
128 px per unit, whatever the output size, so that they draw the same random numbers at every resolution; occluders
whose outline runs almost parallel to the object's within a check pixel are rejected, because they could leave
slivers that are separate regions at a finer resolution.

Rendering is vectorised numpy: shapes are implicit functions evaluated on the pixels of their bounding box and
anti-aliased by their distance to the boundary; smooth noise is a random grid resized bicubically by PIL at exact
source coordinates. Imports numpy and PIL (and datasets, lazily, for the dataset helpers).
"""

import colorsys
import io
import math
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    import datasets

    from .data import SegmentationDataset

OBJECT_KINDS = ("ellipse", "rectangle", "polygon", "star", "blob", "ring")
TEXTURE_KINDS = ("solid", "stripes", "checker", "dots", "noise", "marble", "gradient")
# The object's visible area, as a fraction of the image, is kept inside these bounds (checked on the canonical grid
# with a margin, so that rasterising at any size stays within them).
MIN_OBJECT_AREA, MAX_OBJECT_AREA = 0.03, 0.40
_CHECK_AREA = (0.04, 0.36)
# Placement checks (areas, one region) run on a grid of about this many pixels per unit, whatever the output size,
# so they take the same decisions, and so draw the same random numbers, at every resolution.
_CANONICAL_SIDE = 128
_NOISE_PAD = 2  # noise grid nodes beyond each image edge: bicubic interpolation reads 2 nodes on each side
_MIN_SIDE = 8
_DATASET_SEED_STRIDE = 1_000_003  # sample i of a dataset with seed s uses seed s * stride + i


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


@dataclass(frozen=True)
class _Shape:
    """A shape in scene units: a unit shape (kind + params), rotated by `angle`, scaled, moved to `center`."""

    kind: str  # "ellipse" (b), "box" (b, corner), "polygon" (angles, radii, hole), "harmonic" (coeffs, hole)
    params: tuple
    center: tuple[float, float]  # (y, x)
    angle: float
    scale: float
    radius: float  # bounding radius in units, for the pixel box to evaluate


@dataclass(frozen=True)
class _Texture:
    """Two colours mixed by a pattern `t` in [0, 1], in a frame at `origin` rotated by `angle`, with shading."""

    kind: str
    colors: np.ndarray  # (2, 3) float32 in [0, 1]
    origin: tuple[float, float]
    angle: float
    period: float
    sharpness: float
    pattern_noise: _Noise | None  # for "noise" and "marble"
    shade: _Noise
    shade_amount: float

    @property
    def mean_color(self) -> np.ndarray:
        return self.colors[0] if self.kind == "solid" else self.colors.mean(0)


@dataclass(frozen=True)
class _Scene:
    extent: tuple[float, float]  # (height, width) in units
    background: _Texture
    lighting: _Noise
    lighting_amount: float
    clutter: tuple[tuple[_Shape, _Texture], ...]
    target: tuple[_Shape, _Texture]
    occluders: tuple[tuple[_Shape, _Texture], ...]


# ---------------------------------------------------------------------------------------------------------------------
# Smooth noise and coordinates


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


# ---------------------------------------------------------------------------------------------------------------------
# Shapes: implicit functions, negative inside


def _polygon_radius(angles: np.ndarray, radii: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boundary radius, in the direction of `(x, y)`, of a polygon star-shaped about the origin."""
    theta = np.mod(np.arctan2(y, x), 2 * np.pi)
    start = np.searchsorted(angles, theta, side="right") - 1  # -1 (before the first vertex) wraps to the last edge
    vx, vy = radii * np.cos(angles), radii * np.sin(angles)
    px, py = vx[start], vy[start]
    ex, ey = np.roll(vx, -1)[start] - px, np.roll(vy, -1)[start] - py
    # The ray t * (cos, sin) meets the edge p + s * e where t = (p x e) / (dir x e).
    return (px * ey - py * ex) / (np.cos(theta) * ey - np.sin(theta) * ex)


def _harmonic_radius(coeffs: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """`1 + Re(sum_k c_k z**k)` with `z = exp(i theta)` and `coeffs = c_2..c_K`, by Horner's rule."""
    z = (x + 1j * y) / np.maximum(r, 1e-12)
    acc = np.zeros_like(z) + coeffs[-1]
    for c in coeffs[-2::-1]:
        acc = acc * z + c
    return 1.0 + (acc * z * z).real


def _unit_field(kind: str, params: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Implicit function of a unit shape (bounding radius about 1) at local coordinates `x, y`."""
    if kind == "ellipse":
        return np.hypot(x, y / params[0]) - 1.0
    if kind == "box":
        half_height, corner = params
        qx, qy = np.abs(x) - (1.0 - corner), np.abs(y) - (half_height - corner)
        outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
        return outside + np.minimum(np.maximum(qx, qy), 0.0) - corner
    r = np.hypot(x, y)
    if kind == "polygon":
        angles, radii, hole = params
        boundary = _polygon_radius(angles, radii, x, y)
    elif kind == "harmonic":
        coeffs, hole = params
        boundary = _harmonic_radius(coeffs, x, y, r)
    else:
        raise ValueError(f"Unknown shape kind {kind!r}.")
    field = r - boundary
    return np.maximum(field, hole * boundary - r) if hole > 0 else field


def _shape_field(shape: _Shape, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The shape's implicit function on the grid `ys x xs` (1-D unit coordinates), shape `(len(ys), len(xs))`."""
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    dy = (ys - shape.center[0])[:, None] / shape.scale
    dx = (xs - shape.center[1])[None, :] / shape.scale
    return _unit_field(shape.kind, shape.params, dx * cos + dy * sin, dy * cos - dx * sin).astype(np.float32)


def _unit_area_and_radius(kind: str, params: tuple) -> tuple[float, float]:
    """Area and bounding radius of the unit shape (exact, or from 4096 boundary directions for polar shapes)."""
    if kind == "ellipse":
        return math.pi * params[0], 1.0
    if kind == "box":
        half_height, corner = params
        return 4.0 * half_height - (4.0 - math.pi) * corner**2, math.hypot(1.0, half_height)
    theta = np.linspace(0.0, 2 * np.pi, 4096, endpoint=False)
    x, y = np.cos(theta), np.sin(theta)
    if kind == "polygon":
        boundary = _polygon_radius(params[0], params[1], x, y)
    else:
        boundary = _harmonic_radius(params[0], x, y, np.ones_like(x))
    hole = params[-1]
    return float(np.pi * np.mean(boundary**2) * (1.0 - hole**2)), float(boundary.max() * 1.01)


def _random_unit_shape(rng: np.random.Generator, kind: str) -> tuple[str, tuple]:
    """Unit-shape parameters for an object kind (`OBJECT_KINDS`, or "bar" for a long thin box)."""
    if kind == "ellipse":
        return "ellipse", (rng.uniform(0.4, 1.0),)
    if kind == "rectangle":
        half_height = rng.uniform(0.35, 1.0)
        return "box", (half_height, half_height * rng.choice([0.0, rng.uniform(0.05, 0.5)]))
    if kind == "bar":
        return "box", (rng.uniform(0.08, 0.22), 0.0)
    if kind == "polygon":
        count = int(rng.integers(3, 9))
        gaps = rng.uniform(0.6, 1.4, count)  # angular gaps < pi, so the origin sees every edge
        angles = np.cumsum(gaps / gaps.sum() * 2 * np.pi) - gaps[0] / gaps.sum() * 2 * np.pi
        return "polygon", (angles, rng.uniform(0.65, 1.0, count), 0.0)
    if kind == "star":
        points = int(rng.integers(4, 9))
        angles = np.arange(2 * points) * (np.pi / points)
        inner = rng.uniform(0.4, 0.65)
        radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner) * rng.uniform(0.9, 1.0, 2 * points)
        return "polygon", (angles, radii, 0.0)
    if kind in ("blob", "ring"):
        orders = np.arange(2, 8)
        amplitudes = rng.uniform(0.0, 1.0, orders.size) / orders**1.2 * (0.45 if kind == "blob" else 0.15)
        coeffs = (amplitudes * np.exp(1j * rng.uniform(0.0, 2 * np.pi, orders.size))).astype(np.complex64)
        hole = rng.uniform(0.45, 0.7) if kind == "ring" else 0.0
        return "harmonic", (coeffs, hole)
    raise ValueError(f"Unknown object kind {kind!r}.")


def _make_shape(kind: str, params: tuple, area: float, center: tuple[float, float], angle: float) -> _Shape:
    unit_area, unit_radius = _unit_area_and_radius(kind, params)
    scale = math.sqrt(area / unit_area)
    return _Shape(kind, params, center, angle, scale, unit_radius * scale)


def _canonical_grid(extent: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = (max(_MIN_SIDE, round(_CANONICAL_SIDE * side)) for side in extent)
    return _pixel_axis(rows, extent[0]).coords(), _pixel_axis(cols, extent[1]).coords()


def _pixel_distance(field: np.ndarray) -> np.ndarray:
    """Signed distance to the zero set in pixels, to first order: the field over the norm of its gradient."""
    gy, gx = np.gradient(field)
    return field / np.maximum(np.hypot(gy, gx), 1e-12)


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


# ---------------------------------------------------------------------------------------------------------------------
# Scene sampling (resolution-free)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _random_colors(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.95)
    if rng.random() < 0.5:  # tonal pair: same hue, another value
        hue, saturation = h + rng.normal(0.0, 0.04), s * rng.uniform(0.6, 1.3)
        other = _hsv(hue, saturation, v + rng.choice([-1, 1]) * rng.uniform(0.2, 0.5))
    else:
        other = _hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.95))
    return np.stack([_hsv(h, s, v), other])


def _random_texture(
    rng: np.random.Generator,
    extent: tuple[float, float],
    kinds: tuple[str, ...],
    origin: tuple[float, float],
    length: float,
    avoid: np.ndarray | None = None,
    min_distance: float = 0.0,
) -> _Texture:
    """A texture whose pattern scale is about `length` units; its mean colour at least `min_distance` from `avoid`."""
    kind = str(rng.choice(kinds))
    for _ in range(20):
        colors = _random_colors(rng)
        mean = colors[0] if kind == "solid" else colors.mean(0)
        if avoid is None or np.linalg.norm(mean - avoid) >= min_distance:
            break
    period = length * rng.uniform(0.15, 0.45)
    if kind == "gradient":
        period = length * rng.uniform(1.0, 2.5)
    pattern_noise = None
    if kind in ("noise", "marble"):
        cell = max(length * rng.uniform(0.12, 0.35), 0.015)
        pattern_noise = _random_noise(rng, extent, cell, octaves=2)
    return _Texture(
        kind=kind,
        colors=colors,
        origin=origin,
        angle=rng.uniform(0.0, np.pi),
        period=period,
        sharpness=rng.uniform(0.6, 3.0),
        pattern_noise=pattern_noise,
        shade=_random_noise(rng, extent, rng.uniform(0.04, 0.15)),
        shade_amount=rng.uniform(0.0, 0.25),
    )


def _random_center(rng: np.random.Generator, extent: tuple[float, float], radius: float) -> tuple[float, float]:
    """A centre that keeps most of a shape of bounding radius `radius` inside the image."""
    margin = [min(0.7 * radius, side / 2) for side in extent]
    return tuple(float(rng.uniform(m, side - m)) for m, side in zip(margin, extent))


def _around(center: tuple[float, float], direction: float, distance: float) -> tuple[float, float]:
    return center[0] + distance * math.sin(direction), center[1] + distance * math.cos(direction)


def _sample_target(
    rng: np.random.Generator, extent: tuple[float, float], grid: tuple[np.ndarray, np.ndarray]
) -> tuple[_Shape, np.ndarray]:
    """The object and the canonical distance field of its visible part (negative inside).

    Resampled until it is one region inside the area bounds whose outline meets the image border cleanly.
    """
    border = _border_distance((grid[0].size, grid[1].size))
    for _ in range(50):
        kind = str(rng.choice(OBJECT_KINDS))
        area = math.exp(rng.uniform(math.log(0.05), math.log(0.3)))
        unit_kind, params = _random_unit_shape(rng, kind)
        shape = _make_shape(unit_kind, params, area, (0.0, 0.0), rng.uniform(0.0, 2 * np.pi))
        shape = replace(shape, center=_random_center(rng, extent, shape.radius))
        distance = _canonical_distance(shape, grid)
        mask = distance < 0
        if (
            _CHECK_AREA[0] <= mask.mean() <= _CHECK_AREA[1]
            and _single_region(mask)
            and _meets_cleanly(distance, border)
        ):
            return shape, np.maximum(distance, border)
    # Extreme aspect ratios: an ellipse along the long side, 10% of the image, always fits.
    short = min(extent)
    b = 0.4 * short
    a = 0.1 / (math.pi * b)
    angle = 0.0 if extent[1] >= extent[0] else math.pi / 2
    shape = _Shape("ellipse", (b / a,), (extent[0] / 2, extent[1] / 2), angle, a, a)
    return shape, np.maximum(_canonical_distance(shape, grid), border)


def _sample_occluders(
    rng: np.random.Generator,
    extent: tuple[float, float],
    grid: tuple[np.ndarray, np.ndarray],
    target: _Shape,
    target_distance: np.ndarray,
    target_texture: _Texture,
    count: int,
) -> tuple[tuple[_Shape, _Texture], ...]:
    """Up to `count` shapes over the object's edge, each kept only if the visible part stays one sizeable region."""
    visible = target_distance  # distance field of the visible part of the object
    full_area = (target_distance < 0).sum()
    reach = math.sqrt(full_area / target_distance.size / math.pi)  # radius of a disk of the object's area, units
    occluders = []
    for _ in range(count):
        for _ in range(12):
            kind = str(rng.choice(["bar", "bar", "ellipse", "rectangle", "polygon", "blob"]))
            center = _around(target.center, rng.uniform(0.0, 2 * np.pi), reach * rng.uniform(0.7, 1.3))
            unit_kind, params = _random_unit_shape(rng, kind)
            size = reach * (rng.uniform(0.5, 1.2) if kind == "bar" else rng.uniform(0.3, 0.6))
            area = _unit_area_and_radius(unit_kind, params)[0] * size**2
            shape = _make_shape(unit_kind, params, area, center, rng.uniform(0.0, 2 * np.pi))
            occluder = _canonical_distance(shape, grid)
            covered, before = occluder < 0, visible < 0
            remaining = before & ~covered
            if (
                (before & covered).sum() >= 0.04 * full_area  # it does hide part of the object
                and remaining.sum() >= 0.6 * full_area
                and remaining.mean() >= _CHECK_AREA[0]
                and _single_region(remaining)
                and _single_region(before & ~_dilate(covered))  # no bridge thinner than a check pixel
                and _single_region(before & (occluder > -1.0))  # no island (e.g. a tip) thinner than one
                and _meets_cleanly(visible, occluder)  # no sliver thinner than a check pixel
            ):
                texture = _random_texture(
                    rng, extent, TEXTURE_KINDS, center, size, target_texture.mean_color, min_distance=0.3
                )
                occluders.append((shape, texture))
                visible = np.maximum(visible, -occluder)
                break
    return tuple(occluders)


def _sample_clutter(
    rng: np.random.Generator, extent: tuple[float, float], target: _Shape, target_texture: _Texture, count: int
) -> tuple[tuple[_Shape, _Texture], ...]:
    """Distractors behind the object, some next to it, always with another texture kind than the object's."""
    kinds = tuple(kind for kind in TEXTURE_KINDS if kind != target_texture.kind)
    reach = target.radius
    clutter = []
    for _ in range(count):
        kind = str(rng.choice(OBJECT_KINDS + ("bar",)))
        unit_kind, params = _random_unit_shape(rng, kind)
        area = math.exp(rng.uniform(math.log(0.004), math.log(0.04)))
        shape = _make_shape(unit_kind, params, area, (0.0, 0.0), rng.uniform(0.0, 2 * np.pi))
        if rng.random() < 0.4:  # next to the object, where it makes the boundary harder
            center = _around(target.center, rng.uniform(0.0, 2 * np.pi), reach * rng.uniform(0.8, 1.4))
        else:
            center = tuple(float(rng.uniform(0.0, side)) for side in extent)
        shape = replace(shape, center=center)
        clutter.append((shape, _random_texture(rng, extent, kinds, center, math.sqrt(area))))
    return tuple(clutter)


def _streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams for the background, object, clutter, occluders and pixel noise of sample `seed`."""
    return np.random.SeedSequence(seed).spawn(5)


def _sample_scene(seed: int, extent: tuple[float, float], clutter: int, occluders: int) -> _Scene:
    background_rng, target_rng, clutter_rng, occluder_rng = (np.random.default_rng(s) for s in _streams(seed)[:4])
    center = (extent[0] / 2, extent[1] / 2)
    background = _random_texture(background_rng, extent, TEXTURE_KINDS, center, background_rng.uniform(0.2, 0.6))
    lighting = _random_noise(background_rng, extent, 0.5)
    lighting_amount = background_rng.uniform(0.0, 0.5)

    grid = _canonical_grid(extent)
    target, target_distance = _sample_target(target_rng, extent, grid)
    target_texture = _random_texture(
        target_rng, extent, TEXTURE_KINDS, target.center, 2 * target.radius, background.mean_color, min_distance=0.2
    )
    return _Scene(
        extent=extent,
        background=background,
        lighting=lighting,
        lighting_amount=lighting_amount,
        clutter=_sample_clutter(clutter_rng, extent, target, target_texture, clutter),
        target=(target, target_texture),
        occluders=_sample_occluders(occluder_rng, extent, grid, target, target_distance, target_texture, occluders),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def _texture_colors(texture: _Texture, y: _Axis, x: _Axis) -> np.ndarray:
    """RGB in [0, 1] of the texture on the grid `y x x`, channels first: `(3, y.count, x.count)` float32."""
    ys, xs = y.coords(), x.coords()
    cos, sin = math.cos(texture.angle), math.sin(texture.angle)
    dy, dx = (ys - texture.origin[0])[:, None], (xs - texture.origin[1])[None, :]
    u = (dx * cos + dy * sin) / texture.period
    kind, sharp = texture.kind, texture.sharpness
    if kind == "solid":
        t = np.zeros((y.count, x.count), np.float32)
    elif kind == "stripes":
        t = 0.5 + sharp * np.sin(2 * np.pi * u)
    elif kind == "checker":
        v = (dy * cos - dx * sin) / texture.period
        t = 0.5 + 2 * sharp * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v)
    elif kind == "dots":
        v = (dy * cos - dx * sin) / texture.period
        distance = np.hypot(u - np.floor(u) - 0.5, v - np.floor(v) - 0.5)
        t = 0.5 + 8 * sharp * (0.3 - distance)
    elif kind in ("noise", "marble"):
        n = _noise_eval(texture.pattern_noise, y, x)
        t = 0.5 + 2.5 * sharp * n if kind == "noise" else 0.5 + 0.5 * np.sin(2 * np.pi * u + 8 * n)
    elif kind == "gradient":
        t = 0.5 + 0.5 * u
    else:
        raise ValueError(f"Unknown texture kind {kind!r}.")
    t = np.clip(np.broadcast_to(t, (y.count, x.count)), 0.0, 1.0, dtype=np.float32)
    shade = _noise_eval(texture.shade, y, x)
    shade *= 2.0 * texture.shade_amount
    shade += 1.0
    t *= shade
    # (c0 + (c1 - c0) * t) * shade, one contiguous plane per channel (an (h, w, 3) layout has 3-long inner loops)
    c0, c1 = texture.colors.astype(np.float64)
    rgb = np.empty((3, y.count, x.count), np.float32)
    for channel in range(3):
        np.multiply(shade, c0[channel], out=rgb[channel])
        rgb[channel] += t * (c1[channel] - c0[channel])
    return rgb


def _coverage(field: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage: the field divided by its gradient norm is a distance to the boundary in pixels."""
    if min(field.shape) < 2:
        return (field < 0).astype(np.float32)
    return np.clip(0.5 - _pixel_distance(field), 0.0, 1.0)


def _pixel_box(shape: _Shape, size: tuple[int, int], extent: tuple[float, float]) -> tuple[slice, slice] | None:
    """Pixels that the shape can touch (its bounding disk plus 2 pixels of anti-aliasing), or None if outside."""
    box = []
    for center, count, side in zip(shape.center, size, extent):
        per_unit = count / side
        start = max(0, math.floor((center - shape.radius) * per_unit) - 2)
        stop = min(count, math.ceil((center + shape.radius) * per_unit) + 2)
        if stop <= start:
            return None
        box.append(slice(start, stop))
    return box[0], box[1]


def _paint(
    canvas: np.ndarray, shape: _Shape, texture: _Texture, extent: tuple[float, float]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Composite a textured shape over the `(3, H, W)` canvas in place; return its pixel box and hard mask there."""
    size = canvas.shape[1:]
    box = _pixel_box(shape, size, extent)
    if box is None:
        return None
    y = _pixel_axis(size[0], extent[0], box[0].start, box[0].stop)
    x = _pixel_axis(size[1], extent[1], box[1].start, box[1].stop)
    field = _shape_field(shape, y.coords(), x.coords())
    region = canvas[:, box[0], box[1]]
    layer = _texture_colors(texture, y, x)
    layer -= region
    layer *= _coverage(field)
    region += layer
    return box, field < 0


def _render(scene: _Scene, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Float RGB image in [0, 255], `(3, H, W)`, before blur and noise, and boolean object mask at `size` = (H, W)."""
    extent = scene.extent
    y, x = _pixel_axis(size[0], extent[0]), _pixel_axis(size[1], extent[1])
    canvas = _texture_colors(scene.background, y, x)
    for shape, texture in scene.clutter:
        _paint(canvas, shape, texture, extent)
    mask = np.zeros(size, bool)
    painted = _paint(canvas, *scene.target, extent)
    if painted is not None:
        mask[painted[0]] = painted[1]
    for shape, texture in scene.occluders:
        painted = _paint(canvas, shape, texture, extent)
        if painted is not None:
            mask[painted[0]] &= ~painted[1]
    light = _noise_eval(scene.lighting, y, x)
    light *= 255.0 * scene.lighting_amount
    light += 255.0
    canvas *= light  # now in 0..255
    return canvas, mask


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


def _extent(height: int, width: int) -> tuple[float, float]:
    """The image in units, from the reduced aspect ratio: bit-identical for every size with that aspect ratio."""
    divisor = math.gcd(height, width)
    height, width = height // divisor, width // divisor
    unit = math.sqrt(height * width)
    return height / unit, width / unit


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    valid = (not isinstance(s, bool) and isinstance(s, (int, np.integer)) and s >= _MIN_SIDE for s in pair)
    if len(pair) != 2 or not all(valid):
        raise ValueError(f"size must be an int or a (height, width) pair of ints >= {_MIN_SIDE}, got {size!r}.")
    return int(pair[0]), int(pair[1])


def render_sample(
    seed: int,
    size: int | tuple[int, int] = 256,
    *,
    clutter: int = 6,
    occluders: int = 2,
    noise: float = 0.03,
    blur: float = 0.6,
) -> dict:
    """Render synthetic segmentation sample `seed`: `{"image": RGB PIL image, "mask": "L" PIL image (0/255), "id": str}`.

    Args:
        seed: non-negative integer; the scene is a pure function of it (and of the aspect ratio of `size`).
        size: `int` for a square image, or `(height, width)`.
        clutter: number of distractor shapes behind the object, textured differently from it.
        occluders: number of occluders tried over the object's edge; each is kept only if the visible object stays a
            single region with at least 60% of its area, so fewer may appear. The mask excludes the occluded parts.
        noise: standard deviation of the Gaussian pixel noise, as a fraction of the intensity range.
        blur: Gaussian blur radius in pixels at a 256x256-pixel area, scaled with the resolution.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    if min(clutter, occluders) < 0 or min(noise, blur) < 0:
        raise ValueError(
            f"clutter, occluders, noise and blur must be >= 0, got {clutter}, {occluders}, {noise}, {blur}."
        )
    height, width = _parse_size(size)
    unit = math.sqrt(height * width)
    scene = _sample_scene(int(seed), _extent(height, width), int(clutter), int(occluders))
    canvas, mask = _render(scene, (height, width))

    planes = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    image = Image.merge("RGB", [Image.fromarray(plane, "L") for plane in planes])
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur * unit / 256.0))
    if noise > 0:
        # Own stream, drawn last: the only draws that depend on the pixel count.
        noisy = _add_noise(np.asarray(image), noise * 255.0, np.random.default_rng(_streams(int(seed))[4]))
        image = Image.fromarray(noisy, "RGB")
    return {"image": image, "mask": Image.fromarray(mask.astype(np.uint8) * 255, "L"), "id": sample_id(int(seed))}


def random_shape_coverage(rng: np.random.Generator, side: int, kind: str | None = None) -> np.ndarray:
    """An anti-aliased random object shape (one of `OBJECT_KINDS`, or `kind`) filling a `side` x `side` square:
    coverage in [0, 1], float32, its bounding disk inscribed in the square. For cut-outs of other images."""
    if side < 2:
        raise ValueError(f"side must be at least 2 pixels, got {side}.")
    unit_kind, params = _random_unit_shape(rng, str(rng.choice(OBJECT_KINDS)) if kind is None else kind)
    _, unit_radius = _unit_area_and_radius(unit_kind, params)
    half = side / 2.0
    shape = _Shape(unit_kind, params, (half, half), float(rng.uniform(0.0, 2 * np.pi)), half / unit_radius, half)
    coords = np.arange(side, dtype=np.float32) + 0.5
    return _coverage(_shape_field(shape, coords, coords))


def sample_id(seed: int) -> str:
    """Identifier (and file stem) of sample `seed`."""
    return f"syn-{seed:08d}"


# ---------------------------------------------------------------------------------------------------------------------
# Datasets and folders


def dataset_seeds(num_samples: int, seed: int = 0) -> list[int]:
    """Sample seeds of a dataset: `seed * 1_000_003 + i`, so datasets with different seeds share no sample."""
    if num_samples < 0 or num_samples > _DATASET_SEED_STRIDE:
        raise ValueError(f"num_samples must be in [0, {_DATASET_SEED_STRIDE}], got {num_samples}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    return [seed * _DATASET_SEED_STRIDE + i for i in range(num_samples)]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: noisy images barely compress anyway
    return buffer.getvalue()


_CHUNK_SAMPLES = 1024  # samples per Arrow table of make_synthetic_dataset


def make_synthetic_dataset(
    num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "datasets.Dataset":
    """A `datasets.Dataset` with features `image`, `mask` (`datasets.Image`, PNG) and `id` (string).

    `knobs` go to `render_sample` (`clutter`, `occluders`, `noise`, `blur`). The PNGs are held in memory (about
    0.15 MB per 256 px sample).
    """
    import datasets  # imported here: rendering does not need it, and it is slow to import

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "id": datasets.Value("string")})
    seeds = dataset_seeds(num_samples, seed)
    # In chunks: one Arrow binary array holds at most 2 GiB (4,000 samples at 512 px are more).
    chunks = []
    for start in range(0, max(len(seeds), 1), _CHUNK_SAMPLES):
        columns: dict[str, list] = {"image": [], "mask": [], "id": []}
        for sample_seed in seeds[start : start + _CHUNK_SAMPLES]:
            sample = render_sample(sample_seed, size, **knobs)
            columns["image"].append({"bytes": _png_bytes(sample["image"]), "path": None})
            columns["mask"].append({"bytes": _png_bytes(sample["mask"]), "path": None})
            columns["id"].append(sample["id"])
        chunks.append(datasets.Dataset.from_dict(columns, features=features))
    return chunks[0] if len(chunks) == 1 else datasets.concatenate_datasets(chunks)


def save_synthetic_dataset(
    path: str | Path, num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "datasets.Dataset":
    """`make_synthetic_dataset(...)` saved with `save_to_disk(path)`; returns the dataset."""
    dataset = make_synthetic_dataset(num_samples, size, seed, **knobs)
    dataset.save_to_disk(str(path))
    return dataset


def synthetic_segmentation_dataset(
    num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> "SegmentationDataset":
    """The samples of `make_synthetic_dataset(...)` as a [`basam_hf.data.SegmentationDataset`], rendered when read
    (nothing is encoded or stored): for evaluating at many sizes without writing a dataset per size."""
    from .data import SegmentationDataset

    seeds = dataset_seeds(num_samples, seed)

    def read(index: int) -> dict:
        sample = render_sample(seeds[index], size, **knobs)
        return {"id": sample["id"], "image": sample["image"], "mask": np.asarray(sample["mask"]) > 127}

    info = {"source": f"synthetic(seed={seed})", "split": None, "size": list(_parse_size(size)), "knobs": knobs}
    # Every scene has an object of at least 3 % of the image: for training's sample check.
    info.update(nonempty_masks=True, min_image_side=min(_parse_size(size)))
    return SegmentationDataset([sample_id(s) for s in seeds], read, info)


def write_synthetic_image_folder(
    path: str | Path, num_samples: int, size: int | tuple[int, int] = 256, seed: int = 0, **knobs
) -> Path:
    """Write `path/images/<id>.png` (RGB) and `path/masks/<id>.png` (L, 0/255); returns `path`."""
    from .data import write_image_folder

    return write_image_folder(synthetic_segmentation_dataset(num_samples, size, seed, **knobs), path, progress=False)
