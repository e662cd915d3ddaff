"""The command line as a new user meets it: fast help, one-line errors, BA options on every model command, output
folders that are never silently replaced, no alarming log lines; and `import basam_hf` registering the Auto classes
without importing torch. Nothing here touches the network (HF_HUB_OFFLINE=1, fake Hub clients)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_model, tiny_config_kwargs
from PIL import Image

import basam_hf.hub
from basam_hf import cli
from basam_hf.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers", "accelerate", "gradio", "datasets", "numpy", "PIL")
MODEL_COMMANDS = ("segment", "evaluate", "compare", "demo", "finetune", "info")
BA_OFF_ARGS = ["--bias-mode", "none", "--attention-scaling", "none"]


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (offline), its stdout/stderr as text."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def error_line(capsys) -> str:
    """The command's stderr, checked to be exactly one line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), seed=2)


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    from transformers import SamConfig, SamModel

    folder = tmp_path_factory.mktemp("sam")
    SamModel(SamConfig(**tiny_config_kwargs())).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def image_path(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# Help without heavy imports; the Auto classes registered on `import basam_hf`


def test_help_of_every_command_imports_nothing_heavy():
    """`basam-hf --help` and each `basam-hf COMMAND --help` only build the parser: no torch / transformers /
    accelerate / gradio / numpy / PIL, which is what makes them answer in a fraction of a second."""
    result = run_python(
        """
        import contextlib, io, sys
        from basam_hf import cli

        parser = cli.build_parser()
        commands = sorted(parser._subparsers._group_actions[0].choices)
        for argv in [["--help"]] + [[command, "--help"] for command in commands]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    cli.main(argv)
                except SystemExit as exit:
                    assert exit.code == 0, argv
            assert "usage: basam-hf" in out.getvalue(), argv
        print(",".join(commands))
        print(",".join(name for name in sys.argv[1:] if name in sys.modules))
        """,
        *HEAVY_MODULES,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    commands, imported = result.stdout.splitlines()[-2:]
    assert set(MODEL_COMMANDS) <= set(commands.split(","))
    assert imported == "", f"--help imported {imported}"


def test_console_script_help_answers(tmp_path):
    """The installed `basam-hf` script (as a new user runs it) prints the help and exits 0."""
    script = Path(sys.executable).with_name("basam-hf")
    if not script.exists():
        pytest.skip("the basam-hf console script is not installed next to this interpreter")
    result = subprocess.run([str(script), "segment", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--bias-mode" in result.stdout and "rounded up" in result.stdout


REGISTRATION = """
import sys
folder = sys.argv[1]
if sys.argv[2] == "package-first":
    import basam_hf
    assert "torch" not in sys.modules and "transformers" not in sys.modules, "import basam_hf must stay light"
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskGeneration, AutoProcessor
else:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskGeneration, AutoProcessor
    import basam_hf
from transformers import pipeline

loaded = [
    AutoConfig.from_pretrained(folder),
    AutoModel.from_pretrained(folder),
    AutoModelForMaskGeneration.from_pretrained(folder),
    AutoProcessor.from_pretrained(folder),
    AutoImageProcessor.from_pretrained(folder),
    pipeline("mask-generation", model=folder).model,
]
print(" ".join(type(item).__module__ + "." + type(item).__name__ for item in loaded))
"""


@pytest.mark.parametrize("order", ["package-first", "transformers-first"])
def test_import_basam_hf_registers_the_auto_classes(model_dir, order):
    """After `import basam_hf` (before or after transformers), the Auto classes and the pipeline load a BA-SAM folder
    without trust_remote_code, as the package's classes (not the folder's code files)."""
    result = run_python(REGISTRATION, model_dir, order)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-6:] == [
        "basam_hf.configuration_basam.BaSamConfig",
        "basam_hf.modeling_basam.BaSamModel",
        "basam_hf.modeling_basam.BaSamModel",
        "basam_hf.processing_basam.BaSamProcessor",
        "basam_hf.processing_basam.BaSamImageProcessor",
        "basam_hf.modeling_basam.BaSamModel",
    ]
    assert "could not register" not in result.stderr


def test_classes_imported_from_their_modules_still_save_their_code(tmp_path):
    """`from basam_hf.modeling_basam import BaSamModel` (no package-level attribute touched) saves a folder that
    carries its code files and loads through the Auto classes."""
    result = run_python(
        """
        import os, sys
        from basam_hf.configuration_basam import BaSamConfig
        from basam_hf.modeling_basam import BaSamModel
        from transformers import AutoModel

        BaSamModel(BaSamConfig(**eval(sys.argv[2]))).save_pretrained(sys.argv[1])
        print(sorted(os.listdir(sys.argv[1])))
        print(type(AutoModel.from_pretrained(sys.argv[1])).__name__)
        """,
        str(tmp_path / "saved"),
        repr(tiny_config_kwargs()),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'configuration_basam.py'" in result.stdout and "'modeling_basam.py'" in result.stdout
    assert result.stdout.split()[-1] == "BaSamModel"


def test_package_attributes_stay_available():
    import basam_hf

    assert basam_hf.BaSamModel.__name__ == "BaSamModel" and "BaSamModel" in dir(basam_hf)
    with pytest.raises(AttributeError):
        basam_hf.NoSuchThing  # noqa: B018


# ---------------------------------------------------------------------------------------------------------------------
# Missing paths, an unreachable Hub, a failed push: one line each


MISSING = "no/such/place"  # not a Hub id either (three parts)


@pytest.mark.parametrize(
    "argv, missing",
    [
        (["info", MISSING], MISSING),
        (["info", "./sam-vit-base-ba"], "./sam-vit-base-ba"),
        (["convert-sam", MISSING, "{tmp}/out"], MISSING),
        (["convert-official", "{tmp}/best_checkpoint.pth", "{tmp}/out"], "{tmp}/best_checkpoint.pth"),
        (["segment", "{tmp}/photo.jpg", "--box", "1", "2", "3", "4"], "{tmp}/photo.jpg"),
        (["segment", "{image}", "--model", MISSING, "--box", "1", "2", "3", "4"], MISSING),
        (["evaluate", "--model", MISSING, "--dataset", "{tmp}"], MISSING),
        (["evaluate", "--dataset", "{tmp}/my_data/"], "{tmp}/my_data/"),
        (["finetune", "--model", "sam-vit-base-ba", "--dataset", "{tmp}", "--output", "{tmp}/run"], "sam-vit-base-ba"),
        (["compare", "--model", MISSING, "--output", "{tmp}/out"], MISSING),
        (["push", "{tmp}/runs/best", "user/repo"], "{tmp}/runs/best"),
        (["demo", "--model", MISSING], MISSING),
    ],
)
def test_a_missing_path_is_one_line(argv, missing, tmp_path, image_path, capsys):
    argv = [arg.format(tmp=tmp_path, image=image_path) for arg in argv]
    assert main(argv) == 1
    line = error_line(capsys)
    assert line.startswith(f"basam-hf {argv[0]}: error: no such file or folder: {missing.format(tmp=tmp_path)}")
    assert "Repo id" not in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["info", "convert-sam", "segment", "compare"])
def test_a_hub_model_not_in_the_cache_offline_is_one_line(command, tmp_path, image_path, capsys):
    repo = "nobody-here/no-such-basam-model"
    argv = {
        "info": ["info", repo],
        "convert-sam": ["convert-sam", repo, str(tmp_path / "out")],
        "segment": ["segment", image_path, "--model", repo, "--box", "1", "2", "30", "40"],
        "compare": ["compare", "--model", repo, "--output", str(tmp_path / "out")],
    }[command]
    assert main(argv) == 1
    line = error_line(capsys)
    assert line.startswith(f"basam-hf {command}: error: {repo} is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE is set" in line


def _unreachable(*args, **kwargs):
    """What transformers raises when the Hub cannot be reached: an OSError from huggingface_hub's error, from the
    HTTP client's connection error."""
    httpx = pytest.importorskip("httpx")
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            raise httpx.ConnectError("[Errno -2] Name or service not known")
        except httpx.ConnectError as error:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub") from error
    except LocalEntryNotFoundError as error:
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached "
            "files.\nCheck your internet connection or see how to run the library in offline mode at '...'."
        ) from error


def test_an_unreachable_hub_is_one_line(monkeypatch, tmp_path, capsys):
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(basam_hf.hub, "hub_offline", lambda: False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", _unreachable)
    assert main(["info", "facebook/sam-vit-base"]) == 1
    assert error_line(capsys) == (
        "basam-hf info: error: cannot reach the Hugging Face Hub for facebook/sam-vit-base ([Errno -2] Name or "
        "service not known) and it is not in the local cache; check the network, or give a local folder"
    )


class UnreachableHfApi:
    def __init__(self, error: Exception):
        self.error = error

    def create_repo(self, *args, **kwargs):
        raise self.error

    def upload_folder(self, *args, **kwargs):  # pragma: no cover - never reached
        raise AssertionError("no upload after a failed create_repo")


@pytest.fixture
def pushable(tmp_path, model_dir):
    import shutil

    folder = tmp_path / "pushable"
    shutil.copytree(model_dir, folder)
    return str(folder)


def test_a_push_without_network_is_one_line(pushable, monkeypatch, capsys):
    httpx = pytest.importorskip("httpx")
    api = UnreachableHfApi(httpx.ConnectError("[Errno -2] Name or service not known"))
    monkeypatch.setattr(basam_hf.hub, "_default_api", lambda: api)
    assert main(["push", pushable, "user/tiny"]) == 1
    assert error_line(capsys) == (
        "basam-hf push: error: Could not reach the Hugging Face Hub to push to user/tiny ([Errno -2] Name or service "
        "not known). Check the network (or proxy settings) and try again; nothing was uploaded."
    )


def test_a_refused_push_says_to_log_in(pushable, monkeypatch, capsys):
    class Unauthorized(Exception):
        response = type("Response", (), {"status_code": 401})()

    monkeypatch.setattr(basam_hf.hub, "_default_api", lambda: UnreachableHfApi(Unauthorized("401 Client Error")))
    assert main(["push", pushable, "user/tiny"]) == 1
    line = error_line(capsys)
    assert "refused the push to user/tiny (HTTP 401)" in line and "hf auth login" in line


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    """Only expected failures are shortened: a bug must stay visible."""

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli.model_commands, "_info", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info", "default"])


def test_retries_of_an_unreachable_hub_are_said_once():
    """huggingface_hub logs two lines per retry (10 for one download) when the network is down; one remains."""
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("huggingface_hub.utils._http")
    handler = Collect()
    logger.addHandler(handler)
    try:
        with cli.quiet_known_warnings():
            for attempt in range(1, 6):
                logger.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD https://x/y")
                logger.warning(f"Retrying in {attempt}s [Retry {attempt}/5].")
        logger.warning("Retrying in 1s [Retry 1/5].")  # outside a command: untouched
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and "retrying" in records[0] and records[1] == "Retrying in 1s [Retry 1/5]."


# ---------------------------------------------------------------------------------------------------------------------
# Prompts


def test_prompts_that_cannot_mean_anything_are_refused():
    from basam_hf.segment import check_prompts

    for boxes, message in [
        ([[100, 10, 120, 20]], r"Box 1 \(100, 10, 120, 20\) lies entirely outside the 90x50 image"),
        ([[-30, -20, -1, 40]], "entirely outside"),
        ([[10, 10, 40, 30], [40, 10, 40, 30]], r"Box 2 \(40, 10, 40, 30\) is empty: .*X2 > X1 and Y2 > Y1"),
        ([[10, 30, 40, 20]], "is empty"),
        ([[10, float("nan"), 40, 20]], "not a finite number"),
        ([[10, 20, 30]], "must have 4 coordinates"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_prompts(90, 50, boxes=boxes)
    for points in ([[91, 10]], [[10, -0.5]], [[10, 10], [10, 51]]):
        with pytest.raises(ValueError, match=r"Point \d \(.*\) lies outside the 90x50 image"):
            check_prompts(90, 50, points=points)
    boxes, points, notes = check_prompts(90, 50, boxes=[[-10, 5, 100, 40]], points=[[0, 0], [90, 50]])
    assert boxes == [[0, 5, 90, 40]] and points == [[0, 0], [90, 50]]
    assert notes == ["Box 1 (-10, 5, 100, 40) reaches outside the 90x50 image: clipped to (0, 5, 90, 40)."]


def test_segment_image_clips_with_a_warning_and_refuses_empty_boxes(model_dir):
    from basam_hf.loading import load_model, load_processor
    from basam_hf.segment import segment_image

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 90, 3), dtype=np.uint8))
    model = load_model(model_dir)
    processor = load_processor(model_dir, model)
    with pytest.warns(UserWarning, match="clipped to"):
        clipped, _ = segment_image(model, processor, image, boxes=[[-10, 5, 100, 40]])
    inside, _ = segment_image(model, processor, image, boxes=[[0, 5, 90, 40]])
    assert np.array_equal(clipped, inside)
    with pytest.raises(ValueError, match="is empty"):
        segment_image(model, processor, image, boxes=[[30, 5, 10, 40]])
    with pytest.raises(ValueError, match="lies outside"):
        segment_image(model, processor, image, points=[[200, 10]])


def test_segment_command_refuses_or_clips_prompts(model_dir, image_path, tmp_path, capsys):
    output = tmp_path / "out"
    base = ["segment", image_path, "--model", model_dir, "--output", str(output)]
    assert main(base + ["--box", "95", "5", "120", "40"]) == 1
    assert error_line(capsys) == (
        "basam-hf segment: error: Box 1 (95, 5, 120, 40) lies entirely outside the 90x50 image."
    )
    assert main(base + ["--box", "40", "5", "20", "40"]) == 1
    assert "is empty" in error_line(capsys)
    assert main(base + ["--point", "10", "60"]) == 1
    assert "Point 1 (10, 60) lies outside the 90x50 image" in error_line(capsys)
    assert not output.exists()
    assert main(base + ["--box", "-5", "5", "200", "40"]) == 0
    err = capsys.readouterr().err
    assert (
        "basam-hf segment: note: Box 1 (-5, 5, 200, 40) reaches outside the 90x50 image: clipped to (0, 5, 90, 40)"
        in err
    )


# ---------------------------------------------------------------------------------------------------------------------
# Output folders


def test_segment_leaves_only_this_runs_masks_named_in_order(model_dir, image_path, tmp_path):
    output = tmp_path / "out"
    base = ["segment", image_path, "--model", model_dir, "--output", str(output)]
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    boxes = [arg for index in range(11) for arg in ("--box", "1", "1", str(20 + index), "30")]
    assert main(base + boxes + ["--overwrite"]) == 0
    names = sorted(path.name for path in output.iterdir() if path.name != ".basam-hf-outputs.json")
    assert names == [f"mask_{index:03d}.png" for index in range(11)] + ["notes.txt", "overlay.png", "segment.json"]
    assert main(base + ["--box", "5", "5", "60", "40", "--overwrite"]) == 0
    names = sorted(path.name for path in output.iterdir() if path.name != ".basam-hf-outputs.json")
    assert names == ["mask_000.png", "notes.txt", "overlay.png", "segment.json"]
    assert (output / "notes.txt").read_text() == "mine"


def test_convert_refuses_a_non_empty_output_folder_without_overwrite(sam_dir, tmp_path, capsys):
    output = tmp_path / "sam-vit-base-ba"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"an earlier model")
    assert main(["convert-sam", sam_dir, str(output)]) == 1
    line = error_line(capsys)
    assert f"the output folder {output} is not empty" in line and "--overwrite" in line
    assert (output / "model.safetensors").read_bytes() == b"an earlier model"
    checkpoint = tmp_path / "best_checkpoint.pth"
    torch.save({}, checkpoint)
    assert main(["convert-official", str(checkpoint), str(output)]) == 1
    assert "is not empty" in error_line(capsys)
    assert (output / "model.safetensors").read_bytes() == b"an earlier model"
    (tmp_path / "a-file").write_text("x")
    assert main(["convert-sam", sam_dir, str(tmp_path / "a-file")]) == 1
    assert "is a file, not a folder" in error_line(capsys)

    # --overwrite replaces only an earlier convert's files: this model.safetensors is someone else's
    assert main(["convert-sam", sam_dir, str(output), "--overwrite"]) == 1
    assert "model.safetensors, not written by an earlier `basam-hf convert-sam` run" in error_line(capsys)
    assert (output / "model.safetensors").read_bytes() == b"an earlier model"
    assert main(["convert-sam", sam_dir, str(tmp_path / "new")]) == 0  # a new folder needs no --overwrite
    assert main(["convert-sam", sam_dir, str(tmp_path / "new"), "--overwrite"]) == 0  # its own earlier output
    from basam_hf import BaSamModel

    assert BaSamModel.from_pretrained(tmp_path / "new").config.model_type == "basam"


def test_default_outputs_are_ignored_by_git():
    ignored = {line.strip().rstrip("/").lstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("compare", "segment", "evaluate"):
        default = commands[command].get_default("output")
        assert default in ignored, f"{command}'s default output {default}/ is not in .gitignore"


# ---------------------------------------------------------------------------------------------------------------------
# BA options on every command that takes a model


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_the_ba_options(command):
    argv = {
        "segment": ["segment", "x.png"],
        "info": ["info", "default"],
        "finetune": ["finetune", "--output", "x"],
    }.get(command, [command])
    argv += [
        "--bias-mode",
        "none",
        "--attention-scaling",
        "none",
        "--bias-slope-scale",
        "0.5",
        "--distance-unit",
        "token",
        "--no-learnable-slopes",
    ]
    args = build_parser().parse_args(argv)
    assert cli.ba_settings_from_args(args) == {
        "bias_mode": "none",
        "attention_scaling": "none",
        "distance_unit": "token",
        "bias_slope_scale": 0.5,
        "learnable_slopes": False,
    }


def test_segment_with_ba_off_equals_the_ba_off_model(model_dir, image_path, tmp_path, monkeypatch):
    import basam_hf.segment
    from basam_hf.loading import ba_variant, load_model, load_processor

    segment_image, used = basam_hf.segment.segment_image, []

    def recording(model, *args, **kwargs):
        used.append({name: getattr(model.config.vision_config, name) for name in ("bias_mode", "attention_scaling")})
        return segment_image(model, *args, **kwargs)

    monkeypatch.setattr(basam_hf.segment, "segment_image", recording)
    box = ["--box", "5", "5", "60", "40"]
    assert (
        main(["segment", image_path, "--model", model_dir, *box, *BA_OFF_ARGS, "--output", str(tmp_path / "o")]) == 0
    )
    assert used == [{"bias_mode": "none", "attention_scaling": "none"}]
    off = ba_variant(load_model(model_dir), bias_mode="none", attention_scaling="none")
    expected, _ = segment_image(off, load_processor(model_dir, off), Image.open(image_path), boxes=[[5, 5, 60, 40]])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "mask_000.png")) > 0, expected[0])


