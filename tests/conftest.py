"""Shared helpers: tiny random BA-SAM / SAM configurations that run in milliseconds on CPU."""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_browser import free_port  # the demo's browser helpers, shared with scripts/demo_screenshot.py
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download during tests
# An empty Hub cache of the suite's own: without --model, segment and demo run SAM ViT-B when the cache holds it, and
# a machine's own cache must not change what the tests run.
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="basam-hf-tests-hub-cache-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Vision grid 8x8 (64 px / patch 8), window 3 (so windows need padding), one windowed and one global layer.
TINY_VISION = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=64,
    patch_size=8,
    mlp_dim=64,
    output_channels=16,
    window_size=3,
    global_attn_indexes=[1],
    num_pos_feats=8,
)
TINY_PROMPT = dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
TINY_DECODER = dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16)

BA_OFF = dict(bias_mode="none", attention_scaling="none")


def tiny_config_kwargs(**vision_overrides) -> dict:
    """Keyword arguments of a tiny `SamConfig` / `BaSamConfig`; BA fields go in `vision_overrides`."""
    return dict(
        vision_config={**TINY_VISION, **vision_overrides},
        prompt_encoder_config=dict(TINY_PROMPT),
        mask_decoder_config=dict(TINY_DECODER),
    )


@torch.no_grad()
def randomize_(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Give every weight a random value: SAM's vision initializer_range is 1e-10, which makes outputs constant."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(("coefficient", "slopes")):
            continue  # keep BA parameters at their documented initial values
        param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.fixture
def sample_inputs():
    generator = torch.Generator().manual_seed(1)
    return dict(
        pixel_values=torch.randn(2, 3, 64, 64, generator=generator),
        input_points=torch.rand(2, 1, 2, 2, generator=generator) * 64,
        input_labels=torch.tensor([[[1, 0]], [[1, 1]]]),
    )


def save_tiny_model(path, seed: int = 0, **vision_overrides) -> str:
    """Save a randomized tiny BA-SAM with its processor to `path`; returns the path as a string."""
    from basam_hf import BaSamConfig, BaSamModel, save_pretrained_with_processor

    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**vision_overrides))), seed=seed)
    save_pretrained_with_processor(model, str(path))
    return str(path)


@pytest.fixture
def single_thread():
    """Tiny models on 2 shared cores: thread hand-offs cost more than the arithmetic (5x slower with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def accelerate_launch(num_processes: int = 2) -> tuple[list[str], dict]:
    """Command prefix and environment that start `num_processes` CPU processes with `accelerate launch`.

    `--multi_gpu` starts them with torchrun; without GPUs they run on CPU (gloo). (`--cpu` would start a single
    process unless MPI is set up.)"""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
    ]
    command += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]
    return command, {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def write_coco_instances(root, count: int = 3, size: int = 64) -> tuple[str, str]:
    """A COCO instances file (`annotations/instances.json`) and its images folder (`images/`) under `root`: `count`
    noise images with a brighter rectangle each, annotated as a polygon, plus one crowd region per image. Returns the
    file and the folder as strings."""
    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for index in range(count):
        left, top = 4 + 3 * index, 6 + 2 * index
        right, bottom = left + size // 2, top + size // 3
        pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        pixels[top:bottom, left:right] += 100
        Image.fromarray(pixels).save(root / "images" / f"{index:012d}.png")
        images.append({"id": index, "file_name": f"{index:012d}.png", "height": size, "width": size})
        polygon = [left, top, right, top, right, bottom, left, bottom]
        annotations.append({"id": 100 + index, "image_id": index, "iscrowd": 0, "segmentation": [polygon]})
        crowd = {"size": [size, size], "counts": [0, size * size]}
        annotations.append({"id": 200 + index, "image_id": index, "iscrowd": 1, "segmentation": crowd})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
    (root / "annotations" / "instances.json").write_text(json.dumps(coco))
    return str(root / "annotations" / "instances.json"), str(root / "images")
