"""pipeline("mask-generation") on a saved BA-SAM folder: at the pretraining size and at other sizes, installed and as
remote code, with the pure-torch NMS."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import randomize_, tiny_config_kwargs
from PIL import Image
from transformers import SamConfig, SamModel, SamProcessor, pipeline
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from basam_hf import BaSamConfig, BaSamImageProcessor, BaSamModel, processing_basam, save_pretrained_with_processor
from basam_hf.conversion import convert_sam_to_basam

PRETRAIN = 64
ORIGINAL = (30, 50)  # height, width: non-square and smaller than the pretraining size
# A random tiny model scores every mask low: keep all candidates, so masks come out (defaults keep 0).
KEEP_ALL = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_crop=4)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("basam-pipeline")
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs()))).eval()
    save_pretrained_with_processor(model, folder)
    return folder


@pytest.fixture(scope="module")
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (*ORIGINAL, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(autouse=True)
def pure_torch_nms(monkeypatch):
    """Run the fallback NMS even where torchvision works, since that is the path this package guarantees."""
    monkeypatch.setattr(processing_basam, "_torchvision_batched_nms", lambda: None)


def input_sizes_seen(generator) -> list[tuple[int, ...]]:
    """Records the pixel_values shapes the image encoder receives during the next pipeline call."""
    seen = []
    patch_embed = generator.model.vision_encoder.patch_embed
    patch_embed.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    return seen


def check_masks(outputs: dict) -> None:
    assert len(outputs["masks"]) >= 1
    assert len(outputs["scores"]) == len(outputs["masks"])
    for mask in outputs["masks"]:
        assert mask.shape == ORIGINAL and mask.dtype == bool
    assert torch.all(outputs["scores"][:-1] >= outputs["scores"][1:])  # NMS returns the best first


def test_saved_folder_holds_processor_and_code(saved_folder):
    names = {path.name for path in saved_folder.iterdir()}
    assert {"processor_config.json", "processing_basam.py", "modeling_basam.py", "model.safetensors"} <= names
    config = json.loads((saved_folder / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_basam.BaSamProcessor"
    image_config = config["image_processor"]
    assert image_config["auto_map"]["AutoImageProcessor"] == "processing_basam.BaSamImageProcessor"
    assert image_config["size"] == {"longest_edge": PRETRAIN} and image_config["patch_size"] == 8
    assert "pad_size" not in image_config  # derived from the size at each call


def test_pipeline_at_the_pretraining_size(saved_folder, image):
    generator = pipeline("mask-generation", model=str(saved_folder), trust_remote_code=True)
    assert isinstance(generator.image_processor, BaSamImageProcessor) and isinstance(generator.model, BaSamModel)
    seen = input_sizes_seen(generator)
    check_masks(generator(image, **KEEP_ALL))
    assert seen == [(1, 3, PRETRAIN, PRETRAIN)]
    # When every mask is filtered out (as SAM's default thresholds do for a random model) the result is empty.
    assert generator(image, points_per_crop=4, pred_iou_thresh=1e9)["masks"] == []


@pytest.mark.parametrize("size", [2 * PRETRAIN, PRETRAIN // 2, 100])
def test_pipeline_at_other_sizes(saved_folder, image, size):
    image_processor = BaSamImageProcessor.from_pretrained(saved_folder, size=size)
    generator = pipeline("mask-generation", model=str(saved_folder), image_processor=image_processor)
    seen = input_sizes_seen(generator)
    check_masks(generator(image, **KEEP_ALL, output_bboxes_mask=True))
    side = -(-size // 8) * 8
    assert seen == [(1, 3, side, side)]


def test_folder_saved_at_another_size(tmp_path, image):
    model = randomize_(BaSamModel(BaSamConfig(**tiny_config_kwargs()))).eval()
    save_pretrained_with_processor(model, tmp_path, size=2 * PRETRAIN)
    generator = pipeline("mask-generation", model=str(tmp_path))
    seen = input_sizes_seen(generator)
    check_masks(generator(image, **KEEP_ALL))
    assert seen == [(1, 3, 2 * PRETRAIN, 2 * PRETRAIN)]


def test_pipeline_with_crops(saved_folder, image):
    generator = pipeline("mask-generation", model=str(saved_folder))
    check_masks(generator(image, **KEEP_ALL, crops_n_layers=1, crops_nms_thresh=0.5))


def test_converted_sam_folder_gets_an_any_size_processor(tmp_path, image):
    """convert_sam_to_basam saves a BaSamProcessor (SAM's would need torchvision), keeping the source normalisation."""
    randomize_(SamModel(SamConfig(**tiny_config_kwargs()))).save_pretrained(tmp_path / "sam")
    mean = [0.5, 0.4, 0.3]
    source_processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": PRETRAIN}, image_mean=mean))
    source_processor.save_pretrained(tmp_path / "sam")
    convert_sam_to_basam(tmp_path / "sam", tmp_path / "out")
    generator = pipeline("mask-generation", model=str(tmp_path / "out"))
    assert isinstance(generator.image_processor, BaSamImageProcessor)
    assert list(generator.image_processor.image_mean) == mean and generator.image_processor.patch_size == 8
    check_masks(generator(image, **KEEP_ALL))


# Fresh interpreter in which `import basam_hf` fails: everything must come from the saved folder.
REMOTE = textwrap.dedent(
    """
    import json, sys
    sys.modules["basam_hf"] = None
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline
    folder = sys.argv[1]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    keep_all = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_crop=4)
    report = {}
    for size in (None, 128):
        image_processor = None
        if size is not None:
            image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True, size=size)
        generator = pipeline("mask-generation", model=folder, trust_remote_code=True, image_processor=image_processor)
        seen = []
        generator.model.vision_encoder.patch_embed.register_forward_hook(lambda m, a, o: seen.append(list(a[0].shape)))
        outputs = generator(image, **keep_all)
        report[str(size)] = dict(
            classes=[type(generator.model).__module__, type(generator.image_processor).__module__],
            input=seen, masks=[list(mask.shape) for mask in outputs["masks"]],
        )
    print(json.dumps(report))
    """
)


def test_pipeline_as_remote_code_without_the_package(saved_folder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(saved_folder) + "-modules"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(saved_folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for size, side in (("None", PRETRAIN), ("128", 128)):
        entry = report[size]
        assert all(module.startswith("transformers_modules") for module in entry["classes"]), entry["classes"]
        assert entry["input"] == [[1, 3, side, side]]
        assert entry["masks"] and all(shape == list(ORIGINAL) for shape in entry["masks"])