def test_compare_with_ba_off_compares_ba_off_with_itself(model_dir, tmp_path, capsys):
    output = tmp_path / "compare"
    argv = ["compare", "--model", model_dir, "--sizes", "64", "--samples", "2", "--output", str(output)]
    assert main(argv + BA_OFF_ARGS) == 0
    results = json.loads((output / "results.json").read_text())["results"]
    assert len(results) == 2 and results[0]["metrics"] == results[1]["metrics"]


def test_evaluate_takes_ba_options_and_resumes_only_the_same_settings(model_dir, tmp_path, capsys):
    from basam_hf.synthetic import save_synthetic_dataset

    data = tmp_path / "data"
    save_synthetic_dataset(data, 2, 64, seed=3)
    output = tmp_path / "eval"
    argv = ["evaluate", "--model", model_dir, "--dataset", str(data), "--output", str(output), "--compare-sam"]
    assert main(argv + BA_OFF_ARGS) == 0
    summary = json.loads((output / "summary.json").read_text())
    ba, sam = summary["results"]
    assert ba["metrics"] == sam["metrics"] and summary["model"] == model_dir
    assert main(argv) == 1  # a folder with an earlier run's outputs: resumed only when asked (--overwrite)
    assert "is not empty" in capsys.readouterr().err.splitlines()[-1]
    assert main(argv + ["--overwrite"]) == 0  # the model's own BA settings: new records, not the BA-off ones
    records = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["run"]["ba_settings"]["bias_mode"] for r in records} == {"none", "distance"}


