"""Segmentation datasets for evaluation: Hub ids, `save_to_disk` folders and image folders, one object per sample.

The modules: [`basam_hf.data.sources`] (image folders, Hub and `save_to_disk` datasets, presets),
[`basam_hf.data.coco`] (COCO-style objects, COCO instances files), [`basam_hf.data.codecs`] (image, mask, RLE and
polygon decoding), [`basam_hf.data.prompts`] (prompts from masks) and [`basam_hf.data.dataset`] (the dataset type);
every name is importable from `basam_hf.data`.

Every source becomes a [`SegmentationDataset`] of samples `{"id": str, "image": PIL RGB, "mask": np.ndarray bool HxW}`.
A sample that cannot be used (unreadable image, mask of another size, ...) raises [`SampleError`] naming it, so a
caller can skip it and go on.

Conversions (documented in the README):
- Images of any mode become 8-bit RGB. Alpha is composited on black (transparent pixels are black, as in a cut-out
  on a black background); 16-bit images (`I;16*`, `I`, uint16 arrays) are scaled by 255/65535 with rounding; float
  images are read as [0, 1] (scaled by 255) when their maximum is at most 1, else as [0, 255]; `1`, `L`, `P`, `CMYK`,
  ... go through PIL's own RGB conversion.
- Masks are binarised by [`binarize_mask`]: masks whose values are only 0 and 1 (any type) are label masks (1 =
  object); otherwise a pixel is object when it is above half the type's range: `> 127` for 8-bit, `> 32767` for
  16-bit, `> 0.5` for float masks in [0, 1] (`> 127.5` when their maximum exceeds 1); mode `1` and bool masks: any
  nonzero pixel. Palette (`P`) masks are label images: any nonzero index is object. RGB(A) masks are converted to
  luminance (`L`) first.
- COCO-style annotations (a column holding a list of objects, or a dict of per-object lists; or a COCO instances
  file with its images folder, [`load_coco_dataset`]) give one sample per non-crowd object; segmentations may be
  polygons or RLE (uncompressed counts or the compressed COCO string), decoded here without pycocotools. Polygons are
  rasterised by pixel centres (a pixel is inside when its centre is), which can differ from pycocotools at boundary
  pixels.
"""

from .coco import CROWD_KEYS, OBJECT_ID_KEYS, SEGMENTATION_KEYS, coco_objects, load_coco_dataset
from .codecs import binarize_mask, polygons_to_mask, rle_decode, rle_string_to_counts, to_rgb
from .dataset import SampleError, SegmentationDataset, concatenate_segmentation_datasets, iter_samples
from .prompts import (
    SINGLE_CLICK_PROMPTS,
    deep_pixel,
    interior_point,
    mask_box,
    parse_prompt,
    prompts_from_mask,
    sample_rng,
)
from .sources import (
    ID_COLUMN_CANDIDATES,
    IMAGE_EXTENSIONS,
    MASK_COLUMN_CANDIDATES,
    PRESETS,
    REMOVED_PRESETS,
    DatasetPreset,
    load_segmentation_dataset,
    write_image_folder,
)

__all__ = [
    "CROWD_KEYS",
    "ID_COLUMN_CANDIDATES",
    "IMAGE_EXTENSIONS",
    "MASK_COLUMN_CANDIDATES",
    "OBJECT_ID_KEYS",
    "PRESETS",
    "REMOVED_PRESETS",
    "SEGMENTATION_KEYS",
    "SINGLE_CLICK_PROMPTS",
    "DatasetPreset",
    "SampleError",
    "SegmentationDataset",
    "binarize_mask",
    "coco_objects",
    "concatenate_segmentation_datasets",
    "deep_pixel",
    "interior_point",
    "iter_samples",
    "load_coco_dataset",
    "load_segmentation_dataset",
    "mask_box",
    "parse_prompt",
    "polygons_to_mask",
    "prompts_from_mask",
    "rle_decode",
    "rle_string_to_counts",
    "sample_rng",
    "to_rgb",
    "write_image_folder",
]
