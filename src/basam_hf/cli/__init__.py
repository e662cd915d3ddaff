"""The `basam-hf` command line: a thin shell over the Python API.

Building the parser imports nothing heavy (no torch, transformers, accelerate or gradio), so `basam-hf --help` and
every `basam-hf COMMAND --help` answer at once; each command imports what it needs when it runs. Expected failures
(a missing file or folder, an unreachable Hub, an invalid setting or prompt) end as one line
`basam-hf COMMAND: error: ...` on stderr with exit status 1, in one place ([`main`]); anything else is a bug and
keeps its traceback.

The commands live in [`basam_hf.cli.model_commands`] (`info`, `segment`, `demo`, `convert-*`, `merge-lora`, `push`)
and [`basam_hf.cli.run_commands`] (`evaluate`, `compare`, `finetune`), what they share in [`basam_hf.cli.common`],
and what `main` does around each in [`basam_hf.cli.errors`]. Their public names are importable from here too, where
they lived before the package was split.
"""

import argparse
import itertools
import sys

from .. import __version__
from ..constants import DTYPE_NAMES, POINTS_PER_SIDE, SEGMENT_MAX_PIXELS
from ..settings import DTYPE_HELP
from .common import (
    BA_OPTION_NAMES,
    COMPARE_OUTPUTS,
    EVALUATE_OUTPUTS,
    FINETUNE_OUTPUTS,
    MODEL_FOLDER_OUTPUTS,
    PHOTO_MODEL_HELP,
    SEGMENT_OUTPUTS,
    add_ba_options,
    ba_settings_from_args,
    load_model_from_args,
    print_model_line,
)
from .errors import (
    DATA_ARGUMENTS,
    LOCAL_PATH_ARGUMENTS,
    MODEL_ARGUMENTS,
    PathNotFoundError,
    check_paths,
    describe_error,
    quiet_known_warnings,
)
from .model_commands import (
    add_convert_commands,
    add_demo_command,
    add_info_command,
    add_merge_lora_command,
    add_push_command,
    add_segment_command,
)
from .run_commands import add_compare_command, add_evaluate_command, add_finetune_command

# Commands that run a model for inference, and so take --dtype (evaluate's is one of its settings).
DTYPE_COMMANDS = ("compare", "segment", "demo")


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """`--dtype {float32,bfloat16,float16}`: the floating-point type of the weights and of the computation."""
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help=DTYPE_HELP)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its errors on one line, `basam-hf COMMAND: error: ...` (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _left_over_message(parser: argparse.ArgumentParser, command: str | None, argv: list[str], extra: list[str]) -> str:
    """argparse's `unrecognized arguments` for values after an option that takes a fixed number of them
    (`--point 1 2 3`), said of that option."""
    subparser = parser._subparsers._group_actions[0].choices.get(command) if command else None
    actions = subparser._option_string_actions if subparser is not None else {}

    def is_option(token: str) -> bool:
        return token.startswith("-") and not _is_number(token)

    for index, token in enumerate(argv):
        if not is_option(token) or token not in actions or not isinstance(actions[token].nargs, int):
            continue
        values = list(itertools.takewhile(lambda item: not is_option(item), argv[index + 1 :]))
        nargs = actions[token].nargs
        if len(values) > nargs and values[nargs] == extra[0]:
            metavar = actions[token].metavar
            names = f" ({' '.join(metavar)})" if isinstance(metavar, tuple) else ""
            return f"argument {token}: takes {nargs} values{names}, got {len(values)}: {' '.join(values)}"
    return f"unrecognized arguments: {' '.join(extra)}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; building it imports nothing heavy."""
    parser = OneLineErrorParser(prog="basam-hf", description="BA-SAM for Hugging Face transformers.")
    parser.add_argument("--version", action="version", version=f"basam-hf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_info_command(commands)
    add_evaluate_command(commands)
    add_compare_command(commands)
    add_finetune_command(commands)
    add_push_command(commands)
    add_segment_command(commands)
    add_demo_command(commands)
    add_convert_commands(commands)
    add_merge_lora_command(commands)
    for name in DTYPE_COMMANDS:
        _add_dtype_argument(commands.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an expected failure prints `basam-hf COMMAND: error: MESSAGE` (one line) and returns 1."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(args, "command", None)
        prog = f"basam-hf {command}" if command else "basam-hf"
        parser.exit(2, f"{prog}: error: {_left_over_message(parser, command, argv, extra)} (see {prog} --help)\n")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    hub_ids: list[str] = []
    try:
        hub_ids = check_paths(args)
        with quiet_known_warnings():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"basam-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = describe_error(error, hub_ids)
        if message is None:
            raise
        print(f"basam-hf {args.command}: error: {message}", file=sys.stderr)
        return 1


__all__ = [
    "BA_OPTION_NAMES",
    "COMPARE_OUTPUTS",
    "DATA_ARGUMENTS",
    "DTYPE_COMMANDS",
    "EVALUATE_OUTPUTS",
    "FINETUNE_OUTPUTS",
    "LOCAL_PATH_ARGUMENTS",
    "MODEL_ARGUMENTS",
    "MODEL_FOLDER_OUTPUTS",
    "PHOTO_MODEL_HELP",
    "POINTS_PER_SIDE",
    "SEGMENT_MAX_PIXELS",
    "SEGMENT_OUTPUTS",
    "OneLineErrorParser",
    "PathNotFoundError",
    "add_ba_options",
    "add_compare_command",
    "add_convert_commands",
    "add_demo_command",
    "add_evaluate_command",
    "add_finetune_command",
    "add_info_command",
    "add_merge_lora_command",
    "add_push_command",
    "add_segment_command",
    "ba_settings_from_args",
    "build_parser",
    "check_paths",
    "describe_error",
    "load_model_from_args",
    "main",
    "print_model_line",
    "quiet_known_warnings",
]
