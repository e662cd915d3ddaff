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

The modules: [`basam_hf.synthetic.noise`] (coordinates, smooth and pixel noise), [`basam_hf.synthetic.shapes`]
(implicit shapes), [`basam_hf.synthetic.checks`] (placement checks on the check grid), [`basam_hf.synthetic.scene`]
(scene sampling), [`basam_hf.synthetic.render`] (rasterising, `render_sample`) and [`basam_hf.synthetic.datasets`]
(datasets and folders); every public name is importable from `basam_hf.synthetic`.
"""

from .datasets import (
    dataset_seeds,
    make_synthetic_dataset,
    save_synthetic_dataset,
    synthetic_segmentation_dataset,
    write_synthetic_image_folder,
)
from .render import random_shape_coverage, render_sample, sample_id
from .scene import MAX_OBJECT_AREA, MIN_OBJECT_AREA, TEXTURE_KINDS
from .shapes import OBJECT_KINDS

__all__ = [
    "MAX_OBJECT_AREA",
    "MIN_OBJECT_AREA",
    "OBJECT_KINDS",
    "TEXTURE_KINDS",
    "dataset_seeds",
    "make_synthetic_dataset",
    "random_shape_coverage",
    "render_sample",
    "sample_id",
    "save_synthetic_dataset",
    "synthetic_segmentation_dataset",
    "write_synthetic_image_folder",
]
