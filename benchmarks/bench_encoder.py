"""Time and peak memory of the SAM image encoder: HF SamModel (sdpa, eager) vs BaSamModel (BA off, BA default).

Each measurement runs in its own subprocess, so its peak RSS (`ru_maxrss`) is its own, an out-of-memory or a crash
cannot take the others with it, and every child gets an address-space limit (`RLIMIT_AS`, default 16 GiB) and a
timeout. All variants share the same seeded random weights (SAM ViT-B dimensions by default) and the same input.

    python benchmarks/bench_encoder.py                      # 1024 and 2048, ViT-B, 3 repeats
    python benchmarks/bench_encoder.py --large              # + 4096
    python benchmarks/bench_encoder.py --tiny --sizes 256 512 --repeats 1   # smoke test, seconds
    python benchmarks/bench_encoder.py --sizes 1024 --variants basam-default --dtypes float32 bfloat16 --rounds 2
                                                            # low precision: each variant also in bfloat16

Writes `benchmarks/results/encoder-<timestamp>.json` (+ `.md`) and prints a Markdown table. See README.md.
"""

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BA_DEFAULT,
    BA_OFF,
    GIB,
    MIB,
    TINY,
    VIT_B,
    attention_matrix_bytes,
    cpu_busy_seconds,
    limit_address_space,
    machine_description,
    mem_available_bytes,
    randomize_parameters,
    read_proc_status,
    timestamp,
    write_report,
)

# kind: which model class; attn: attention implementation; native: HF SamModel built with image_size = input size
# (removes the patch-embedding size check; its global layers then build the full (heads, N, N) float mask).
VARIANTS = {
    "hf-sdpa": {"kind": "sam", "attn": "sdpa", "native": False},
    "hf-eager": {"kind": "sam", "attn": "eager", "native": False},
    "hf-sdpa-native": {"kind": "sam", "attn": "sdpa", "native": True},
    "hf-eager-native": {"kind": "sam", "attn": "eager", "native": True},
    "basam-off": {"kind": "basam", "attn": "sdpa", "ba": BA_OFF},
    "basam-default": {"kind": "basam", "attn": "sdpa", "ba": BA_DEFAULT},
}
REFERENCE = "hf-sdpa"
# `--dtypes`: a variant run in another dtype is named `<variant>@<dtype>` (e.g. `basam-default@bfloat16`): same
# weights (drawn in float32, then converted), same input (converted), compared with the float32 run of the same run.
DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}  # bytes per element
# How many (heads, N, N) float tensors a global layer of HF SAM holds at its peak (measured at 1024 with
# bench_attention.py: 1608 MiB extra for sdpa, 2328 MiB for eager, one tensor being 768 MiB). sdpa: the mask twice,
# because `rel_h[..., None] + rel_w[..., None, :]` comes out in the permuted layout of the einsum outputs, so the
# `.reshape(B, heads, N, N)` that follows copies it (the CPU flash kernel itself takes the mask without
# materializing the scores). eager: the scores, the bias and its copy / the softmax.
FULL_MATRICES = {"sdpa": 2, "eager": 3}
# Interpreter + torch + ViT-B weights + activations, besides the attention matrices (measured: ~1.6 GiB at 1024).
BASE_BYTES = 2 * GIB
TARGETS = {"default_1024": 1.05, "off_1024": 1.02, "rss_2048_vs_1024": 1.5}


def variant_spec(name: str) -> dict:
    """The VARIANTS entry of `name`, with its `dtype` (float32 unless named `<variant>@<dtype>`) and `base` name."""
    base, _, dtype = name.partition("@")
    return dict(VARIANTS[base], base=base, dtype=dtype or "float32")


def with_dtypes(variants: list[str], dtypes: list[str]) -> list[str]:
    """Each variant followed by its runs in the other dtypes (float32 is the plain name): `a, a@bfloat16, b, ...`, so
    the runs of one variant in the two dtypes are back to back (the same machine load)."""
    return [variant if dtype == "float32" else f"{variant}@{dtype}" for variant in variants for dtype in dtypes]


