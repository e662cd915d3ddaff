"""Turn SAM ViT-B (`facebook/sam-vit-base`) into BA-SAM, save it, reload it, and check it against SAM.

    python examples/convert_sam_vit_base.py --output sam-vit-base-ba --bias-mode distance

The conversion is `basam_hf.conversion.convert_sam_to_basam` (what `basam-hf convert-sam` runs): every SAM weight is
loaded (an incomplete checkpoint is refused), the BA settings are written to the config, and the output folder gets
safetensors, the code files and a processor, so that it loads with the Auto classes. The check: reloaded with BA
switched off (`bias_mode="none"`, `attention_scaling="none"`), BA-SAM must compute SAM's image embeddings; with BA on,
they differ. `--sam` (or `$BASAM_EXAMPLE_SAM`) replaces the SAM checkpoint, e.g. by a local folder.
"""

import argparse
import sys

import torch
from _offline import add_source_argument
from transformers import AutoModelForMaskGeneration, AutoProcessor, SamModel

from basam_hf.conversion import convert_sam_to_basam
from basam_hf.loading import BA_OFF
from basam_hf.synthetic import render_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_argument(parser, "--sam", "sam", "SAM Hub repo or folder")
    parser.add_argument("--output", default="sam-vit-base-ba", help="output folder (default: %(default)s)")
    parser.add_argument("--bias-mode", choices=("distance", "coefficient", "none"), default="distance")
    parser.add_argument("--attention-scaling", choices=("log_length", "official", "none"), default="log_length")
    parser.add_argument("--atol", type=float, default=1e-5, help="tolerance of the BA-off check (default: 1e-5)")
    return parser


@torch.no_grad()
def image_embeddings(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.get_image_embeddings(pixel_values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = {"bias_mode": args.bias_mode, "attention_scaling": args.attention_scaling}
    convert_sam_to_basam(args.sam, args.output, **settings)
    print(f"Saved BA-SAM ({settings}) to {args.output}")

    # Reload as anyone would: Auto classes (trust_remote_code runs the saved code files where basam-hf is missing).
    basam = AutoModelForMaskGeneration.from_pretrained(args.output, trust_remote_code=True).eval()
    # Keyword arguments of from_pretrained override config fields: the same weights with BA switched off.
    basam_off = AutoModelForMaskGeneration.from_pretrained(args.output, trust_remote_code=True, **BA_OFF).eval()
    sam = SamModel.from_pretrained(args.sam).eval()
    print(f"Reloaded: {type(basam).__name__} ({basam.config.vision_config.bias_mode} bias) and {type(sam).__name__}")

    # An image at the model's pretraining size, where SAM itself runs (nothing is resampled).
    processor = AutoProcessor.from_pretrained(args.output, trust_remote_code=True)
    image = render_sample(0, basam.config.vision_config.image_size)["image"]
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]

    reference = image_embeddings(sam, pixel_values)
    off = image_embeddings(basam_off, pixel_values)
    on = image_embeddings(basam, pixel_values)
    difference_off = (off - reference).abs().max().item()
    difference_on = (on - reference).abs().max().item()
    equal = off.shape == reference.shape and difference_off <= args.atol
    print(f"Image embeddings {tuple(reference.shape)}")
    print(f"BA off: equal to SamModel's: {equal} (max abs difference {difference_off:.3e}, tolerance {args.atol:g})")
    print(f"BA on ({args.bias_mode}, {args.attention_scaling}): max abs difference to SamModel's {difference_on:.3e}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
