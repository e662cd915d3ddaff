"""basam_hf.loading: one model built and one read of config.json per load, BA settings applied while loading, the
processor saved with the model, and the old import paths in basam_hf.evaluation."""

import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_model
from PIL import Image

import basam_hf.evaluation
import basam_hf.loading
import basam_hf.runtime
from basam_hf import BaSamModel
from basam_hf.cli import main
from basam_hf.loading import ba_variant, load_model, load_model_and_processor, load_processor
from basam_hf.processing_basam import processor_for_model

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = {"bias_mode": "coefficient", "attention_scaling": "none", "coefficient_init": 0.3}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), seed=3)


@pytest.fixture
def builds_and_reads(monkeypatch, model_dir):
    """`{"models": [...], "from_pretrained": n, "config_reads": n}`, counted while the code under test runs: every
    `BaSamModel.__init__` and `BaSamModel.from_pretrained` call is recorded and then run as it is, and every open of
    the model folder's config.json is counted (the file is still opened and read)."""
    counts = {"models": [], "from_pretrained": 0, "config_reads": 0}
    config_path = (Path(model_dir) / "config.json").resolve()
    init, from_pretrained, open_ = BaSamModel.__init__, BaSamModel.from_pretrained.__func__, builtins.open

    def counting_init(self, *args, **kwargs):
        counts["models"].append(type(self).__name__)
        init(self, *args, **kwargs)

    def counting_from_pretrained(cls, *args, **kwargs):
        counts["from_pretrained"] += 1
        return from_pretrained(cls, *args, **kwargs)

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).resolve() == config_path:
            counts["config_reads"] += 1
        return open_(file, *args, **kwargs)

    monkeypatch.setattr(BaSamModel, "__init__", counting_init)
    monkeypatch.setattr(BaSamModel, "from_pretrained", classmethod(counting_from_pretrained))
    monkeypatch.setattr(builtins, "open", counting_open)
    return counts


def test_segment_with_ba_options_builds_one_model_and_reads_config_once(model_dir, builds_and_reads, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(image)
    options = ["--bias-mode", "coefficient", "--attention-scaling", "none", "--coefficient-init", "0.3"]
    argv = ["segment", str(image), "--model", model_dir, "--box", "5", "5", "60", "40", *options]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert builds_and_reads == {"models": ["BaSamModel"], "from_pretrained": 1, "config_reads": 1}


def test_demo_models_with_ba_settings_build_one_model_and_read_config_once(model_dir, builds_and_reads):
    from basam_hf.app import DemoModels

    models = DemoModels(model_dir, ba_settings=SETTINGS)
    assert builds_and_reads == {"models": ["BaSamModel"], "from_pretrained": 1, "config_reads": 1}
    assert models.model.config.vision_config.bias_mode == "coefficient"


def test_settings_applied_while_loading_equal_a_variant_of_the_saved_model(model_dir):
    """The model loaded under BA settings has the saved weights and the settings' initial BA parameters: the same
    model as the saved one turned into a variant afterwards (two models, a state-dict copy)."""
    loaded = load_model_and_processor(model_dir, ba_settings=SETTINGS, dtype="bfloat16")
    expected = ba_variant(load_model(model_dir, dtype="bfloat16"), **SETTINGS)
    assert loaded.path == model_dir and loaded.model.name_or_path == model_dir and loaded.model.dtype == torch.bfloat16
    assert loaded.model.config.vision_config.ba_settings() == expected.config.vision_config.ba_settings()
    state, reference = loaded.model.state_dict(), expected.state_dict()
    assert state.keys() == reference.keys() and any(key.endswith("coefficient") for key in state)
    assert all(torch.equal(state[key], reference[key]) for key in state)
    assert not loaded.model.training
    assert loaded.processor.to_dict() == load_processor(model_dir, loaded.model).to_dict()


def test_unknown_settings_are_refused_before_loading(model_dir):
    with pytest.raises(ValueError, match=r"Not BA settings: \['hidden_size'\]"):
        load_model_and_processor(model_dir, ba_settings={"hidden_size": 48})


def test_a_folder_without_processor_files_gets_the_models_default_processor(model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "processor_config.json").unlink()
    model, processor, _ = load_model_and_processor(bare)
    assert processor.to_dict() == processor_for_model(model).to_dict()
    assert load_processor(bare, model).to_dict() == processor_for_model(model).to_dict()


def test_a_broken_processor_file_is_an_error_not_a_silent_default(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "processor_config.json").write_text("{not json")
    with pytest.raises(OSError):
        load_model_and_processor(broken)


@pytest.mark.parametrize("name", sorted(basam_hf.evaluation._MOVED))
def test_old_import_paths_warn_and_give_the_moved_object(name):
    moved = getattr(basam_hf.runtime if name in ("make_accelerator", "progress_bar") else basam_hf.loading, name)
    with pytest.warns(DeprecationWarning, match=rf"basam_hf\.evaluation\.{name} moved to basam_hf\."):
        assert getattr(basam_hf.evaluation, name) is moved
    with pytest.raises(AttributeError):
        basam_hf.evaluation.no_such_name  # noqa: B018
