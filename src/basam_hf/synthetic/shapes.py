"""Shapes of synthetic scenes: unit shapes as implicit functions (negative inside), placed by centre, angle and scale,
and the pixel distance to their boundary."""

import math
from dataclasses import dataclass

import numpy as np

OBJECT_KINDS = ("ellipse", "rectangle", "polygon", "star", "blob", "ring")


@dataclass(frozen=True)
class _Shape:
    """A shape in scene units: a unit shape (kind + params), rotated by `angle`, scaled, moved to `center`."""

    kind: str  # "ellipse" (b), "box" (b, corner), "polygon" (angles, radii, hole), "harmonic" (coeffs, hole)
    params: tuple
    center: tuple[float, float]  # (y, x)
    angle: float
    scale: float
    radius: float  # bounding radius in units, for the pixel box to evaluate


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


def _pixel_distance(field: np.ndarray) -> np.ndarray:
    """Signed distance to the zero set in pixels, to first order: the field over the norm of its gradient."""
    gy, gx = np.gradient(field)
    return field / np.maximum(np.hypot(gy, gx), 1e-12)
