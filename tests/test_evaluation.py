"""Evaluation loop: 1 vs 2 processes (accelerate launch), resume, bad inputs, BA-off = SAM, official protocol, CLI."""

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import BA_OFF, accelerate_launch, randomize_, save_tiny_model, tiny_config_kwargs, write_coco_instances
from PIL import Image
from transformers import SamConfig, SamModel

from basam_hf import BaSamConfig, BaSamModel
from basam_hf.cli import main
from basam_hf.conversion import is_ba_parameter
from basam_hf.data import load_segmentation_dataset, mask_box
from basam_hf.evaluation import evaluate, official_click, read_records
from basam_hf.loading import sam_variant

NUM_SAMPLES = 5  # odd: with 2 processes and batches of 2 the last batches are padded with duplicates


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), seed=3)


def _write_sample(root, stem: str, size: tuple[int, int], box: tuple[int, int, int, int] | None, seed: int) -> None:
    """An image of `size` (height, width) with a brighter rectangle `box` (rows, cols) as the object."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
    mask = np.zeros(size, dtype=np.uint8)
    if box is not None:
        top, left, bottom, right = box
        image[top:bottom, left:right] += 100
        mask[top:bottom, left:right] = 255
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    sizes = [(48, 64), (80, 56), (64, 64), (50, 72), (72, 48)]
    boxes = [(10, 12, 30, 40), (20, 8, 70, 30), (5, 5, 60, 60), (12, 30, 40, 70), (30, 10, 50, 40)]
    for index in range(NUM_SAMPLES):
        _write_sample(root, f"img{index}", sizes[index], boxes[index], seed=index)
    return root


def _by_key(path) -> dict[tuple, dict]:
    """Records of a JSONL file by (variant, size, sample id), checking that none was recorded twice."""
    records = [json.loads(line) for line in open(path, encoding="utf-8")]
    keys = [(record["run"]["variant"], record["run"]["size"], record["id"]) for record in records]
    assert len(keys) == len(set(keys)), "a sample was recorded twice"
    return dict(zip(keys, records))


def test_two_processes_give_the_single_process_results(tiny_model_dir, image_folder, tmp_path):
    args = ["evaluate", "--model", tiny_model_dir, "--dataset", str(image_folder), "--sizes", "64", "96"]
    args += ["--prompt", "point", "--batch-size", "2", "--seed", "5"]
    launch, env = accelerate_launch(2)
    two = tmp_path / "two"
    completed = subprocess.run(
        launch + ["-m", "basam_hf.cli"] + args + ["--output", str(two)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Evaluated with 2 process(es)" in completed.stdout
    assert completed.stdout.count("| BA-SAM | 64 |") == 1  # only the main process prints

    one = tmp_path / "one"
    assert main(args + ["--output", str(one)]) == 0
    records_one, records_two = _by_key(one / "samples.jsonl"), _by_key(two / "samples.jsonl")
    assert len(records_two) == 2 * NUM_SAMPLES  # every sample once per size, padded duplicates dropped
    assert records_one.keys() == records_two.keys()
    for key, record in records_one.items():
        assert records_two[key]["prompt"] == record["prompt"]
        assert records_two[key]["metrics"] == pytest.approx(record["metrics"], abs=1e-6)
    summary_one = json.loads((one / "summary.json").read_text())
    summary_two = json.loads((two / "summary.json").read_text())
    for result_one, result_two in zip(summary_one["results"], summary_two["results"], strict=True):
        assert result_one["counts"] == result_two["counts"] == {"samples": 5, "evaluated": 5, "skipped": 0}
        assert result_one["metrics"] == pytest.approx(result_two["metrics"], abs=1e-6)


def _same_summary(first: dict, second: dict) -> None:
    assert [r["counts"] for r in first["results"]] == [r["counts"] for r in second["results"]]
    assert [r["metrics"] for r in first["results"]] == [r["metrics"] for r in second["results"]]
    assert {k: v for k, v in first.items() if k != "results"} == {k: v for k, v in second.items() if k != "results"}


def test_resume_after_an_interruption_recomputes_nothing_finished(tiny_model_dir, image_folder, tmp_path):
    settings = dict(sizes=[64], prompt="box", batch_size=2, compare_sam=True, seed=1)
    reference = evaluate(tiny_model_dir, str(image_folder), output_dir=tmp_path / "reference", **settings)

    class Interrupted(Exception):
        pass

    def interrupt(records):
        raise Interrupted  # after the first batch has been written, as if the run were killed

    with pytest.raises(Interrupted):
        evaluate(tiny_model_dir, str(image_folder), output_dir=tmp_path / "run", on_records=interrupt, **settings)
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 2
    computed = []
    resumed = evaluate(
        tiny_model_dir, str(image_folder), output_dir=tmp_path / "run", on_records=computed.extend, **settings
    )
    ba_ids = [record["id"] for record in computed if record["run"]["variant"] == "ba"]
    assert sorted(ba_ids) == ["img2", "img3", "img4"]  # the first batch (img0, img1) was not recomputed
    assert len([record for record in computed if record["run"]["variant"] == "sam"]) == NUM_SAMPLES
    _same_summary(resumed, reference)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == resumed
    # A finished run resumes to the same summary without computing anything.
    computed.clear()
    again = evaluate(
        tiny_model_dir, str(image_folder), output_dir=tmp_path / "run", on_records=computed.extend, **settings
    )
    assert computed == [] and again == resumed
    # Recorded prompts are in original image coordinates.
    dataset = load_segmentation_dataset(image_folder)
    records = read_records(tmp_path / "run" / "samples.jsonl")
    for key, by_id in records.items():
        for index, sample_id in enumerate(dataset.ids):
            assert by_id[sample_id]["prompt"]["boxes"] == [mask_box(dataset[index]["mask"]).tolist()]


def test_other_weights_at_the_same_path_are_recomputed(image_folder, tmp_path):
    """Resumed records belong to the weights that made them: a retrained model saved over the old one is re-run."""
    model_path = tmp_path / "model"
    settings = dict(sizes=[64], prompt="box", batch_size=5, output_dir=tmp_path / "run")
    save_tiny_model(model_path, seed=4)
    evaluate(str(model_path), str(image_folder), **settings)
    save_tiny_model(model_path, seed=5)  # "retrained": same path, new weights
    computed = []
    evaluate(str(model_path), str(image_folder), on_records=computed.extend, **settings)
    assert len(computed) == NUM_SAMPLES
    runs = read_records(tmp_path / "run" / "samples.jsonl").values()
    assert len({next(iter(by_id.values()))["run"]["weights"] for by_id in runs}) == 2


def test_bad_inputs_are_skipped_with_reasons_and_the_run_continues(tiny_model_dir, tmp_path):
    root = tmp_path / "bad"
    _write_sample(root, "good1", (48, 64), (10, 10, 30, 40), seed=0)
    _write_sample(root, "good2", (64, 48), (5, 5, 20, 20), seed=1)
    _write_sample(root, "empty", (48, 48), None, seed=2)
    _write_sample(root, "tiny", (6, 40), (1, 1, 4, 20), seed=3)  # smaller than one 8 px patch
    _write_sample(root, "mismatch", (48, 64), (10, 10, 30, 40), seed=4)
    Image.fromarray(np.zeros((40, 64), dtype=np.uint8)).save(root / "masks" / "mismatch.png")
    _write_sample(root, "broken", (48, 64), (10, 10, 30, 40), seed=5)
    (root / "images" / "broken.png").write_bytes(b"not an image")
    _write_sample(root, "unmasked", (48, 64), (10, 10, 30, 40), seed=6)
    (root / "masks" / "unmasked.png").unlink()

    summary = evaluate(tiny_model_dir, str(root), sizes=[64], batch_size=3, output_dir=tmp_path / "out")
    (result,) = summary["results"]
    assert result["counts"] == {"samples": 7, "evaluated": 2, "skipped": 5}
    reasons = {item["id"]: item["reason"] for item in result["skipped"]}
    assert "empty mask" in reasons["empty"]
    assert "smaller than one 8x8 patch" in reasons["tiny"]
    assert "mask size 40x64 differs from image size 48x64" in reasons["mismatch"]
    assert "cannot read the image" in reasons["broken"]
    assert "no mask file" in reasons["unmasked"]
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| BA-SAM | 64 | 2 | 5 |" in table and "- `broken`: cannot read the image" in table


def test_ba_off_variant_computes_what_sam_computes(sample_inputs):
    ba = dict(learnable_slopes=True, bias_slope_scale=100.0)  # steep slopes: BA visibly changes the tiny model
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs(**ba))), seed=2).eval()
    sam = SamModel(SamConfig(**tiny_config_kwargs())).eval()
    state = {key: value for key, value in model.state_dict().items() if not is_ba_parameter(key)}
    sam.load_state_dict(state)
    variant = sam_variant(model)
    assert variant.config.vision_config.bias_mode == BA_OFF["bias_mode"]
    with torch.no_grad():
        expected = sam(**sample_inputs).pred_masks
        assert (variant(**sample_inputs).pred_masks - expected).abs().max() < 1e-5
        assert (model(**sample_inputs).pred_masks - expected).abs().max() > 1e-4


def test_official_protocol_click_and_settings(tiny_model_dir, image_folder, tmp_path):
    mask = np.zeros((40, 80), dtype=bool)
    mask[30:38, 2:70] = True  # a wide band at the bottom: rows 30..37
    clicks = [official_click(mask, 64, np.random.default_rng(seed)) for seed in range(10)]
    for x, y in clicks:  # (x, y) = (column, row) in the 64 x 64 squashed input
        assert 48 <= y <= 60 and 1 <= x <= 56
    assert len({tuple(click) for click in clicks}) > 1
    summary = evaluate(tiny_model_dir, str(image_folder), sizes=[64], protocol="official", max_samples=3)
    assert summary["prompt"] == "click" and summary["metric_names"] == [
        "official_iou",
        "official_dice",
        "official_mae",
    ]
    assert set(summary["results"][0]["metrics"]) == set(summary["metric_names"])
    with pytest.raises(ValueError, match="official protocol uses its own"):
        evaluate(tiny_model_dir, str(image_folder), protocol="official", prompt="box")
    with pytest.raises(ValueError, match="Size 60 is not valid"):
        evaluate(tiny_model_dir, str(image_folder), protocol="official", sizes=[60])


def test_normalize_maps_is_a_run_of_its_own(tiny_model_dir, image_folder, tmp_path, capsys):
    settings = dict(sizes=[64], max_samples=2, output_dir=tmp_path / "run")
    plain = evaluate(tiny_model_dir, str(image_folder), **settings)
    args = ["evaluate", "--model", tiny_model_dir, "--dataset", str(image_folder), "--sizes", "64", "--max-samples"]
    assert main(args + ["2", "--normalize-maps", "--output", str(tmp_path / "run"), "--overwrite"]) == 0
    assert "maps min-max normalised" in capsys.readouterr().out
    records = read_records(tmp_path / "run" / "samples.jsonl")
    assert sorted(len(by_id) for by_id in records.values()) == [2, 2]  # the plain run's records were not reused
    rescaled = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert rescaled["normalize_maps"] and not plain["normalize_maps"]
    assert rescaled["results"][0]["metrics"]["mae"] != pytest.approx(plain["results"][0]["metrics"]["mae"], abs=1e-4)
    computed = []
    evaluate(tiny_model_dir, str(image_folder), on_records=computed.extend, **settings)
    assert computed == []  # runs without the option resume from their own records as before
    with pytest.raises(ValueError, match="official protocol thresholds raw logits"):
        evaluate(tiny_model_dir, str(image_folder), sizes=[64], protocol="official", normalize_maps=True)


def test_cli_evaluates_a_coco_instances_file(tiny_model_dir, tmp_path, capsys):
    annotations, images = write_coco_instances(tmp_path / "coco")
    args = ["evaluate", "--model", tiny_model_dir, "--sizes", "64", "--output", str(tmp_path / "out")]
    assert main(args + ["--coco-annotations", annotations, "--images", images]) == 0
    assert "| BA-SAM | 64 | 3 | 0 |" in capsys.readouterr().out  # one sample per non-crowd object
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dataset"] == annotations and summary["dataset_info"]["excluded_crowd_objects"] == 3
    records = read_records(tmp_path / "out" / "samples.jsonl")
    assert sorted(next(iter(records.values()))) == ["0#100", "1#101", "2#102"]
    for extra, message in (
        ([], "--coco-annotations FILE and --images DIR go together"),
        (["--images", images, "--preset", "duts"], "--preset do not apply"),
        (["--images", str(tmp_path)], "None of the 3 annotated images"),
    ):
        assert main(args + ["--coco-annotations", annotations] + extra) == 1
        assert message in capsys.readouterr().err


def test_cli_reports_and_errors(tiny_model_dir, image_folder, tmp_path, capsys, monkeypatch):
    output = tmp_path / "cli"
    args = ["evaluate", "--model", tiny_model_dir, "--dataset", str(image_folder), "--sizes", "48", "64"]
    assert main(args + ["--prompt", "points:2", "--max-samples", "2", "--output", str(output)]) == 0
    assert {path.name for path in output.iterdir()} == {
        ".basam-hf-outputs.json",
        "samples.jsonl",
        "summary.json",
        "summary.md",
        "metrics_vs_size.png",
    }
    assert "| BA-SAM | 48 | 2 | 0 |" in capsys.readouterr().out
    summary = json.loads((output / "summary.json").read_text())
    assert summary["sizes"] == [48, 64] and summary["prompt"] == "points:2" and "torch" in summary["versions"]
    assert main(args + ["--mask-column", "gt", "--output", str(output), "--overwrite"]) == 1  # fixed columns
    assert "image folder" in capsys.readouterr().err

    import basam_hf.references

    monkeypatch.setattr(basam_hf.references, "DEFAULT_MODEL_DIR", tmp_path / "no_default")
    assert main(["evaluate", "--model", "default", "--dataset", str(image_folder)]) == 1
    assert "embedded default BA-SAM model is not in this installation" in capsys.readouterr().err
    assert main(["evaluate", "--model", tiny_model_dir, "--dataset", str(image_folder), "--prompt", "boxes"]) == 1
    assert "Unknown prompt 'boxes'" in capsys.readouterr().err
