"""Evaluate a model on a Hub dataset (or a local folder) at several input sizes, in one or several processes.

    python examples/evaluate_hub_dataset.py --dataset nobg/DUTS --split test --sizes 512 1024 2048 --output eval-duts

Several processes, also on a CPU-only machine (`--multi_gpu` starts them with torchrun; without GPUs they run on CPU;
`accelerate launch --cpu` would start a single process):

    accelerate launch --multi_gpu --num_processes 2 examples/evaluate_hub_dataset.py --dataset nobg/DUTS \\
        --split test --sizes 512 1024 --max-samples 200 --output eval-duts

The samples are sharded over the processes and each is counted once; prompts come from the ground truth (seeded per
sample, so any number of processes gives the same numbers). `--compare-sam` adds the same weights with BA off. The
output folder holds `samples.jsonl` (a rerun resumes from it), `summary.json`, `summary.md` and
`metrics_vs_size.png`; the table is printed. `--model` (or `$BASAM_EXAMPLE_MODEL`) and `--dataset` (or
`$BASAM_EXAMPLE_DATASET`) take Hub ids or local folders (`save_to_disk` folders, or `images/` + `masks/`).
"""

import argparse
import sys

from _offline import add_source_argument

from basam_hf.evaluation import evaluate, markdown_table
from basam_hf.runtime import make_accelerator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_argument(parser, "--model", "model", "BA-SAM Hub repo or folder, or `default`")
    add_source_argument(parser, "--dataset", "dataset", "Hub dataset, save_to_disk folder, or images/ + masks/ folder")
    parser.add_argument("--split", default=None, help="dataset split (default: the only one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="input sizes (default: the model's)")
    parser.add_argument("--prompt", default="box", help="box | point | points:k (default: %(default)s)")
    parser.add_argument("--compare-sam", action="store_true", help="also evaluate the same weights with BA off")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N samples")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass and process")
    parser.add_argument("--output", default="basam-evaluation", help="output folder (default: %(default)s)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is available")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    accelerator = make_accelerator(cpu=args.cpu)  # configured by `accelerate launch` / torchrun when started by them
    try:
        summary = evaluate(
            args.model,  # `default` is resolved to the embedded model by evaluate
            args.dataset,
            split=args.split,
            sizes=args.sizes,
            prompt=args.prompt,
            compare_sam=args.compare_sam,
            max_samples=args.max_samples,
            batch_size=args.batch_size,
            output_dir=args.output,
            accelerator=accelerator,
        )
    except (OSError, ValueError) as error:  # missing model / dataset, bad split or size: the message says which
        print(f"evaluate_hub_dataset.py: error: {error}", file=sys.stderr)
        return 1
    if accelerator.is_main_process:  # every process has the summary; one prints it
        print(markdown_table(summary), end="")
        print(f"{accelerator.num_processes} process(es) on {accelerator.device}; reports in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
