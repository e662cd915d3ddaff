"""Automatic mask generation with `transformers.pipeline("mask-generation")` at an input size of your choice.

    python examples/pipeline_usage.py --model user/basam-duts --image photo.jpg --size 1536 --output overlay.png

The pipeline prompts the model with a grid of points, keeps the masks that score well and removes duplicates. BA-SAM
runs at any input size: the size is set on the image processor handed to the pipeline (the pipeline has no size
argument of its own). Without `--image`, a synthetic scene from `basam_hf.synthetic` is used. `--model` is a Hub repo,
a local folder, or `default` (the model embedded in basam-hf); `$BASAM_EXAMPLE_MODEL` sets it for all examples.
"""

import argparse
import sys

import numpy as np
from _offline import add_source_argument, model_path
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from basam_hf.segment import POINTS_PER_SIDE, mask_generation_kwargs, overlay_masks
from basam_hf.synthetic import render_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_argument(parser, "--model", "model", "BA-SAM Hub repo or folder, or `default`")
    parser.add_argument("--image", default=None, help="image file (default: a synthetic scene)")
    parser.add_argument("--synthetic-seed", type=int, default=0, help="scene rendered without --image")
    parser.add_argument("--synthetic-size", type=int, default=512, help="side of the synthetic scene in pixels")
    parser.add_argument("--size", type=int, default=None, help="model input size, longest edge (default: the model's)")
    parser.add_argument(
        "--points-per-crop",
        type=int,
        default=POINTS_PER_SIDE,
        help="grid of N x N point prompts (default: %(default)s, as basam-hf segment --automatic; the pipeline's own "
        "default, 64, prompts four times as many points)",
    )
    parser.add_argument(
        "--points-per-batch",
        type=int,
        default=16,
        help="point prompts per forward pass (16: see segment.generate_masks)",
    )
    recommended = "(default: the model's recommended one, config `mask_generation`, else the pipeline's)"
    parser.add_argument("--pred-iou-thresh", type=float, help=f"drop masks scored below this {recommended}")
    parser.add_argument("--stability-score-thresh", type=float, help=f"drop unstable masks {recommended}")
    parser.add_argument("--output", default="overlay.png", help="overlay PNG to write (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.image is not None:
        image = Image.open(args.image).convert("RGB")
    else:
        image = render_sample(args.synthetic_seed, args.synthetic_size)["image"]
    try:
        source = model_path(args.model)
    except FileNotFoundError as error:  # `default` before the embedded model is installed
        print(f"pipeline_usage.py: error: {error}", file=sys.stderr)
        return 1

    # The input size lives in the image processor: load the model's own one (its normalisation) with another size.
    size = {"size": {"longest_edge": args.size}} if args.size else {}
    image_processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True, **size)
    generator = pipeline("mask-generation", model=source, image_processor=image_processor, trust_remote_code=True)
    # A BA-SAM config may recommend thresholds for its model (a small model's scores run lower than SAM's).
    thresholds = mask_generation_kwargs(
        generator.model, pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh
    )
    outputs = generator(
        image, points_per_crop=args.points_per_crop, points_per_batch=args.points_per_batch, **thresholds
    )
    masks = np.stack([np.asarray(mask, dtype=bool) for mask in outputs["masks"]]) if outputs["masks"] else None
    scores = [float(score) for score in outputs["scores"]]

    side = image_processor(image, return_tensors="pt")["pixel_values"].shape[-1]  # what the encoder is fed
    print(f"Model {args.model}, image {image.width}x{image.height}, input {side} px")
    print(f"{len(scores)} masks, scores (best first): {', '.join(f'{score:.3f}' for score in scores[:10])}")
    print(
        f"Settings: a {args.points_per_crop}x{args.points_per_crop} grid of point prompts, kept at pred_iou_thresh "
        f"{thresholds['pred_iou_thresh']:g} and stability_score_thresh {thresholds['stability_score_thresh']:g}"
    )
    if masks is None:
        masks = np.zeros((0, image.height, image.width), dtype=bool)
        print("No mask passed the thresholds: lower --pred-iou-thresh / --stability-score-thresh.")
    else:
        print(f"Masks array {masks.shape} {masks.dtype}")
    overlay_masks(image, masks).save(args.output)
    print(f"Overlay saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