def test_demo_models_start_from_the_given_ba_settings(model_dir):
    from basam_hf.app import DemoModels

    models = DemoModels(model_dir, ba_settings={"bias_mode": "none", "bias_slope_scale": 2.0})
    assert models.settings["bias_mode"] == "none" and models.settings["bias_slope_scale"] == 2.0


def test_a_negative_slope_scale_is_refused(model_dir, image_path, capsys):
    from basam_hf import BaSamConfig, BaSamVisionConfig

    for value in (-0.5, float("inf")):
        with pytest.raises(ValueError, match="bias_slope_scale"):
            BaSamVisionConfig(bias_slope_scale=value)
    config = BaSamConfig()
    with pytest.raises(ValueError, match=r"it must be >= 0"):
        config.bias_slope_scale = -1.0
    assert config.bias_slope_scale == 1.0 and BaSamVisionConfig(bias_slope_scale=0).bias_slope_scale == 0
    assert main(["info", "default", "--bias-slope-scale", "-1"]) == 1
    assert "Invalid bias_slope_scale=-1.0; it must be >= 0" in error_line(capsys)
    box = ["--box", "5", "5", "60", "40"]
    assert main(["segment", image_path, "--model", model_dir, *box, "--bias-slope-scale", "-2"]) == 1
    assert "it must be >= 0" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------------------
