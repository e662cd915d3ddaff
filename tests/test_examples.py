"""The scripts in examples/ run end to end, offline, on tiny local models and data, so that they never rot.

Every Hub id of the examples is swapped for a local folder, through a flag or a `BASAM_EXAMPLE_*` variable (both ways
are exercised); a push goes to a fake `HfApi`. Scripts run as subprocesses (`sys.executable`, `HF_HUB_OFFLINE=1`)
where that is cheap, in-process where the Hub API must be faked. Their outputs are checked against the package's own
functions, and every command a docstring shows is parsed by the script's argument parser.
"""

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import accelerate_launch, randomize_, save_tiny_model, tiny_config_kwargs
from PIL import Image
from test_hub import FakeHfApi
from transformers import SamConfig, SamModel

import basam_hf.hub
from basam_hf.evaluation import evaluate
from basam_hf.hub import DEFAULT_MODEL_DIR, files_to_upload
from basam_hf.loading import load_model, load_processor
from basam_hf.segment import generate_masks, overlay_masks, segment_image
from basam_hf.synthetic import make_synthetic_dataset, render_sample, save_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))
VARIABLES = ("BASAM_EXAMPLE_MODEL", "BASAM_EXAMPLE_SAM", "BASAM_EXAMPLE_DATASET", "BASAM_EXAMPLE_REPO_ID")
# What a pushed folder needs so that others can load it with trust_remote_code=True.
PUSHED = {"model.safetensors", "config.json", "configuration_basam.py", "modeling_basam.py", "processor_config.json"}
SYNTHETIC_SIZE = 80  # the examples' synthetic scene: not the tiny model's 64 px, so resizing is exercised
EMBEDDED_MISSING = "embedded default BA-SAM model is not in this installation"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """In-process runs: no network, and no BASAM_EXAMPLE_* setting of the calling shell leaks into a test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random BA-SAM folder (weights, config with auto_map, code files, processor): the stand-in for a Hub
    BA-SAM model and for `default`."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-basam", seed=4)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> str:
    """A tiny random plain `SamModel` folder (no processor): the stand-in for facebook/sam-vit-base."""
    folder = tmp_path_factory.mktemp("models") / "tiny-sam"
    randomize_(SamModel(SamConfig(**tiny_config_kwargs())), seed=5).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> str:
    """A `save_to_disk` folder of 3 synthetic 64 px scenes (one split)."""
    folder = tmp_path_factory.mktemp("data") / "synthetic"
    save_synthetic_dataset(folder, 3, 64, seed=3)
    return str(folder)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> str:
    """A `save_to_disk` DatasetDict with `train` (4 scenes) and `validation` (2 scenes) splits, 64 px."""
    folder = tmp_path_factory.mktemp("data") / "synthetic-splits"
    splits = {"train": make_synthetic_dataset(4, 64, seed=5), "validation": make_synthetic_dataset(2, 64, seed=6)}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def load_example(name: str, monkeypatch):
    """Import an example as a module (for `main(argv)` in-process); `_offline` is found next to it, as when run."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_env(tmp_path: Path, **variables: str) -> dict:
    """The environment of a subprocess: offline, one thread, remote-code modules in `tmp_path`, only the given
    BASAM_EXAMPLE_* variables."""
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(tmp_path / "modules"), **variables)
    return env


def run_example(name: str, args: list[str], env: dict, cwd: Path, launcher: list[str] | None = None) -> str:
    """Run `examples/name` with `args` (with `launcher` in front of the script, default `sys.executable`) and return
    its standard output; a non-zero exit fails the test with the end of its standard error."""
    command = (launcher or [sys.executable]) + [str(EXAMPLES / name), *args]
    completed = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def printed_number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match[1])


# ---------------------------------------------------------------------------------------------------------------------
# Every example: structure, documented commands, a test that runs it


