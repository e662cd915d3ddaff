"""LoRA fine-tuning (`finetune --train lora`, basam_hf.lora): only the adapter and its extras change, a run killed by
SIGKILL and resumed ends where an uninterrupted one does, the merged folder computes what the adapter model computes,
and the adapter pushes as an adapter repo that loads with peft alone."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import accelerate_launch, save_tiny_model
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_training import RESUME_SETTINGS

import basam_hf.hub
from basam_hf import BaSamModel
from basam_hf.checkpoints import latest_checkpoint
from basam_hf.cli import main
from basam_hf.conversion import is_ba_parameter
from basam_hf.lora import LoraOptions, add_lora, load_adapter_model
from basam_hf.synthetic import save_synthetic_dataset
from basam_hf.training import finetune

pytestmark = pytest.mark.usefixtures("single_thread")
REPO_ROOT = Path(__file__).resolve().parents[1]
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md"}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    # Coefficient mode: the global layer has a BA parameter, trained alongside the adapter.
    return save_tiny_model(tmp_path_factory.mktemp("base"), seed=0, bias_mode="coefficient")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    save_synthetic_dataset(root / "train", 6, 64, seed=0)
    save_synthetic_dataset(root / "val", 2, 64, seed=1)
    return str(root / "train"), str(root / "val")


def _masks(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(2, 3, 64, 64, generator=generator)}
    inputs["input_points"] = torch.rand(2, 1, 2, 2, generator=generator) * 64
    with torch.no_grad():
        return model.eval()(**inputs).pred_masks


def _max_difference(expected: dict, actual: dict) -> float:
    assert expected.keys() == actual.keys()
    return max((expected[key] - actual[key]).abs().max().item() for key in expected)


def test_only_the_adapter_and_its_extras_change_and_the_merged_folder_equals_the_adapter_model(
    base_dir, data, tmp_path, capsys
):
    output, merged_dir = tmp_path / "run", tmp_path / "merged"
    args = ["finetune", "--model", base_dir, "--dataset", data[0], "--prompt", "box", "--lr", "1e-2", "--log-with"]
    args += ["--max-steps", "3", "--save-steps", "3", "--output", str(output), "--train", "lora"]
    args += ["--lora-rank", "2", "--lora-alpha", "4", "--lora-train-mask-decoder"]
    assert main(args) == 0
    final = output / "final"
    assert {path.name for path in final.iterdir()} == ADAPTER_FILES
    adapter_config = json.loads((final / "adapter_config.json").read_text())
    # The source is a BA-SAM folder with the run's config: the adapter names it, no copy is saved.
    assert (
        adapter_config["base_model_name_or_path"] == str(Path(base_dir).resolve()) and not (output / "base").exists()
    )
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (2, 4)
    assert set(adapter_config["target_modules"]) == {"qkv", "proj"}
    assert adapter_config["modules_to_save"] == ["mask_decoder"]
    # The checkpoint holds the trainable tensors only: adapter, coefficient, the trained copy of the mask decoder.
    checkpointed = load_file(latest_checkpoint(output) / "model.safetensors")
    assert checkpointed and all(
        ".lora_" in key or is_ba_parameter(key) or ".mask_decoder.modules_to_save." in key for key in checkpointed
    )
    adapter_model = load_adapter_model(final)
    adapted = {
        name.split("base_model.model.")[1]
        for name, module in adapter_model.named_modules()
        if hasattr(module, "lora_A")
    }
    assert adapted == {f"vision_encoder.layers.{i}.attn.{name}" for i in (0, 1) for name in ("qkv", "proj")}

    assert main(["merge-lora", str(final), str(merged_dir)]) == 0
    assert f"saved a BA-SAM model to {merged_dir}" in capsys.readouterr().out
    before, after = load_file(Path(base_dir) / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    lora_targets = {f"vision_encoder.layers.{i}.attn.{name}.weight" for i in (0, 1) for name in ("qkv", "proj")}
    assert lora_targets <= changed and "vision_encoder.layers.1.attn.coefficient" in changed
    decoder = {key for key in changed if key.startswith("mask_decoder.")}
    assert decoder and changed == lora_targets | {"vision_encoder.layers.1.attn.coefficient"} | decoder

    merged = BaSamModel.from_pretrained(merged_dir)
    expected, actual = _masks(adapter_model), _masks(merged)
    assert (expected - actual).abs().max() <= 1e-5
    assert (expected - _masks(BaSamModel.from_pretrained(base_dir))).abs().max() > 1e-3  # the adapter does something
    card = ModelCard.load(final / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert f'base = "{Path(base_dir).resolve()}"' in card.text and "a local folder on the machine" in card.text
    assert f'PeftModel.from_pretrained(model, "{final}")' in card.text


def test_a_lora_run_killed_by_sigkill_resumes_to_the_uninterrupted_result(base_dir, data, tmp_path):
    # RESUME_SETTINGS: random prompts, two sizes, accumulation across an epoch end, a mid-epoch checkpoint, StepLR,
    # validation; LoRA dropout adds random draws in the forward pass. Other BA settings than the source's: the base
    # is saved to run/base before training.
    settings = {**RESUME_SETTINGS, "train": "lora", "val_dataset": data[1], "log_with": []}
    settings |= {
        "lora": {"rank": 2, "dropout": 0.2, "train_mask_decoder": True},
        "ba_settings": {"coefficient_init": 0.5},
    }
    reference = finetune(base_dir, data[0], output_dir=tmp_path / "reference", **settings)

    run = tmp_path / "run"
    killed = textwrap.dedent(
        """
        import json, os, signal, sys
        import torch
        from basam_hf.training import finetune

        def kill(event):
            if event["step"] == 5:
                os.kill(os.getpid(), signal.SIGKILL)

        torch.set_num_threads(1)
        finetune(sys.argv[1], sys.argv[2], output_dir=sys.argv[3], step_callback=kill, **json.loads(sys.argv[4]))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", killed, base_dir, data[0], str(run), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]
    assert latest_checkpoint(run).name == "checkpoint-3"

    resumed = finetune(base_dir, data[0], output_dir=run, resume=True, **settings)
    assert resumed.resumed_from.name == "checkpoint-3" and resumed.global_step == 7
    assert resumed.losses == pytest.approx(reference.losses[3:], abs=1e-6)
    expected = load_file(reference.final_dir / "adapter_model.safetensors")
    actual = load_file(resumed.final_dir / "adapter_model.safetensors")
    assert _max_difference(expected, actual) <= 1e-6
    assert resumed.best == reference.best
    base = json.loads((resumed.final_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((run / "base").resolve())
    assert BaSamModel.from_pretrained(base).config.vision_config.coefficient_init == 0.5
    # The base is the model before training: the source's weights (its coefficient is the new initial value).
    source, saved = load_file(Path(base_dir) / "model.safetensors"), load_file(Path(base) / "model.safetensors")
    assert all(torch.equal(source[key], saved[key]) for key in source if not is_ba_parameter(key))


# A fresh interpreter in which `import basam_hf` fails: the adapter loads onto its base with transformers and peft.
PEFT_LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["basam_hf"] = None
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForMaskGeneration

    adapter, output = sys.argv[1:]
    base = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    model = AutoModelForMaskGeneration.from_pretrained(base, trust_remote_code=True)
    model = PeftModel.from_pretrained(model, adapter).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(2, 3, 64, 64, generator=generator)}
    inputs["input_points"] = torch.rand(2, 1, 2, 2, generator=generator) * 64
    with torch.no_grad():
        torch.save(model(**inputs).pred_masks, output)
    print(type(model.get_base_model()).__module__)
    """
)


def test_the_adapter_pushes_as_an_adapter_repo_and_loads_with_peft_alone(base_dir, data, tmp_path, capsys):
    options = LoraOptions(rank=2, alpha=4)
    result = finetune(
        base_dir, data[0], output_dir=tmp_path / "run", prompt="box", max_steps=2, save_steps=2,
        learning_rate=1e-2, train="lora", lora=options, log_with=[],
    )  # fmt: skip
    final = result.final_dir
    with pytest.warns(UserWarning, match="base model is the local folder .* Push the base too"):
        assert main(["push", str(final), "user/tiny-lora", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Would upload 3 files to user/tiny-lora:" in out
    assert "README.md (model card pointed at user/tiny-lora)" in out and "adapter_model.safetensors" in out

    # The training state, rebuilt without peft's adapter loading: the checkpoint's tensors on a new adapter.
    reference = add_lora(BaSamModel.from_pretrained(base_dir), options)
    missing, unexpected = reference.load_state_dict(
        load_file(latest_checkpoint(result.output_dir) / "model.safetensors"), strict=False
    )
    assert not unexpected and all(not (".lora_" in key or is_ba_parameter(key)) for key in missing)
    saved = load_file(final / "adapter_model.safetensors")
    trained = saved["base_model.model.vision_encoder.layers.1.attn.coefficient"]
    assert trained.item() != BaSamModel.from_pretrained(base_dir).vision_encoder.layers[1].attn.coefficient.item()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", PEFT_LOADER, str(final), str(tmp_path / "masks.pt")],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split()[-1].startswith("transformers_modules")  # the base folder's code, not basam_hf
    assert (torch.load(tmp_path / "masks.pt") - _masks(reference)).abs().max() <= 1e-6

    # A real push (to a fake Hub) uploads the card pointed at the repo (the base stays the adapter's) and leaves the
    # folder's own card as it was.
    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, **kwargs):
            uploads.append({**kwargs, "card": (Path(kwargs["folder_path"]) / "README.md").read_text()})

    local_card = (final / "README.md").read_bytes()
    with pytest.warns(UserWarning, match="local folder"):
        basam_hf.hub.push_to_hub(final, "user/tiny-lora", api=FakeApi())
    assert (final / "README.md").read_bytes() == local_card
    assert sorted(uploads[0]["allow_patterns"]) == sorted(ADAPTER_FILES)
    card = ModelCard(uploads[0]["card"])
    assert 'PeftModel.from_pretrained(model, "user/tiny-lora")' in card.text
    assert f'base = "{Path(base_dir).resolve()}"' in card.text and card.data.model_name == "tiny-lora"


@pytest.mark.slow
def test_two_processes_train_and_resume_a_lora_adapter(base_dir, data, tmp_path):
    launch, env = accelerate_launch(2)
    args = ["-m", "basam_hf.cli", "finetune", "--model", base_dir, "--dataset", data[0], "--prompt", "box"]
    args += ["--train", "lora", "--lora-dropout", "0.1", "--save-steps", "1", "--output", str(tmp_path / "two")]
    for more in (["--max-steps", "1"], ["--max-steps", "2", "--resume"]):  # the resume loads the adapter on each
        completed = subprocess.run(launch + args + more, env=env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Resuming from" in completed.stdout and latest_checkpoint(tmp_path / "two").name == "checkpoint-2"
    assert {path.name for path in (tmp_path / "two" / "final").iterdir()} == ADAPTER_FILES


def test_lora_options_fail_clearly(base_dir, data, tmp_path):
    with pytest.raises(ValueError, match="LoRA options apply to train='lora' only"):
        finetune(base_dir, data[0], output_dir=tmp_path / "a", lora={"rank": 4})
    with pytest.raises(ValueError, match="LoRA rank must be a positive integer"):
        finetune(base_dir, data[0], output_dir=tmp_path / "a", train="lora", lora={"rank": 0})
    with pytest.raises(ValueError, match=r"Unknown LoRA options \['r'\]"):
        finetune(base_dir, data[0], output_dir=tmp_path / "a", train="lora", lora={"r": 4})
    with pytest.raises(ValueError, match="not found in the base model"):
        finetune(base_dir, data[0], output_dir=tmp_path / "a", train="lora", lora={"target_modules": ["nothing"]})


def test_gradient_checkpointing_trains_the_same_adapter(base_dir, data, tmp_path):
    """Activation checkpointing of the frozen encoder still lets gradients reach the adapter: the same steps give the
    same adapter with and without it."""
    settings = {"train": "lora", "prompt": "box", "learning_rate": 1e-2, "max_steps": 2, "log_with": []}
    settings["lora"] = {"rank": 2}
    results = {
        checkpointing: finetune(
            base_dir,
            data[0],
            output_dir=tmp_path / str(checkpointing),
            gradient_checkpointing=checkpointing,
            **settings,
        )
        for checkpointing in (False, True)
    }
    adapters = {key: load_file(result.final_dir / "adapter_model.safetensors") for key, result in results.items()}
    base = load_adapter_model(results[False].final_dir)
    initial = {name: value for name, value in base.state_dict().items() if "lora_B" in name}
    assert any(value.abs().max() > 0 for value in initial.values())  # the adapter trained (lora_B starts at zero)
    assert results[True].losses == pytest.approx(results[False].losses, rel=1e-5)
    assert _max_difference(adapters[False], adapters[True]) <= 1e-5


def test_merge_writes_the_adapter_merged_into_its_base(base_dir, data, tmp_path):
    output = tmp_path / "run"
    args = ["finetune", "--model", base_dir, "--dataset", data[0], "--prompt", "box", "--lr", "1e-2", "--log-with"]
    args += ["--max-steps", "2", "--output", str(output), "--train", "lora", "--lora-rank", "2", "--merge"]
    assert main(args) == 0
    merged = BaSamModel.from_pretrained(output / "merged")
    adapter_model = load_adapter_model(output / "final")
    assert (_masks(merged) - _masks(adapter_model)).abs().max() <= 1e-5
    assert (_masks(merged) - _masks(BaSamModel.from_pretrained(base_dir))).abs().max() > 1e-4  # it did train
    with pytest.raises(ValueError, match="merge applies to train='lora' only"):
        finetune(base_dir, data[0], output_dir=tmp_path / "full", merge=True)
