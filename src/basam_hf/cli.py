"""The `basam-hf` command line: a thin shell over the Python API."""

import argparse
import json
import sys

from . import __version__


def _info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    vision = getattr(config, "vision_config", config)
    settings = vision.ba_settings() if hasattr(vision, "ba_settings") else {"bias_mode": "none (plain SAM)"}
    print(json.dumps({"model_type": config.model_type, "image_size": vision.image_size, **settings}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print the BA-SAM settings of a model's config")
    info.add_argument("model", help="repo id or folder")
    info.set_defaults(func=_info)
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
