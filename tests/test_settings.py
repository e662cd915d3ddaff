"""Settings declared once: `basam-hf evaluate`'s and `basam-hf finetune`'s options are the fields of
`EvaluateSettings` and `FinetuneSettings` (help and choices from the field metadata), a new field is a new option
without touching the command line, parsed options become the dataclass again, the Python API takes the dataclass or
keyword arguments, and the run record is the dataclass."""

import argparse
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from basam_hf import cli
from basam_hf.constants import DTYPE_NAMES, LORA_DEFAULTS, LOSSES, MIXED_PRECISION, TRAIN_MODES
from basam_hf.settings import (
    EvaluateSettings,
    FinetuneSettings,
    add_settings_arguments,
    argument_options,
    positive_int,
    resolve_settings,
    setting,
    settings_from_args,
    settings_record,
)


def _help_text(argv: list[str]) -> str:
    """`basam-hf ARGV --help` as printed, with its line wrapping undone."""
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit) as exit:
        cli.main(argv + ["--help"])
    assert exit.value.code == 0
    return " ".join(out.getvalue().split())


def _expanded(help: str, default) -> str:
    return " ".join((help % {"default": default}).split())


def _parser_of(settings_class: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add_settings_arguments(parser, settings_class)
    return parser


# ---------------------------------------------------------------------------------------------------------------------
# evaluate's options are EvaluateSettings' fields


def test_every_evaluate_setting_is_an_option_with_its_help_and_choices():
    text = _help_text(["evaluate"])
    flags = {"output_dir": "--output"}  # the one setting whose option is not named after the field
    for field in dataclasses.fields(EvaluateSettings):
        flag = flags.get(field.name, "--" + field.name.replace("_", "-"))
        assert f" {flag} " in text, flag
        default = "basam-hf-evaluation" if field.name == "output_dir" else field.default
        assert _expanded(field.metadata["help"], default) in text, flag
        if "choices" in field.metadata:
            assert f"{flag} {{{','.join(field.metadata['choices'])}}}" in text, flag
    assert "--protocol {standard,official}" in text and f"--dtype {{{','.join(DTYPE_NAMES)}}}" in text


def test_parsed_evaluate_options_are_the_settings():
    parser = cli.build_parser()
    argv = ["evaluate", "--dataset", "data", "--sizes", "64", "128", "--protocol", "official", "--compare-sam"]
    argv += ["--output", "out", "--dtype", "bfloat16", "--max-samples", "3", "--jitter", "0.1"]
    settings = settings_from_args(EvaluateSettings, parser.parse_args(argv))
    expected = EvaluateSettings(
        dataset="data",
        sizes=[64, 128],
        protocol="official",
        compare_sam=True,
        output_dir="out",
        dtype="bfloat16",
        max_samples=3,
        jitter=0.1,
    )
    assert settings == expected
    # Without options: the API's defaults, except the output folder the command writes to by default.
    defaults = settings_from_args(EvaluateSettings, parser.parse_args(["evaluate"]))
    assert defaults == EvaluateSettings(output_dir="basam-hf-evaluation")


def test_a_new_field_is_a_new_evaluate_option_without_touching_the_command_line(monkeypatch):
    @dataclasses.dataclass
    class MoreSettings(EvaluateSettings):
        calibration_bins: int = setting(15, help="reliability-diagram bins (default: %(default)s)")

    monkeypatch.setattr(cli.run_commands, "EvaluateSettings", MoreSettings)
    assert "--calibration-bins CALIBRATION_BINS reliability-diagram bins (default: 15)" in _help_text(["evaluate"])
    args = cli.build_parser().parse_args(["evaluate", "--calibration-bins", "7"])
    assert settings_from_args(MoreSettings, args).calibration_bins == 7


def test_a_dynamic_dataclass_builds_its_parser():
    dynamic = dataclasses.make_dataclass(
        "Dynamic", [("mode", str, setting("all", choices=TRAIN_MODES, help="what is trained"))]
    )
    parser = _parser_of(dynamic)
    assert "{" + ",".join(TRAIN_MODES) + "}" in " ".join(parser.format_help().split())
    assert settings_from_args(dynamic, parser.parse_args(["--mode", "ba-only"])) == dynamic(mode="ba-only")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "everything"])


