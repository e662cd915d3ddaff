"""Fine-tuning: the loss goes down, exported folders load without the package, resume equivalence, atomic checkpoints
under Ctrl-C, 2 processes, train modes, targets and loss, bad inputs."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import accelerate_launch, save_tiny_model, tiny_config_kwargs, write_coco_instances
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from basam_hf import BaSamConfig, BaSamModel, save_pretrained_with_processor
from basam_hf.checkpoints import check_resume_compatible, latest_checkpoint, list_checkpoints
from basam_hf.cli import main
from basam_hf.conversion import is_ba_parameter
from basam_hf.losses import mask_targets, segmentation_loss, training_loss
from basam_hf.synthetic import save_synthetic_dataset
from basam_hf.training import METRICS_LOG, finetune, read_metrics_log, trainable_parameter_names

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), seed=0)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "data"
    save_synthetic_dataset(path, 6, 64, seed=0)
    return str(path)


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("val") / "data"
    save_synthetic_dataset(path, 2, 64, seed=1)
    return str(path)


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model.safetensors"))


# A fresh interpreter in which `import basam_hf` fails: the exported folder must carry its code.
LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["basam_hf"] = None
    try:
        import basam_hf
    except ImportError:
        pass
    else:
        raise SystemExit("basam_hf is importable")
    import torch
    from transformers import AutoModelForMaskGeneration, AutoProcessor
    for folder in sys.argv[1:]:
        model = AutoModelForMaskGeneration.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            masks = model(pixel_values=torch.randn(1, 3, 64, 64, generator=generator),
                          input_points=torch.tensor([[[[20.0, 30.0]]]])).pred_masks
        torch.save(masks, folder + "/remote_masks.pt")
        print(type(model).__module__, type(processor).__name__)
    """
)


def test_finetuning_lowers_the_loss_and_exports_folders_that_load_without_the_package(
    model_dir, train_data, val_data, tmp_path
):
    output = tmp_path / "run"
    # 6 samples, batches of 2: 3 steps per epoch; box prompts (fixed per sample) so epochs are comparable.
    result = finetune(
        model_dir,
        train_data,
        output_dir=output,
        val_dataset=val_data,
        prompt="box",
        learning_rate=5e-3,
        max_steps=30,
        save_steps=10,
        keep_last=2,
        seed=0,
    )
    assert result.global_step == 30 and len(result.losses) == 30
    first_epoch, last_epoch = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last_epoch < 0.9 * first_epoch, result.losses  # the same 6 samples: a real decrease

    assert [path.name for path in list_checkpoints(output)] == ["checkpoint-20", "checkpoint-30"]  # keep_last=2
    assert not [path for path in (output / "checkpoints").iterdir() if path.name.startswith(".")]
    records = read_metrics_log(output / "logs" / METRICS_LOG)
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 31))
    assert [r["step"] for r in records if "eval/iou" in r] == [10, 20, 30]
    assert result.best["metric"] == "iou" and result.best["step"] in (10, 20, 30)
    best_iou = max(r["eval/iou"] for r in records if "eval/iou" in r)
    assert result.best["value"] == pytest.approx(best_iou)

    expected = {"config.json", "model.safetensors", "configuration_basam.py", "modeling_basam.py", "bias.py"}
    expected |= {"chunked_attention.py", "pos_embed.py", "processing_basam.py", "processor_config.json", "README.md"}
    for folder in (result.best_dir, result.final_dir):
        assert expected <= {path.name for path in folder.iterdir()}
    card = ModelCard.load(result.best_dir / "README.md")
    assert card.data.model_name == "run-best" and card.data.eval_results[0].dataset_name == "data"
    assert card.data.eval_results[0].metric_value == pytest.approx(best_iou, abs=1e-6)  # one size: the mean is it
    assert f'from_pretrained("{result.best_dir}", trust_remote_code=True)' in card.text
    assert "| parameters trained | `all (" in card.text and "| input sizes | `[64]` |" in card.text
    final = _weights(result.final_dir)
    assert all(
        torch.equal(final[key], value)
        for key, value in load_file(latest_checkpoint(output) / "model.safetensors").items()
    )

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, "-c", LOADER, str(result.best_dir), str(result.final_dir)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for line in completed.stdout.split("\n")[-3:-1]:
        module, processor_class = line.split()
        assert not module.startswith("basam_hf") and processor_class == "BaSamProcessor"
    model = BaSamModel.from_pretrained(result.final_dir).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        masks = model(
            pixel_values=torch.randn(1, 3, 64, 64, generator=generator), input_points=torch.tensor([[[[20.0, 30.0]]]])
        ).pred_masks
    assert (torch.load(result.final_dir / "remote_masks.pt") - masks).abs().max() <= 1e-6


