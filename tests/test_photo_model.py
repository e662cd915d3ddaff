"""The model `segment` and `demo` run without `--model` (issue 29): SAM ViT-B from the Hugging Face cache, loaded with
the zero-shot BA settings, else the embedded model with a one-line note; `--model default` is never replaced. The
cache is built here as huggingface_hub lays it out, holding a tiny random `SamModel` in transformers' format; nothing
touches the network (HF_HUB_OFFLINE=1, or a local server that never answers)."""

import argparse
import hashlib
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_, tiny_config_kwargs
from PIL import Image

from basam_hf.cli import main
from basam_hf.constants import ZERO_SHOT_BA
from basam_hf.references import DEFAULT_MODEL_NAME, PHOTO_MODEL_ID, cached_snapshot, choose_model, photo_model

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
BOX = ["--box", "5", "5", "60", "40"]
PHOTO_LINE = f"Model: {PHOTO_MODEL_ID} (BA: attention_scaling=log_length, bias_mode=none) at 64 px"


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Put the files of `folder` into `cache` as huggingface_hub stores a download of `repo_id`'s main revision:
    `models--OWNER--NAME/blobs/<hash>`, `snapshots/<commit>/<file>` linking to the blob, and `refs/main`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex commit hash
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def save_sam_checkpoint(folder: Path, model) -> Path:
    """`model` (a `SamModel`) saved as the Hub's facebook/sam-vit-base is: config, safetensors, and the image
    processor's `preprocessor_config.json` for the model's input size."""
    from transformers import SamImageProcessor

    size = model.config.vision_config.image_size
    model.save_pretrained(folder)
    SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> Path:
    from transformers import SamConfig, SamModel

    model = randomize_(SamModel(SamConfig(**tiny_config_kwargs())), seed=4)
    return save_sam_checkpoint(tmp_path_factory.mktemp("sam"), model)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in HF_HUB_CACHE (and HF_HOME), offline."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def cached_sam(empty_cache, tiny_sam) -> Path:
    """The cache holding the tiny SAM as facebook/sam-vit-base; returns its snapshot folder."""
    return add_to_hub_cache(empty_cache, PHOTO_MODEL_ID, tiny_sam)


@pytest.fixture
def image_path(tmp_path) -> str:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(path)
    return str(path)


def outputs(capsys) -> tuple[list[str], list[str]]:
    """The command's stdout lines and its stderr lines (transformers' weight-loading bars left out)."""
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip() and "Loading weights" not in line]
    return captured.out.splitlines(), err


def saved_mask(folder: Path) -> np.ndarray:
    return np.asarray(Image.open(folder / "mask_000.png")) > 0


# ---------------------------------------------------------------------------------------------------------------------
# The choice


def test_a_cached_snapshot_is_the_photo_model(cached_sam):
    assert cached_snapshot(PHOTO_MODEL_ID) == str(cached_sam)
    assert photo_model() == (str(cached_sam), PHOTO_MODEL_ID, ZERO_SHOT_BA, None)
    assert choose_model(None) == photo_model()


