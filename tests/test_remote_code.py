"""save_pretrained ships a self-contained remote-code model: it loads where basam_hf cannot be imported."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import randomize_, tiny_config_kwargs

from basam_hf import BaSamConfig, BaSamModel

# Runs in a fresh interpreter in which `import basam_hf` fails, whatever is installed.
LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["basam_hf"] = None  # makes `import basam_hf` raise ImportError
    try:
        import basam_hf
    except ImportError:
        pass
    else:
        raise SystemExit("basam_hf is importable")
    import torch, transformers
    folder, auto_name, trust = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    auto = getattr(transformers, auto_name)
    try:
        model = auto.from_pretrained(folder, trust_remote_code=trust).eval()
    except ValueError as error:
        print("VALUE_ERROR:", error)
        raise SystemExit(3)
    inputs = torch.load(folder + "/inputs.pt")
    with torch.no_grad():
        masks = model(**inputs).pred_masks
    torch.save(masks, folder + "/masks-" + auto_name + ".pt")
    print(type(model).__name__, type(model).__module__)
    """
)


def run_loader(folder, auto_name: str, trust: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(folder) + "-modules"}
    return subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), auto_name, "1" if trust else "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def saved_model(
    tmp_path_factory,
):
    folder = tmp_path_factory.mktemp("basam")
    model = randomize_(
        BaSamModel(BaSamConfig(**tiny_config_kwargs(bias_mode="distance", learnable_slopes=True)))
    ).eval()
    model.save_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        pixel_values=torch.randn(1, 3, 64, 64, generator=generator), input_points=torch.tensor([[[[20.0, 30.0]]]])
    )
    torch.save(inputs, folder / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).pred_masks
    return folder, expected


def test_saved_folder_holds_code_weights_and_auto_map(saved_model):
    folder, _ = saved_model
    names = {path.name for path in folder.iterdir()}
    code = {"configuration_basam.py", "modeling_basam.py", "bias.py", "chunked_attention.py", "pos_embed.py"}
    assert code | {"model.safetensors"} <= names
    config = BaSamConfig.from_pretrained(folder)
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForMaskGeneration"}


@pytest.mark.parametrize("auto_name", ["AutoModelForMaskGeneration", "AutoModel"])
def test_loads_with_trust_remote_code_without_the_package(saved_model, auto_name):
    folder, expected = saved_model
    result = run_loader(folder, auto_name, trust=True)
    assert result.returncode == 0, result.stderr[-3000:]
    class_name, module = result.stdout.split()[-2:]
    assert class_name == "BaSamModel" and not module.startswith("basam_hf")
    masks = torch.load(folder / f"masks-{auto_name}.pt")
    assert (masks - expected).abs().max() <= 1e-6


def test_without_trust_remote_code_transformers_explains(saved_model):
    folder, _ = saved_model
    result = run_loader(folder, "AutoModelForMaskGeneration", trust=False)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "trust_remote_code" in result.stdout
