"""Resolution studies and `basam-hf compare` (the README's main command, on a tiny model here and on the embedded
default model in tests/test_default_model.py)."""

import json

import numpy as np
import pytest
import torch
from conftest import BA_OFF, randomize_, save_tiny_model, tiny_config_kwargs
from transformers import SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel, cli, study
from basam_hf.loading import ba_variant
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


def test_run_study_on_given_scenes_keeps_per_sample_iou_for_paired_differences(tmp_path, single_thread):
    """`scenes(size)` replaces the synthetic scenes; each result keeps its per-sample IoUs, whose mean is the
    reported mIoU, and `paired_difference` is the mean of the per-sample differences with an interval around it."""
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON)))).eval()
    photos = synthetic_segmentation_dataset(5, (40, 56), seed=3)  # one rendering fed at every size, like a photo
    asked = []

    def scenes(size: int):
        asked.append(size)
        return photos

    summary = study.run_study(
        model, {"BA": {}, "off": BA_OFF}, [64, 96], scenes=scenes, prompt="point", output_dir=tmp_path
    )
    assert asked == [64, 96] and summary["prompt"] == "point"
    rows = {(r["model"], r["size"]): r for r in summary["results"]}
    for row in rows.values():
        assert sorted(row["per_sample"]) == sorted(photos.ids)
        assert np.mean(list(row["per_sample"].values())) == pytest.approx(row["metrics"]["iou"], abs=1e-9)
    gain = study.paired_difference(summary, "BA", "off", 96)
    ba, off = rows["BA", 96]["per_sample"], rows["off", 96]["per_sample"]
    differences = [ba[i] - off[i] for i in photos.ids]
    assert gain["n"] == 5 and gain["mean"] == pytest.approx(np.mean(differences))
    assert min(differences) <= gain["low"] <= gain["mean"] <= gain["high"] <= max(differences)
    # Cached results are keyed by prompt too: a box study on the same scenes is computed anew.
    boxes = study.run_study(model, {"BA": {}}, [64], scenes=scenes, prompt="box", output_dir=tmp_path)
    assert boxes["results"][0]["key"]["prompt"] == "box" and rows["BA", 64]["key"]["prompt"] == "point"
    with pytest.raises(KeyError, match="No per-sample results"):
        study.paired_difference(summary, "BA", "missing", 96)


@torch.no_grad()
def test_shared_image_embeddings_runs_the_encoder_once_per_input(sample_inputs, single_thread):
    """Inside the block, the same pixels reach the vision encoder once (other pixels are computed), the outputs are
    those of the model without it, and the encoder is itself again afterwards."""
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON)))).eval()
    expected = model(**sample_inputs).pred_masks
    computed = []  # the patch embedding runs only when the encoder really computes
    model.vision_encoder.patch_embed.register_forward_pre_hook(lambda module, args: computed.append(1))
    other = dict(sample_inputs, pixel_values=sample_inputs["pixel_values"] + 1)
    with study.shared_image_embeddings([model, model]):
        first = model(**sample_inputs).pred_masks
        again = model(**sample_inputs).pred_masks
        model(**other)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert len(computed) == 2  # sample_inputs once, other once
    assert "forward" not in vars(model.vision_encoder)
    model(**sample_inputs)
    assert len(computed) == 3


def test_shared_image_embeddings_nest(sample_inputs, single_thread):
    """An inner block computes through the outer block's memo, and leaving it restores the outer memo: pixels seen
    in an inner block are not computed again in the next one."""
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**BA_ON)))).eval()
    computed = []
    model.vision_encoder.patch_embed.register_forward_pre_hook(lambda module, args: computed.append(1))
    with study.shared_image_embeddings([model]):
        with study.shared_image_embeddings([model]):
            model(**sample_inputs)
        assert "forward" in vars(model.vision_encoder)  # the outer memo is back
        with study.shared_image_embeddings([model]):
            model(**sample_inputs)
        model(**sample_inputs)
    assert len(computed) == 1 and "forward" not in vars(model.vision_encoder)