def test_a_snapshot_without_weights_is_not_the_photo_model(empty_cache, tiny_sam, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((tiny_sam / "config.json").read_bytes())
    add_to_hub_cache(empty_cache, PHOTO_MODEL_ID, partial)
    assert cached_snapshot(PHOTO_MODEL_ID) is None
    assert photo_model().model == DEFAULT_MODEL_NAME


def test_an_empty_cache_offline_falls_back_with_a_note(empty_cache):
    choice = photo_model()
    assert choice.model == choice.name == DEFAULT_MODEL_NAME and choice.ba_settings == {}
    assert "HF_HUB_OFFLINE" in choice.note and "hf download facebook/sam-vit-base" in choice.note
    assert "\n" not in choice.note


def test_default_and_other_names_are_never_replaced(cached_sam, tiny_sam):
    assert choose_model("default") == ("default", "default", {}, None)
    assert choose_model(str(tiny_sam)) == (str(tiny_sam), str(tiny_sam), {}, None)


def test_a_hub_that_never_answers_falls_back_after_the_check(empty_cache, monkeypatch):
    """Online (HF_HUB_OFFLINE unset) with a Hub that accepts connections and never replies: the bounded check gives
    up and the embedded model runs, with the note."""
    from huggingface_hub import constants

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        choice = photo_model(timeout=0.5)
    assert choice.model == DEFAULT_MODEL_NAME and "could not be reached" in choice.note


# ---------------------------------------------------------------------------------------------------------------------
# segment


def test_segment_without_model_runs_the_cached_sam_and_says_so(cached_sam, image_path, tmp_path, capsys):
    """At the checkpoint's own size the zero-shot settings compute what SAM computes: the mask equals transformers'
    `SamModel`'s on the same weights and box."""
    from transformers import SamModel

    from basam_hf.loading import load_processor
    from basam_hf.segment import segment_image

    assert main(["segment", image_path, *BOX, "--output", str(tmp_path / "o")]) == 0
    out, err = outputs(capsys)
    assert out[0] == PHOTO_LINE and err == []
    sam = SamModel.from_pretrained(cached_sam).eval()
    expected, _ = segment_image(
        sam, load_processor(str(cached_sam), sam), Image.open(image_path), boxes=[[5, 5, 60, 40]]
    )
    assert np.array_equal(saved_mask(tmp_path / "o"), expected[0])


def test_segment_with_an_empty_cache_runs_the_embedded_model_with_one_note(empty_cache, image_path, tmp_path, capsys):
    assert main(["segment", image_path, *BOX, "--output", str(tmp_path / "o")]) == 0
    out, err = outputs(capsys)
    assert len(err) == 1 and err[0].startswith(f"basam-hf segment: note: {PHOTO_MODEL_ID} is not in the")
    assert out[0].startswith("Model: default (embedded; BA: attention_scaling=log_length, bias_mode=distance")
    assert out[0].endswith(" at 1024 px")


def test_segment_with_model_default_never_uses_the_cache(cached_sam, image_path, tmp_path, capsys):
    assert main(["segment", image_path, "--model", "default", *BOX, "--output", str(tmp_path / "o")]) == 0
    out, err = outputs(capsys)
    assert out[0].startswith("Model: default (embedded; ") and err == []


def test_ba_options_go_over_the_zero_shot_settings(cached_sam, image_path, tmp_path, capsys):
    argv = [
        "segment",
        image_path,
        *BOX,
        "--attention-scaling",
        "none",
        "--size",
        "96",
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    out, _ = outputs(capsys)
    assert out[0] == f"Model: {PHOTO_MODEL_ID} (BA: attention_scaling=none, bias_mode=none) at 96 px"


# ---------------------------------------------------------------------------------------------------------------------
# demo


def test_demo_models_follow_the_same_rule(cached_sam, empty_cache):
    from basam_hf.app import DemoModels

    models = DemoModels(None)
    assert models.name == PHOTO_MODEL_ID and models.choice.note is None
    assert {name: models.settings[name] for name in ZERO_SHOT_BA} == ZERO_SHOT_BA
    shutil.rmtree(empty_cache / f"models--{PHOTO_MODEL_ID.replace('/', '--')}")  # emptied: the embedded model
    fallback = DemoModels(None)
    assert fallback.name == DEFAULT_MODEL_NAME and "HF_HUB_OFFLINE" in fallback.choice.note
    assert DemoModels("default").choice.note is None


@pytest.mark.parametrize("cached", [True, False])
def test_the_demo_command_reports_its_model(cached, empty_cache, tiny_sam, monkeypatch, capsys):
    """`basam-hf demo` without --model: the page gets the model of the rule (the page itself is tested in
    test_app.py; here it is not served)."""
    pytest.importorskip("gradio")
    from basam_hf import app

    if cached:
        add_to_hub_cache(empty_cache, PHOTO_MODEL_ID, tiny_sam)
    served = []

    class Page:
        def launch(self, **kwargs):
            served.append(kwargs)

    def page(**kwargs):
        served.append(kwargs["models"])
        return Page()

    monkeypatch.setattr(app, "build_demo", page)
    args = argparse.Namespace(
        command="demo", model=None, dtype=None, host="127.0.0.1", port=0, size=None, min_size=None, max_size=None,
        max_pixels=app.DEFAULT_MAX_PIXELS, max_file_size=app.DEFAULT_MAX_FILE_SIZE,
    )  # fmt: skip
    assert app.run_demo_command(args, ba_settings={}) == 0
    out, err = outputs(capsys)
    assert served[0].name == (PHOTO_MODEL_ID if cached else DEFAULT_MODEL_NAME)
    if cached:
        assert out[0] == PHOTO_LINE and err == []
    else:
        assert out[0].startswith("Model: default (embedded; ") and len(err) == 1 and "note:" in err[0]


# ---------------------------------------------------------------------------------------------------------------------
# SAM ViT-B dimensions


@pytest.mark.slow
def test_a_vit_b_checkpoint_loads_through_the_same_path(empty_cache, tmp_path):
    """A `SamModel` with the real ViT-B config (random weights with the spread of benchmarks/common.py, not
    downloaded) in the cache loads as the photo model: every weight as saved, the zero-shot settings, and at 1024 px
    the same image embeddings as transformers' `SamModel`."""
    from transformers import SamConfig, SamModel

    from basam_hf.loading import load_model_and_processor

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import randomize_parameters

    sam = SamModel(SamConfig()).eval()  # SamConfig's defaults are SAM ViT-B's
    randomize_parameters(sam, seed=0)
    add_to_hub_cache(empty_cache, PHOTO_MODEL_ID, save_sam_checkpoint(tmp_path / "vit-b", sam))
    choice = photo_model()
    assert choice.name == PHOTO_MODEL_ID
    model, processor, _ = load_model_and_processor(choice.model, ba_settings=choice.settings())
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.global_attn_indexes) == (768, 12, [2, 5, 8, 11])
    assert {name: getattr(vision, name) for name in ZERO_SHOT_BA} == ZERO_SHOT_BA
    assert processor.image_processor.size["longest_edge"] == 1024
    state = model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in sam.state_dict().items())
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sam.get_image_embeddings(pixels)
        del sam
        actual = model.get_image_embeddings(pixels)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The model line of every command that runs a model


