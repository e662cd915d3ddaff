"""The embedded default model: its training script (on a tiny setting), its held-out quality, and the README's main
command (`basam-hf compare`) on it, reduced."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import BA_OFF, save_tiny_model

from basam_hf import BaSamModel, cli, study
from basam_hf.configuration_basam import BA_DEFAULTS
from basam_hf.conversion import rebase_image_size
from basam_hf.loading import load_model, load_processor

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "src" / "basam_hf" / "default"


def load_script():
    spec = importlib.util.spec_from_file_location("train_default_model", REPO / "scripts" / "train_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_RUN = [
    "--image-size", "64", "--patch-size", "8", "--hidden-size", "32", "--layers", "2", "--heads", "2",
    "--window-size", "3", "--global-layers", "1", "--output-channels", "16",
    "--train-samples", "8", "--val-samples", "2", "--test-samples", "3",
    "--batch-size", "4", "--max-steps", "2", "--eval-steps", "1", "--save-steps", "1", "--iou-steps", "1",
]  # fmt: skip


@pytest.mark.slow
def test_training_script_trains_tests_and_installs(tmp_path, single_thread):
    script = load_script()
    target = tmp_path / "installed"
    argv = ["--output-dir", str(tmp_path / "run"), "--install-default", "--install-dir", str(target), *TINY_RUN]
    assert script.main(argv + ["--install-ba", "bias_mode=distance", "bias_slope_scale=0.5"]) == 0
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert results["steps"] == 2
    for name in ("best", "final", "installed"):
        row = results[name]["box"]
        assert row["counts"]["evaluated"] + row["counts"]["skipped"] == 3 and 0 <= row["metrics"]["iou"] <= 1
    trained = BaSamModel.from_pretrained(tmp_path / "run" / "best")
    installed = BaSamModel.from_pretrained(target)
    assert trained.config.vision_config.bias_mode == "none"  # trained as plain SAM
    assert installed.config.vision_config.bias_mode == "distance"
    assert installed.config.vision_config.bias_slope_scale == 0.5
    assert json.loads((target / "test_results.json").read_text())["installed"]["ba"]["bias_slope_scale"] == 0.5
    changed = {name for name, tensor in trained.state_dict().items() if not installed.state_dict()[name].equal(tensor)}
    assert changed and all(name.startswith("mask_decoder.iou_prediction_head.") for name in changed)  # calibrated


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 96])
def test_training_script_continues_from_a_model_with_ba_off(tmp_path, single_thread, size):
    """Stages 2 and 3 of the recipe: `--init-from` starts from a saved model (here one installed with BA on), trains
    it as plain SAM, at another `--image-size` after rebasing it, and ignores the other architecture arguments."""
    script = load_script()
    start = tmp_path / "start"
    save_tiny_model(start, seed=1, bias_mode="distance", attention_scaling="log_length")
    argv = ["--output-dir", str(tmp_path / "run"), "--init-from", str(start), *TINY_RUN, "--learning-rate", "1e-7"]
    assert script.main(argv + ["--hidden-size", "64", "--image-size", str(size)]) == 0
    before, after = BaSamModel.from_pretrained(start), BaSamModel.from_pretrained(tmp_path / "run" / "final")
    vision = after.config.vision_config
    assert vision.bias_mode == "none" and vision.attention_scaling == "none"
    assert vision.hidden_size == before.config.vision_config.hidden_size and vision.image_size == size
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert results["final"]["box"]["size"] == size  # tested at the size it was trained at
    weights = after.state_dict()
    for name, tensor in rebase_image_size(before, size).state_dict().items():  # 2 steps at lr 1e-7: nearly equal
        assert (weights[name] - tensor).abs().max() < 1e-5, name


@pytest.mark.slow
def test_training_script_continues_from_a_model_with_ba_on(tmp_path, single_thread):
    """Stage 6 of the recipe: `--init-from` with `--bias-mode` / `--attention-scaling` fine-tunes with BA."""
    script = load_script()
    start = save_tiny_model(tmp_path / "start", seed=1)
    argv = ["--output-dir", str(tmp_path / "run"), "--init-from", str(start), *TINY_RUN]
    assert script.main(argv + ["--bias-mode", "distance", "--attention-scaling", "log_length"]) == 0
    vision = BaSamModel.from_pretrained(tmp_path / "run" / "final").config.vision_config
    assert vision.bias_mode == "distance" and vision.attention_scaling == "log_length"


def test_default_model_is_small_and_ships_current_code():
    weights = DEFAULT / "model.safetensors"
    assert weights.stat().st_size < 10 * 2**20
    for code in DEFAULT.glob("*.py"):  # for trust_remote_code: links to (or, in a wheel, copies of) the package
        assert code.read_text() == (REPO / "src" / "basam_hf" / code.name).read_text(), code.name


def test_default_model_processor_is_for_its_input_size():
    """The saved processor resizes to the size the model was trained at (a stale one would feed it smaller images)."""
    from basam_hf import BaSamProcessor

    size = load_model("default").config.vision_config.image_size
    assert BaSamProcessor.from_pretrained(DEFAULT).image_processor.size.longest_edge == size


def test_default_model_carries_the_package_default_ba_settings():
    vision = load_model("default").config.vision_config
    assert {field: getattr(vision, field) for field in BA_DEFAULTS} == BA_DEFAULTS


ACCEPTANCE = DEFAULT / "acceptance.json"  # scripts/assess_default_model.py's report on the installed model
RECHECKED = 12  # held-out samples per set re-measured here (the report's first ones)


def recorded_report() -> dict:
    return json.loads(ACCEPTANCE.read_text())


def test_default_model_re_measures_its_recorded_held_out_numbers(single_thread):
    """The first held-out samples of each set, re-measured as scripts/assess_default_model.py measured them: each
    prompt's mean IoU within 0.02 of the recorded per-sample IoUs of the same samples, and boxes on the synthetic
    scenes clearly better than the image-blind ellipse (the model segments what it sees, not the box's shape)."""
    from basam_hf.assessment import prompt_scores

    script = load_assessment_script()
    report = recorded_report()
    model = load_model("default")
    assert report["size"] == model.config.vision_config.image_size and report["seed"] == script.TEST_SEED
    sets = script.held_out_sets(RECHECKED, report["size"])
    measured = prompt_scores(model, sets, prompts=("box", "point"), size=report["size"], seed=script.TEST_SEED)
    for name, row in measured.items():
        recorded = report["prompts"][name]["per_sample"]
        assert row["per_sample"]["ids"] == recorded["ids"][:RECHECKED]
        for prompt in ("box", "point"):
            expected = float(np.mean(recorded[prompt][:RECHECKED]))
            assert abs(row[prompt]["mean"] - expected) < 0.02, (name, prompt, row[prompt]["mean"], expected)
    assert measured["synthetic"]["box - ellipse"]["mean"] > 0.05


def test_default_model_finds_automatic_masks_at_its_recommended_thresholds(single_thread):
    """What `basam-hf segment --automatic` does with the default model on a held-out photo composite: masks appear,
    and one of them is an object of the scene."""
    from basam_hf.assessment import matched_objects
    from basam_hf.composites import compose, composite_seeds
    from basam_hf.segment import generate_masks

    model = load_model("default")
    assert model.config.mask_generation  # recommended in its config (README: the pipeline's defaults keep few)
    scene = compose(composite_seeds(1, load_assessment_script().TEST_SEED + 1)[0], "test")
    masks, _ = generate_masks(model, load_processor("default", model), scene["image"], points_per_side=16)
    assert len(masks) >= 1 and max(matched_objects(masks, scene["masks"])) >= 0.5


def test_docs_quote_the_recorded_numbers():
    """docs/default-model.md quotes the recorded assessment; the README's summary its photo box and ellipse means."""
    report = recorded_report()
    doc = (REPO / "docs" / "default-model.md").read_text()
    for name in ("synthetic", "photo"):
        for key in ("box", "point", "ellipse"):
            assert f"{report['prompts'][name][key]['mean']:.3f}" in doc, (name, key)
    assert f"{report['automatic']['recall']:.2f}" in doc
    assert f"{report['automatic_recommended']['recall']:.2f}" in doc
    readme = (REPO / "README.md").read_text()
    assert all(f"{report['prompts']['photo'][key]['mean']:.3f}" in readme for key in ("box", "ellipse"))


@pytest.mark.xfail(
    strict=True,
    reason="issue 15's bars are not all met by the installed model (its acceptance.json; see docs/default-model.md); strict, so "
    "a model that meets them all turns this into a failure that asks to remove the marker",
)
def test_default_model_meets_the_issue_bars():
    assert all(recorded_report()["meets"].values())


def test_readme_main_command_on_the_default_model(tmp_path, capsys, single_thread):
    """`basam-hf compare` as in the README, on fewer scenes and sizes."""
    output = tmp_path / "compare"
    assert cli.main(["compare", "--sizes", "256", "512", "--samples", "2", "--output", str(output)]) == 0
    assert "| SAM (BA off) |" in capsys.readouterr().out
    summary = json.loads((output / study.RESULTS_JSON).read_text())
    assert len(summary["results"]) == 4 and (output / study.OVERLAY_FILE).is_file()
    ba_off = study.ba_settings(study.build_variants(load_model("default"), {"off": BA_OFF})["off"])
    assert summary["variants"]["SAM (BA off)"] == {key: ba_off[key] for key in BA_OFF}


@pytest.mark.slow
def test_training_script_trains_on_mixed_data_with_ba_and_exports_a_stage_state(tmp_path, single_thread):
    """The photo-and-synthetic recipe: mixed prompts, several sizes, BA on as shipped; a checkpoint exported as a
    stage state is a model folder the next stage starts from, with the same weights."""
    pytest.importorskip("skimage")
    script = load_script()
    run = tmp_path / "run"
    mixed = ["--data", "mixed", "--photo-samples", "4", "--synthetic-size", "64", "--prompt", "mixed", "--ba-defaults"]
    argv = ["--output-dir", str(run), *TINY_RUN, *mixed, "--train-sizes", "64", "96", "--test-prompts", "click"]
    assert script.main(argv) == 0
    results = json.loads((run / "test_results.json").read_text())
    assert set(results["final"]) == {"synthetic", "photo"} and results["final"]["photo"]["click"]["size"] == 64
    trained = BaSamModel.from_pretrained(run / "final")
    assert {field: getattr(trained.config.vision_config, field) for field in BA_DEFAULTS} == BA_DEFAULTS
    state = tmp_path / "state"
    checkpoint = run / "checkpoints" / "checkpoint-2"
    assert script.main(["--output-dir", str(run), "--export-state", str(checkpoint), "--state-dir", str(state)]) == 0
    exported = BaSamModel.from_pretrained(state)
    assert json.loads((state / "trainer_state.json").read_text())["global_step"] == 2
    assert all(exported.state_dict()[name].equal(tensor) for name, tensor in trained.state_dict().items())
    assert not list(state.glob("*.py"))
    installed = tmp_path / "installed"  # a committed state installed as the default model would be
    install = ["--output-dir", str(run), "--install", str(state), "--install-dir", str(installed)]
    assert script.main([*install, "--install-mask-generation", "pred_iou_thresh=0.6"]) == 0
    model = BaSamModel.from_pretrained(installed)
    assert {field: getattr(model.config.vision_config, field) for field in BA_DEFAULTS} == BA_DEFAULTS
    assert model.config.mask_generation == {"pred_iou_thresh": 0.6}
    assert all(model.state_dict()[name].equal(tensor) for name, tensor in trained.state_dict().items())
    assert (installed / "modeling_basam.py").is_file()  # loads with trust_remote_code like any BA-SAM folder


def load_assessment_script():
    spec = importlib.util.spec_from_file_location("assess_default_model", REPO / "scripts" / "assess_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_assessment_script_writes_the_acceptance_table(tmp_path, single_thread):
    """The acceptance table on a tiny random model: every bar is judged, and a random model meets none of the
    quality bars (only the weights-size one)."""
    pytest.importorskip("skimage")
    script = load_assessment_script()
    folder = Path(save_tiny_model(tmp_path / "tiny", seed=3))
    config = json.loads((folder / "config.json").read_text())  # recommended thresholds that keep every mask
    config["mask_generation"] = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    output = tmp_path / "assess"
    assert script.main(["--model", str(folder), "--output", str(output), "--samples", "3", "--scenes", "1"]) == 0
    report = json.loads((output / "acceptance.json").read_text())
    assert set(report["prompts"]) == {"synthetic", "photo"} and report["prompts"]["photo"]["box"]["n"] == 3
    assert report["weights_mb"] == round((folder / "model.safetensors").stat().st_size / 2**20, 2)
    assert [bar for bar, ok in report["meets"].items() if ok] == ["weights <= 40 MB"]
    assert "| photo |" in (output / "acceptance.md").read_text()
    recommended = report["automatic_recommended"]
    assert recommended["thresholds"] == config["mask_generation"] and recommended["masks_per_image"] >= 1
    assert recommended["masks_per_image"] > report["automatic"]["masks_per_image"]  # the defaults filter
    assert "prompts" in json.loads((output / "partial.json").read_text())  # saved before the automatic masks
    sweep = tmp_path / "sweep"  # thresholds on validation composites
    assert script.main(["--model", str(folder), "--output", str(sweep), "--scenes", "1", "--sweep-thresholds"]) == 0
    result = json.loads((sweep / "thresholds.json").read_text())
    assert [tuple(row["thresholds"].values()) for row in result["sweep"]] == script.SWEEP
    best = max(row["recall"] for row in result["sweep"])
    assert result["chosen"] == next(row["thresholds"] for row in result["sweep"] if row["recall"] == best)
    other = json.loads(json.dumps(report))  # another model's report: one sample's box IoU 0.3 lower
    other["prompts"]["photo"]["per_sample"]["box"][1] -= 0.3
    differences = script.paired_differences(report, other)
    assert differences["photo"]["box"]["mean"] == pytest.approx(0.1) and differences["photo"]["point"]["mean"] == 0
    assert differences["synthetic"]["box"]["mean"] == 0