def test_compare_command_writes_table_plot_and_overlay(tmp_path, capsys, single_thread):
    folder = save_tiny_model(tmp_path / "model", **BA_ON)
    output = tmp_path / "compare"
    code = cli.main(["compare", "--model", folder, "--sizes", "64", "128", "--samples", "2", "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| BA-SAM |" in printed and "| SAM (BA off) |" in printed and "128 px (2×)" in printed
    assert study.COMPARE_NOTE in printed  # it says which comparison it makes: a switch, not two trained models
    summary = json.loads((output / study.RESULTS_JSON).read_text())
    assert {(r["model"], r["size"]) for r in summary["results"]} == {
        (name, size) for name in study.COMPARE_VARIANTS for size in (64, 128)
    }
    assert all(r["counts"]["evaluated"] + r["counts"]["skipped"] == 2 for r in summary["results"])
    from PIL import Image

    overlay = Image.open(output / study.OVERLAY_FILE)
    assert overlay.size[0] == 2 * 256 and overlay.size[1] > 2 * 256
    assert "Paired IoU differences" in printed


def test_compare_reports_paired_differences_with_intervals_and_plots_error_bars(tmp_path, capsys, single_thread):
    """The table's paired differences against a direct computation from the per-sample IoU in results.json; the
    plot's IoU axis spans 0-1 and every point has an error bar."""
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    folder = save_tiny_model(tmp_path / "model", **BA_ON)
    output = tmp_path / "compare"
    assert (
        cli.main(["compare", "--model", folder, "--sizes", "64", "96", "--samples", "4", "--output", str(output)]) == 0
    )
    summary = json.loads((output / study.RESULTS_JSON).read_text())
    table = (output / study.RESULTS_TABLE).read_text()
    found = {(r["model"], r["size"]): r["per_sample"] for r in summary["results"]}
    for size in (64, 96):
        ba, off = found[("BA-SAM", size)], found[("SAM (BA off)", size)]
        mean = float(np.mean([ba[key] - off[key] for key in ba]))
        row = next(line for line in table.splitlines() if line.startswith(f"| {size} px | "))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(mean, abs=6e-5) and cells[3] == "4"
        low, high = (float(value) for value in cells[2].strip("[]").split(","))
        assert low <= mean <= high
    figure = study.study_figure(summary)
    iou_axis, difference_axis = figure.axes
    assert iou_axis.get_ylim() == (0.0, 1.0)
    bars = [item for item in iou_axis.containers if isinstance(item, ErrorbarContainer)]
    assert len(bars) == 2 and all(bar.has_yerr for bar in bars)
    assert difference_axis.get_ylim()[1] >= 0.05 and difference_axis.get_ylim()[0] <= -0.05
    plt.close(figure)


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


def _study_example():
    """examples/resolution_study.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "resolution_study.py"
    spec = importlib.util.spec_from_file_location("resolution_study", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.slow
def test_resolution_study_example_runs_end_to_end(tmp_path, capsys, single_thread):
    """The twins study on two tiny twins: four variants per set and prompt, each with its BA settings at test time,
    and paired differences whose means are the differences of the variants' mIoUs (same scenes)."""
    from basam_hf.configuration_basam import BA_DEFAULTS

    example = _study_example()
    twins = tmp_path / "twins"
    save_tiny_model(twins / "ba", seed=0, **BA_DEFAULTS)
    save_tiny_model(twins / "off", seed=1, **BA_OFF)
    output = tmp_path / "study"
    argv = ["--twins", str(twins), "--output", str(output), "--samples", "3", "--scales", "1", "1.5"]
    assert example.main(argv) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["sizes"] == [64, 96] and set(results["miou"]) == {"synthetic-box", "synthetic-point",
                                                                     "photo-box", "photo-point"}  # fmt: skip
    for key, means in results["miou"].items():
        assert set(means) == set(example.VARIANTS)
        for name, (variant, baseline) in example.CONTRASTS.items():
            for size in ("64", "96"):
                difference = results["paired_differences"][key][name][size]
                assert difference["n"] == 3
                assert difference["mean"] == pytest.approx(means[variant][size] - means[baseline][size], abs=1e-9)
    # Each variant ran with its BA settings: the switched plain twin with the package's defaults, and so on.
    for name, (which, settings) in example.VARIANTS.items():
        run = json.loads((output / "photo-point" / "runs" / f"{study._slug(name)}-96.json").read_text())
        expected = settings or (BA_DEFAULTS if which == "ba" else BA_OFF)
        assert all(run["key"]["ba"][field] == value for field, value in expected.items())
    text = capsys.readouterr().out
    assert "## photo scenes, single click (3 held-out scenes)" in text and "loss from 64 px" in text
    for name in ("results.md", "miou_vs_size.png", "overlay.png"):
        assert (output / name).is_file()


def test_resolution_study_marks_only_intervals_that_exclude_zero():
    example = _study_example()
    assert example.cell({"mean": 0.02, "low": 0.001, "high": 0.04}) == "**+0.020 [+0.001, +0.040]**"
    assert example.cell({"mean": -0.02, "low": -0.04, "high": -0.001}).startswith("**")
    assert example.cell({"mean": 0.01, "low": -0.001, "high": 0.02}) == "+0.010 [-0.001, +0.020]"
