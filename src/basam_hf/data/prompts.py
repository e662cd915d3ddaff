"""Prompts from ground-truth masks: boxes, clicks and points drawn reproducibly per sample."""

import hashlib

import numpy as np

# ---------------------------------------------------------------------------------------------------------------------
# Prompts from ground truth


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A random generator for one sample, independent of process, order and Python's hash seed."""
    digest = int.from_bytes(hashlib.sha256(sample_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """`(x0, y0, x1, y1)` of the mask's pixels, inclusive pixel indices (as torchvision's `masks_to_boxes`; SAM's
    prompt encoder adds half a pixel to every coordinate)."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        raise ValueError("empty mask: no box")
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """`(x, y)` of the mask pixel farthest from the background (maximum of the Euclidean distance transform), the
    image border counting as background; among ties, the one nearest their mean (first in row-major order if still
    tied)."""
    from scipy.ndimage import distance_transform_edt  # imports slowly; only interior prompts need it

    if not mask.any():
        raise ValueError("empty mask: no interior point")
    distance = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    candidates = np.argwhere(distance == distance.max())
    # Among equally deep pixels (a rectangle's middle line), the one nearest their mean, so the point is central.
    row, col = candidates[np.argmin(((candidates - candidates.mean(axis=0)) ** 2).sum(axis=1))]
    return np.array([col, row], dtype=np.float64)


def deep_pixel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`(x, y)` of a random mask pixel drawn with probability proportional to its distance from the background (the
    image border counting as background)."""
    from scipy.ndimage import distance_transform_edt  # imports slowly; only interior prompts need it

    if not mask.any():
        raise ValueError("empty mask: no click")
    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1].ravel()
    index = rng.choice(depth.size, p=depth / depth.sum())
    row, col = divmod(int(index), mask.shape[1])
    return np.array([col, row], dtype=np.float64)


# Prompts answered with SAM's three masks (the one with the highest predicted IoU is kept): a single click is
# ambiguous (a part, the object, a group), as in SAM.
SINGLE_CLICK_PROMPTS = ("point", "click")


def parse_prompt(prompt: str) -> tuple[str, int]:
    """`"box"` -> ("box", 0), `"point"` / `"click"` -> (kind, 1), `"points:k"` -> ("points", k); else `ValueError`."""
    if prompt in ("box", *SINGLE_CLICK_PROMPTS):
        return prompt, int(prompt != "box")
    name, _, count = prompt.partition(":")
    if name == "points" and count.isdigit() and int(count) > 0:
        return "points", int(count)
    raise ValueError(f"Unknown prompt {prompt!r}: use box, point, click or points:k (k a positive integer).")


def prompts_from_mask(
    mask: np.ndarray, prompt: str, rng: np.random.Generator, jitter: float = 0.0, negatives: int = 0
) -> dict[str, np.ndarray]:
    """Prompts derived from a ground-truth mask, in pixel coordinates `(x, y)` of the mask's (original) image.

    Args:
        mask: boolean HxW mask.
        prompt: `"box"` (the mask's box, see [`mask_box`]), `"point"` (one positive point at the interior-most pixel,
            see [`interior_point`]), `"click"` (one random positive pixel, drawn with a probability proportional to
            its distance from the background: where people click, mostly well inside) or `"points:k"` (k distinct
            random positive pixels; all of them if fewer).
        rng: the random source (e.g. [`sample_rng`]), so prompts are reproducible.
        jitter: for boxes, each coordinate moves by a normal draw with standard deviation `jitter` times the box
            width (x) or height (y), then the box is clipped to the image and its corners kept ordered.
        negatives: number of random background pixels added as negative points (fewer if the background is
            smaller). Not used with `box`.

    Returns:
        `{"boxes": (1, 4)}` for boxes, `{"points": (n, 2), "labels": (n,)}` (1 positive, 0 negative) for points.

    Raises:
        ValueError: for an empty mask or an unknown prompt.
    """
    kind, count = parse_prompt(prompt)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty mask: no prompt can be derived from it")
    height, width = mask.shape
    if kind == "box":
        box = mask_box(mask)
        if jitter > 0:
            sides = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
            box = box + rng.normal(size=4) * jitter * sides
            box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])
            box = np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])
        return {"boxes": box[None]}
    if kind == "point":
        positives = interior_point(mask)[None]
    elif kind == "click":
        positives = deep_pixel(mask, rng)[None]
    else:
        positives = _random_pixels(mask, count, rng)
    points, labels = [positives], [np.ones(len(positives), dtype=np.int64)]
    if negatives > 0:
        background = _random_pixels(~mask, negatives, rng)
        points.append(background)
        labels.append(np.zeros(len(background), dtype=np.int64))
    return {"points": np.concatenate(points), "labels": np.concatenate(labels)}


def _random_pixels(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct random pixels of `mask` as `(x, y)` rows (all of them, in random order, if fewer)."""
    flat = np.flatnonzero(mask)
    chosen = rng.choice(flat, size=min(count, flat.size), replace=False)
    rows, cols = np.unravel_index(chosen, mask.shape)
    return np.stack([cols, rows], axis=-1).astype(np.float64)