def documented_commands(name: str) -> list[list[str]]:
    """The arguments of each command in the script's docstring that runs it (`python examples/NAME ...` or
    `accelerate launch ... examples/NAME ...`, continued with backslashes)."""
    docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text(encoding="utf-8")))
    commands = []
    for line in docstring.replace("\\\n", " ").splitlines():
        if not line.strip().startswith(("python ", "accelerate launch ")):
            continue
        words = shlex.split(line, comments=True)  # as a shell reads it
        if f"examples/{name}" in words:
            commands.append(words[words.index(f"examples/{name}") + 1 :])
    return commands


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_example_is_a_documented_runnable_script_and_is_tested(name, monkeypatch):
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "main" in functions and 'if __name__ == "__main__":' in source
    commands = documented_commands(name)
    assert commands, f"the docstring of {name} shows no command that runs it"
    module = load_example(name, monkeypatch)
    parse = module.build_parser().parse_args if hasattr(module, "build_parser") else module.parse_args
    for arguments in commands:
        parse(arguments)  # a documented option that no longer exists exits with status 2
    tests = [path for path in (REPO / "tests").glob("test_*.py") if f"examples/{name}" in path.read_text()]
    tests += [path for path in (REPO / "tests").glob("test_*.py") if f'"{name}"' in path.read_text()]
    assert tests, f"no test runs examples/{name}"


def test_sources_come_from_the_flag_then_the_variable_then_the_hub(monkeypatch, tmp_path):
    offline = load_example("_offline.py", monkeypatch)
    assert offline.default_source("model") == "default" and offline.default_source("sam") == "facebook/sam-vit-base"
    monkeypatch.setenv("BASAM_EXAMPLE_SAM", str(tmp_path))
    monkeypatch.setenv("BASAM_EXAMPLE_DATASET", "")  # empty: not set
    assert offline.default_source("sam") == str(tmp_path) and offline.default_source("dataset") == "nobg/DUTS"
    convert = load_example("convert_sam_vit_base.py", monkeypatch)
    assert convert.build_parser().parse_args([]).sam == str(tmp_path)
    assert convert.build_parser().parse_args(["--sam", "other/sam"]).sam == "other/sam"
    assert offline.model_path(str(tmp_path)) == str(tmp_path)
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        assert offline.model_path("default") == str(DEFAULT_MODEL_DIR)
    else:
        with pytest.raises(FileNotFoundError, match=EMBEDDED_MISSING):
            offline.model_path("default")


# ---------------------------------------------------------------------------------------------------------------------
# 1. load_from_hub.py


def test_load_from_hub_segments_the_box_of_the_synthetic_scene(tiny_model, tmp_path):
    # The model comes from the environment variable alone (no --model).
    env = example_env(tmp_path, BASAM_EXAMPLE_MODEL=tiny_model)
    args = ["--synthetic-size", str(SYNTHETIC_SIZE), "--synthetic-seed", "2", "--size", "96", "--output", "mask.png"]
    out = run_example("load_from_hub.py", args, env, cwd=tmp_path)
    assert f"Model {tiny_model}, input 96 px" in out

    saved = np.asarray(Image.open(tmp_path / "mask.png"))
    assert saved.shape == (SYNTHETIC_SIZE, SYNTHETIC_SIZE) and saved.dtype == np.uint8
    assert set(np.unique(saved)) <= {0, 255}
    # The same box through the package's own segmentation path gives the same mask and score.
    sample = render_sample(2, SYNTHETIC_SIZE)
    truth = np.asarray(sample["mask"]) > 0
    rows, cols = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
    box = [cols[0], rows[0], cols[-1], rows[-1]]
    model = load_model(tiny_model)
    masks, scores = segment_image(model, load_processor(tiny_model, model), sample["image"], boxes=[box], size=96)
    assert np.array_equal(saved == 255, masks[0])
    assert printed_number(r"Predicted IoU score: (-?[\d.]+)", out) == pytest.approx(scores[0], abs=1e-4)
    iou = (masks[0] & truth).sum() / (masks[0] | truth).sum()
    assert printed_number(r"true mask: ([\d.]+)", out) == pytest.approx(iou, abs=1e-4)
    assert f"{int(masks[0].sum())} object pixels" in out


def test_load_from_hub_on_an_image_file_and_with_the_default_model(tiny_model, tmp_path, monkeypatch, capsys):
    example = load_example("load_from_hub.py", monkeypatch)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    box = ["5", "4", "50", "30"]
    args = ["--image", str(tmp_path / "photo.png"), "--box", *box, "--output", str(tmp_path / "mask.png")]
    assert example.main(["--model", tiny_model, *args]) == 0
    model = load_model(tiny_model)
    masks, _ = segment_image(model, load_processor(tiny_model, model), image, boxes=[[float(v) for v in box]])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mask.png")) == 255, masks[0])
    assert example.main(["--model", tiny_model, "--image", str(tmp_path / "photo.png")]) == 2  # no box
    capsys.readouterr()

    # `default` (the default of --model) is the embedded model: used when installed, else a clear error.
    status = example.main(["--synthetic-size", "64", "--output", str(tmp_path / "default.png")])
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        assert status == 0 and (tmp_path / "default.png").is_file()
    else:
        assert status == 1 and EMBEDDED_MISSING in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# 2. pipeline_usage.py


