"""A trained model in bfloat16 / float16 against float32, end to end: the masks and the time per scene.

Held-out synthetic scenes (`basam_hf.study.HELD_OUT_SEED`, never trained on by the default model) are segmented from
their ground-truth boxes with `basam_hf.segment.segment_image` (what `basam-hf segment` and the demo run) by the
model loaded in float32 and in each other dtype. Reported per dtype and size: the mean and worst IoU between its masks
and float32's, the mean IoU of each with the ground truth, and the median seconds per scene with the ratio to float32
(same run; the dtypes take turns on every scene, so load drift hits them alike, after one warm-up scene each).
`--hf-sam` adds the same weights in transformers' `SamModel` (float32, so BA off) to the rotation: the time per box
against HF SAM in the same run, and how much BA changes the masks.

    python benchmarks/dtype_agreement.py                          # default model, 16 scenes at its size
    python benchmarks/dtype_agreement.py --sizes 512 1024 --scenes 8 --dtypes bfloat16
    python benchmarks/dtype_agreement.py --sizes 1024 --scenes 8 --dtypes --hf-sam   # seconds per box vs HF SAM

Writes `benchmarks/results/dtype-agreement-<timestamp>.json` (+ `.md`) and prints the table. See README.md.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_busy_seconds, machine_description, timestamp, write_report

LOW = ("bfloat16", "float16")
HF_SAM = "hf-sam"  # the same weights in transformers' SamModel, float32


def hf_sam(model):
    """`model`'s weights in transformers' `SamModel` (which has no BA: plain SAM attention)."""
    from transformers import SamConfig, SamModel

    config = model.config.to_dict()
    parts = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
    sam = SamModel(SamConfig(**{part: config[part] for part in parts}))
    sam.load_state_dict(model.state_dict())
    return sam.eval()


def run(args) -> dict:
    import numpy as np
    import torch

    from basam_hf.data import mask_box
    from basam_hf.loading import load_model, load_processor
    from basam_hf.metrics import binary_iou
    from basam_hf.segment import segment_image
    from basam_hf.study import HELD_OUT_SEED
    from basam_hf.synthetic import synthetic_segmentation_dataset

    torch.set_num_threads(args.threads)
    dtypes = ["float32"] + [dtype for dtype in dict.fromkeys(args.dtypes) if dtype != "float32"]
    models = {dtype: load_model(args.model, dtype=dtype) for dtype in dtypes}
    if args.hf_sam:
        dtypes.append(HF_SAM)
        models[HF_SAM] = hf_sam(models["float32"])
    processors = {dtype: load_processor(args.model, model) for dtype, model in models.items()}
    native = models["float32"].config.vision_config.image_size
    sizes = args.sizes or [native]
    rows = []
    for size in sizes:
        scenes = synthetic_segmentation_dataset(args.scenes + 1, size, seed=HELD_OUT_SEED)
        # SamModel only takes its own input size (its patch embedding checks it).
        dtypes = [dtype for dtype in models if dtype != HF_SAM or size == native]
        masks = {dtype: [] for dtype in dtypes}
        seconds = {dtype: [] for dtype in dtypes}
        truths = []
        for index in range(len(scenes)):  # scene 0 warms every model up and is not counted
            sample = scenes[index]
            box = mask_box(sample["mask"]).tolist()
            for dtype in dtypes if index % 2 == 0 else reversed(dtypes):
                start = time.perf_counter()
                predicted, _ = segment_image(models[dtype], processors[dtype], sample["image"], boxes=[box], size=size)
                if index:
                    seconds[dtype].append(time.perf_counter() - start)
                    masks[dtype].append(predicted[0])
            if index:
                truths.append(sample["mask"])
            print(f"[{size}] scene {index}/{args.scenes} done", flush=True)
        reference = masks["float32"]
        for dtype in dtypes:
            agreement = [binary_iou(mask, ref) for mask, ref in zip(masks[dtype], reference)]
            row = {
                "size": size,
                "dtype": dtype,
                "scenes": len(masks[dtype]),
                "median_s_per_scene": round(statistics.median(seconds[dtype]), 3),
                "iou_with_ground_truth": round(
                    float(np.mean([binary_iou(m, t) for m, t in zip(masks[dtype], truths)])), 4
                ),
            }
            if dtype != "float32":
                row["mask_iou_vs_float32_mean"] = round(float(np.mean(agreement)), 5)
                row["mask_iou_vs_float32_min"] = round(float(np.min(agreement)), 5)
                row["time_vs_float32"] = round(row["median_s_per_scene"] / statistics.median(seconds["float32"]), 3)
                row["per_scene_mask_iou_vs_float32"] = [round(float(value), 5) for value in agreement]
            if HF_SAM in dtypes:
                row["time_vs_hf_sam"] = round(row["median_s_per_scene"] / statistics.median(seconds[HF_SAM]), 3)
            rows.append(row)
    return {"dtypes": list(models), "sizes": sizes, "rows": rows}


def markdown(report: dict) -> str:
    config, machine = report["config"], report["machine"]
    versus_hf = any("time_vs_hf_sam" in row for row in report["rows"])
    lines = [
        f"dtype agreement {report['timestamp']}: model `{config['model']}`, {config['scenes']} held-out scenes (seed "
        f"{config['seed']}) per size, box prompts, {config['threads']} threads; {machine['cpu_model']} (torch CPU "
        f"capability {machine['cpu_capability']}, low-precision flags: "
        f"{', '.join(machine['low_precision_cpu_flags']) or 'none'}); torch {machine['torch']}.",
        f"Load average at start {'/'.join(f'{x:.2f}' for x in report['loadavg_start'])}, at end "
        f"{'/'.join(f'{x:.2f}' for x in report['loadavg_end'])}; other processes used {report['others_cpu_cores']} "
        "cores on average during the run.",
        "",
        "| size | dtype | mask IoU vs float32, mean (worst) | IoU with ground truth | median s/scene | time × float32 |"
        + (" time × HF SAM |" if versus_hf else ""),
        "|---:|---|---|---:|---:|---:|" + ("---:|" if versus_hf else ""),
    ]
    for row in report["rows"]:
        agreement = (
            f"{row['mask_iou_vs_float32_mean']:.4f} ({row['mask_iou_vs_float32_min']:.4f})"
            if "mask_iou_vs_float32_mean" in row
            else "(reference)"
        )
        ratio = f"{row['time_vs_float32']:.2f}" if "time_vs_float32" in row else "1"
        lines.append(
            f"| {row['size']} | {row['dtype']} | {agreement} | {row['iou_with_ground_truth']:.4f} | "
            f"{row['median_s_per_scene']:.2f} | {ratio} |"
            + (f" {row['time_vs_hf_sam']:.2f} |" if "time_vs_hf_sam" in row else " – |" if versus_hf else "")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="repo id, folder, or `default` (the embedded model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="input sizes (default: the model's)")
    parser.add_argument("--scenes", type=int, default=16, help="held-out scenes per size (default: %(default)s)")
    parser.add_argument("--dtypes", nargs="*", choices=LOW, default=list(LOW), help="none: float32 only")
    parser.add_argument("--hf-sam", action="store_true", help="also time the same weights in transformers' SamModel")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    from basam_hf.study import HELD_OUT_SEED

    stamp = timestamp()
    output = args.output or Path(__file__).resolve().parent / "results" / f"dtype-agreement-{stamp}.json"
    report = {
        "timestamp": stamp,
        "config": {
            "model": args.model,
            "scenes": args.scenes,
            "seed": HELD_OUT_SEED,
            "threads": args.threads,
            "prompt": "ground-truth box, basam_hf.segment.segment_image (prompts in float32, masks post-processed "
            "in float32)",
        },
        "machine": machine_description(),
        "loadavg_start": os.getloadavg(),
    }
    busy_before, usage_before, start = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_SELF), time.time()
    report.update(run(args))
    usage_after, wall = resource.getrusage(resource.RUSAGE_SELF), time.time() - start
    own = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    busy = cpu_busy_seconds()
    report["others_cpu_cores"] = round(max(0.0, busy - busy_before - own) / wall, 2) if busy is not None else None
    write_report(report, output, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