# --------------------------------------------------------------------------------------------------------------------
# Child: one measurement


def build_model(spec: dict):
    import torch
    import torch.nn.functional as F
    from transformers import SamConfig, SamModel

    from basam_hf import BaSamConfig, BaSamModel
    from basam_hf.pos_embed import resize_position_embeddings

    dims, variant = spec["dims"], variant_spec(spec["variant"])
    base_size = dims["image_size"]
    torch.manual_seed(spec["seed"])
    if variant["kind"] == "sam":
        vision = dict(dims, image_size=spec["size"] if variant["native"] else base_size)
        model = SamModel._from_config(SamConfig(vision_config=vision), attn_implementation=variant["attn"])
    else:
        vision = dict(dims, **variant["ba"])
        if spec.get("budget_mb"):
            vision["attention_memory_budget_mb"] = spec["budget_mb"]
        model = BaSamModel._from_config(BaSamConfig(vision_config=vision), attn_implementation=variant["attn"])
    model.eval()

    # Draw every tensor at its 1024-input shape, so the native variant gets the same weights as the others, adapted
    # the way BaSam adapts them at run time: position embedding resized bicubically, global rel-pos tables
    # interpolated linearly (what SamVisionAttention.get_rel_pos does per call).
    base_grid = base_size // dims["patch_size"]
    head_dim = dims["hidden_size"] // dims["num_attention_heads"]

    def shape_for(name, param):
        if name == "pos_embed":
            return (1, base_grid, base_grid, dims["hidden_size"])
        if name.endswith(("rel_pos_h", "rel_pos_w")) and param.shape[0] != 2 * dims["window_size"] - 1:
            return (2 * base_grid - 1, head_dim)
        return param.shape

    def adapt(name, values, param):
        if name == "pos_embed":
            return resize_position_embeddings(values, param.shape[1:3])
        resized = F.interpolate(values.T[None], size=param.shape[0], mode="linear")
        return resized[0].T

    randomize_parameters(model.vision_encoder, spec["seed"], shape_for=shape_for, adapt=adapt)
    return model.to(getattr(torch, variant["dtype"]))


def classify_error(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}".strip()
    lowered = message.lower()
    if isinstance(error, MemoryError) or "can't allocate memory" in lowered or "out of memory" in lowered:
        message = "out of memory: " + message
    return message[:600]