# ---------------------------------------------------------------------------------------------------------------------
# finetune's options are FinetuneSettings' fields

# The finetune settings whose option is not named after the field.
FINETUNE_FLAGS = {"output_dir": "--output", "learning_rate": "--lr"}


def _section(text: str, title: str) -> str:
    """The part of a help text from a group's title to the next group's (or the end)."""
    start = text.index(title)
    return text[start:]


def test_every_finetune_setting_is_an_option_with_its_help_and_choices():
    text = _help_text(["finetune"])
    lora = _section(text, "LoRA (--train lora):")
    for field in dataclasses.fields(FinetuneSettings):
        flag = FINETUNE_FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
        assert f" {flag} " in text, flag
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        default = " ".join(default) if isinstance(default, list) else default
        assert _expanded(field.metadata["help"], default) in text, flag
        if "choices" in field.metadata:
            assert f"{flag} {{{','.join(field.metadata['choices'])}}}" in text, flag
        assert (f" {flag} " in lora) == field.name.startswith("lora_"), flag  # the LoRA options in their group
    assert f"--train {{{','.join(TRAIN_MODES)}}}" in text and f"--loss {{{','.join(LOSSES)}}}" in text
    assert f"--mixed-precision {{{','.join(MIXED_PRECISION)}}}" in text and "--lr LR Adam learning rate" in text


def test_parsed_finetune_options_are_the_settings():
    parser = cli.build_parser()
    argv = ["finetune", "--dataset", "data", "--output", "run", "--train-sizes", "64", "128", "--lr", "0.01"]
    argv += ["--train", "lora", "--lora-rank", "4", "--lora-target-modules", "qkv", "--resume", "--log-with"]
    argv += ["--max-steps", "7", "--keep-last", "2", "--gradient-checkpointing", "--mixed-precision", "bf16"]
    settings = settings_from_args(FinetuneSettings, parser.parse_args(argv))
    expected = FinetuneSettings(
        dataset="data",
        output_dir="run",
        train_sizes=[64, 128],
        learning_rate=0.01,
        train="lora",
        lora_rank=4,
        lora_target_modules=["qkv"],
        resume=True,
        log_with=[],
        max_steps=7,
        keep_last=2,
        gradient_checkpointing=True,
        mixed_precision="bf16",
    )
    assert settings == expected
    assert settings.lora_options() == {
        "rank": 4,
        "alpha": LORA_DEFAULTS["alpha"],
        "dropout": LORA_DEFAULTS["dropout"],
        "target_modules": ["qkv"],
        "train_mask_decoder": LORA_DEFAULTS["train_mask_decoder"],
    }
    # Without options: the API's defaults (the output folder is the one required option).
    defaults = settings_from_args(FinetuneSettings, parser.parse_args(["finetune", "--output", "run"]))
    assert defaults == FinetuneSettings(output_dir="run") and defaults.lora_options() is None
    assert parser.parse_args(["finetune", "--output", "run", "--resume", "run/checkpoints/checkpoint-3"]).resume == (
        "run/checkpoints/checkpoint-3"
    )


def test_a_new_field_is_a_new_finetune_option_without_touching_the_command_line(monkeypatch):
    @dataclasses.dataclass
    class MoreSettings(FinetuneSettings):
        warmup_steps: int = setting(0, help="linear warm-up steps (default: %(default)s)")
        lora_bias: str = setting("none", choices=("none", "all"), help="which biases LoRA trains")

    monkeypatch.setattr(cli.run_commands, "FinetuneSettings", MoreSettings)
    text = _help_text(["finetune"])
    assert "--warmup-steps WARMUP_STEPS linear warm-up steps (default: 0)" in text
    assert "--lora-bias {none,all} which biases LoRA trains" in _section(text, "LoRA (--train lora):")
    args = cli.build_parser().parse_args(["finetune", "--output", "o", "--warmup-steps", "5", "--lora-bias", "all"])
    settings = settings_from_args(MoreSettings, args)
    assert (settings.warmup_steps, settings.lora_bias) == (5, "all")
    assert dataclasses.replace(settings, train="lora").lora_options()["bias"] == "all"


