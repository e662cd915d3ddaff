"""Model cards (template, metadata, model-index) and pushing to the Hub (file selection, refusals), without network."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import save_tiny_model
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import basam_hf.hub
from basam_hf import BaSamConfig
from basam_hf.cli import main
from basam_hf.evaluation import evaluate
from basam_hf.hub import (
    MODEL_CARD_TEMPLATE,
    check_pushable,
    files_to_upload,
    push_to_hub,
    render_model_card,
    required_code_files,
    write_model_card,
)
from basam_hf.synthetic import save_synthetic_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach the network; the Hub API is faked


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "tiny-basam"
    save_tiny_model(folder, seed=1, learnable_slopes=True)
    return folder


@pytest.fixture
def model_folder(saved_model, tmp_path) -> Path:
    folder = tmp_path / "tiny-basam"
    shutil.copytree(saved_model, folder)
    return folder


@pytest.fixture(scope="module")
def summary(saved_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("val") / "val"
    save_synthetic_dataset(data, 2, 64, seed=2)
    return evaluate(str(saved_model), str(data), sizes=[48, 64], prompt="box")


class FakeHfApi:
    """Records the calls push_to_hub makes (a fake of the network, not of our logic)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        # What the Hub would receive (the folder uploaded from is gone after the push).
        folder = Path(kwargs["folder_path"])
        self.uploaded = {name: (folder / name).read_bytes() for name in kwargs["allow_patterns"]}
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/1"})()


class FailingHfApi(FakeHfApi):
    """The Hub refusing the upload after the repo was created (a failure of the network, not of our logic)."""

    def upload_folder(self, **kwargs):
        raise ConnectionError("connection reset by peer")


def folder_bytes(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) with its bytes and mode."""
    return {
        path.relative_to(folder).as_posix(): (path.read_bytes(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_the_template_exists_once():
    """The repository's `model_cards` is a link to the packaged folder (what installed code renders), not a copy."""
    assert (REPO_ROOT / "model_cards").resolve() == MODEL_CARD_TEMPLATE.parent
    assert MODEL_CARD_TEMPLATE.is_file()


def test_rendered_card_parses_and_its_metadata_holds_the_evaluation(saved_model, summary):
    config = BaSamConfig.from_pretrained(saved_model)
    training = {"parameters trained": "all", "optimizer": "Adam, lr 0.0001", "schedule": "StepLR every 10 epochs"}
    card = render_model_card(
        config,
        model_name="tiny-basam",
        repo_id="user/tiny-basam",
        base_model="facebook/sam-vit-base",
        datasets=["nobg/DUTS"],
        training=training,
        evaluation=summary,
        evaluation_dataset_id="nobg/DUTS",
        license="apache-2.0",
    )
    parsed = ModelCard(str(card))  # what the Hub reads: YAML front matter + Markdown
    data = parsed.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "mask-generation"
    assert data["base_model"] == "facebook/sam-vit-base" and data["datasets"] == ["nobg/DUTS"]
    assert data["license"] == "apache-2.0" and "ba-sam" in data["tags"]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "tiny-basam"
    recorded = {
        (result.metric_type, result.metric_name.split(" @ ")[1].split(" px")[0]): result.metric_value
        for result in results
    }
    for row in summary["results"]:
        for metric, value in row["metrics"].items():
            assert recorded[(metric, str(row["size"]))] == pytest.approx(value, abs=1e-6)
    assert {result.dataset_type for result in results} == {"nobg/DUTS"}
    assert {result.task_type for result in results} == {"mask-generation"}
    text = parsed.text
    assert 'from_pretrained("user/tiny-basam", trust_remote_code=True)' in text
    assert "| `learnable_slopes` | `True` |" in text and "| `bias_mode` | `distance` |" in text
    assert "| optimizer | `Adam, lr 0.0001` |" in text
    assert f"| BA-SAM | 48 | 2 | 0 | {summary['results'][0]['metrics']['iou']:.4f} |" in text
    assert "{{" not in text and "{%" not in text