# --size


def test_size_help_says_what_a_size_off_the_patch_grid_does(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("segment", "compare", "evaluate", "finetune"):
        help_text = " ".join(commands[command].format_help().split())
        assert "rounded up to a multiple of the patch size" in help_text and "1000 runs the model at 1008" in help_text
    assert "multiples of the patch size (16 for SAM); others are refused" in " ".join(
        commands["demo"].format_help().split()
    )


def test_a_size_off_the_patch_grid_runs_padded_up(model_dir, image_path, tmp_path):
    """As --help says: the model runs at the size rounded up to whole patches (patch 8 here: 100 -> 104)."""
    from basam_hf.loading import load_model, load_processor

    model = load_model(model_dir)
    inputs = load_processor(model_dir, model)(images=Image.open(image_path), size=100, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (104, 104)
    output = tmp_path / "o"
    assert main(["segment", image_path, "--model", model_dir, "--box", "5", "5", "60", "40", "--size", "100",
                 "--output", str(output)]) == 0  # fmt: skip
    assert Image.open(output / "mask_000.png").size == (90, 50)


# ---------------------------------------------------------------------------------------------------------------------
# Log lines that alarmed users


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def collecting(name: str) -> Collect:
    handler = Collect()
    logging.getLogger(name).addHandler(handler)
    return handler


def test_convert_sam_does_not_warn_about_the_model_type(sam_dir, tmp_path):
    handler = collecting("transformers.configuration_utils")
    try:
        assert main(["convert-sam", sam_dir, str(tmp_path / "out")]) == 0
        from basam_hf import BaSamModel

        BaSamModel.from_pretrained(sam_dir)  # the Python API is unchanged: transformers still says it
    finally:
        logging.getLogger("transformers.configuration_utils").removeHandler(handler)
    said = [message for message in handler.messages if "model of type `sam`" in message]
    assert len(said) == 1, handler.messages


def test_checkpoints_do_not_log_removed_shared_tensors(model_dir, tmp_path):
    from basam_hf.synthetic import save_synthetic_dataset

    data = tmp_path / "data"
    save_synthetic_dataset(data, 2, 64, seed=0)
    handler = collecting("accelerate.utils.other")
    try:
        argv = ["finetune", "--model", model_dir, "--dataset", str(data), "--output", str(tmp_path / "run")]
        assert main(argv + ["--max-steps", "2", "--save-steps", "1", "--batch-size", "1", "--cpu"]) == 0
    finally:
        logging.getLogger("accelerate.utils.other").removeHandler(handler)
    assert not [message for message in handler.messages if "Removed shared tensor" in message]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()


# ---------------------------------------------------------------------------------------------------------------------
# README facts


def _readme_block(marker: str) -> str:
    """The fenced code block of README.md that follows the line containing `marker`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```", text.index(marker))
    body_start = text.index("\n", start) + 1
    return text[body_start : text.index("```", body_start)]


def test_readme_first_commands_and_torch_build():
    block = _readme_block("# basam-hf")
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == ["pip install torch==2.13.0 -e . && basam-hf compare", "bash scripts/test.sh"]
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()  # what CI runs
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme and "pytorch.org/get-started" in readme


def test_readme_auto_class_example_runs(model_dir):
    """The README's example of the Auto classes with the package installed: `import basam_hf` first, then no
    trust_remote_code."""
    code = _readme_block("With the package installed")
    assert "import basam_hf" in code and "trust_remote_code=" not in code
    result = run_python(code.replace('"path/or/repo"', repr(model_dir)) + "\nprint(type(model).__module__)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "basam_hf.modeling_basam"
