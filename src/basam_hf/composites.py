"""Photographic segmentation data: copy-paste composites of real photos with exact masks, made when read.

The photos are the sample images that ship inside installed packages ([`PHOTOS`]: scikit-image, scikit-learn,
matplotlib); nothing is downloaded and nothing third-party is stored in this package. Every photo belongs to one
split, so a held-out composite contains no pixel of a training photo: backgrounds and objects both come from the
photos of the composite's own split.

A composite ([`compose`]) is a random crop of one photo, resized to a random size (longest side 256 to 1536 px, so
small images get upsampled by the processor and large ones downsampled), with one to five objects pasted on it in
turn. An object is a cut-out of a photo of the split:
- `shape`: a random shape of [`basam_hf.synthetic`] (ellipse, polygon, star, blob, ring, ...) filled with a photo crop;
- `segment`: a region of a photo found by Felzenszwalb's graph segmentation (a real boundary and the texture inside
  it), cut out with its own pixels;
- `silhouette`: a real silhouette (scikit-image's horse) filled with a photo crop; training photos only.
Each object is scaled to 1-30 % of the image, flipped, recoloured, softened at its edge by a little blur, and may be
cut by the image border. Later objects occlude earlier ones: every mask is the object's visible part (alpha >= 0.5
and not covered later). The result then goes through what users upload: grayscale, low contrast, blur, sensor noise,
JPEG artefacts, loss of detail (a down- then up-sampled copy).

Everything is a pure function of the seed (`numpy.random.default_rng`), so datasets are reproducible and need no
storage. Needs scikit-image (the photos and the segmentation; in the `dev` / `train` extras).
"""

import importlib.util
import io
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import gaussian_filter

from .data import SegmentationDataset
from .synthetic import OBJECT_KINDS, random_shape_coverage
from .synthetic.noise import _add_noise

SPLITS = ("train", "val", "test")
OBJECT_SOURCES = ("shape", "segment", "silhouette")
MIN_SIDE, MAX_SIDE = 256, 1536  # longest side of a composite, drawn log-uniformly
MAX_OBJECTS = 5
_AREA_RANGE = (0.01, 0.30)  # an object's area before occlusion, as a fraction of the image, drawn log-uniformly
_MIN_VISIBLE = 0.002  # an object whose visible part is smaller than this image fraction is not a target
_MAX_EXTENT = 3.0  # an object's box spans at most this many image heights / widths (see _object_size)
_SEGMENT_SIDE = 320  # photos are segmented at this longest side
_SEED_STRIDE = 1_000_003  # sample i of a dataset with seed s uses seed s * stride + i


@dataclass(frozen=True)
class Photo:
    """A photo inside an installed package: `package`'s folder / `path`, under `license`, in one split."""

    name: str
    package: str
    path: str
    license: str
    split: str