def test_card_without_training_or_evaluation_and_local_sources(model_folder):
    path = write_model_card(model_folder, base_model=None, datasets=[])
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert "model-index" not in data and "base_model" not in data and data["pipeline_tag"] == "mask-generation"
    assert "No training run is recorded" in card.text and "No evaluation is recorded" in card.text
    assert basam_hf.hub.hub_id_or_none(str(model_folder)) is None and basam_hf.hub.hub_id_or_none("default") is None
    assert basam_hf.hub.hub_id_or_none("facebook/sam-vit-base") == "facebook/sam-vit-base"


def test_push_uploads_exactly_the_listed_files(model_folder):
    (model_folder / "__pycache__").mkdir()
    (model_folder / "__pycache__" / "modeling_basam.cpython-311.pyc").write_bytes(b"")
    (model_folder / ".cache").mkdir()
    (model_folder / ".cache" / "lock").write_text("x")
    expected = [
        "README.md",
        "bias.py",
        "chunked_attention.py",
        "config.json",
        "configuration_basam.py",
        "constants.py",
        "model.safetensors",
        "modeling_basam.py",
        "pos_embed.py",
        "processing_basam.py",
        "processor_config.json",
    ]
    api = FakeHfApi()
    dry = push_to_hub(model_folder, "user/tiny-basam", dry_run=True, api=api)
    assert dry.files == expected and dry.generated_card and dry.dry_run
    assert api.calls == [] and not (model_folder / "README.md").exists()  # a dry run writes and sends nothing

    result = push_to_hub(model_folder, "user/tiny-basam", private=True, commit_message="first", api=api)
    assert result.files == expected and result.commit_url.endswith("/commit/1")
    (_, repo_id, create_kwargs), (_, upload) = api.calls
    assert repo_id == "user/tiny-basam"
    assert create_kwargs == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["repo_id"] == "user/tiny-basam"
    assert upload["commit_message"] == "first" and upload["allow_patterns"] == expected
    assert not (model_folder / "README.md").exists()  # the card goes into the upload, not into the folder
    assert all(api.uploaded[name] == (model_folder / name).read_bytes() for name in expected if name != "README.md")
    card = ModelCard(api.uploaded["README.md"].decode())  # generated from the folder's config
    assert card.data.library_name == "transformers" and "user/tiny-basam" in card.text
    assert files_to_upload(model_folder) == expected[1:]  # hidden files and caches are never uploaded


def test_push_points_a_card_written_for_a_local_folder_at_the_repo(model_folder, summary):
    """`finetune` without `push_to_hub` names its card after the run folder and loads from its path; pushed later,
    the card must name the repo (title, model-index) and load from it, and keep its evaluation results."""
    write_model_card(model_folder, model_name="run-best", repo_id=str(model_folder), evaluation=summary)
    before = (model_folder / "README.md").read_text()
    assert f'from_pretrained("{model_folder}"' in before and "\n# run-best\n" in before
    api = FakeHfApi()
    assert push_to_hub(model_folder, "user/tiny-basam", dry_run=True, api=api).retargeted_card
    assert (model_folder / "README.md").read_text() == before  # a dry run writes nothing

    assert push_to_hub(model_folder, "user/tiny-basam", api=api).retargeted_card
    assert (model_folder / "README.md").read_text() == before  # the folder keeps its card; the upload is pointed
    card = ModelCard(api.uploaded["README.md"].decode())
    assert str(model_folder) not in card.text and "run-best" not in card.text
    assert card.text.count('"user/tiny-basam"') == 3  # from_pretrained twice, pipeline once
    assert "\n# tiny-basam\n" in card.text
    assert card.data.model_name == "tiny-basam"
    assert card.data.eval_results == ModelCard(before).data.eval_results and card.data.eval_results
    (model_folder / "README.md").write_bytes(api.uploaded["README.md"])
    assert not push_to_hub(model_folder, "user/tiny-basam", api=api).retargeted_card  # already pointed there

    hand_written = '---\nlicense: mit\n---\n# My model\n\n`from_pretrained("somewhere/else")`\n'
    (model_folder / "README.md").write_text(hand_written)
    assert not push_to_hub(model_folder, "user/tiny-basam", api=api).retargeted_card
    assert (model_folder / "README.md").read_text() == hand_written  # not ours: uploaded as written


