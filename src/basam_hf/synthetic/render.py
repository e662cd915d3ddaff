"""Rendering of synthetic scenes: textures, anti-aliased shapes and lighting rasterised at any size, then blur and
pixel noise; the public `render_sample` and `random_shape_coverage`."""

import math

import numpy as np
from PIL import Image, ImageFilter

from .checks import _MIN_SIDE
from .noise import _add_noise, _Axis, _noise_eval, _pixel_axis
from .scene import _sample_scene, _Scene, _streams, _Texture
from .shapes import OBJECT_KINDS, _pixel_distance, _random_unit_shape, _Shape, _shape_field, _unit_area_and_radius


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
