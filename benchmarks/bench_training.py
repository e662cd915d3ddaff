"""Time and peak memory of one full training step: HF SamModel (sdpa) vs BaSamModel, at 1024 px and above.

One step = forward with a box prompt, BCE loss on the predicted mask against the box, backward, Adam step; every
parameter trained, batch 1, float32, gradient checkpointing on through transformers' API (`--no-checkpointing` to
compare). Each (model, variant, size) runs in its own subprocess (its peak RSS is its own, an out-of-memory cannot
take the others with it), with an address-space limit and a timeout. Weights as in `bench_encoder.py`: seeded normal
std 0.02 per parameter name, the same in SamModel and BaSamModel.

    python benchmarks/bench_training.py                        # 2-layer ViT-B width and full ViT-B, 1024-2048
    python benchmarks/bench_training.py --models vit-b --sizes 3072 --variants basam-default   # one large step
    python benchmarks/bench_training.py --tiny --sizes 256 512  # smoke test, seconds
    python benchmarks/bench_training.py --models vit-b --sizes 1024 --variants basam-default --train all lora
                                                               # LoRA (basam_hf.lora) against full fine-tuning

Writes `benchmarks/results/training-<timestamp>.json` (+ `.md`) and prints a Markdown table. See README.md.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoder import build_model, classify_error, fmt_load, fmt_ratio, spawn
from common import (
    GIB,
    TINY,
    VIT_B,
    limit_address_space,
    machine_description,
    read_proc_status,
    timestamp,
    write_report,
)

# Image encoders: full ViT-B, and ViT-B width with 2 layers (1 windowed + 1 global: every kind of layer once).
MODELS = {
    "2-layer": dict(VIT_B, num_hidden_layers=2, global_attn_indexes=[1]),
    "vit-b": VIT_B,
}
# The mask decoder (SAM's default, 256 wide) takes the neck's output: tiny encoders keep that width.
TINY_MODELS = {
    "2-layer": dict(TINY, num_hidden_layers=2, global_attn_indexes=[1], output_channels=256),
    "vit-b": dict(TINY, output_channels=256),
}
VARIANTS = ("hf-sdpa", "basam-default")  # names of bench_encoder.VARIANTS; HF SamModel runs at its 1024 only
BASE_SIZE = 1024
LEARNING_RATE = 1e-5
TRAIN_MODES = ("all", "lora")  # every parameter, or a LoRA adapter with basam_hf.lora's defaults (BaSam only)


def case_label(variant: str, train: str) -> str:
    """The variant column of a case: `basam-default`, or `basam-default+lora` for a LoRA step."""
    return variant if train == "all" else f"{variant}+{train}"


def box_and_target(size: int, mask_shape) -> tuple:
    """A box prompt covering a fixed fraction of a `size` x `size` input, and its mask at the predicted resolution."""
    import torch

    fractions = (0.25, 0.3, 0.7, 0.8)  # x0, y0, x1, y1
    box = torch.tensor([[[f * size for f in fractions]]])
    height, width = mask_shape
    target = torch.zeros(height, width)
    target[int(0.3 * height) : int(0.8 * height), int(0.25 * width) : int(0.7 * width)] = 1.0
    return box, target


def run_child(spec: dict) -> dict:
    """Build the model, run `warmup` + `repeats` training steps, report each phase's time and the peak RSS."""
    limit_address_space(spec["max_bytes"])
    result = {"status": "failed", "phase": "import", "loadavg_start": os.getloadavg()}
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(spec["threads"])
        result["phase"] = "build"
        model = build_model(spec).train()
        if spec["checkpointing"]:
            # transformers 5.x's name; gradient_checkpointing_enable is its deprecated alias.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        if spec["train"] == "lora":  # after checkpointing, as finetune does: the encoder layers stay the model's own
            from basam_hf.lora import LoraOptions, add_lora

            model = add_lora(model, LoraOptions())
        else:
            model.requires_grad_(True)
        trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.Adam(trained, lr=LEARNING_RATE)
        generator = torch.Generator().manual_seed(spec["seed"] + 1)
        pixel_values = torch.randn(1, 3, spec["size"], spec["size"], generator=generator)
        result["trainable_parameters"] = sum(p.numel() for p in trained)
        result["rss_after_build_mib"] = round(read_proc_status("VmRSS") / 2**20, 1)
        steps = []
        for step in range(spec["warmup"] + spec["repeats"]):
            result["phase"] = "warm-up" if step < spec["warmup"] else f"step {step - spec['warmup'] + 1}"
            usage, times = resource.getrusage(resource.RUSAGE_SELF), {}
            start = time.perf_counter()
            grid = spec["size"] // spec["dims"]["patch_size"]
            box, target = box_and_target(spec["size"], (4 * grid, 4 * grid))
            outputs = model(pixel_values=pixel_values, input_boxes=box, multimask_output=False)
            loss = F.binary_cross_entropy_with_logits(outputs.pred_masks[0, 0, 0], target)
            times["forward_s"] = time.perf_counter() - start
            loss.backward()
            times["backward_s"] = time.perf_counter() - start - times["forward_s"]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times["step_s"] = time.perf_counter() - start
            times["optimizer_s"] = times["step_s"] - times["forward_s"] - times["backward_s"]
            after = resource.getrusage(resource.RUSAGE_SELF)
            times["cpu_s"] = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
            times = {key: round(value, 2) for key, value in times.items()}
            if step >= spec["warmup"]:
                steps.append(dict(times, loss=round(float(loss), 5)))
            del outputs, loss
        best = min(steps, key=lambda s: s["step_s"])
        result.update(status="ok", phase="done", steps=steps, **{k: v for k, v in best.items() if k != "loss"})
    except BaseException as error:  # noqa: BLE001 - MemoryError, RuntimeError (allocator), ValueError (size check)
        result["reason"] = classify_error(error)
        result["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["loadavg_end"] = os.getloadavg()
    return result


def default_timeout(model: str, size: int) -> float:
    """Generous seconds per child: one step of ViT-B at 2048 takes ~10 min on 2 cores, global attention grows as N**2."""
    scale = (size / BASE_SIZE) ** 4 * (4 if model == "vit-b" else 1)
    return 900 + 300 * scale


def plan(
    models: list[str], variants: list[str], sizes: list[int], trains: list[str] = ("all",)
) -> list[tuple[str, str, int, str]]:
    """(model, variant, size, train) of every case; HF SamModel only at 1024 (its patch embedding refuses other
    sizes) and only fully trained (LoRA adapts BA-SAM here)."""
    return [
        (model, variant, size, train)
        for model in models
        for size in sizes
        for variant in variants
        for train in trains
        if (size == BASE_SIZE or not variant.startswith("hf-")) and (train == "all" or not variant.startswith("hf-"))
    ]


def summarize(results: dict) -> list[dict]:
    """One row per case, with ratios to HF SamModel at 1024 (same model), to the variant's own 1024 step and, for a
    LoRA step, to full fine-tuning of the same variant and size."""
    rows = []
    for (model, variant, size), result in results.items():
        row = {"model": model, "variant": variant, "size": size, **{k: v for k, v in result.items() if k != "steps"}}
        if result["status"] == "ok":
            references = [("hf", (model, "hf-sdpa", BASE_SIZE)), ("own", (model, variant, BASE_SIZE))]
            if "+" in variant:
                references.append(("full", (model, variant.split("+")[0], size)))
            for name, key in references:
                reference = results.get(key, {})
                if reference.get("status") == "ok" and key != (model, variant, size):
                    suffix = "" if name == "full" else "_1024"
                    row[f"time_vs_{name}{suffix}"] = round(result["step_s"] / reference["step_s"], 3)
                    row[f"rss_vs_{name}{suffix}"] = round(result["peak_rss_mib"] / reference["peak_rss_mib"], 3)
        rows.append(row)
    return rows


def largest_fitting(rows: list[dict], model: str, limit_gib: float = 24.0) -> dict | None:
    """The largest measured BA-SAM size of `model` whose step completed within `limit_gib` of peak RSS."""
    fits = [
        row
        for row in rows
        if row["model"] == model
        and row["variant"] != "hf-sdpa"
        and "+" not in row["variant"]  # fully trained steps only
        and row["status"] == "ok"
        and row["peak_rss_mib"] <= limit_gib * 1024
    ]
    return max(fits, key=lambda row: row["size"], default=None)


def markdown(report: dict) -> str:
    config, machine = report["config"], report["machine"]
    lines = [
        (
            f"Training-step benchmark {report['timestamp']}: one step (forward, BCE on a box prompt, backward, Adam), "
            f"all parameters trained, batch 1, float32, gradient checkpointing "
            f"{'on' if config['checkpointing'] else 'off'}, {config['threads']} threads, {config['repeats']} timed "
            f"step(s) after {config['warmup']} warm-up per child; {machine['cpu_model']}, {machine['usable_cpus']} "
            f"cores, {machine['ram_total_gib']} GiB RAM; torch {machine['torch']}, transformers "
            f"{machine['transformers']}."
        ),
        f"Load average at start {fmt_load(report['loadavg_start'])}, at end {fmt_load(report['loadavg_end'])}.",
        "",
        "| model | input | variant | step s | forward / backward / Adam s | peak RSS MiB | time × HF 1024 | "
        "RSS × HF 1024 | time × own 1024 | CPU s | others' CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        head = f"| {row['model']} | {row['size']} | {row['variant']} |"
        if row["status"] != "ok":
            reason = (row.get("reason") or "").replace("|", "/")
            lines.append(f"{head} {row['status']}: {reason} [{row.get('phase')}] | | | | | | | | |")
            continue
        others = row.get("others_cpu_cores")
        lines.append(
            f"{head} {row['step_s']:.1f} | {row['forward_s']:.1f} / {row['backward_s']:.1f} / "
            f"{row['optimizer_s']:.1f} | {row['peak_rss_mib']:.0f} | {fmt_ratio(row.get('time_vs_hf_1024'))} | "
            f"{fmt_ratio(row.get('rss_vs_hf_1024'))} | {fmt_ratio(row.get('time_vs_own_1024'))} | "
            f"{row['cpu_s']:.1f} | {'' if others is None else f'{others:.2f}'} |"
        )
    lines.append("")
    for model, row in report["largest_fitting_24gib"].items():
        if row:
            lines.append(
                f"- {model}: largest measured BA-SAM step within 24 GiB: {row['size']} px "
                f"({row['peak_rss_mib'] / 1024:.1f} GiB peak RSS, {row['step_s']:.0f} s)."
            )
    for row in report["rows"]:
        if "rss_vs_full" in row:
            lines.append(
                f"- {row['model']} {row['size']} px, {row['variant']} against full fine-tuning: peak RSS "
                f"{row['rss_vs_full']:.2f}x, step time {row['time_vs_full']:.2f}x, "
                f"{row['trainable_parameters']:,} trained parameters."
            )
    lines.append(
        "- peak RSS = the child's ru_maxrss: interpreter, torch, model, Adam state, activations, backward. "
        "others' CPU = cores busy with other processes while the child ran (> 0: a loaded machine)."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 1536, 2048], help="input sizes (multiples of 16)"
    )
    parser.add_argument(
        "--train", nargs="+", choices=TRAIN_MODES, default=["all"], help="all parameters and/or a LoRA adapter"
    )
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per child (the fastest is reported)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--budget-mb", type=float, default=None, help="BaSam's attention_memory_budget_mb")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders of the same structure (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-gib", type=float, default=20.0, help="address-space limit of each child (RLIMIT_AS)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child (default: scales with size)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        spec = json.loads(args.child.read_text())
        Path(spec["result_path"]).write_text(json.dumps(run_child(spec)))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    models = {name: (TINY_MODELS if args.tiny else MODELS)[name] for name in args.models}
    stamp = timestamp()
    output = args.output or Path(__file__).resolve().parent / "results" / f"training-{stamp}.json"
    report = {
        "timestamp": stamp,
        "config": {
            "models": {name: dims for name, dims in models.items()},
            "tiny": args.tiny,
            "weights": "seeded normal std 0.02 per parameter name (biases 0, norms 1), same in every variant",
            "step": "forward (box prompt, multimask_output=False), BCE with logits on the low-res mask against the "
            f"box, backward, Adam (lr {LEARNING_RATE}) step; every parameter trained (or, with train lora, the adapter and BA parameters); batch 1; float32",
            "checkpointing": not args.no_checkpointing,
            "sizes": args.sizes,
            "variants": args.variants,
            "train": args.train,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "threads": args.threads,
            "budget_mb": args.budget_mb,
            "max_gib_per_child": args.max_gib,
            "peak_rss": "ru_maxrss of the child (whole process)",
        },
        "machine": machine_description(),
        "loadavg_start": os.getloadavg(),
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="basam-bench-training-") as tmp:
        for index, (model, variant, size, train) in enumerate(
            plan(args.models, args.variants, sorted(args.sizes), args.train)
        ):
            label = case_label(variant, train)
            spec = {
                "variant": variant,
                "train": train,
                "size": size,
                "dims": models[model],
                "seed": args.seed,
                "budget_mb": args.budget_mb,
                "checkpointing": not args.no_checkpointing,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "threads": args.threads,
                "max_bytes": int(args.max_gib * GIB),
                "round": index,
            }
            timeout = args.timeout or default_timeout(model, size)
            print(f"[{model} {size} {label}] running (timeout {timeout:.0f} s) ...", end=" ", flush=True)
            result = spawn(spec, Path(tmp), timeout, script=__file__)
            results[(model, label, size)] = result
            if result["status"] == "ok":
                print(f"step {result['step_s']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
            else:
                print(f"{result['status']}: {result.get('reason')}", flush=True)
    report["rows"] = summarize(results)
    report["largest_fitting_24gib"] = {model: largest_fitting(report["rows"], model) for model in args.models}
    write_report(report, output, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
