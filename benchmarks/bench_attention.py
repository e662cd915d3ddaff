"""Microbenchmark of ONE global-attention layer: HF SamVisionSdpaAttention vs BA-SAM's SDPA (BA off, BA default).

The quick signal for tuning the chunked attention: same weights and input for every variant, best of N calls,
the extra peak RSS of one call, and the outputs compared with each other and with an independent float64
computation of the formula each variant implements.

    python benchmarks/bench_attention.py                       # 1024 input: 12 heads, N = 4096, head dim 64
    python benchmarks/bench_attention.py --budgets 64 256 1024 # sweep BaSam's attention_memory_budget_mb
    python benchmarks/bench_attention.py --eager --profile     # + HF eager, + where the time goes (torch.profiler)
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import (
    BA_DEFAULT,
    BA_OFF,
    GIB,
    MIB,
    VIT_B,
    attention_matrix_bytes,
    cpu_busy_seconds,
    machine_description,
    randomize_parameters,
    read_proc_status,
    reset_peak_rss,
    timestamp,
)
from transformers import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionSdpaAttention

from basam_hf import BaSamVisionConfig
from basam_hf.bias import alibi_slopes
from basam_hf.modeling_basam import BaSamVisionAttention, BaSamVisionSdpaAttention, query_chunk_rows

FULL_MASK_LIMIT = 4 * GIB  # HF variants build the whole (heads, N, N) mask: not attempted above this


def build_variants(args, dims: dict) -> dict:
    """name -> (module, semantics) with semantics "sam" (SAM's formula) or "ba" (BA default formula)."""
    variants = {}
    sam_config = SamVisionConfig(**dims)
    full_mask = attention_matrix_bytes(args.size, dims)
    if full_mask <= FULL_MASK_LIMIT or args.allow_full_mask:
        sam_config._attn_implementation = "sdpa"
        variants["hf-sdpa (full mask)"] = (SamVisionSdpaAttention(sam_config, window_size=0), "sam")
        if args.eager:
            variants["hf-eager"] = (SamVisionAttention(sam_config, window_size=0), "sam")
    else:
        print(
            f"hf variants skipped: the ({dims['num_attention_heads']}, N, N) float mask would take "
            f"{full_mask / GIB:.1f} GiB (pass --allow-full-mask to try)"
        )
    for budget in args.budgets:
        for label, ba, semantics in (("basam-off", BA_OFF, "sam"), ("basam-default", BA_DEFAULT, "ba")):
            config = BaSamVisionConfig(**dims, **ba, attention_memory_budget_mb=budget)
            config._attn_implementation = "sdpa"
            variants[f"{label} budget={budget:g}"] = (BaSamVisionSdpaAttention(config, window_size=0), semantics)
    # The floor: the same SDPA call with no bias at all (a wrong result, for reference only).
    floor_config = BaSamVisionConfig(**dims, **BA_OFF)
    floor_config._attn_implementation = "sdpa"
    floor = BaSamVisionSdpaAttention(floor_config, window_size=0)
    floor.use_rel_pos = False
    variants["sdpa, no bias (floor; wrong result)"] = (floor, "none")
    for module, _ in variants.values():
        randomize_parameters(module, args.seed)  # same names (qkv, proj, rel_pos_h/w) -> same weights
        module.eval()
    return variants


def reference_output(module, hidden_states: torch.Tensor, semantics: str) -> torch.Tensor:
    """Float64, one head at a time, written from the formulas (not from the modules' forward)."""
    batch, height, width, channels = hidden_states.shape
    heads = module.num_attention_heads
    head_dim = channels // heads
    tokens = height * width
    x = hidden_states.double().reshape(batch, tokens, channels)
    qkv = x @ module.qkv.weight.double().T + module.qkv.bias.double()
    q, k, v = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    scale = head_dim**-0.5
    if semantics == "ba":
        train_tokens = (module.config.pretrain_image_size // module.config.patch_size) ** 2
        scale *= math.log(tokens) / math.log(train_tokens)
    rel_h = module.get_rel_pos(height, height, module.rel_pos_h.double())  # (H, H, head_dim): SAM's table lookup
    rel_w = module.get_rel_pos(width, width, module.rel_pos_w.double())
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1).double(), xs.reshape(-1).double()
    manhattan = (ys[:, None] - ys[None, :]).abs() + (xs[:, None] - xs[None, :]).abs()
    slopes = alibi_slopes(heads).double()
    out = torch.empty(batch, heads, tokens, head_dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            qh = q[b, h]
            grid_q = qh.reshape(height, width, head_dim)
            bias = (
                torch.einsum("hwc,hkc->hwk", grid_q, rel_h)[..., :, None]
                + torch.einsum("hwc,wkc->hwk", grid_q, rel_w)[..., None, :]
            )
            scores = (qh * scale) @ k[b, h].T + bias.reshape(tokens, tokens)
            if semantics == "ba":
                scores -= slopes[h] * manhattan
            out[b, h] = torch.softmax(scores, dim=-1) @ v[b, h]
    out = out.permute(0, 2, 1, 3).reshape(batch, height, width, channels)
    return out @ module.proj.weight.double().T + module.proj.bias.double()


def time_variant(module, hidden_states, repeats: int, warmup: int) -> dict:
    with torch.inference_mode():
        for _ in range(warmup):
            output = module(hidden_states)[0]
        times, extra_peak = [], None
        busy0, self0, wall0 = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        faults0 = self0.ru_minflt
        for _ in range(repeats):
            rss_before = read_proc_status("VmRSS")
            reset_ok = reset_peak_rss()
            start = time.perf_counter()
            output = module(hidden_states)[0]
            times.append(time.perf_counter() - start)
            if reset_ok and extra_peak is None:
                extra_peak = read_proc_status("VmHWM") - rss_before
        wall = time.perf_counter() - wall0
        self1, busy1 = resource.getrusage(resource.RUSAGE_SELF), cpu_busy_seconds()
    own_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    others = None if busy0 is None else max(0.0, (busy1 - busy0) - own_cpu) / wall
    return {
        "best_s": min(times),
        "cpu_s_per_call": round(own_cpu / repeats, 3),
        "sys_s_per_call": round((self1.ru_stime - self0.ru_stime) / repeats, 3),
        "minor_faults_per_call": (self1.ru_minflt - faults0) // repeats,
        "times_s": [round(t, 4) for t in times],
        "median_s": statistics.median(times),
        "extra_peak_rss_mib": None if extra_peak is None else extra_peak / MIB,
        "others_cpu_cores": round(others, 2) if others is not None else None,
        "output": output,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="input size in pixels (grid = size / 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant; the best is reported")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[256.0],
        help="BaSam attention_memory_budget_mb values to compare (default: the config default)",
    )
    parser.add_argument("--eager", action="store_true", help="also HF eager attention (slow)")
    parser.add_argument("--allow-full-mask", action="store_true", help="run HF variants even above 4 GiB of mask")
    parser.add_argument("--no-reference", action="store_true", help="skip the float64 reference")
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops of hf-sdpa and basam-default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    dims = dict(VIT_B)
    grid = args.size // dims["patch_size"]
    heads, tokens = dims["num_attention_heads"], grid * grid
    load_start = os.getloadavg()
    print(
        f"one global layer: input {args.size}, {heads} heads, N = {tokens}, head dim "
        f"{dims['hidden_size'] // heads}; {torch.get_num_threads()} threads; load average "
        f"{'/'.join(f'{x:.2f}' for x in load_start)}",
        flush=True,
    )
    variants = build_variants(args, dims)
    hidden_states = torch.randn(1, grid, grid, dims["hidden_size"], generator=torch.Generator().manual_seed(args.seed))

    results, outputs = {}, {}
    for name, (module, semantics) in variants.items():
        result = time_variant(module, hidden_states, args.repeats, args.warmup)
        outputs[name] = result.pop("output")
        if isinstance(module, BaSamVisionAttention) and module.use_rel_pos:
            rows = query_chunk_rows(module.config.attention_memory_budget_mb, 1, heads, tokens, 4)
            result["chunks"] = f"{-(-tokens // rows)} × ≤{min(rows, tokens)} rows"
        result["semantics"] = semantics
        results[name] = result
        print(
            f"  {name}: best {result['best_s']:.3f} s, extra peak {result['extra_peak_rss_mib'] or 0:.0f} MiB, "
            f"others' CPU {result['others_cpu_cores']} cores",
            flush=True,
        )

    hf_name = "hf-sdpa (full mask)"
    references = {}
    if not args.no_reference:
        for semantics in ("sam", "ba"):
            module = next(m for m, s in variants.values() if s == semantics)
            references[semantics] = reference_output(module, hidden_states, semantics).float()
    for name, result in results.items():
        semantics = result["semantics"]
        if semantics in references:
            result["max_abs_diff_vs_float64"] = float((outputs[name] - references[semantics]).abs().max().detach())
        if hf_name in outputs:
            result["max_abs_diff_vs_hf_sdpa"] = float((outputs[name] - outputs[hf_name]).abs().max())

    base = results.get(hf_name)
    print(
        "\n| variant | best s | × hf-sdpa | runs (s) | CPU s/call (sys) | page faults/call | extra peak RSS MiB | "
        "chunks | max abs Δ vs float64 formula | max abs Δ vs hf-sdpa | others' CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['best_s'] / base['best_s']:.3f}" if base else ""
        ref = r.get("max_abs_diff_vs_float64")
        hf = r.get("max_abs_diff_vs_hf_sdpa")
        print(
            f"| {name} | {r['best_s']:.3f} | {ratio} | {', '.join(f'{t:.3f}' for t in r['times_s'])} | "
            f"{r['cpu_s_per_call']:.2f} ({r['sys_s_per_call']:.2f}) | {r['minor_faults_per_call']} | "
            f"{r['extra_peak_rss_mib'] or 0:.0f} | {r.get('chunks', '1')} | "
            f"{'' if ref is None else f'{ref:.1e}'} | {'' if hf is None else f'{hf:.1e}'} | "
            f"{r['others_cpu_cores']} |"
        )
    load_end = os.getloadavg()
    print(
        f"\nload average at end {'/'.join(f'{x:.2f}' for x in load_end)}; 'others' CPU' = cores busy with other "
        "processes during the timed calls (0 = quiet machine)."
    )
    print("basam-default differs from hf-sdpa by design (distance bias); compare it with the float64 formula.")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in [n for n in variants if n.startswith(("hf-sdpa", "basam-default"))][:2]:
            module = variants[name][0]
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                module(hidden_states)
            print(f"\n### profile: {name}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps(
                {
                    "timestamp": timestamp(),
                    "size": args.size,
                    "heads": heads,
                    "tokens": tokens,
                    "threads": torch.get_num_threads(),
                    "repeats": args.repeats,
                    "loadavg_start": load_start,
                    "loadavg_end": load_end,
                    "machine": machine_description(),
                    "results": results,
                },
                indent=1,
            )
        )
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