def test_the_lora_settings_are_the_fields_of_lora_options():
    pytest.importorskip("peft")
    from basam_hf.lora import LoraOptions

    names = [name.removeprefix("lora_") for name in FinetuneSettings.lora_names()]
    assert names == [field.name for field in dataclasses.fields(LoraOptions)]
    assert LoraOptions(**FinetuneSettings(train="lora").lora_options()) == LoraOptions()


# ---------------------------------------------------------------------------------------------------------------------
# The options inferred from annotations and metadata (what a fine-tuning command needs)


@dataclasses.dataclass
class _Every:
    output_dir: str = setting(flag="--output", required=True, record=False, help="output folder")
    learning_rate: float = setting(1e-4, flag="--lr", help="Adam learning rate (default: %(default)s)")
    sizes: list[int] | None = setting(None, type=positive_int, help="input sizes")
    log_with: list[str] | None = setting(None, nargs="*", help="trackers")
    private: bool = setting(False, help="private repo")
    learnable: bool | None = setting(None, help="learn the slopes")
    shuffle: bool = setting(True, help="shuffle the samples")
    resume: bool | str = setting(False, nargs="?", const=True, help="continue from a checkpoint")
    mode: Literal["fast", "exact"] = setting("exact", help="how")
    seed: int = setting(0)
    push_to_hub: str | None = setting(None, metavar="REPO_ID", help="push at the end")
    callback: object = setting(None, cli=False)


def test_options_are_inferred_from_annotations_and_metadata():
    parser = _parser_of(_Every)
    args = parser.parse_args(["--output", "o", "--lr", "0.5", "--sizes", "8", "16", "--log-with"])
    assert settings_from_args(_Every, args) == _Every(output_dir="o", learning_rate=0.5, sizes=[8, 16], log_with=[])
    argv = ["--output", "o", "--private", "--no-learnable", "--no-shuffle", "--resume", "--mode", "fast"]
    settings = settings_from_args(_Every, parser.parse_args(argv + ["--seed", "3", "--push-to-hub", "me/model"]))
    assert (settings.private, settings.learnable, settings.shuffle, settings.resume) == (True, False, False, True)
    assert (settings.mode, settings.seed, settings.push_to_hub) == ("fast", 3, "me/model")
    assert parser.parse_args(["--output", "o", "--resume", "ckpt"]).resume == "ckpt"
    assert parser.parse_args(["--output", "o"]).learnable is None  # neither flag: the model's own
    text = " ".join(parser.format_help().split())
    assert "--learnable, --no-learnable" in text and "--mode {fast,exact}" in text and "--push-to-hub REPO_ID" in text
    assert "--callback" not in text and "(default: 0.0001)" in text
    for argv in (["--lr", "1"], ["--output", "o", "--sizes", "0"], ["--output", "o", "--seed", "x"]):
        with pytest.raises(SystemExit):  # required, positive, int
            parser.parse_args(argv)


def test_argument_options_of_a_field():
    fields = {field.name: field for field in dataclasses.fields(_Every)}
    assert argument_options(fields["private"], bool) == {
        "help": "private repo",
        "default": False,
        "action": "store_true",
    }
    assert argument_options(fields["sizes"], list[int] | None) == {
        "help": "input sizes",
        "type": positive_int,
        "default": None,
        "nargs": "+",
    }
    assert argument_options(fields["output_dir"], str) == {"help": "output folder", "required": True}


# ---------------------------------------------------------------------------------------------------------------------
# The Python API and the run record


def test_resolve_settings_takes_the_dataclass_a_dict_or_keywords():
    base = EvaluateSettings(sizes=[64], seed=2)
    assert resolve_settings(EvaluateSettings) == EvaluateSettings()
    assert resolve_settings(EvaluateSettings, base, seed=5) == EvaluateSettings(sizes=[64], seed=5)
    assert resolve_settings(EvaluateSettings, {"sizes": [64]}, prompt="point") == EvaluateSettings(
        sizes=[64], prompt="point"
    )
    assert base.seed == 2  # not changed in place
    with pytest.raises(TypeError, match=r"Unknown setting\(s\) 'size' of EvaluateSettings; the settings are: .*sizes"):
        resolve_settings(EvaluateSettings, size=64)
    with pytest.raises(TypeError, match="settings must be a EvaluateSettings"):
        resolve_settings(EvaluateSettings, _Every(output_dir="o"))


