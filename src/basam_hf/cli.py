"""The `basam-hf` command line: a thin shell over the Python API."""

import argparse
import json
import sys

from . import __version__
from .configuration_basam import BA_FIELDS as BA_OPTION_NAMES


def _info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from .configuration_basam import BaSamConfig

    if args.model == "default":
        config = BaSamConfig()  # the package's default BA-SAM settings on SAM ViT-B dimensions
    else:
        config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    vision = getattr(config, "vision_config", config)
    settings = vision.ba_settings() if hasattr(vision, "ba_settings") else {"bias_mode": "none (plain SAM)"}
    print(json.dumps({"model_type": config.model_type, "image_size": vision.image_size, **settings}, indent=2))
    return 0


def _convert_sam(args: argparse.Namespace) -> int:
    from .conversion import convert_sam_to_basam

    settings = {name: value for name, value in vars(args).items() if name in BA_OPTION_NAMES and value is not None}
    model = convert_sam_to_basam(args.source, args.output, **settings)
    print(f"Saved BA-SAM to {args.output} with {json.dumps(model.config.vision_config.ba_settings())}")
    return 0


def add_ba_options(parser: argparse.ArgumentParser) -> None:
    """`--bias-mode`, `--attention-scaling`, ... (defaults: the model's own settings)."""
    from .configuration_basam import BA_CHOICES

    for name, choices in BA_CHOICES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", choices=choices, default=None)
    parser.add_argument("--bias-slope-scale", type=float, default=None)
    parser.add_argument("--learnable-slopes", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--coefficient-init", type=float, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print the BA-SAM settings of a model's config")
    info.add_argument("model", help="repo id, folder, or `default` (the package defaults)")
    info.set_defaults(func=_info)
    convert = commands.add_parser("convert-sam", help="turn a SAM checkpoint into BA-SAM (safetensors + code files)")
    convert.add_argument("source", help="SAM repo id (e.g. facebook/sam-vit-base) or folder")
    convert.add_argument("output", help="output folder")
    add_ba_options(convert)
    convert.set_defaults(func=_convert_sam)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