class Interrupt:
    """A step callback raising KeyboardInterrupt (as Ctrl-C would) after `step`."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, event: dict) -> None:
        if event["step"] == self.step:
            raise KeyboardInterrupt


# Everything that could make a resumed run differ: random prompts redrawn per epoch, two sizes drawn per batch,
# gradient accumulation with an epoch ending mid-accumulation (3 batches, 2 per step: 2 steps per epoch), a checkpoint
# in the middle of an epoch (step 3: skip_first_batches on resume), StepLR changing the lr every epoch, validation
# inside the loop.
RESUME_SETTINGS = {
    "prompt": "points:2",
    "train_sizes": [48, 64],
    "gradient_accumulation_steps": 2,
    "batch_size": 2,
    "learning_rate": 1e-3,
    "lr_step_epochs": 1,
    "max_steps": 7,
    "save_steps": 3,
    "eval_steps": 2,
    "seed": 3,
}


def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(model_dir, train_data, val_data, tmp_path):
    reference = finetune(
        model_dir, train_data, output_dir=tmp_path / "reference", val_dataset=val_data, **RESUME_SETTINGS
    )
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(
            model_dir, train_data, output_dir=run, val_dataset=val_data, step_callback=Interrupt(5), **RESUME_SETTINGS
        )
    # Ctrl-C after step 5: the last checkpoint (step 3, two batches into the second epoch) is complete.
    checkpoint = latest_checkpoint(run)
    assert checkpoint.name == "checkpoint-3"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batches_in_epoch"]) == (3, 1, 2)
    assert {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"} <= {
        path.name for path in checkpoint.iterdir()
    }

    resumed = finetune(model_dir, train_data, output_dir=run, val_dataset=val_data, resume=True, **RESUME_SETTINGS)
    assert resumed.resumed_from == checkpoint and resumed.global_step == 7
    assert resumed.losses == pytest.approx(reference.losses[3:], abs=1e-6)  # the same batches, prompts and sizes
    expected = _weights(reference.final_dir)
    actual = _weights(resumed.final_dir)
    assert expected.keys() == actual.keys()
    assert max((expected[key] - actual[key]).abs().max().item() for key in expected) <= 1e-6
    # The log holds each step once: what the interrupted run logged after its checkpoint was dropped and redone.
    steps = [r["step"] for r in read_metrics_log(run / "logs" / METRICS_LOG) if "train/loss" in r]
    assert steps == list(range(1, 8))
    assert resumed.best == reference.best


def test_an_interrupt_while_writing_a_checkpoint_keeps_the_previous_one(model_dir, train_data, tmp_path, monkeypatch):
    from accelerate import Accelerator

    settings = {"prompt": "box", "max_steps": 4, "save_steps": 2, "learning_rate": 1e-3}
    reference = finetune(model_dir, train_data, output_dir=tmp_path / "reference", **settings)
    save_state = Accelerator.save_state
    calls = []

    def interrupted_save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        save_state(self, output_dir, **kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt  # files written, folder not yet renamed

    monkeypatch.setattr(Accelerator, "save_state", interrupted_save_state)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(model_dir, train_data, output_dir=run, **settings)
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    assert [path.name for path in list_checkpoints(run)] == ["checkpoint-2"]
    assert (run / "checkpoints" / ".tmp-checkpoint-4").is_dir()  # the unfinished one is not a checkpoint

    resumed = finetune(model_dir, train_data, output_dir=run, resume=True, **settings)
    assert resumed.resumed_from.name == "checkpoint-2"
    assert not (run / "checkpoints" / ".tmp-checkpoint-4").exists()
    expected, actual = _weights(reference.final_dir), _weights(resumed.final_dir)
    assert max((expected[key] - actual[key]).abs().max().item() for key in expected) <= 1e-6


def test_resume_refuses_another_model_or_other_settings(model_dir, train_data, tmp_path):
    run = tmp_path / "run"
    finetune(model_dir, train_data, output_dir=run, prompt="box", max_steps=1, save_steps=1)
    with pytest.raises(ValueError, match=r"different model.*learnable_slopes: False vs True"):
        finetune(
            model_dir,
            train_data,
            output_dir=run,
            prompt="box",
            max_steps=2,
            save_steps=1,
            resume=True,
            ba_settings={"learnable_slopes": True},
        )
    other = tmp_path / "other_model"
    save_pretrained_with_processor(BaSamModel(BaSamConfig(**tiny_config_kwargs(hidden_size=16))), str(other))
    with pytest.raises(ValueError, match=r"different model.*vision_config.hidden_size: 32 vs 16"):
        finetune(str(other), train_data, output_dir=tmp_path / "x", prompt="box", max_steps=2, resume=run)
    with pytest.raises(ValueError, match=r"run settings differ.*batch_size: 2 vs 3"):
        finetune(model_dir, train_data, output_dir=run, prompt="box", max_steps=2, batch_size=3, resume=True)
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run: continue it with resume=True"):
        finetune(model_dir, train_data, output_dir=run, prompt="box", max_steps=2)
    with pytest.raises(ValueError, match="neither a checkpoint nor a run folder"):
        finetune(model_dir, train_data, output_dir=run, prompt="box", max_steps=2, resume=tmp_path / "nothing")
    # The refused attempts left the checkpoint as it was.
    state = check_resume_compatible(
        latest_checkpoint(run),
        BaSamModel.from_pretrained(model_dir).config,
        json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())["settings"],
    )
    assert state["global_step"] == 1


def test_train_modes_select_parameters_and_ba_only_keeps_every_sam_weight(model_dir, train_data, tmp_path):
    model = BaSamModel(BaSamConfig(**tiny_config_kwargs(learnable_slopes=True)))
    names = {name for name, _ in model.named_parameters()}
    everything = set(trainable_parameter_names(model, "all"))
    assert everything == names - {"shared_image_embedding.positional_embedding"}
    decoder = set(trainable_parameter_names(model, "mask-decoder"))
    assert decoder and all(name.startswith("mask_decoder.") for name in decoder)
    assert decoder == {name for name in names if name.startswith("mask_decoder.")}
    frozen = set(trainable_parameter_names(model, "frozen-encoder"))
    assert frozen == everything - {name for name in names if name.startswith("vision_encoder.")}
    assert set(trainable_parameter_names(model, "ba-only")) == {"vision_encoder.layers.1.attn.slopes"}
    coefficient = BaSamModel(BaSamConfig(**tiny_config_kwargs(bias_mode="coefficient")))
    assert all(name.endswith("coefficient") for name in trainable_parameter_names(coefficient, "ba-only"))
    with pytest.raises(ValueError, match="learnable_slopes=True"):
        trainable_parameter_names(BaSamModel(BaSamConfig(**tiny_config_kwargs())), "ba-only")

    result = finetune(
        model_dir,
        train_data,
        output_dir=tmp_path / "ba",
        prompt="box",
        max_steps=2,
        save_steps=2,
        learning_rate=1e-2,
        train="ba-only",
        ba_settings={"learnable_slopes": True},
    )
    before, after = _weights(model_dir), _weights(result.final_dir)
    assert {key for key in after if is_ba_parameter(key)} == {"vision_encoder.layers.1.attn.slopes"}
    assert all(torch.equal(after[key], value) for key, value in before.items())  # every SAM weight unchanged
    assert not torch.equal(
        after["vision_encoder.layers.1.attn.slopes"],
        BaSamModel(BaSamConfig(**tiny_config_kwargs(learnable_slopes=True)))
        .vision_encoder.layers[1]
        .attn.slopes.detach(),
    )


def test_iou_head_mode_changes_only_the_iou_head(model_dir, train_data, tmp_path):
    result = finetune(
        model_dir, train_data, output_dir=tmp_path / "iou", prompt="box", max_steps=2, save_steps=2,
        learning_rate=1e-2, train="iou-head",
    )  # fmt: skip
    before, after = _weights(model_dir), _weights(result.final_dir)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("mask_decoder.iou_prediction_head.") for key in changed)


def test_targets_cover_the_resized_image_and_the_loss_matches_a_direct_computation():
    mask = np.zeros((40, 64), dtype=bool)  # a wide image: resized to 40 x 64 and padded to 64 x 64
    mask[8:24, 16:48] = True
    targets, valid = mask_targets([mask], [(40, 64)], (64, 64), (32, 32))
    assert valid[0, :20].all() and not valid[0, 20:].any()  # 40 of 64 rows -> 20 of 32 mask rows
    expected = F.interpolate(torch.from_numpy(mask).float()[None, None], (20, 32), mode="area")[0, 0]
    assert torch.allclose(targets[0, :20], expected, atol=1e-6) and not targets[0, 20:].any()

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 32, 32, generator=generator)
    per_mask = segmentation_loss(logits, targets, valid)
    for index in range(3):
        region, truth = logits[0, index, :20], targets[0, :20]
        bce = -(truth * F.logsigmoid(region) + (1 - truth) * F.logsigmoid(-region)).mean()
        prob = torch.sigmoid(region)
        dice = 1 - (2 * (prob * truth).sum() + 1) / (prob.sum() + truth.sum() + 1)
        assert per_mask[0, index].item() == pytest.approx((bce + dice).item(), abs=1e-5)
    # A confident, correct mask has (almost) no loss; one mask: the loss of that mask plus the IoU head's error.
    perfect = (targets[:, None] * 2 - 1) * 50.0
    assert segmentation_loss(perfect, (targets > 0.5).float(), valid).max() < 1e-3
    predicted, truth = logits[0, 0, :20] > 0, targets[0, :20] >= 0.5
    actual_iou = ((predicted & truth).sum() / (predicted | truth).sum()).item()
    single = training_loss(logits[:, None, :1], torch.full((1, 1, 1), 0.25), targets, valid)
    assert single.item() == pytest.approx(per_mask[0, 0].item() + (0.25 - actual_iou) ** 2, abs=1e-6)
    # Three masks: the best mask's loss plus the IoU head's error.
    multi = training_loss(logits[:, None], torch.zeros(1, 1, 3), targets, valid, multimask=True)
    assert multi.item() > per_mask.min().item()


def test_bad_inputs_fail_clearly(model_dir, train_data, tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown train mode 'everything'"):
        finetune(model_dir, train_data, output_dir=tmp_path / "a", train="everything")
    with pytest.raises(SystemExit) as exited:
        main(["finetune", "--dataset", train_data, "--output", str(tmp_path / "b"), "--train", "everything"])
    assert exited.value.code == 2 and "invalid choice: 'everything'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown prompt 'boxes'"):
        finetune(model_dir, train_data, output_dir=tmp_path / "a", prompt="boxes")

    import datasets
    from PIL import Image

    images_only = tmp_path / "images_only"
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (64, 64))] * 2}).save_to_disk(str(images_only))
    with pytest.raises(ValueError, match="No mask column found"):
        finetune(model_dir, str(images_only), output_dir=tmp_path / "c")
    assert (
        main(["finetune", "--model", model_dir, "--dataset", str(images_only), "--output", str(tmp_path / "d")]) == 1
    )
    assert "No mask column found" in capsys.readouterr().err

    empty = tmp_path / "empty_masks"
    blank = Image.new("L", (64, 64))
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (64, 64))] * 2, "mask": [blank] * 2}).save_to_disk(
        str(empty)
    )
    with pytest.raises(ValueError, match="No usable training sample.*empty mask"):
        finetune(model_dir, str(empty), output_dir=tmp_path / "e")


@pytest.mark.slow
def test_two_processes_fine_tune_and_checkpoint(model_dir, train_data, tmp_path):
    output = tmp_path / "two"
    launch, env = accelerate_launch(2)
    args = ["-m", "basam_hf.cli", "finetune", "--model", model_dir, "--dataset", train_data, "--prompt", "box"]
    args += ["--max-steps", "2", "--save-steps", "2", "--output", str(output)]
    completed = subprocess.run(launch + args, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("Trained 2 steps") == 1  # the main process reports
    checkpoint = latest_checkpoint(output)
    assert checkpoint.name == "checkpoint-2"
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= {
        p.name for p in checkpoint.iterdir()
    }
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["settings"]["num_processes"] == 2
    # 6 samples, 2 per process and batch: 2 batches per epoch and process
    assert state["settings"]["steps_per_epoch"] == 2 and state["epoch"] == 0
    assert (output / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_processes_with_batch_1_end_with_the_weights_of_one_process_with_batch_2(model_dir, train_data, tmp_path):
    """DDP averages the gradients of the two halves of each batch: 2 processes x batch 1 (box prompts, one size)
    train exactly as 1 process x batch 2. The two processes also checkpoint every encoder layer, which only
    recomputes activations."""
    two = tmp_path / "two"
    launch, env = accelerate_launch(2)
    args = ["-m", "basam_hf.cli", "finetune", "--model", model_dir, "--dataset", train_data, "--prompt", "box"]
    args += ["--batch-size", "1", "--gradient-checkpointing", "--max-steps", "4", "--save-steps", "4"]
    args += ["--log-with", "--output", str(two)]
    completed = subprocess.run(launch + args, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    state = json.loads((latest_checkpoint(two) / "trainer_state.json").read_text())
    assert state["settings"]["gradient_checkpointing"] and state["settings"]["num_processes"] == 2

    one = finetune(
        model_dir, train_data, output_dir=tmp_path / "one", prompt="box", batch_size=2, max_steps=4, log_with=[]
    )
    initial, expected, actual = _weights(model_dir), _weights(one.final_dir), _weights(two / "final")
    assert expected.keys() == actual.keys()
    assert max((expected[key] - initial[key]).abs().max().item() for key in expected) > 1e-4  # it did train
    # Key-projection biases have a zero gradient (softmax ignores a shift shared by all keys): Adam scales their
    # rounding noise to learning-rate-sized steps, in either run alike. Every other weight must agree.
    compared = [key for key in expected if not key.endswith("k_proj.bias")]
    assert max((expected[key] - actual[key]).abs().max().item() for key in compared) <= 1e-5


def test_cli_finetune_resumes_and_pushes_to_a_fake_hub(model_dir, train_data, tmp_path, monkeypatch, capsys):
    import basam_hf.hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return type("CommitInfo", (), {"commit_url": "https://huggingface.co/user/tiny/commit/0"})()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(basam_hf.hub, "_default_api", FakeApi)
    output = tmp_path / "cli"
    args = ["finetune", "--model", model_dir, "--dataset", train_data, "--prompt", "box", "--save-steps", "1"]
    args += ["--output", str(output), "--push-to-hub", "user/tiny", "--learnable-slopes"]
    assert main(args + ["--max-steps", "1"]) == 0
    assert main(args + ["--max-steps", "2", "--resume"]) == 0  # continues the same run for one more step
    out = capsys.readouterr().out
    assert "Trained 2 steps" in out and "Pushed to https://huggingface.co/user/tiny" in out
    assert [path.name for path in list_checkpoints(output)] == ["checkpoint-1", "checkpoint-2"]
    assert BaSamConfig.from_pretrained(output / "final").vision_config.learnable_slopes
    (_, repo_id, create_kwargs), (_, upload) = calls[-2:]
    assert repo_id == "user/tiny" and create_kwargs["exist_ok"] and not create_kwargs["private"]
    assert upload["folder_path"] == str(output / "final")  # no validation: no best/, the final model is pushed
    assert "README.md" in upload["allow_patterns"] and "modeling_basam.py" in upload["allow_patterns"]


def test_cli_finetunes_on_a_coco_instances_file(model_dir, tmp_path, capsys):
    annotations, images = write_coco_instances(tmp_path / "coco")
    output = tmp_path / "coco_run"
    args = ["finetune", "--model", model_dir, "--coco-annotations", annotations, "--images", images]
    assert main(args + ["--prompt", "box", "--max-steps", "1", "--save-steps", "1", "--output", str(output)]) == 0
    assert "Trained 1 steps" in capsys.readouterr().out
    settings = json.loads((latest_checkpoint(output) / "trainer_state.json").read_text())["settings"]
    assert settings["dataset"] == annotations


@pytest.mark.parametrize("disable", [False, True])
def test_progress_bars_follow_tqdm_disable(model_dir, train_data, tmp_path, disable):
    """The training and validation bars are passed `disable` only off the main process, so `TQDM_DISABLE=1` works
    (tqdm reads it at import: hence a fresh interpreter)."""
    env = {key: value for key, value in os.environ.items() if key != "TQDM_DISABLE"}
    if disable:
        env["TQDM_DISABLE"] = "1"
    run = (
        "import sys; from basam_hf.training import finetune; "
        "finetune(sys.argv[1], sys.argv[2], output_dir=sys.argv[3], val_dataset=sys.argv[2], prompt='box', "
        "max_steps=1, save_steps=1, log_with=[])"
    )
    args = [sys.executable, "-c", run, str(model_dir), str(train_data), str(tmp_path / "run")]
    err = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stderr
    for bar in ("fine-tuning", " @ "):  # the loop's bar and the validation bar ("<variant> @ <size>")
        assert (bar in err) != disable, err[-500:]
