"""Nothing lost, nothing surprising: every writing command keeps the input and other people's files, replaces only
its own earlier outputs when asked (`--overwrite`), refuses bad inputs in one line before it loads a model, and shows
numbers that mean what they say. Offline, with tiny random models."""

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import test_cli
import torch
from PIL import Image
from test_cli import error_line

import basam_hf.evaluation
import basam_hf.hub
import basam_hf.limits
from basam_hf import cli
from basam_hf.cli import main
from basam_hf.outputs import MANIFEST_FILE, read_manifest

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
# The tiny BA-SAM and SAM folders of the other command-line tests.
model_dir, sam_dir = test_cli.model_dir, test_cli.sam_dir


def folder_state(folder: Path) -> dict:
    """Every file under `folder` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from basam_hf.synthetic import save_synthetic_dataset

    path = tmp_path_factory.mktemp("data") / "data"
    save_synthetic_dataset(path, 2, 64, seed=3)
    return str(path)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    from test_conversion_official import official_state_dict

    path = tmp_path_factory.mktemp("official") / "best_checkpoint.pth"
    torch.save(official_state_dict(), path)
    return str(path)


def write_photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Record every model load: the refusals below must come before any."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli.common, "load_model_from_args", refuse)
    monkeypatch.setattr(cli.model_commands, "load_model_from_args", refuse)
    monkeypatch.setattr(basam_hf.evaluation, "load_model", refuse)
    return calls


def command_line(command: str, output: Path, inputs: dict) -> list[str]:
    """A quick run of `command` writing into `output`."""
    model, data = inputs["model"], inputs.get("data")
    return {
        "segment": ["segment", str(inputs.get("photo")), "--model", model, "--box", "5", "5", "60", "40"],
        "compare": ["compare", "--model", model, "--sizes", "64", "--samples", "1"],
        "evaluate": ["evaluate", "--model", model, "--dataset", data, "--sizes", "64", "--max-samples", "1"],
        "finetune": ["finetune", "--model", model, "--dataset", data, "--max-steps", "1", "--save-steps", "1"]
        + ["--train-sizes", "64", "--batch-size", "1", "--log-with"],
        "convert-sam": ["convert-sam", inputs.get("sam"), str(output)],
        "convert-official": ["convert-official", inputs.get("official"), str(output)],
    }[command] + ([] if command.startswith("convert") else ["--output", str(output)])


WRITING_COMMANDS = ("segment", "compare", "evaluate", "finetune", "convert-sam", "convert-official")


# ---------------------------------------------------------------------------------------------------------------------
# Output folders


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_the_input_and_other_files_survive_every_writing_command(
    command, model_dir, sam_dir, data_dir, official_checkpoint, tmp_path, capsys
):
    """A folder holding the input photo (named like a mask) and a file of the user's: refused without --overwrite,
    and with it either refused (a name the command writes) or run around them; they stay byte-identical."""
    output = tmp_path / "self"
    output.mkdir()
    photo = write_photo(output / "mask_005.png")
    (output / "notes.txt").write_text("mine")
    before = folder_state(output)
    inputs = {"model": model_dir, "data": data_dir, "sam": sam_dir, "official": official_checkpoint, "photo": photo}
    argv = command_line(command, output, inputs)

    assert main(argv) == 1
    line = error_line(capsys)
    assert f"the output folder {output} is not empty" in line and "--overwrite" in line
    assert folder_state(output) == before

    status = main(argv + ["--overwrite"])
    if command in ("segment", "convert-sam", "convert-official"):  # they write mask_*.png / a whole model folder
        assert status == 1 and "mask_005.png" in error_line(capsys)
        assert folder_state(output) == before
    else:
        assert status == 0, capsys.readouterr().err
        after = folder_state(output)
        assert {name: after[name] for name in before} == before
        assert set(read_manifest(output)["files"]).isdisjoint(before)  # never recorded as the command's own


@pytest.mark.parametrize("command", ("segment", "convert-sam"))
def test_a_second_run_with_overwrite_replaces_only_the_earlier_runs_files(
    command, model_dir, sam_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    photo = write_photo(tmp_path / "photo.png")
    inputs = {"model": model_dir, "sam": sam_dir, "photo": photo, "data": None, "official": None}
    argv = command_line(command, output, inputs)
    if command == "segment":  # three masks first, one afterwards: the earlier run's other two go
        argv += ["--box", "1", "1", "30", "30", "--box", "2", "2", "40", "40"]
    assert main(argv) == 0
    first = read_manifest(output)
    assert first["command"] == command and sorted(first["files"]) == sorted(
        folder_state(output).keys() - {MANIFEST_FILE}
    )
    capsys.readouterr()
    if command == "segment":
        (output / "notes.txt").write_text("mine")  # the user's: not a name segment writes, so it may stay
        argv = command_line(command, output, inputs)
    assert main(argv + ["--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"--overwrite: removed the earlier run's {', '.join(sorted(first['files'])[:4])}" in err
    second = read_manifest(output)["files"]
    if command == "segment":
        assert (output / "notes.txt").read_text() == "mine"
        assert sorted(path.name for path in output.iterdir()) == sorted(
            [MANIFEST_FILE, "notes.txt", "mask_000.png", "overlay.png", "segment.json"]
        )
        assert sorted(second) == ["mask_000.png", "overlay.png", "segment.json"]
    else:
        assert sorted(second) == sorted(first["files"])


def test_finetune_resumes_in_its_own_folder_without_overwrite(model_dir, data_dir, tmp_path, capsys):
    output = tmp_path / "run"
    inputs = {"model": model_dir, "data": data_dir}
    argv = command_line("finetune", output, inputs)
    assert main(argv) == 0
    assert "checkpoints" in read_manifest(output)["files"]
    (output / "notes.txt").write_text("mine")
    more = [arg if arg != "1" or argv[index - 1] != "--max-steps" else "2" for index, arg in enumerate(argv)]
    assert main(more + ["--resume"]) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert (output / "notes.txt").read_text() == "mine"
    assert (output / "checkpoints" / "checkpoint-2").is_dir()


def test_a_failed_push_from_the_command_line_leaves_the_folder_byte_identical(
    model_dir, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "pushable"
    shutil.copytree(model_dir, folder)
    before = folder_state(folder)

    class FailingHfApi:
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, **kwargs):
            raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(basam_hf.hub, "_default_api", FailingHfApi)
    assert main(["push", str(folder), "user/tiny"]) == 1
    assert "nothing was uploaded" in error_line(capsys)
    assert folder_state(folder) == before


def test_saved_weights_get_the_mode_of_the_other_files(sam_dir, tmp_path):
    assert main(["convert-sam", sam_dir, str(tmp_path / "out")]) == 0
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"]


def test_convert_sam_default_saves_the_embedded_model(tmp_path):
    from safetensors.torch import load_file

    from basam_hf.hub import DEFAULT_MODEL_DIR

    assert main(["convert-sam", "default", str(tmp_path / "default")]) == 0
    saved = load_file(tmp_path / "default" / "model.safetensors")
    embedded = load_file(DEFAULT_MODEL_DIR / "model.safetensors")
    assert saved.keys() == embedded.keys() and all(torch.equal(saved[key], embedded[key]) for key in saved)


# ---------------------------------------------------------------------------------------------------------------------
# Input limits, before any model is loaded


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width` x `height` (8-bit grey) and which holds no pixel data: `Image.open` reads
    the size from it without allocating the image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_a_huge_image_is_refused_from_its_header(tmp_path, no_model_loading, capsys):
    image = png_header(tmp_path / "huge.png", 20000, 20000)
    argv = ["segment", str(image), "--box", "1", "1", "50", "50", "--output", str(tmp_path / "out")]
    assert main(argv) == 1
    line = error_line(capsys)
    assert line == (
        f"basam-hf segment: error: the image {image} is 20000x20000 (400.0 megapixels), above the limit of 50.0 "
        "megapixels: downscale it, or pass --max-pixels 400000000 to accept it"
    )
    assert no_model_loading == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "1", "1", "50", "50", "--size", "100000"], "--size 100000 would need about"),
        (["--box", "1", "1", "50", "50", "--size", "0"], "argument --size: must be a whole number above 0, got 0"),
        (["--automatic", "--box", "1", "1", "50", "50"], "--automatic prompts the model with a grid of points"),
        (["--point", "1", "2", "3"], "argument --point: takes 2 values (X Y), got 3: 1 2 3"),
        (["--box", "1", "1", "50", "50", "--output", "IMAGE"], "is a file, not a folder"),
    ],
)
def test_bad_arguments_are_one_line_before_any_model_loads(
    extra, message, tmp_path, monkeypatch, no_model_loading, capsys
):
    photo = write_photo(tmp_path / "photo.png")
    monkeypatch.setattr(basam_hf.limits, "physical_memory", lambda: 8 * 1024**3)
    extra = [str(photo) if arg == "IMAGE" else arg for arg in extra]
    try:
        status = main(["segment", str(photo), *extra])
    except SystemExit as exit:  # argparse's own errors (one line too, exit status 2)
        status = exit.code
    assert status != 0
    line = error_line(capsys)
    assert line.startswith("basam-hf segment: error: ") and message in line
    assert no_model_loading == []
    assert photo.read_bytes() == write_photo(tmp_path / "again.png").read_bytes()


def test_the_size_limit_is_the_largest_size_that_fits():
    """`largest_size` against a direct scan of `estimate_memory`: the size fits, one patch more does not."""
    from basam_hf.limits import estimate_memory, largest_size, read_model_config

    config = read_model_config("default")
    memory = 3 * 1024**3
    largest = largest_size(config, memory)
    sizes = range(16, 40000, 16)
    assert largest == max(size for size in sizes if estimate_memory(config, size) <= memory)
    # Above a constant (weights, attention budget), memory grows with the token count: 4x per doubling of the size.
    growth = (estimate_memory(config, 4096) - estimate_memory(config, 2048)) / (
        estimate_memory(config, 2048) - estimate_memory(config, 1024)
    )
    assert growth == pytest.approx(4.0)


def test_a_truncated_image_is_named(tmp_path, capsys):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 128).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:300])
    assert main(["segment", str(path), "--box", "1", "1", "20", "20", "--output", str(tmp_path / "out")]) == 1
    assert f"cannot decode the image {path}" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------------------
# Numbers and pictures on screen


def test_predicted_iou_is_shown_within_0_and_1_and_kept_raw(model_dir, tmp_path, capsys):
    from basam_hf.loading import load_model, load_processor
    from basam_hf.segment import segment_image

    photo = write_photo(tmp_path / "photo.png")
    boxes = [[5.0, 5.0, 60.0, 40.0], [1.0, 1.0, 80.0, 45.0]]
    model = load_model(model_dir)
    _, scores = segment_image(model, load_processor(model_dir, model), Image.open(photo), boxes=boxes)
    output = tmp_path / "out"
    argv = ["segment", str(photo), "--model", model_dir, "--output", str(output)]
    assert main(argv + [arg for box in boxes for arg in ["--box", *map(str, box)]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Model: {model_dir} (BA: ")  # then one line per mask
    shown = [float(line.split("predicted IoU ")[1].rstrip(")")) for line in out[1:3]]
    assert shown == pytest.approx(np.clip(scores, 0, 1), abs=5e-4)
    assert not all(0 <= score <= 1 for score in scores)  # this model overshoots: the clamp is exercised
    record = json.loads((output / "segment.json").read_text())
    assert [mask["predicted_iou"] for mask in record["masks"]] == pytest.approx(scores.tolist())


def test_automatic_prints_its_settings_with_the_count(model_dir, tmp_path, capsys):
    photo = write_photo(tmp_path / "photo.png")
    argv = ["segment", str(photo), "--model", model_dir, "--automatic", "--points-per-side", "3"]
    assert (
        main(argv + ["--pred-iou-thresh", "-100", "--stability-score-thresh", "0", "--output", str(tmp_path / "o")])
        == 0
    )
    out = capsys.readouterr().out
    count = len(json.loads((tmp_path / "o" / "segment.json").read_text())["masks"])
    assert (
        f"{count} mask(s) from a 3x3 grid of point prompts, kept at pred_iou_thresh -100 and "
        "stability_score_thresh 0" in out
    )


def test_the_automatic_grid_default_is_the_same_everywhere():
    import importlib

    from basam_hf import limits, segment

    sys.path.insert(0, str(ROOT / "examples"))
    example = importlib.import_module("pipeline_usage")
    assert cli.POINTS_PER_SIDE == segment.POINTS_PER_SIDE == example.build_parser().get_default("points_per_crop")
    assert cli.SEGMENT_MAX_PIXELS == limits.DEFAULT_MAX_PIXELS
    assert f"--points-per-side {segment.POINTS_PER_SIDE}" in (ROOT / "README.md").read_text()


def test_overlay_draws_the_prompts():
    from basam_hf.segment import NEGATIVE_COLOR, POSITIVE_COLOR, draw_prompts, overlay_masks

    grey = Image.new("RGB", (200, 120), (128, 128, 128))
    masks = np.zeros((1, 120, 200), dtype=bool)
    masks[0, 30:90, 40:160] = True
    overlay = np.asarray(
        draw_prompts(
            overlay_masks(grey, masks), boxes=[[20, 20, 180, 100]], points=[[100, 60], [60, 50]], labels=[1, 0]
        )
    )
    assert tuple(overlay[60, 100]) == POSITIVE_COLOR and tuple(overlay[50, 60]) == NEGATIVE_COLOR
    assert tuple(overlay[20, 100]) == (255, 255, 255) and tuple(overlay[60, 20]) == (255, 255, 255)  # box outline
    assert tuple(overlay[19, 100]) == (0, 0, 0)  # its dark outer line
    assert tuple(overlay[30, 100]) == (255, 255, 255) and tuple(overlay[31, 100]) == (0, 0, 0)  # mask outline
    # a negative click is a different shape: the corner of its square is coloured, a disc's would not be
    radius = max(3, round(0.012 * 200))
    assert tuple(overlay[50 - radius + 1, 60 - radius + 1]) == NEGATIVE_COLOR
    assert tuple(overlay[60 - radius + 1, 100 - radius + 1]) != POSITIVE_COLOR


def test_the_mask_colour_stands_out_on_a_golden_image():
    """On a golden image the fill is not the golden colour of the palette: the farthest from the image's mean."""
    from basam_hf.segment import OVERLAY_COLORS, overlay_masks

    golden = Image.new("RGB", (40, 40), (230, 170, 20))
    masks = np.zeros((1, 40, 40), dtype=bool)
    masks[0, 10:30, 10:30] = True
    fill = np.asarray(overlay_masks(golden, masks, alpha=1.0))[20, 20]
    distance = {color: np.abs(np.asarray(color) - (230, 170, 20)).sum() for color in OVERLAY_COLORS}
    assert tuple(fill) == max(distance, key=distance.get)


