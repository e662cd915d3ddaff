"""Helpers shared by the benchmark scripts: model dimensions, seeded weights, memory arithmetic, machine description.

Linux only (reads /proc). Imports torch lazily where it can, so that the parent process of `bench_encoder.py` stays
small and its children's peak RSS is their own.
"""

import hashlib
import json
import os
import platform
import subprocess
import time
import zlib
from pathlib import Path

MIB = 2**20
GIB = 2**30

# SAM ViT-B image encoder (facebook/sam-vit-base).
VIT_B = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "global_attn_indexes": [2, 5, 8, 11],
    "window_size": 14,
    "image_size": 1024,
    "patch_size": 16,
    "mlp_dim": 3072,
    "output_channels": 256,
}
# Same structure, small enough for smoke tests (seconds per run).
TINY = {
    "hidden_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "global_attn_indexes": [1, 3],
    "window_size": 14,
    "image_size": 1024,
    "patch_size": 16,
    "mlp_dim": 384,
    "output_channels": 32,
}
BA_OFF = {"bias_mode": "none", "attention_scaling": "none"}
BA_DEFAULT = {"bias_mode": "distance", "attention_scaling": "log_length"}
WEIGHT_STD = 0.02
REPO_ROOT = Path(__file__).resolve().parent.parent


def seeded_normal(name: str, shape, seed: int, std: float = WEIGHT_STD):
    """A float32 normal tensor that depends only on `(seed, name, shape)`."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32) * std


def randomize_parameters(module, seed: int, std: float = WEIGHT_STD, shape_for=None, adapt=None) -> None:
    """Overwrite every parameter of `module` with values that depend only on `(seed, parameter name)`.

    SAM's vision `initializer_range` is 1e-10, which makes a freshly built encoder nearly constant; this gives a
    generic random network instead, identical in every model that shares the parameter names (SamModel and
    BaSamModel do). Biases are zero, 1-D weights (layer norms) one, everything else (linear/conv weights,
    rel-pos tables, position embeddings) normal with `std`.

    `shape_for(name, param)` may return the shape to draw at (e.g. the 1024-input shape of a position embedding)
    and `adapt(name, tensor, param)` then maps the drawn tensor to the parameter's shape.
    """
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:
                param.fill_(1.0)
            else:
                shape = shape_for(name, param) if shape_for else param.shape
                values = seeded_normal(name, shape, seed, std)
                if tuple(values.shape) != tuple(param.shape):
                    values = adapt(name, values, param)
                param.copy_(values)


def attention_matrix_bytes(image_size: int, dims: dict, element_size: int = 4, batch_size: int = 1) -> int:
    """Bytes of one `(batch, heads, N, N)` float tensor of a global-attention layer at `image_size`."""
    tokens = (image_size // dims["patch_size"]) ** 2
    return batch_size * dims["num_attention_heads"] * tokens * tokens * element_size


def read_proc_status(field: str) -> int | None:
    """A `kB` field of /proc/self/status (e.g. VmHWM, VmRSS, VmSize) in bytes, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def limit_address_space(max_bytes: int) -> None:
    """Cap this process's address space (`RLIMIT_AS`) at `max_bytes` (or the hard limit if lower): an oversized
    allocation then fails inside the process with an out-of-memory error instead of endangering the machine."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM and ru_maxrss) to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_busy_seconds() -> float | None:
    """CPU seconds spent non-idle by the whole machine since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is counted in user)
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# CPU flags that give native low-precision arithmetic (oneDNN uses them for bfloat16 / float16 matmuls and convolutions;
# without them torch falls back to much slower kernels).
LOW_PRECISION_FLAGS = (
    "avx512_bf16",
    "amx_bf16",
    "avx512_fp16",
    "amx_fp16",
    "avx_ne_convert",
    "avx512_vnni",
    "amx_tile",
)


def low_precision_cpu_flags() -> list[str]:
    """Which of [`LOW_PRECISION_FLAGS`] the CPU reports (Linux, /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in LOW_PRECISION_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def git_state() -> dict:
    def run(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    attention_files = ["src/basam_hf/modeling_basam.py", "src/basam_hf/bias.py", "src/basam_hf/chunked_attention.py"]
    digest = hashlib.sha256(b"".join((REPO_ROOT / f).read_bytes() for f in attention_files)).hexdigest()
    return {
        "commit": run("rev-parse", "HEAD"),
        # The measured code: others may be editing it, so record whether it differs from the commit.
        "attention_code_modified": bool(run("status", "--porcelain", *attention_files)),
        "attention_code_sha256": digest[:16],
    }


def machine_description() -> dict:
    import torch
    import transformers

    try:
        import basam_hf

        basam_version = basam_hf.__version__
    except ImportError:
        basam_version = None
    total = None
    try:
        with open("/proc/meminfo") as meminfo:
            total = int(meminfo.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "low_precision_cpu_flags": low_precision_cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "ram_total_gib": round(total / GIB, 2) if total else None,
        "ram_available_gib_at_start": round((mem_available_bytes() or 0) / GIB, 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "basam_hf": basam_version,
        "git": git_state(),
    }


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def write_report(report: dict, output: Path, render) -> None:
    """`report` (with the load average at its end) as JSON at `output`, and `render(report)`, its Markdown, beside it
    (`.md`) and printed."""
    report["loadavg_end"] = os.getloadavg()
    text = render(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    output.with_suffix(".md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nwrote {output} and {output.with_suffix('.md')}")