def test_the_run_record_is_the_dataclass_in_json_types():
    settings = _Every(output_dir=Path("out"), sizes=(8, 16), callback=str)
    record = settings_record(settings)
    expected = {name: value for name, value in dataclasses.asdict(settings).items() if name != "output_dir"}
    assert record == {**expected, "sizes": [8, 16], "callback": str(str)}
    assert json.loads(json.dumps(record)) == record


def test_evaluate_takes_the_settings_and_records_them(tmp_path):
    pytest.importorskip("torch")
    from conftest import save_tiny_model, write_coco_instances

    from basam_hf.evaluation import evaluate

    model = save_tiny_model(tmp_path / "model", seed=3)
    annotations, images = write_coco_instances(tmp_path / "coco", count=3)
    settings = EvaluateSettings(coco_annotations=annotations, images=images, sizes=[64], max_samples=2, seed=1)
    summary = evaluate(model, settings=settings, output_dir=tmp_path / "out")
    by_keywords = evaluate(model, None, coco_annotations=annotations, images=images, sizes=[64], max_samples=2, seed=1)
    assert summary["results"] == by_keywords["results"] and summary["results"][0]["counts"]["evaluated"] == 2
    ran = dataclasses.replace(settings, prompt="box", dtype="float32")  # filled in: the default prompt, the dtype
    assert summary["settings"] == settings_record(ran) == by_keywords["settings"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["settings"] == summary["settings"]
    with pytest.raises(TypeError, match="Unknown setting"):
        evaluate(model, None, settings, max_sample=2)


def test_finetune_takes_the_settings_and_records_them(tmp_path):
    pytest.importorskip("torch")
    from conftest import save_tiny_model, write_coco_instances

    from basam_hf import BaSamConfig
    from basam_hf.checkpoints import latest_checkpoint
    from basam_hf.training import finetune

    model = save_tiny_model(tmp_path / "model", seed=3)
    annotations, images = write_coco_instances(tmp_path / "coco", count=3)
    given = {"prompt": "box", "max_steps": 2, "save_steps": 2, "learning_rate": 1e-3, "seed": 1, "log_with": []}
    settings = FinetuneSettings(coco_annotations=annotations, images=images, **given)
    by_settings = finetune(model, settings=settings, output_dir=tmp_path / "a")
    by_keywords = finetune(model, coco_annotations=annotations, images=images, output_dir=tmp_path / "b", **given)
    assert len(by_settings.losses) == 2 and by_settings.losses == pytest.approx(by_keywords.losses, rel=1e-6)
    record = json.loads((latest_checkpoint(tmp_path / "a") / "trainer_state.json").read_text())["settings"]
    size = BaSamConfig.from_pretrained(model).vision_config.image_size
    # Filled in by the run: the dataset's source and split, the sizes, the validation prompt.
    ran = dataclasses.replace(
        settings, dataset=annotations, split=record["split"], train_sizes=[size], val_sizes=[size], val_prompt="box"
    )
    assert {name: record[name] for name in settings_record(ran)} == settings_record(ran)
    assert record["lora"] is None and record["steps_per_epoch"] == 2 and record["train_samples"] == 3
    run_config = json.loads((tmp_path / "a" / "logs" / "run_config.json").read_text())
    assert run_config["learning_rate"] == 1e-3 and run_config["train_sizes"] == str([size])
    with pytest.raises(TypeError, match=r"Unknown setting\(s\) 'max_step' of FinetuneSettings"):
        finetune(model, settings=settings, output_dir=tmp_path / "c", max_step=2)
    with pytest.raises(TypeError, match="needs output_dir"):
        finetune(model, settings=settings)


def test_the_settings_module_imports_neither_torch_nor_transformers():
    code = "import sys, basam_hf.settings; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