PHOTOS = (
    # Training photos.
    Photo("astronaut", "skimage", "data/astronaut.png", "public domain (NASA)", "train"),
    Photo("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "public domain (NASA)", "train"),
    Photo("immunohistochemistry", "skimage", "data/ihc.png", "no known copyright restrictions", "train"),
    Photo("retina", "skimage", "data/retina.jpg", "CC0 1.0", "train"),
    Photo("coins", "skimage", "data/coins.png", "no known copyright restrictions", "train"),
    Photo("text", "skimage", "data/text.png", "public domain", "train"),
    Photo("cell", "skimage", "data/cell.png", "CC0", "train"),
    Photo("clock", "skimage", "data/clock_motion.png", "public domain (Stefan van der Walt)", "train"),
    Photo("grass", "skimage", "data/grass.png", "CC0 (CC0Textures)", "train"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion on Flickr)", "train"),
    # Validation photos.
    Photo("chelsea", "skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)", "val"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "public domain (US Navy)", "val"),
    Photo("gravel", "skimage", "data/gravel.png", "CC0 (CC0Textures)", "val"),
    # Held-out test photos.
    Photo("rocket", "skimage", "data/rocket.jpg", "public domain (SpaceX)", "test"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele on Flickr)", "test"),
    Photo("coffee", "skimage", "data/coffee.png", "CC0 (Rachel Michetti)", "test"),
    Photo("camera", "skimage", "data/camera.png", "CC0 (Lav Varshney)", "test"),
    Photo("brick", "skimage", "data/brick.png", "CC0 (CC0Textures)", "test"),
)
# Real silhouettes (binary images, object dark): shapes only, their pixels are not used.
SILHOUETTES = (Photo("horse", "skimage", "data/horse.png", "CC0 (Andreas Preuss)", "train"),)


def photos(split: str) -> list[Photo]:
    """The photos of a split."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    return [photo for photo in PHOTOS if photo.split == split]


def photo_file(photo: Photo) -> Path:
    """Where the photo's package keeps it; `ModuleNotFoundError` naming the package to install if it is missing."""
    spec = importlib.util.find_spec(photo.package)
    if spec is None or not spec.submodule_search_locations:
        wheel = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(photo.package, photo.package)
        raise ModuleNotFoundError(f"The photo {photo.name!r} ships with {wheel}: pip install {wheel}")
    path = Path(spec.submodule_search_locations[0]) / photo.path
    if not path.is_file():
        raise FileNotFoundError(f"{photo.package} has no {photo.path} (photo {photo.name!r}): another version?")
    return path


@cache
def load_photo(name: str) -> np.ndarray:
    """A photo as `(H, W, 3)` uint8 RGB (grayscale photos repeated over the channels); cached per process."""
    photo = next((p for p in PHOTOS + SILHOUETTES if p.name == name), None)
    if photo is None:
        raise ValueError(f"Unknown photo {name!r}.")
    with Image.open(photo_file(photo)) as image:
        return np.asarray(image.convert("RGB"))


@cache
def photo_segments(name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Felzenszwalb segmentation of a photo at `_SEGMENT_SIDE` px (labels `(h, w)` int32) and the labels of the
    segments usable as objects: 0.5-25 % of the photo, filling at least a quarter of their bounding box."""
    from skimage.segmentation import felzenszwalb  # optional: basam-hf[train]

    image = Image.fromarray(load_photo(name))
    scale = _SEGMENT_SIDE / max(image.size)
    small = np.asarray(image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))))
    labels = felzenszwalb(small, scale=400, sigma=0.8, min_size=small.shape[0] * small.shape[1] // 300)
    usable = []
    for label in range(int(labels.max()) + 1):
        rows, cols = np.nonzero(labels == label)
        if rows.size == 0:
            continue
        fraction = rows.size / labels.size
        fill = rows.size / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        if 0.005 <= fraction <= 0.25 and fill >= 0.25:
            usable.append(label)
    return labels.astype(np.int32), tuple(usable)


# ---------------------------------------------------------------------------------------------------------------------
# Objects: coverage (alpha) and pixels


def _photo_crop(rng: np.random.Generator, name: str, height: int, width: int) -> np.ndarray:
    """A random crop of a photo with the aspect ratio of `(height, width)`, resized to it: float32 `(h, w, 3)`."""
    photo = load_photo(name)
    rows, cols = photo.shape[:2]
    fraction = rng.uniform(0.2, 1.0)  # of the largest crop with that aspect ratio
    crop_h = min(rows, cols * height / width) * math.sqrt(fraction)
    crop_w = crop_h * width / height
    top, left = rng.uniform(0, rows - crop_h), rng.uniform(0, cols - crop_w)
    box = (left, top, left + crop_w, top + crop_h)
    resized = Image.fromarray(photo).resize((width, height), Image.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.float32)


def _segment_object(rng: np.random.Generator, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A segment of a photo as (coverage, pixels) at the photo's resolution, cropped to its box; `None` if the photo
    has no usable segment."""
    labels, usable = photo_segments(name)
    if not usable:
        return None
    photo = load_photo(name)
    region = (labels == usable[int(rng.integers(len(usable)))]).astype(np.float32)
    # The label map is small: upsample its indicator smoothly, so the outline is not a staircase of big pixels.
    coverage = np.asarray(Image.fromarray(region).resize(photo.shape[1::-1], Image.BILINEAR))
    coverage = np.clip((coverage - 0.5) * 4.0 + 0.5, 0.0, 1.0)
    rows, cols = np.nonzero(coverage > 0)
    box = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
    return coverage[box], photo[box].astype(np.float32)


def _silhouette_coverage(rng: np.random.Generator) -> np.ndarray:
    silhouette = SILHOUETTES[int(rng.integers(len(SILHOUETTES)))]
    inside = (load_photo(silhouette.name)[..., 0] < 128).astype(np.float32)
    rows, cols = np.nonzero(inside)
    return inside[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _random_object(rng: np.random.Generator, split: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(coverage `(h, w)`, pixels `(h, w, 3)`) of one object from the split's photos."""
    names = [photo.name for photo in photos(split)]
    if source == "segment":
        found = _segment_object(rng, names[int(rng.integers(len(names)))])
        if found is not None:
            return found
        source = "shape"
    if source == "silhouette":
        coverage = _silhouette_coverage(rng)
    else:
        coverage = random_shape_coverage(rng, 256, str(rng.choice(OBJECT_KINDS)))
    pixels = _photo_crop(rng, names[int(rng.integers(len(names)))], *coverage.shape)
    return coverage, pixels


def _recolour(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """Random brightness, contrast and per-channel gain, so a pasted object does not match its source's colours."""
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    contrast = rng.uniform(0.7, 1.3)
    gain = rng.uniform(0.8, 1.2, 3) * rng.uniform(0.75, 1.25)
    return np.clip((pixels - mean) * contrast + mean * gain, 0.0, 255.0)


def _object_size(coverage: np.ndarray, area: float, stretch: float, height: int, width: int) -> tuple[int, int]:
    """The size `(h, w)` that scales an object's `coverage` to cover `area` pixels, its height stretched by `stretch`
    and its width shrunk by it, with its box at most `_MAX_EXTENT` times the `height x width` image along each axis:
    a thin segment (a line across a photo) covers little of its box, and scaled to its area it would span hundreds
    of image sides and gigabytes."""
    rows, cols = coverage.shape
    scale = math.sqrt(area / max(float(coverage.sum()), 1.0))
    scale = min(scale, _MAX_EXTENT * height / (rows * stretch), _MAX_EXTENT * width * stretch / cols)
    return round(rows * scale * stretch), round(cols * scale / stretch)


def _resize_object(coverage: np.ndarray, pixels: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    size = (max(2, width), max(2, height))
    coverage = np.asarray(Image.fromarray(coverage).resize(size, Image.BILINEAR))
    channels = [np.asarray(Image.fromarray(pixels[..., c]).resize(size, Image.BILINEAR)) for c in range(3)]
    return coverage, np.stack(channels, axis=-1)


def _paste(
    canvas: np.ndarray, masks: list[np.ndarray], coverage: np.ndarray, pixels: np.ndarray, top: int, left: int
) -> None:
    """Alpha-blend an object onto `canvas` (float32 `(H, W, 3)`) at `(top, left)` (possibly partly outside), hide
    what it covers of the earlier masks, and append its own visible mask."""
    height, width = canvas.shape[:2]
    rows = slice(max(top, 0), min(top + coverage.shape[0], height))
    cols = slice(max(left, 0), min(left + coverage.shape[1], width))
    if rows.stop <= rows.start or cols.stop <= cols.start:
        masks.append(np.zeros((height, width), bool))
        return
    local = slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left)
    alpha = coverage[local][..., None]
    canvas[rows, cols] += alpha * (pixels[local] - canvas[rows, cols])
    hard = np.zeros((height, width), bool)
    hard[rows, cols] = coverage[local] >= 0.5
    for mask in masks:
        mask &= ~hard
    masks.append(hard)


# ---------------------------------------------------------------------------------------------------------------------
# What users upload


def degrade(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Each with its own probability: grayscale, low contrast, loss of detail, blur, sensor noise, JPEG artefacts."""
    if rng.random() < 0.15:
        image = image.convert("L").convert("RGB")
    if rng.random() < 0.2:
        pixels = np.asarray(image, dtype=np.float32)
        mean = pixels.mean(axis=(0, 1), keepdims=True)
        image = Image.fromarray(np.clip((pixels - mean) * rng.uniform(0.3, 0.7) + mean, 0, 255).astype(np.uint8))
    if rng.random() < 0.2:
        factor = rng.uniform(0.25, 0.6)
        small = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
        image = image.resize(small, Image.BILINEAR).resize(image.size, Image.BICUBIC)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0) * max(image.size) / 1024))
    if rng.random() < 0.25:
        image = Image.fromarray(_add_noise(np.asarray(image), rng.uniform(2.0, 12.0), rng))
    if rng.random() < 0.35:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(15, 76)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Composites and datasets


def _composite_size(rng: np.random.Generator) -> tuple[int, int]:
    longest = math.exp(rng.uniform(math.log(MIN_SIDE), math.log(MAX_SIDE)))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1 / 0.6)))  # width / height
    if aspect >= 1:
        return max(MIN_SIDE // 4, round(longest / aspect)), round(longest)  # MIN_SIDE // 4: the dataset's promise
    return round(longest), max(MIN_SIDE // 4, round(longest * aspect))


def compose(seed: int, split: str) -> dict:
    """Composite `seed` of a split: `{"image": RGB PIL image, "masks": [bool (H, W)], "sources": [str]}`, the masks
    of the objects whose visible part covers at least 0.2 % of the image, in pasting order (at least one)."""
    names = [photo.name for photo in photos(split)]
    sources = OBJECT_SOURCES if split == "train" else OBJECT_SOURCES[:2]  # one silhouette, for training only
    for attempt in range(100):
        rng = np.random.default_rng([seed, SPLITS.index(split), attempt])
        height, width = _composite_size(rng)
        canvas = _photo_crop(rng, names[int(rng.integers(len(names)))], height, width)
        if rng.random() < 0.5:
            canvas = canvas[:, ::-1].copy()
        masks: list[np.ndarray] = []
        kinds = []
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            source = str(rng.choice(sources, p=[0.45, 0.45, 0.1] if len(sources) == 3 else [0.5, 0.5]))
            coverage, pixels = _random_object(rng, split, source)
            area = math.exp(rng.uniform(*np.log(_AREA_RANGE))) * height * width
            stretch = math.exp(rng.uniform(-0.3, 0.3))
            object_h, object_w = _object_size(coverage, area, stretch, height, width)
            coverage, pixels = _resize_object(coverage, _recolour(rng, pixels), object_h, object_w)
            if rng.random() < 0.5:
                coverage, pixels = coverage[:, ::-1], pixels[:, ::-1]
            softness = rng.uniform(0.0, 1.2)
            if softness > 0.3:
                coverage = gaussian_filter(coverage, softness)
            # At least three quarters of the object's box inside the image, along each axis where it fits.
            top = int(rng.integers(-object_h // 4, max(height - 3 * object_h // 4, 1 - object_h // 4) + 1))
            left = int(rng.integers(-object_w // 4, max(width - 3 * object_w // 4, 1 - object_w // 4) + 1))
            _paste(canvas, masks, coverage, pixels, top, left)
            kinds.append(source)
        keep = [i for i, mask in enumerate(masks) if mask.sum() >= max(64, _MIN_VISIBLE * height * width)]
        if keep:
            image = degrade(rng, Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8)))
            return {"image": image, "masks": [masks[i] for i in keep], "sources": [kinds[i] for i in keep]}
    raise RuntimeError(f"No composite with a visible object for seed {seed} ({split}).")  # pragma: no cover


def composite_seeds(num_samples: int, seed: int = 0) -> list[int]:
    """Sample seeds of a dataset: `seed * 1_000_003 + i`, so datasets with different seeds share no sample."""
    return [seed * _SEED_STRIDE + i for i in range(num_samples)]


def composite_id(split: str, seed: int) -> str:
    return f"photo-{split}-{seed:08d}"


def composite_segmentation_dataset(num_samples: int, split: str = "train", seed: int = 0) -> SegmentationDataset:
    """`num_samples` composites of a split as a [`basam_hf.data.SegmentationDataset`], made when read; each sample's
    target is one of its objects, chosen by the sample's seed."""
    photos(split)  # validates the split
    seeds = composite_seeds(num_samples, seed)

    def read(index: int) -> dict:
        scene = compose(seeds[index], split)
        target = int(np.random.default_rng([seeds[index], 7]).integers(len(scene["masks"])))
        return {"id": composite_id(split, seeds[index]), "image": scene["image"], "mask": scene["masks"][target]}

    info = {"source": f"composites(split={split}, seed={seed})", "split": split, "num_samples": num_samples}
    info.update(nonempty_masks=True, min_image_side=MIN_SIDE // 4)  # for training's sample check
    return SegmentationDataset([composite_id(split, s) for s in seeds], read, info)


__all__ = [
    "OBJECT_SOURCES",
    "PHOTOS",
    "SPLITS",
    "Photo",
    "compose",
    "composite_segmentation_dataset",
    "degrade",
    "load_photo",
    "photo_file",
    "photo_segments",
    "photos",
]