def test_pipeline_usage_generates_masks_at_the_chosen_size(tiny_model, tmp_path):
    # A random tiny model scores every mask low: keep all candidates (the defaults would keep none).
    keep_all = ["--points-per-crop", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    args = ["--model", tiny_model, "--synthetic-size", str(SYNTHETIC_SIZE), "--size", "96", *keep_all]
    out = run_example("pipeline_usage.py", args + ["--output", "overlay.png"], example_env(tmp_path), cwd=tmp_path)
    assert f"image {SYNTHETIC_SIZE}x{SYNTHETIC_SIZE}, input 96 px" in out
    count = int(printed_number(r"(\d+) masks, scores", out))
    assert count >= 1 and f"Masks array ({count}, {SYNTHETIC_SIZE}, {SYNTHETIC_SIZE}) bool" in out

    # The package's own automatic segmentation at the same size draws the same overlay.
    image = render_sample(0, SYNTHETIC_SIZE)["image"]
    model = load_model(tiny_model)
    keep_all = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    masks, _ = generate_masks(model, load_processor(tiny_model, model), image, size=96, **keep_all)
    assert len(masks) == count
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert overlay.shape == (SYNTHETIC_SIZE, SYNTHETIC_SIZE, 3)
    assert np.array_equal(overlay, np.asarray(overlay_masks(image, masks)))
    assert not np.array_equal(overlay, np.asarray(image))


# ---------------------------------------------------------------------------------------------------------------------
# 3. convert_sam_vit_base.py


def test_convert_sam_gives_sam_embeddings_with_ba_off(tiny_sam, tmp_path):
    env = example_env(tmp_path, BASAM_EXAMPLE_SAM=tiny_sam)  # replaces facebook/sam-vit-base
    out = run_example("convert_sam_vit_base.py", ["--output", "converted"], env, cwd=tmp_path)
    assert "BA off: equal to SamModel's: True" in out
    assert printed_number(r"BA off: .*max abs difference ([\d.e+-]+)", out) <= 1e-5
    assert printed_number(r"BA on .*SamModel's ([\d.e+-]+)", out) > 1e-4  # the check sees BA when it is on

    folder = tmp_path / "converted"
    assert PUSHED <= {path.name for path in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "basam" and "AutoModelForMaskGeneration" in config["auto_map"]
    assert config["vision_config"]["bias_mode"] == "distance"


# ---------------------------------------------------------------------------------------------------------------------
# 4. evaluate_hub_dataset.py


def check_summary(folder: Path, sizes: list[int], variants: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sizes"] == sizes and len(summary["results"]) == variants * len(sizes)
    for result in summary["results"]:
        assert result["counts"] == {"samples": 3, "evaluated": 3, "skipped": 0}
        assert set(summary["metric_names"]) <= set(result["metrics"])
        assert 0 <= result["metrics"]["iou"] <= 1
    assert (folder / "summary.md").is_file() and (folder / "metrics_vs_size.png").is_file()
    assert len((folder / "samples.jsonl").read_text().splitlines()) == 3 * variants * len(sizes)
    return summary


def test_evaluate_in_process(tiny_model, eval_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BASAM_EXAMPLE_DATASET", eval_data)  # the dataset from the variable, the model from the flag
    example = load_example("evaluate_hub_dataset.py", monkeypatch)
    output = tmp_path / "eval"
    args = ["--model", tiny_model, "--sizes", "48", "64", "--compare-sam", "--output", str(output)]
    assert example.main(args) == 0
    out = capsys.readouterr().out
    summary = check_summary(output, [48, 64], variants=2)
    assert summary["dataset"] == eval_data and summary["prompt"] == "box"
    ba_48 = summary["results"][0]
    assert f"| BA-SAM | 48 | 3 | 0 | {ba_48['metrics']['iou']:.4f} |" in out
    assert "| SAM (same weights, BA off) | 64 |" in out and "1 process(es)" in out
    assert example.main(["--model", tiny_model, "--dataset", str(tmp_path / "missing")]) == 1


@pytest.mark.slow
def test_evaluate_with_two_processes(tiny_model, eval_data, tmp_path):
    launch, _ = accelerate_launch(2)  # its environment settings (offline, one thread) are example_env's too
    env = example_env(tmp_path)
    args = ["--model", tiny_model, "--dataset", eval_data, "--sizes", "48", "64", "--output", "eval"]
    out = run_example("evaluate_hub_dataset.py", args, env, cwd=tmp_path, launcher=launch)
    assert "2 process(es)" in out and out.count("| BA-SAM | 48 |") == 1  # the main process prints, once
    summary = check_summary(tmp_path / "eval", [48, 64], variants=1)
    single = evaluate(tiny_model, eval_data, sizes=[48, 64])  # one process: each sample counted once either way
    for two, one in zip(summary["results"], single["results"], strict=True):
        assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# 5. finetune_and_push.py

FINETUNE_ARGS = ["--val-split", "validation", "--max-steps", "2", "--save-steps", "2", "--train-sizes", "64"]


def test_finetune_dry_run_lists_the_files_and_sends_nothing(tiny_sam, train_data, tmp_path):
    # Every source from the variables; HF_HUB_OFFLINE=1 makes any Hub call fail.
    env = example_env(
        tmp_path, BASAM_EXAMPLE_SAM=tiny_sam, BASAM_EXAMPLE_DATASET=train_data, BASAM_EXAMPLE_REPO_ID="user/tiny"
    )
    out = run_example("finetune_and_push.py", FINETUNE_ARGS + ["--output", "run", "--dry-run"], env, cwd=tmp_path)
    best = tmp_path / "run" / "best"
    assert "Trained 2 steps" in out and "Best validation iou" in out
    listed = re.findall(r"^  (\S+)$", out, flags=re.MULTILINE)
    assert f"Would upload {Path('run', 'best')} ({len(listed)} files) to user/tiny:" in out  # --output run
    assert PUSHED | {"README.md"} <= set(listed)
    assert listed == files_to_upload(best)
    config = json.loads((best / "config.json").read_text())
    assert config["model_type"] == "basam"  # the SAM checkpoint was converted


def test_finetune_and_push_to_a_fake_hub(tiny_model, train_data, tmp_path, monkeypatch, capsys):
    api = FakeHfApi()
    monkeypatch.setattr(basam_hf.hub, "_default_api", lambda: api)  # what push_to_hub uses without an api
    example = load_example("finetune_and_push.py", monkeypatch)
    output = tmp_path / "run"
    args = ["--model", tiny_model, "--dataset", train_data, "--private", *FINETUNE_ARGS, "--output", str(output)]
    with pytest.raises(SystemExit) as exit_info:  # no repo to push to: refused before any training
        example.main(args)
    assert exit_info.value.code == 2 and "--repo-id" in capsys.readouterr().err and not output.exists()

    assert example.main(args + ["--repo-id", "user/basam-tiny"]) == 0
    (_, repo_id, create_kwargs), (_, upload) = api.calls
    assert repo_id == "user/basam-tiny" and create_kwargs["private"] and create_kwargs["repo_type"] == "model"
    best = output / "best"
    assert upload["folder_path"] == str(best) and upload["repo_id"] == "user/basam-tiny"
    assert PUSHED | {"README.md"} <= set(upload["allow_patterns"])
    card = (best / "README.md").read_text()
    assert 'from_pretrained("user/basam-tiny", trust_remote_code=True)' in card and "# basam-tiny" in card
    out = capsys.readouterr().out
    assert f"Uploaded {best} to https://huggingface.co/user/basam-tiny:" in out
    assert re.findall(r"^  (\S+)$", out, flags=re.MULTILINE) == upload["allow_patterns"]

    # A second run into the same folder is refused (it would mix checkpoints) and nothing more is sent.
    assert example.main(args + ["--repo-id", "user/basam-tiny"]) == 1
    err = capsys.readouterr().err
    assert "holds checkpoints of an earlier run" in err and f"{output}/final holds a trained model" in err
    assert len(api.calls) == 2