def run_child(spec: dict) -> dict:
    """Build the model, run 1 warm-up + `repeats` timed calls of `get_image_embeddings`, report times and RSS."""
    limit_address_space(spec["max_bytes"])
    result = {"status": "failed", "phase": "import", "loadavg_start": os.getloadavg()}
    try:
        import torch

        torch.set_num_threads(spec["threads"])
        result["threads"] = torch.get_num_threads()
        result["phase"] = "build"
        model = build_model(spec)
        generator = torch.Generator().manual_seed(spec["seed"] + 1)
        pixel_values = torch.randn(1, 3, spec["size"], spec["size"], generator=generator).to(model.dtype)
        result["dtype"] = str(model.dtype).removeprefix("torch.")
        result["rss_after_build_mib"] = round(read_proc_status("VmRSS") / MIB, 1)
        result["peak_rss_build_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if variant_spec(spec["variant"])["kind"] == "basam":
            from basam_hf.modeling_basam import query_chunk_rows

            grid = spec["size"] // spec["dims"]["patch_size"]
            budget = model.config.vision_config.attention_memory_budget_mb
            element_size = pixel_values.element_size()
            rows = query_chunk_rows(budget, 1, spec["dims"]["num_attention_heads"], grid * grid, element_size)
            result["global_attention"] = {
                "budget_mb": budget,
                "chunk_rows": min(rows, grid * grid),
                "chunks": -(-grid * grid // rows),
            }
        times, cpu_times, sys_times, faults = [], [], [], []
        with torch.inference_mode():
            for run in range(spec["warmup"] + spec["repeats"]):
                result["phase"] = "warm-up" if run < spec["warmup"] else f"run {run - spec['warmup'] + 1}"
                usage = resource.getrusage(resource.RUSAGE_SELF)
                start = time.perf_counter()
                embeddings = model.get_image_embeddings(pixel_values)
                elapsed = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_SELF)
                if run >= spec["warmup"]:
                    times.append(elapsed)
                    # CPU time is less sensitive than wall time to other processes (except spin-waiting threads);
                    # system time and minor page faults show the cost of touching freshly mapped memory.
                    sys_times.append(after.ru_stime - usage.ru_stime)
                    cpu_times.append(after.ru_utime - usage.ru_utime + sys_times[-1])
                    faults.append(after.ru_minflt - usage.ru_minflt)
                else:
                    result["warmup_s"] = round(elapsed, 3)
        result["phase"] = "done"
        result.update(
            status="ok",
            times_s=[round(t, 3) for t in times],
            median_s=round(statistics.median(times), 3),
            cpu_s_per_run=round(statistics.median(cpu_times), 3),
            sys_s_per_run=round(statistics.median(sys_times), 3),
            minor_faults_per_run=int(statistics.median(faults)),
            embedding_shape=list(embeddings.shape),
        )
        if spec.get("embedding_path"):
            torch.save(embeddings.float(), spec["embedding_path"])  # float32 copy: compared across dtypes
    except BaseException as error:  # noqa: BLE001 - MemoryError, RuntimeError (allocator), ValueError (size check)
        result["reason"] = classify_error(error)
        result["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["loadavg_end"] = os.getloadavg()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Parent: plan, spawn, aggregate, report


def default_timeout(size: int, repeats: int, warmup: int) -> float:
    """Generous per-child timeout: an estimate of one ViT-B run at `size` on 2 loaded cores, x3, + build time."""
    scale = size / 1024
    per_run = 25 * scale**2 + 15 * scale**4  # windowed layers grow like N, global attention like N**2
    return 300 + 3 * per_run * (warmup + repeats)


def native_plan(variant: str, size: int, dims: dict, max_bytes: int, margin_bytes: int) -> str | None:
    """None if the native HF variant may run at `size`, else the reason it is skipped (from the memory arithmetic)."""
    attn = variant_spec(variant)["attn"]
    grid = size // dims["patch_size"]
    tokens = grid * grid
    matrix = attention_matrix_bytes(size, dims, DTYPES[variant_spec(variant)["dtype"]])
    need = FULL_MATRICES[attn] * matrix + BASE_BYTES
    available = mem_available_bytes()
    what = (
        f"the ({dims['num_attention_heads']}, {tokens}, {tokens}) float mask ({matrix / GIB:.1f} GiB, held twice: "
        "HF's reshape copies the non-contiguous mask)"
    )
    if attn == "eager":
        what = f"{FULL_MATRICES[attn]} ({dims['num_attention_heads']}, {tokens}, {tokens}) float tensors (scores, bias, softmax)"
    if need > max_bytes:
        return (
            f"would need {FULL_MATRICES[attn] * matrix / GIB:.1f} GiB for {what} "
            f"(~{need / GIB:.1f} GiB in all) > the {max_bytes / GIB:.0f} GiB per-process limit"
        )
    if available is not None and need > available - margin_bytes:
        return (
            f"would need {FULL_MATRICES[attn] * matrix / GIB:.1f} GiB for {what} "
            f"(~{need / GIB:.1f} GiB in all); only {available / GIB:.1f} GiB available now, keeping "
            f"{margin_bytes / GIB:.0f} GiB for other users"
        )
    return None


def spawn(spec: dict, workdir: Path, timeout: float, script: str = __file__) -> dict:
    """Run one measurement in a child process (`script --child SPEC`, which writes `spec["result_path"]`); always
    returns a result (ok, failed, timeout or killed)."""
    tag = f"{spec['variant']}-{spec['size']}-r{spec['round']}"
    spec_path, result_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.result.json"
    spec = dict(spec, result_path=str(result_path))
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    usage_before, busy_before, start = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_busy_seconds(), time.time()
    with open(workdir / f"{tag}.log", "w+") as log:
        process = subprocess.Popen(
            [sys.executable, script, "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the child's own process group (new session)
            returncode = process.wait()
            timed_out = True
        log.seek(0)
        log_tail = log.read()[-2000:]
    wall = time.time() - start
    usage_after, busy_after = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_busy_seconds()
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        result = {"status": "failed", "phase": "unknown"}
        if timed_out:
            result["reason"] = f"timeout after {timeout:.0f} s (killed)"
        elif returncode == -signal.SIGKILL:
            result["reason"] = "killed by SIGKILL without a result: most likely the kernel OOM killer"
        elif returncode < 0:
            result["reason"] = f"killed by signal {signal.Signals(-returncode).name}"
        else:
            result["reason"] = f"exited with code {returncode} without a result"
        result["log_tail"] = log_tail.strip().splitlines()[-8:]
    result["wall_s"] = round(wall, 1)
    result["returncode"] = returncode
    child_cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    if busy_before is not None and busy_after is not None and wall > 0:
        # CPU used by everything else on the machine while this child ran, in cores (0 = quiet machine).
        result["others_cpu_cores"] = round(max(0.0, (busy_after - busy_before) - child_cpu) / wall, 2)
    result["child_cpu_cores"] = round(child_cpu / wall, 2) if wall > 0 else None
    return result


def aggregate(results: list[dict]) -> dict:
    """Combine the rounds of one (size, variant): all timed runs pooled, the largest peak RSS."""
    ok = [r for r in results if r["status"] == "ok"]
    if len(ok) < len(results) or not ok:
        failed = next(r for r in results if r["status"] != "ok")
        reason = failed.get("reason")
        if failed.get("phase") not in (None, "unknown", "done"):
            reason = f"{reason} [during {failed['phase']}]"
        return {"status": failed["status"], "reason": reason, "rounds": results}
    times = [t for r in ok for t in r["times_s"]]
    others = [r["others_cpu_cores"] for r in ok if r.get("others_cpu_cores") is not None]
    summary = {
        "status": "ok",
        "median_s": round(statistics.median(times), 3),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
        "peak_rss_build_mib": max(r["peak_rss_build_mib"] for r in ok),
        "cpu_s_per_run": round(statistics.median(r["cpu_s_per_run"] for r in ok), 3),
        "sys_s_per_run": round(statistics.median(r["sys_s_per_run"] for r in ok), 3),
        "minor_faults_per_run": int(statistics.median(r["minor_faults_per_run"] for r in ok)),
        "others_cpu_cores": round(statistics.mean(others), 2) if others else None,
        "rounds": results,
    }
    if "global_attention" in ok[0]:
        summary["global_attention"] = ok[0]["global_attention"]
    return summary


def reference_for(size: int, variant: str, table: dict, base_size: int) -> tuple[str | None, str]:
    """(key of the reference measurement, note) for the ratios of `variant` at `size`."""
    if table.get((size, REFERENCE), {}).get("status") == "ok":
        return REFERENCE, f"hf-sdpa@{size}"
    if table.get((size, "hf-sdpa-native"), {}).get("status") == "ok":
        return "hf-sdpa-native", f"hf-sdpa-native@{size}"
    own = variant if not variant_spec(variant).get("native") else REFERENCE
    if size != base_size and table.get((base_size, own), {}).get("status") == "ok":
        return f"{base_size}:{own}", f"{own}@{base_size}"
    return None, "none"


def compare_embeddings(paths: dict, size: int, variant: str, ref_variant: str) -> float | None:
    import torch

    a, b = paths.get((size, variant)), paths.get((size, ref_variant))
    if not a or not b or not Path(a).exists() or not Path(b).exists():
        return None
    x, y = torch.load(a), torch.load(b)
    return float((x - y).abs().max()) if x.shape == y.shape else None


def dtype_comparison(table: dict, paths: dict, size: int, variant: str) -> dict:
    """A low-precision run against the float32 run of the same variant, size and benchmark run: `dtype`, time, CPU
    and peak-RSS ratios, and how far its image embeddings are from float32's (max abs difference, and relative to
    the largest float32 value)."""
    spec = variant_spec(variant)
    entry, reference = table[(size, variant)], table.get((size, spec["base"]), {})
    row = {"dtype": spec["dtype"], "float32_ref": f"{spec['base']}@{size}"}
    if reference.get("status") != "ok":
        return row | {"float32_ref": f"{spec['base']}@{size}: not measured"}
    row["time_vs_float32"] = round(entry["median_s"] / reference["median_s"], 3)
    row["cpu_vs_float32"] = round(entry["cpu_s_per_run"] / reference["cpu_s_per_run"], 3)
    row["rss_vs_float32"] = round(entry["peak_rss_mib"] / reference["peak_rss_mib"], 3)
    row["speedup_vs_float32"] = round(reference["median_s"] / entry["median_s"], 3)
    a, b = paths.get((size, variant)), paths.get((size, spec["base"]))
    if a and b and Path(a).exists() and Path(b).exists():
        import torch

        x, y = torch.load(a), torch.load(b)
        if x.shape == y.shape:
            row["max_abs_diff_vs_float32"] = float((x - y).abs().max())
            row["rel_diff_vs_float32"] = round(row["max_abs_diff_vs_float32"] / float(y.abs().max()), 5)
    return row


def dtype_markdown(rows: list[dict]) -> list[str]:
    """The low-precision rows as a table of ratios to float32 (empty without such rows)."""
    rows = [row for row in rows if row.get("dtype") and row["status"] == "ok"]
    if not rows:
        return []
    lines = [
        "",
        "Low precision against float32 (same variant, size and run):",
        "",
        "| input | variant | dtype | median s | time × float32 | speed-up | CPU s/run × float32 | peak RSS × float32 "
        "| max abs Δ vs float32 (relative) | others' CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = row.get("max_abs_diff_vs_float32")
        lines.append(
            f"| {row['size']} | {variant_spec(row['variant'])['base']} | {row['dtype']} | {row['median_s']:.2f} | "
            f"{fmt_ratio(row.get('time_vs_float32'))} | {fmt_ratio(row.get('speedup_vs_float32'))} | "
            f"{fmt_ratio(row.get('cpu_vs_float32'))} | {fmt_ratio(row.get('rss_vs_float32'))} | "
            + ("" if diff is None else f"{diff:.2e} ({row['rel_diff_vs_float32']:.1e})")
            + f" | {'' if row.get('others_cpu_cores') is None else format(row['others_cpu_cores'], '.2f')} |"
        )
    return lines


def markdown(report: dict) -> str:
    lines = [
        (
            f"Encoder benchmark {report['timestamp']} — model {report['config']['model']}, "
            f"{report['config']['threads']} threads, {report['config']['repeats']} timed runs after "
            f"{report['config']['warmup']} warm-up per child, {report['config']['rounds']} round(s); "
            f"{report['machine']['cpu_model']}, {report['machine']['usable_cpus']} cores, "
            f"{report['machine']['ram_total_gib']} GiB RAM; torch {report['machine']['torch']}, "
            f"transformers {report['machine']['transformers']}."
        ),
        (
            f"Load average (1/5/15 min) at start {fmt_load(report['loadavg_start'])}, at end "
            f"{fmt_load(report['loadavg_end'])} (includes this benchmark's own child)."
        ),
        "",
        (
            "| input | variant | status | median s (min–max) | peak RSS MiB | time × ref | RSS × ref | ref | "
            "RSS × own 1024 | max abs Δ vs ref output | CPU s/run (sys) | others' CPU (cores) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if row["status"] != "ok":
            reason = (row.get("reason") or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {row['size']} | {row['variant']} | {row['status']}: {reason} | | | | | | | | | |")
            continue
        lines.append(
            "| {size} | {variant} | ok | {median_s:.2f} ({min_s:.2f}–{max_s:.2f}) | {peak_rss_mib:.0f} | {t} | {m} | "
            "{reference} | {own} | {diff} | {cpu_s_per_run:.1f} ({sys_s_per_run:.1f}) | {others} |".format(
                **row,
                t=fmt_ratio(row.get("time_ratio")),
                m=fmt_ratio(row.get("rss_ratio")),
                reference=row.get("ref", ""),
                own=fmt_ratio(row.get("rss_vs_own_base")),
                diff="" if row.get("max_abs_diff_vs_ref") is None else f"{row['max_abs_diff_vs_ref']:.2e}",
                others="" if row.get("others_cpu_cores") is None else f"{row['others_cpu_cores']:.2f}",
            )
        )
    lines += dtype_markdown(report["rows"])
    if report["notes"]:
        lines += [""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "Targets:"] + [f"- {t['target']}: **{t['result']}** ({t['detail']})" for t in report["targets"]]
    return "\n".join(lines)


def fmt_ratio(value) -> str:
    return "" if value is None else f"{value:.3f}"


def fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def check_targets(table: dict, sizes: list[int], base: int) -> list[dict]:
    def get(size, variant):
        return table.get((size, variant), {})

    checks = []
    ref = get(base, REFERENCE)
    for variant, bound, label in (
        ("basam-default", TARGETS["default_1024"], "default"),
        ("basam-off", TARGETS["off_1024"], "BA-off"),
    ):
        row = get(base, variant)
        for metric, key in (("time", "median_s"), ("peak RSS", "peak_rss_mib")):
            target = f"{base}: BaSam {label} {metric} ≤ {bound}× HF SAM sdpa"
            if row.get("status") != "ok" or ref.get("status") != "ok":
                checks.append({"target": target, "result": "not measured", "detail": "missing measurement"})
                continue
            ratio = row[key] / ref[key]
            checks.append(
                {
                    "target": target,
                    "result": "PASS" if ratio <= bound else "FAIL",
                    "detail": f"{ratio:.3f}×: {row[key]} vs {ref[key]}",
                }
            )
    for size in (s for s in sizes if s > base):
        for variant in ("basam-off", "basam-default"):
            row, own = get(size, variant), get(base, variant)
            if size == 2 * base:
                target = f"{size}: {variant} peak RSS ≤ {TARGETS['rss_2048_vs_1024']}× its {base} peak"
                if row.get("status") == "ok" and own.get("status") == "ok":
                    ratio = row["peak_rss_mib"] / own["peak_rss_mib"]
                    checks.append(
                        {
                            "target": target,
                            "result": "PASS" if ratio <= TARGETS["rss_2048_vs_1024"] else "FAIL",
                            "detail": f"{ratio:.3f}×: {row['peak_rss_mib']} vs {own['peak_rss_mib']} MiB",
                        }
                    )
                else:
                    checks.append(
                        {
                            "target": target,
                            "result": "FAIL" if row.get("status") not in (None, "ok") else "not measured",
                            "detail": row.get("reason") or "missing measurement",
                        }
                    )
            else:
                target = f"{size}: {variant} completes within the per-process memory limit"
                checks.append(
                    {
                        "target": target,
                        "result": "PASS" if row.get("status") == "ok" else ("not measured" if not row else "FAIL"),
                        "detail": f"peak RSS {row['peak_rss_mib']:.0f} MiB, median {row['median_s']} s"
                        if row.get("status") == "ok"
                        else (row.get("reason") or "missing measurement"),
                    }
                )
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="input sizes (multiples of 16)")
    parser.add_argument("--large", action="store_true", help="also 4096")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=list(DTYPES),
        default=["float32"],
        help="run every variant in each of these dtypes (default: float32); the others are reported as ratios to "
        "float32 of the same run, which is then always included",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per child (median reported); >= 1")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="at sizes <= the pretraining size (where the timing targets are), repeat the whole "
        "variant cycle this many times, alternating the order, to average out load drift; larger "
        "sizes (memory targets, long runs) run one round",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tiny", action="store_true", help="a tiny encoder of the same structure (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="override BaSam's attention_memory_budget_mb (default: the config default, 256)",
    )
    parser.add_argument("--max-gib", type=float, default=16.0, help="address-space limit of each child (RLIMIT_AS)")
    parser.add_argument(
        "--margin-gib",
        type=float,
        default=4.0,
        help="memory to leave to others when deciding whether a native HF variant may run",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child (default: scales with size)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        spec = json.loads(args.child.read_text())
        result = run_child(spec)
        Path(spec["result_path"]).write_text(json.dumps(result))
        return 0

    sizes = sorted(set(args.sizes + ([4096] if args.large else [])))
    dims = TINY if args.tiny else VIT_B
    base = dims["image_size"]
    for size in sizes:
        if size % dims["patch_size"]:
            parser.error(f"size {size} is not a multiple of the patch size {dims['patch_size']}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    dtypes = ["float32"] + [dtype for dtype in dict.fromkeys(args.dtypes) if dtype != "float32"]
    variants = with_dtypes(args.variants, dtypes)
    stamp = timestamp()
    output = args.output or Path(__file__).resolve().parent / "results" / f"encoder-{stamp}.json"
    max_bytes, margin = int(args.max_gib * GIB), int(args.margin_gib * GIB)
    report = {
        "timestamp": stamp,
        "config": {
            "model": "tiny" if args.tiny else "sam-vit-b (random weights)",
            "dims": dims,
            "weights": "seeded normal std 0.02 per parameter name (biases 0, norms 1), same in every variant",
            "sizes": sizes,
            "variants": variants,
            "dtypes": dtypes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "threads": args.threads,
            "seed": args.seed,
            "budget_mb": args.budget_mb,
            "max_gib_per_child": args.max_gib,
            "timed_call": "model.get_image_embeddings(pixel_values) under torch.inference_mode(), batch 1, weights "
            "and input in the variant's dtype (float32 unless named <variant>@<dtype>)",
            "peak_rss": "ru_maxrss of the child (whole process: interpreter, torch, model, inference)",
        },
        "machine": machine_description(),
        "loadavg_start": os.getloadavg(),
    }
    print(f"load average at start: {fmt_load(report['loadavg_start'])}", flush=True)

    results: dict[tuple[int, str], list[dict]] = {}
    skipped: dict[tuple[int, str], dict] = {}
    embedding_paths: dict[tuple[int, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="basam-bench-") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            timeout = args.timeout or default_timeout(size, args.repeats, args.warmup)
            for round_index in range(args.rounds if size <= base else 1):
                order = variants if round_index % 2 == 0 else list(reversed(variants))
                for variant in order:
                    key = (size, variant)
                    if variant_spec(variant).get("native"):
                        if size == base:
                            continue  # identical to the non-native variant at the configured size
                        reason = native_plan(variant, size, dims, max_bytes, margin)
                        if reason:
                            skipped[key] = {"status": "skipped", "reason": reason}
                            print(f"[{size} {variant}] {reason}", flush=True)
                            continue
                    embedding_path = workdir / f"{variant}-{size}.pt"
                    spec = {
                        "variant": variant,
                        "size": size,
                        "dims": dims,
                        "seed": args.seed,
                        "repeats": args.repeats,
                        "warmup": args.warmup,
                        "threads": args.threads,
                        "max_bytes": max_bytes,
                        "budget_mb": args.budget_mb,
                        "round": round_index,
                        "embedding_path": str(embedding_path) if round_index == 0 else None,
                    }
                    print(
                        f"[{size} {variant} round {round_index + 1}] running (timeout {timeout:.0f} s) ...",
                        end=" ",
                        flush=True,
                    )
                    result = spawn(spec, workdir, timeout)
                    results.setdefault(key, []).append(result)
                    if round_index == 0 and result["status"] == "ok":
                        embedding_paths[key] = str(embedding_path)
                    if result["status"] == "ok":
                        print(
                            f"median {result['median_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                            f"others' CPU {result.get('others_cpu_cores')} cores",
                            flush=True,
                        )
                    else:
                        print(f"{result['status']}: {result.get('reason')}", flush=True)

        table = {key: aggregate(value) for key, value in results.items()}
        table.update(skipped)
        rows, notes = [], []
        for size in sizes:
            ref_key, ref_note = reference_for(size, "basam-off", table, base)
            if size != base and table.get((size, REFERENCE), {}).get("status") != "ok":
                hf = table.get((size, REFERENCE), {})
                notes.append(
                    f"{size}: HF SAM sdpa did not run ({hf.get('reason', 'not measured')}); ratios at {size} are "
                    + (
                        f"against hf-sdpa-native (HF SamModel built with image_size={size})."
                        if ref_key == "hf-sdpa-native"
                        else f"against each variant's own {base} result (HF variants: against hf-sdpa@{base})."
                    )
                )
            for variant in variants:
                entry = table.get((size, variant))
                if entry is None:
                    continue
                row = {"size": size, "variant": variant, **{k: v for k, v in entry.items() if k != "rounds"}}
                if entry["status"] == "ok":
                    ref_key, ref_note = reference_for(size, variant, table, base)
                    if ref_key is not None:
                        ref = table[(base, ref_key.split(":", 1)[1])] if ":" in ref_key else table[(size, ref_key)]
                        row["ref"] = ref_note
                        row["time_ratio"] = round(entry["median_s"] / ref["median_s"], 3)
                        row["rss_ratio"] = round(entry["peak_rss_mib"] / ref["peak_rss_mib"], 3)
                        if ":" not in ref_key:
                            row["max_abs_diff_vs_ref"] = compare_embeddings(embedding_paths, size, variant, ref_key)
                    spec = variant_spec(variant)
                    own_name = variant.replace(spec["base"], spec["base"].removesuffix("-native"), 1)
                    own = table.get((base, own_name), {})
                    if size != base and own.get("status") == "ok":
                        row["rss_vs_own_base"] = round(entry["peak_rss_mib"] / own["peak_rss_mib"], 3)
                    if spec["dtype"] != "float32":
                        row.update(dtype_comparison(table, embedding_paths, size, variant))
                rows.append(row)
        report["rows"] = rows
        report["notes"] = notes + [
            (
                "max abs Δ compares the image embeddings with the reference's; BaSam default is expected to differ "
                "(it adds the distance bias), BA-off and eager should agree to float rounding."
            ),
            (
                "CPU s/run = user + system CPU seconds of the child per timed run (all threads; system time is mostly "
                "page faults on freshly mapped memory): less sensitive to other processes than wall time."
            ),
            (
                "others' CPU = average number of cores busy with other processes while the child ran "
                "(from /proc/stat minus the child's CPU time); > 0 means the timings were taken on a loaded machine."
            ),
        ]
        if len(dtypes) > 1:
            machine = report["machine"]
            report["notes"].append(
                f"Low precision ({', '.join(dtypes[1:])}): weights drawn in float32 and converted, input converted; "
                "time × float32 is against the float32 run of the same variant in this run (speed-up = its "
                "inverse); max abs Δ compares the image embeddings with float32's. Whether bfloat16 / float16 is "
                "fast depends on the CPU: torch's CPU capability here is "
                f"{machine.get('cpu_capability')}, low-precision CPU flags: "
                f"{', '.join(machine.get('low_precision_cpu_flags') or []) or 'none'}."
            )
        report["targets"] = check_targets(table, sizes, base)
        report["measurements"] = {f"{size}:{variant}": entry for (size, variant), entry in table.items()}
    write_report(report, output, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