# ---------------------------------------------------------------------------------------------------------------------
# scripts/test.sh


def test_test_script_never_touches_the_users_venv(tmp_path):
    """The script's dry run (what it would do, nothing done) in a copy of the checkout with a user's `.venv`: its
    own environment elsewhere, no system packages outside CI, `.venv` unchanged (run twice)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test.sh", checkout / "scripts" / "test.sh")
    venv = checkout / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("the user's interpreter")
    before = folder_state(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BASAM_TEST_VENV", "BASAM_TEST_INSTALL_BROWSER")}
    for _ in range(2):
        result = subprocess.run(
            ["bash", str(checkout / "scripts" / "test.sh")],
            env={**env, "BASAM_TEST_DRY_RUN": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        plan = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        assert Path(plan["venv"]).resolve() != venv.resolve() and plan["install_browser"] == "no"
    assert folder_state(venv) == before
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "test.sh")],
        env={**env, "BASAM_TEST_DRY_RUN": "1", "BASAM_TEST_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and ".venv" in result.stderr  # pointed at .venv by hand: refused
    ci = subprocess.run(
        ["bash", str(checkout / "scripts" / "test.sh")],
        env={**env, "BASAM_TEST_DRY_RUN": "1", "CI": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "install_browser=yes" in ci.stdout


def test_finetune_says_how_many_samples_it_excluded_and_why(model_dir, tmp_path, capsys):
    from test_evaluation import _write_sample

    root = tmp_path / "data"
    for index in range(2):
        _write_sample(root, f"good{index}", (64, 64), (10, 10, 40, 50), seed=index)
        _write_sample(root, f"empty{index}", (64, 64), None, seed=10 + index)
    _write_sample(root, "mismatch", (64, 64), (10, 10, 30, 40), seed=4)
    Image.fromarray(np.zeros((40, 64), dtype=np.uint8)).save(root / "masks" / "mismatch.png")
    argv = command_line("finetune", tmp_path / "run", {"model": model_dir, "data": str(root)})
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Excluded")]
    assert len(lines) == 2
    assert lines[0].startswith("Excluded 2 of 5 training samples: empty mask")
    assert lines[1].startswith("Excluded 1 of 5 training samples: mask size 40x64 differs from image size 64x64")
    assert all(line.endswith("(see excluded_train_samples.json).") for line in lines)
