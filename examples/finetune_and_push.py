"""Fine-tune BA-SAM on a segmentation dataset, then publish the best model to the Hub.

    python examples/finetune_and_push.py --model facebook/sam-vit-base --bias-mode coefficient --dataset nobg/DUTS \\
        --val-split test --val-max-samples 200 --max-steps 2000 --output runs/duts --repo-id user/basam-duts

Add `--dry-run` to train but upload nothing: the files that would be uploaded are listed. Log in first for a real
push (`hf auth login` or `HF_TOKEN`); the repo is created if missing.

Training is `basam_hf.training.finetune` (the official BA-SAM recipe by default: all parameters, Adam, StepLR, BCE +
Dice, one random click per object); a SAM checkpoint is converted to BA-SAM with the `--bias-mode` given. It writes
`best/` (best validation IoU; only with validation data) and `final/`: `save_pretrained` folders with safetensors,
config, processor config, the code files and a model card (naming the repo when pushing). Publishing is
`basam_hf.hub.push_to_hub` (called by `finetune` at the end, so that the cards name the repo), which refuses a folder
that would not load for others with `trust_remote_code=True`. `--model` (or `$BASAM_EXAMPLE_SAM`), `--dataset`
(or `$BASAM_EXAMPLE_DATASET`) and `--repo-id` (or `$BASAM_EXAMPLE_REPO_ID`) replace the defaults. After an
interruption, the same command with `--resume` continues exactly. Several processes (CPU too):

    accelerate launch --multi_gpu --num_processes 2 examples/finetune_and_push.py --dataset nobg/DUTS \\
        --max-steps 2000 --output runs/duts --repo-id user/basam-duts
"""

import argparse
import sys
from pathlib import Path

from _offline import add_source_argument
from accelerate import PartialState

from basam_hf.hub import files_to_upload, push_to_hub
from basam_hf.training import finetune


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_argument(parser, "--model", "sam", "SAM or BA-SAM Hub repo or folder (or `default`)")
    add_source_argument(parser, "--dataset", "dataset", "Hub dataset, save_to_disk folder, or images/ + masks/ folder")
    add_source_argument(parser, "--repo-id", "repo_id", "Hub model repo to push to, `user/name`")
    parser.add_argument("--split", default="train", help="training split (default: %(default)s)")
    parser.add_argument("--val-split", default=None, help="validation split of --dataset (default: no validation)")
    parser.add_argument("--val-max-samples", type=int, default=None)
    parser.add_argument(
        "--bias-mode",
        choices=("distance", "coefficient", "none"),
        default=None,
        help="BA bias for a SAM checkpoint (default: the model's own setting)",
    )
    parser.add_argument("--train-sizes", type=int, nargs="+", default=None, help="input sizes (default: the model's)")
    parser.add_argument("--prompt", default="points:1", help="box | point | points:k (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--save-steps", type=int, default=500, help="checkpoint and validate every N steps")
    parser.add_argument("--output", default="runs/basam-finetune", help="run folder (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repo_id is None and not args.dry_run:  # before training, not after it
        parser.error("--repo-id (or $BASAM_EXAMPLE_REPO_ID) is needed to push; or list the files with --dry-run")
    try:
        result = finetune(
            args.model,
            args.dataset,
            output_dir=args.output,
            split=args.split,
            val_split=args.val_split,
            val_max_samples=args.val_max_samples,
            ba_settings={"bias_mode": args.bias_mode} if args.bias_mode else None,
            train_sizes=args.train_sizes,
            prompt=args.prompt,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            max_steps=args.max_steps,
            save_steps=args.save_steps,
            resume=args.resume,
            log_with=[],  # the run's logs/metrics.jsonl only
            # Given the repo id, finetune names the model cards after it and pushes best/ (else final/) at the end
            # with basam_hf.hub.push_to_hub; a dry run pushes nothing and lists the files below instead.
            push_to_hub=None if args.dry_run else args.repo_id,
            private=args.private,
        )
    except (OSError, ValueError) as error:  # missing model / dataset, bad setting, old run in --output, Hub errors
        print(f"finetune_and_push.py: error: {error}", file=sys.stderr)
        if Path(args.output, "final", "config.json").is_file():
            print(f"{args.output}/final holds a trained model; `basam-hf push` publishes a folder.", file=sys.stderr)
        return 1
    if not PartialState().is_main_process:  # under accelerate launch, one process reports
        return 0
    print(f"Trained {result.global_step} steps; final model in {result.final_dir}")
    if result.best:
        print(f"Best validation {result.best['metric']} {result.best['value']:.4f} at step {result.best['step']}")
    folder = result.best_dir or result.final_dir
    if args.dry_run:
        # Checks that the folder would load for others, and lists exactly what a push would upload.
        listed = push_to_hub(folder, args.repo_id or "<repo-id>", private=args.private, dry_run=True)
        print(f"Would upload {folder} ({len(listed.files)} files) to {listed.repo_id}:")
        files = listed.files
    else:
        print(f"Uploaded {folder} to https://huggingface.co/{result.pushed_to}:")
        files = files_to_upload(folder)
    for name in files:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
