"""Scene sampling (resolution-free): the background, the object, clutter and occluders, with their textures, drawn
from independent random streams of the sample's seed."""

import colorsys
import math
from dataclasses import dataclass, replace

import numpy as np

from .checks import _border_distance, _canonical_distance, _canonical_grid, _dilate, _meets_cleanly, _single_region
from .noise import _Noise, _random_noise
from .shapes import OBJECT_KINDS, _make_shape, _random_unit_shape, _Shape, _unit_area_and_radius

TEXTURE_KINDS = ("solid", "stripes", "checker", "dots", "noise", "marble", "gradient")
# The object's visible area, as a fraction of the image, is kept inside these bounds (checked on the canonical grid
# with a margin, so that rasterising at any size stays within them).
MIN_OBJECT_AREA, MAX_OBJECT_AREA = 0.03, 0.40
_CHECK_AREA = (0.04, 0.36)


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