def test_push_refuses_folders_that_would_not_load_for_others(model_folder, tmp_path):
    assert required_code_files(model_folder) == [
        "bias.py",
        "chunked_attention.py",
        "configuration_basam.py",
        "constants.py",
        "modeling_basam.py",
        "pos_embed.py",
        "processing_basam.py",
    ]
    broken = tmp_path / "no_bias"
    shutil.copytree(model_folder, broken)
    (broken / "bias.py").unlink()  # imported by modeling_basam.py (relatively)
    with pytest.raises(ValueError, match=r"lacks the code files \['bias.py'\]"):
        push_to_hub(broken, "user/x", api=FakeHfApi())
    (model_folder / "modeling_basam.py").rename(tmp_path / "modeling_basam.py")
    with pytest.raises(ValueError, match=r"lacks the code files \['modeling_basam.py'\]"):
        push_to_hub(model_folder, "user/x", dry_run=True)
    (tmp_path / "modeling_basam.py").rename(model_folder / "modeling_basam.py")
    check_pushable(model_folder)

    config = json.loads((model_folder / "config.json").read_text())
    del config["auto_map"]
    (model_folder / "config.json").write_text(json.dumps(config))
    api = FakeHfApi()
    with pytest.raises(
        ValueError,
        match=r"no auto_map entry for \[.AutoConfig., .AutoModelForMaskGeneration.\]: others could not load it",
    ):
        push_to_hub(model_folder, "user/x", api=api)
    config["auto_map"] = {"AutoConfig": "configuration_basam.BaSamConfig"}
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="AutoModelForMaskGeneration"):
        push_to_hub(model_folder, "user/x", api=api)
    assert api.calls == []

    with pytest.raises(ValueError, match="no config.json.*best/ or final/"):
        push_to_hub(tmp_path, "user/x", dry_run=True)
    weightless = tmp_path / "weightless"
    shutil.copytree(broken, weightless)
    shutil.copy(model_folder / "bias.py", weightless / "bias.py")
    (weightless / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no weights"):
        push_to_hub(weightless, "user/x", dry_run=True)


@pytest.mark.parametrize("card", ["none", "local-run"])
def test_a_failed_push_leaves_the_folder_byte_identical(model_folder, card):
    """Without a card (one is generated) and with a card written for a local run (it is pointed at the repo): the
    upload fails after the card was rendered, and every file of the folder is as before, mode included."""
    if card == "local-run":
        write_model_card(model_folder, model_name="run-best", repo_id=str(model_folder))
    before = folder_bytes(model_folder)
    with pytest.raises(ConnectionError, match="nothing was uploaded"):
        push_to_hub(model_folder, "user/tiny-basam", api=FailingHfApi())
    assert folder_bytes(model_folder) == before


def test_push_without_an_api_refuses_offline(model_folder):
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):
        push_to_hub(model_folder, "user/x")


def test_cli_push(model_folder, monkeypatch, capsys):
    api = FakeHfApi()
    monkeypatch.setattr(basam_hf.hub, "_default_api", lambda: api)
    count = len(files_to_upload(model_folder)) + 1  # and the generated card
    assert main(["push", str(model_folder), "user/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"Would upload {count} files to user/tiny" in out and "README.md (generated model card)" in out
    assert api.calls == []
    assert main(["push", str(model_folder), "user/tiny", "--private", "--commit-message", "hello"]) == 0
    assert f"Uploaded {count} files to user/tiny" in capsys.readouterr().out
    assert api.calls[0][2]["private"] and api.calls[1][1]["commit_message"] == "hello"
    (model_folder / "configuration_basam.py").unlink()
    assert main(["push", str(model_folder), "user/tiny"]) == 1
    assert "lacks the code files ['configuration_basam.py']" in capsys.readouterr().err