@pytest.fixture(scope="module")
def command_inputs(tmp_path_factory) -> dict:
    from conftest import save_tiny_model

    from basam_hf.synthetic import save_synthetic_dataset

    root = tmp_path_factory.mktemp("inputs")
    save_synthetic_dataset(root / "data", 2, 64, seed=0)
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(photo)
    return {"model": save_tiny_model(root / "model", seed=1), "data": str(root / "data"), "photo": str(photo)}


@pytest.mark.parametrize(
    "argv, sizes",
    [
        (["segment", "{photo}", *BOX, "--size", "96"], "96"),
        (["evaluate", "--dataset", "{data}", "--sizes", "64", "96", "--max-samples", "1"], "64, 96"),
        (["compare", "--sizes", "64", "--samples", "1"], "64"),
        (["finetune", "--dataset", "{data}", "--max-steps", "1", "--batch-size", "1", "--log-with"], "64"),
    ],
)
def test_every_command_that_runs_a_model_names_it_first(argv, sizes, command_inputs, tmp_path, capsys):
    argv = [arg.format(**command_inputs) for arg in argv]
    options = ["--model", command_inputs["model"], "--bias-mode", "none", "--output", str(tmp_path / "out")]
    assert main(argv + options) == 0
    out, _ = outputs(capsys)
    assert (
        out[0] == f"Model: {command_inputs['model']} (BA: attention_scaling=log_length, bias_mode=none) at {sizes} px"
    )
