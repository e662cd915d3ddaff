"""Resolution studies and `basam-hf compare` (the README's main command, on a tiny model here and on the embedded
default model in tests/test_default_model.py)."""

import json

import numpy as np
import pytest
import torch
from conftest import BA_OFF, randomize_, save_tiny_model, tiny_config_kwargs
from transformers import SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel, cli, study
from basam_hf.evaluation import ba_variant
from basam_hf.synthetic import make_synthetic_dataset, synthetic_segmentation_dataset

BA_ON = {"bias_mode": "distance", "attention_scaling": "log_length"}


def test_synthetic_segmentation_dataset_matches_the_stored_dataset():
    lazy = synthetic_segmentation_dataset(3, 48, seed=7)
    stored = make_synthetic_dataset(3, 48, seed=7)
    assert lazy.ids == stored["id"]
    for index in range(3):
        sample = lazy[index]
        np.testing.assert_array_equal(np.asarray(sample["image"]), np.asarray(stored[index]["image"]))
        np.testing.assert_array_equal(sample["mask"], np.asarray(stored[index]["mask"]) > 127)


@torch.no_grad()
def test_ba_off_variant_computes_what_sam_computes(sample_inputs, single_thread):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON)))).eval()
    sam = SamModel(SamConfig(**tiny_config_kwargs())).eval()
    sam.load_state_dict(model.state_dict())
    variant = ba_variant(model, **BA_OFF)
    torch.testing.assert_close(variant(**sample_inputs).pred_masks, sam(**sample_inputs).pred_masks, rtol=0, atol=0)
    assert not torch.equal(model(**sample_inputs).pred_masks, sam(**sample_inputs).pred_masks)


def test_coefficient_variant_starts_its_coefficients_at_their_initial_value():
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON))))
    variant = ba_variant(model, bias_mode="coefficient", coefficient_init=0.25)
    coefficients = {name: p for name, p in variant.named_parameters() if name.endswith("coefficient")}
    assert coefficients and all(torch.all(p == 0.25) for p in coefficients.values())
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(variant.state_dict()[name], tensor, rtol=0, atol=0)


def test_variant_with_foreign_weights_is_refused():
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs()))
    with pytest.raises(ValueError, match="Not BA settings: \\['hidden_size'\\]"):
        ba_variant(model, hidden_size=48)


def test_run_study_caches_per_variant_and_size_and_recomputes_for_new_weights(tmp_path, monkeypatch, single_thread):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON)))).eval()
    variants = {"BA": {}, "off": BA_OFF}
    first = study.run_study(model, variants, [64, 96], num_samples=2, output_dir=tmp_path)
    assert [(r["model"], r["size"]) for r in first["results"]] == [("BA", 64), ("off", 64), ("BA", 96), ("off", 96)]
    table = (tmp_path / study.RESULTS_TABLE).read_text()
    assert "| BA |" in table and "96 px (1.5×)" in table
    assert (tmp_path / study.PLOT_FILE).stat().st_size > 0

    calls = []
    real_evaluate = study.evaluate
    monkeypatch.setattr(study, "evaluate", lambda *a, **k: calls.append(k["label"]) or real_evaluate(*a, **k))
    again = study.run_study(model, variants, [64, 96], num_samples=2, output_dir=tmp_path)
    assert calls == [] and again["results"] == first["results"]

    randomize_(model, seed=1)  # new weights: nothing cached may be reused
    study.run_study(model, variants, [64, 96], num_samples=2, output_dir=tmp_path)
    assert calls == ["BA", "off", "BA", "off"]


def test_compare_command_writes_table_plot_and_overlay(tmp_path, capsys, single_thread):
    folder = save_tiny_model(tmp_path / "model", **BA_ON)
    output = tmp_path / "compare"
    code = cli.main(["compare", "--model", folder, "--sizes", "64", "128", "--samples", "2", "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| BA-SAM |" in printed and "| SAM (BA off) |" in printed and "128 px (2×)" in printed
    summary = json.loads((output / study.RESULTS_JSON).read_text())
    assert {(r["model"], r["size"]) for r in summary["results"]} == {
        (name, size) for name in study.COMPARE_VARIANTS for size in (64, 128)
    }
    assert all(r["counts"]["evaluated"] + r["counts"]["skipped"] == 2 for r in summary["results"])
    from PIL import Image

    overlay = Image.open(output / study.OVERLAY_FILE)
    assert overlay.size[0] == 2 * 256 and overlay.size[1] > 2 * 256


def test_compare_defaults_to_its_scales_of_the_training_size(tmp_path, monkeypatch):
    """Without --sizes, compare runs at COMPARE_SCALES times the model's size, rounded to whole patches."""
    config = BaSamConfig(**tiny_config_kwargs(image_size=40, patch_size=8))
    seen = {}
    monkeypatch.setattr(study, "run_study", lambda model, variants, sizes, **kwargs: seen.setdefault("sizes", sizes))
    study.compare(BaSamModel(config), output_dir=tmp_path)
    assert seen["sizes"] == [8 * round(40 * scale / 8) for scale in study.COMPARE_SCALES]
    assert study.scaled_sizes(BaSamModel(config), [1, 1.5, 0.01]) == [40, 64, 8]  # 60 -> 7.5 patches -> 8; >= 1 patch


def test_compare_command_reports_a_missing_model(tmp_path, capsys):
    assert cli.main(["compare", "--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")]) == 1
    assert "basam-hf compare: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_resolution_study_example_runs_end_to_end(tmp_path, capsys, single_thread):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "resolution_study.py"
    spec = importlib.util.spec_from_file_location("resolution_study", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    folder = save_tiny_model(tmp_path / "model", **BA_OFF)
    output = tmp_path / "study"
    argv = ["--model", folder, "--output", str(output), "--samples", "2", "--scales", "1", "1.5"]
    assert example.main(argv + ["--finetune-steps", "2", "--finetune-batch-size", "2"]) == 0
    summary = json.loads((output / study.RESULTS_JSON).read_text())
    names = list(example.ZERO_SHOT) + list(example.FINE_TUNED)
    assert {(r["model"], r["size"]) for r in summary["results"]} == {(n, s) for n in names for s in (64, 96)}
    for name in example.FINE_TUNED:  # each fine-tuned model ran its steps and carries its BA settings
        config = json.loads((Path(summary["variants"][name]) / "config.json").read_text())["vision_config"]
        assert all(config[key] == value for key, value in example.FINE_TUNED[name].items())
    assert "| fine-tuned with BA |" in capsys.readouterr().out
    assert (output / study.OVERLAY_FILE).is_file()
