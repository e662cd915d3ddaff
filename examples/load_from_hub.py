"""Load BA-SAM with the transformers Auto classes and segment the object in a box.

    python examples/load_from_hub.py --model user/basam-duts --image photo.jpg --box 40 60 400 380 --output mask.png

Without `--image`, a synthetic scene from `basam_hf.synthetic` is rendered and the box of its object is used, so the
script runs with nothing but a model; the IoU with the scene's true mask is printed too:

    python examples/load_from_hub.py --output mask.png

`--model` is a Hub repo, a local folder, or `default` (the model embedded in basam-hf); `$BASAM_EXAMPLE_MODEL` sets
it for all examples (see examples/_offline.py). The model runs at any input size: `--size 2048`.
"""

import argparse
import sys

import numpy as np
import torch
from _offline import add_source_argument, model_path
from PIL import Image
from transformers import AutoModelForMaskGeneration, AutoProcessor

from basam_hf.data import mask_box
from basam_hf.synthetic import render_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_argument(parser, "--model", "model", "BA-SAM Hub repo or folder, or `default`")
    parser.add_argument("--image", default=None, help="image file (default: a synthetic scene)")
    parser.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"), help="in image pixels")
    parser.add_argument("--synthetic-seed", type=int, default=0, help="scene rendered without --image")
    parser.add_argument("--synthetic-size", type=int, default=512, help="side of the synthetic scene in pixels")
    parser.add_argument("--size", type=int, default=None, help="model input size, longest edge (default: the model's)")
    parser.add_argument("--output", default="mask.png", help="mask PNG to write, 0/255 (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    truth = None
    if args.image is not None:
        if args.box is None:
            print("load_from_hub.py: error: --image needs --box", file=sys.stderr)
            return 2
        image = Image.open(args.image).convert("RGB")
    else:
        sample = render_sample(args.synthetic_seed, args.synthetic_size)
        image, truth = sample["image"], np.asarray(sample["mask"]) > 0
    box = list(args.box) if args.box is not None else mask_box(truth).tolist()

    try:
        source = model_path(args.model)
    except FileNotFoundError as error:  # `default` before the embedded model is installed
        print(f"load_from_hub.py: error: {error}", file=sys.stderr)
        return 1
    # trust_remote_code runs the code files shipped with the checkpoint when basam-hf is not installed.
    model = AutoModelForMaskGeneration.from_pretrained(source, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)

    size = {"size": args.size} if args.size else {}  # the processor resizes the longest edge to it (and pads)
    inputs = processor(images=image, input_boxes=[[box]], return_tensors="pt", **size)
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)  # a box is unambiguous: one mask
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    mask = masks[0][0, 0].numpy()  # (height, width) bool, at the original image size
    score = outputs.iou_scores[0, 0, 0].item()

    Image.fromarray(mask.astype(np.uint8) * 255).save(args.output)
    side = inputs["pixel_values"].shape[-1]
    print(f"Model {args.model}, input {side} px, box {[round(v, 1) for v in box]}")
    print(f"Predicted IoU score: {score:.4f}")
    if truth is not None:
        iou = (mask & truth).sum() / max((mask | truth).sum(), 1)
        print(f"IoU with the synthetic scene's true mask: {iou:.4f}")
    print(f"Mask {mask.shape[1]}x{mask.shape[0]}, {int(mask.sum())} object pixels, saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
