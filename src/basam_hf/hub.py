"""Where models come from and where they go: repo ids, local folders and `default` (the BA-SAM model embedded in the
package); model cards rendered from the package's template; pushing a model folder to the Hub.

A pushed folder must load for people without basam-hf: [`push_to_hub`] refuses a folder whose `config.json` has no
`auto_map`, or that lacks `configuration_basam.py`, `modeling_basam.py` or a module they (or the processor's
`auto_map`) import, and it uploads exactly the files [`files_to_upload`] lists.
"""

import ast
import contextlib
import glob
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import BA_FIELDS
from .lora import is_adapter_folder

# Nothing heavy at import (no torch, transformers, numpy): the command line reads the error helpers below after a
# failure, and the model-card functions import what they need.

# The embedded default model (safetensors + config + processor files) ships in the package's `default/` folder.
DEFAULT_MODEL_NAME = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def resolve_model(name: str | os.PathLike) -> str:
    """What `from_pretrained` should load for `name`: `default` -> the package's embedded model folder; anything else
    (a Hub repo id or a local folder) unchanged.

    Raises:
        FileNotFoundError: for `default` when this installation has no embedded model yet.
    """
    if str(name) != DEFAULT_MODEL_NAME:
        return str(name)
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"The embedded default BA-SAM model is not in this installation ({DEFAULT_MODEL_DIR} has no config.json). "
            "Pass a Hub repo id or a local model folder instead of `default`, e.g. one made with "
            "`basam-hf convert-sam facebook/sam-vit-base OUTPUT_DIR`."
        )
    return str(DEFAULT_MODEL_DIR)


# ---------------------------------------------------------------------------------------------------------------------
# Model cards

# The one template (package data: installed code renders it); the repository's top-level `model_cards` is a link to
# this folder, so the template is never kept in two copies.
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "basam_model_card.md"
MODEL_CARD_FILE = "README.md"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_TAGS = ("ba-sam", "sam", "segment-anything", "mask-generation", "image-segmentation", "vision")


def is_local_path(name: str | os.PathLike | None) -> bool:
    """Whether `name` names an existing local file or folder (so it is not a Hub repo id for the card's metadata)."""
    return name is not None and Path(name).expanduser().exists()


def hub_id_or_none(name: str | os.PathLike | None) -> str | None:
    """`name` if it can be a Hub repo id (not a local path, not `default`), else `None`."""
    if name is None or is_local_path(name) or str(name) == DEFAULT_MODEL_NAME:
        return None
    return str(name)


def evaluation_results(summary: Mapping[str, Any], dataset_id: str | None = None) -> list:
    """`EvalResult`s (the card's `model-index`) for the BA-SAM rows of an evaluation summary
    ([`basam_hf.evaluation.evaluate`]): one per metric and input size."""
    from huggingface_hub import EvalResult

    source = str(summary.get("dataset"))
    # A local folder is named by its last component: its full path means nothing on the Hub.
    dataset_name = Path(source).name if is_local_path(source) else source
    dataset_type = dataset_id or dataset_name
    results = []
    for row in summary.get("results", []):
        if row.get("variant", "ba") != "ba":
            continue
        for metric in summary.get("metric_names", []):
            if metric not in row.get("metrics", {}):
                continue
            results.append(
                EvalResult(
                    task_type="mask-generation",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=summary.get("split"),
                    metric_type=metric,
                    metric_value=round(float(row["metrics"][metric]), 6),
                    metric_name=f"{metric} @ {row['size']} px, {summary.get('prompt')} prompt, "
                    f"{summary.get('protocol')} protocol",
                )
            )
    return results


def _evaluation_table(summary: Mapping[str, Any]) -> dict:
    """The template's view of an evaluation summary: a description line, metric headers and formatted rows."""
    from .metrics import LOWER_IS_BETTER

    names = list(summary.get("metric_names", []))
    rows = []
    for row in summary.get("results", []):
        counts = row.get("counts", {})
        values = [f"{row['metrics'][name]:.4f}" if name in row.get("metrics", {}) else "–" for name in names]
        rows.append(
            {
                "model": row.get("model", "BA-SAM"),
                "size": row.get("size"),
                "evaluated": counts.get("evaluated", ""),
                "skipped": counts.get("skipped", ""),
                "cells": values,
            }
        )
    split = f" (split `{summary['split']}`)" if summary.get("split") else ""
    source = str(summary.get("dataset"))
    dataset_name = Path(source).name if is_local_path(source) else source
    description = (
        f"On `{dataset_name}`{split}, prompt `{summary.get('prompt')}`, protocol "
        f"`{summary.get('protocol')}`, seed {summary.get('seed')}."
    )
    headers = [f"{name} {'↓' if name in LOWER_IS_BETTER else '↑'}" for name in names]
    return {"description": description, "metric_names": headers, "rows": rows}


def render_model_card(
    config: Any,
    *,
    model_name: str,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    evaluation_dataset_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    license_text: str | None = None,
    tags: Sequence[str] = DEFAULT_TAGS,
):
    """A `huggingface_hub.ModelCard` for a BA-SAM model, rendered from the package's template.

    Args:
        config: the model's `BaSamConfig` (or its dict).
        model_name: the card's title and the `model-index` name.
        repo_id: the repo id used in the loading example (default `model_name`).
        base_model, datasets: Hub ids for the metadata (local paths must not be passed; see [`hub_id_or_none`]).
        training: settings of the training run (shown as a table), or `None` for untrained / converted weights.
        evaluation: an evaluation summary ([`basam_hf.evaluation.evaluate`]); its BA-SAM rows become the
            `model-index` results and the evaluation table.
        evaluation_dataset_id: Hub id of the evaluation dataset for `model-index` (default: its name).
        license: SPDX-style license id for the metadata; `license_text` the card's license section.
    """
    from huggingface_hub import ModelCard, ModelCardData

    config_dict = config if isinstance(config, Mapping) else config.to_dict()
    vision = dict(config_dict.get("vision_config", config_dict))
    vision.setdefault("pretrain_image_size", vision.get("image_size"))
    ba_settings = {name: vision[name] for name in BA_FIELDS if name in vision}
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="mask-generation",
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=list(tags),
        license=license,
        model_name=model_name,
        eval_results=evaluation_results(evaluation, evaluation_dataset_id) if evaluation else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base_model,
        ba_settings=ba_settings,
        vision=vision,
        training=dict(training) if training else None,
        evaluation=_evaluation_table(evaluation) if evaluation else None,
        license_text=license_text or default_license_text(license),
    )


def default_license_text(license: str) -> str:
    """The card's license section for a license id."""
    return f"`{license}`. Check that it is compatible with the licenses of the base model and of the training data."


def write_model_card(folder: str | os.PathLike, config_folder: str | os.PathLike | None = None, **card_kwargs) -> Path:
    """Render a card for the model saved in `folder` (its `config.json`, or that of `config_folder`) and save it as
    `folder/README.md`. `card_kwargs` go to [`render_model_card`]; `model_name` defaults to the folder name. A LoRA
    adapter folder gets its own card ([`basam_hf.lora.write_adapter_card`])."""
    folder = Path(folder)
    if is_adapter_folder(folder):
        from .lora import write_adapter_card

        return write_adapter_card(folder, **card_kwargs)
    config = json.loads((Path(config_folder or folder) / "config.json").read_text(encoding="utf-8"))
    card_kwargs.setdefault("model_name", folder.resolve().name)
    card = render_model_card(config, **card_kwargs)
    path = folder / MODEL_CARD_FILE
    card.save(str(path))
    return path


# The repo id in the loading examples of the templates: `from_pretrained("ID"`, `model="ID"` and an adapter's
# `PeftModel.from_pretrained(model, "ID"` (its base is named by a variable, so it stays).
_LOADING_ID = re.compile(r'(from_pretrained\((?:model, )?|model=)"[^"]*"')


def retarget_model_card(path: str | os.PathLike, repo_id: str):
    """The card at `path` pointed at `repo_id` (title, `model-index` name, loading examples), or `None` when it needs
    no change. A card written by basam-hf for a local folder (e.g. by `finetune` without `push_to_hub`) names that
    folder, and pushed as it is it would tell Hub users to load a path on the trainer's disk. Cards without the
    `ba-sam` tag (written by hand) are left alone (`None`). Nothing is written: save the returned card."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    if "ba-sam" not in (card.data.tags or []):
        return None
    old_name, name = card.data.model_name, repo_id.split("/")[-1]
    text = _LOADING_ID.sub(lambda match: f'{match.group(1)}"{repo_id}"', card.text)
    if old_name:
        text = text.replace(f"\n# {old_name}\n", f"\n# {name}\n", 1)
    if text == card.text and old_name == name:
        return None
    card.text, card.data.model_name = text, name
    return card


# ---------------------------------------------------------------------------------------------------------------------
# Pushing to the Hub

# Files without which `from_pretrained(..., trust_remote_code=True)` cannot build BA-SAM.
CODE_FILES = ("configuration_basam.py", "modeling_basam.py")
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModelForMaskGeneration")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass
class PushResult:
    """What [`push_to_hub`] did (or, with `dry_run`, would do)."""

    repo_id: str
    files: list[str]
    dry_run: bool
    generated_card: bool = False
    retargeted_card: bool = False
    commit_url: str | None = None


def _auto_map_modules(auto_map: Mapping[str, Any]) -> set[str]:
    """Module names referenced by an `auto_map` (`"module.Class"`, `"repo--module.Class"`, or lists of them)."""
    modules = set()
    for value in auto_map.values():
        for reference in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(reference, str) and "." in reference:
                modules.add(reference.split("--")[-1].rsplit(".", 1)[0])
    return modules


def _relative_imports(path: Path) -> set[str]:
    """Modules a Python file imports relatively (`from .x import y`, `from . import x`), as file names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            if node.module:
                names.add(node.module.replace(".", "/") + ".py")
            else:
                names.update(alias.name + ".py" for alias in node.names)
    return names


def required_code_files(folder: str | os.PathLike) -> list[str]:
    """The code files a folder needs to load with `trust_remote_code=True`: `configuration_basam.py`,
    `modeling_basam.py`, the modules of the model's and processor's `auto_map`, and every module they import
    relatively (transitively).

    Raises:
        ValueError: if the folder has no `config.json`, or its `auto_map` is missing or lacks `AutoConfig` /
            `AutoModelForMaskGeneration`.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"{folder} has no config.json: it is not a saved model folder (for a fine-tuning run, push its best/ or "
            "final/ subfolder)."
        )
    auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map")
    missing_classes = [name for name in REQUIRED_AUTO_CLASSES if name not in (auto_map or {})]
    if missing_classes:
        raise ValueError(
            f"{config_path} has no auto_map entry for {missing_classes}: others could not load it with "
            "trust_remote_code=True. Save the model with basam-hf (BaSamModel.save_pretrained writes the auto_map "
            "and copies the code files)."
        )
    modules = _auto_map_modules(auto_map)
    for name in PROCESSOR_FILES:
        if (folder / name).is_file():
            processor_config = json.loads((folder / name).read_text(encoding="utf-8"))
            modules |= _auto_map_modules(processor_config.get("auto_map") or {})
            modules |= _auto_map_modules((processor_config.get("image_processor") or {}).get("auto_map") or {})
    required = set(CODE_FILES) | {module.replace(".", "/") + ".py" for module in modules}
    pending = sorted(required)
    while pending:
        path = folder / pending.pop()
        if path.is_file():
            for name in _relative_imports(path) - required:
                required.add(name)
                pending.append(name)
    return sorted(required)


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """Every file of `folder` (recursively, as POSIX paths relative to it) except hidden files and folders and Python
    caches: exactly what [`push_to_hub`] uploads."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.suffix == ".pyc":
            continue
        files.append(relative.as_posix())
    return files


def check_pushable(folder: str | os.PathLike) -> list[str]:
    """Check that `folder` would load for others; return the files to upload.

    Raises:
        ValueError: naming what is missing: `config.json` / its `auto_map`, code files, weights.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    if is_adapter_folder(folder):  # a LoRA adapter (issue 29): it needs its base, not code files
        from .lora import check_adapter_pushable

        return check_adapter_pushable(folder)
    required = required_code_files(folder)
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder} lacks the code files {missing}: others could not load it with trust_remote_code=True. Save it "
            "with basam-hf (save_pretrained copies configuration_basam.py, modeling_basam.py and their imports)."
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{folder} has no weights ({', '.join(WEIGHT_FILES)}).")
    return files_to_upload(folder)


# ---------------------------------------------------------------------------------------------------------------------
# Hub errors in one line

# Modules whose exceptions are HTTP / network failures (huggingface_hub's HTTP errors derive from httpx's or httpx2's).
_NETWORK_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "aiohttp")


def error_chain(error: BaseException, limit: int = 20) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling (`__cause__`, else `__context__`)."""
    chain = []
    while error is not None and len(chain) < limit and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _top_module(error: BaseException) -> str:
    return type(error).__module__.split(".")[0]


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` (or one it comes from) means the Hub could not be reached: no network, DNS, timeout, refused
    connection, or huggingface_hub's offline mode."""
    for item in error_chain(error):
        name = type(item).__name__
        if name == "OfflineModeIsEnabled" or isinstance(item, (ConnectionError, TimeoutError)):
            return True
        if _top_module(item) in _NETWORK_MODULES and any(
            word in name for word in ("Connect", "Timeout", "Network", "Transport", "Proxy")
        ):
            return True
    return False


def hub_offline() -> bool:
    """Whether huggingface_hub's offline mode is on (`HF_HUB_OFFLINE`)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def one_line(text: str, limit: int = 400) -> str:
    """`text` on one line (whitespace runs collapsed), at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def connection_failure_reason(error: BaseException) -> str:
    """The innermost readable reason of a network failure, e.g. `[Errno -2] Name or service not known` (the HTTP
    client's or the socket's error when there is one, else the innermost message)."""
    chain = error_chain(error)
    network = [item for item in chain if _top_module(item) in _NETWORK_MODULES or getattr(item, "errno", None)]
    for item in reversed(network or chain):
        if str(item).strip():
            return one_line(str(item), 160)
    return type(error).__name__


def _http_status(error: BaseException) -> int | None:
    for item in error_chain(error):
        response = getattr(item, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _default_api():
    """A `huggingface_hub.HfApi` (token from `hf auth login` / `HF_TOKEN`), refused when `HF_HUB_OFFLINE` is set."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise OSError("HF_HUB_OFFLINE is set: pushing needs the network. Unset it, or use --dry-run.")
    return HfApi()


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload BA-SAM model with basam-hf",
    dry_run: bool = False,
    api: Any = None,
) -> PushResult:
    """Upload a saved BA-SAM folder (weights, config, processor config, code files, card) to a Hub model repo.

    The repo is created if missing (`create_repo(exist_ok=True)`, `private` applies to a new repo). A folder without
    `README.md` gets a card rendered from its config, and a basam-hf card naming another model or a local folder is
    pointed at `repo_id` ([`retarget_model_card`]); both go into the upload only: the folder itself is never written
    (the upload is made from a staging folder of links, [`_staged`]), so a failed push leaves it as it was. With
    `dry_run`, nothing is sent: the result lists exactly the files that would be uploaded.

    Args:
        api: a `huggingface_hub.HfApi` (default: a new one, using the token of `hf auth login` / `HF_TOKEN`).

    Raises:
        ValueError: for a folder that would not load for others (see [`check_pushable`]).
        OSError: when `HF_HUB_OFFLINE` is set (a real push needs the network); `ConnectionError` when the Hub cannot
            be reached, `PermissionError` when it refuses the token, with a one-line message saying what to do.
    """
    folder = Path(folder)
    files = check_pushable(folder)
    generated_card = MODEL_CARD_FILE not in files
    if generated_card:
        files = sorted(files + [MODEL_CARD_FILE])
    retargeted = None if generated_card else retarget_model_card(folder / MODEL_CARD_FILE, repo_id)
    card_changes = {"generated_card": generated_card, "retargeted_card": retargeted is not None}
    if dry_run:
        return PushResult(repo_id, files, dry_run=True, **card_changes)
    api = api if api is not None else _default_api()
    new_card = generated_card or retargeted is not None
    with (
        _staged(folder, [name for name in files if name != MODEL_CARD_FILE]) if new_card else _as_is(folder) as staging
    ):
        if generated_card:
            write_model_card(staging, repo_id=repo_id, model_name=repo_id.split("/")[-1], config_folder=folder)
        elif retargeted is not None:
            retargeted.save(str(staging / MODEL_CARD_FILE))
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            target = getattr(repo_url, "repo_id", None) or repo_id
            # Exact names (escaped: fnmatch would read `[` as a pattern), so the upload is the list checked above.
            commit = api.upload_folder(
                repo_id=target,
                folder_path=str(staging),
                commit_message=commit_message,
                allow_patterns=[glob.escape(name) for name in files],
                repo_type="model",
            )
        except Exception as error:
            raise _push_error(error, repo_id) from error
    commit_url = getattr(commit, "commit_url", None)
    return PushResult(target, files, dry_run=False, commit_url=commit_url, **card_changes)


@contextlib.contextmanager
def _as_is(folder: Path) -> Iterator[Path]:
    """The folder itself, uploaded as it is (its own card, unchanged)."""
    yield folder


@contextlib.contextmanager
def _staged(folder: Path, files: Sequence[str]) -> Iterator[Path]:
    """A temporary folder holding `files` of `folder` as symbolic links (nothing is copied), for an upload whose
    model card differs from the folder's: `files` leaves the card out, and it is written into the staging folder (a
    file of its own, not through a link into `folder`), so a failed push leaves `folder` as it was. Removed
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="basam-hf-push-") as staging:
        staging = Path(staging)
        for name in files:
            source = folder / name
            if source.is_file():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).symlink_to(source.resolve())
        yield staging


def _push_error(error: Exception, repo_id: str) -> Exception:
    """A failed push as an `OSError` with a one-line message saying what to do; other errors unchanged."""
    if is_connection_error(error):
        return ConnectionError(
            f"Could not reach the Hugging Face Hub to push to {repo_id} ({connection_failure_reason(error)}). "
            "Check the network (or proxy settings) and try again; nothing was uploaded."
        )
    status = _http_status(error)
    if status in (401, 403):
        return PermissionError(
            f"The Hugging Face Hub refused the push to {repo_id} (HTTP {status}): log in with `hf auth login` or set "
            "HF_TOKEN, with a token that may write to that repo or namespace."
        )
    if status is not None:
        return OSError(f"The Hugging Face Hub refused the push to {repo_id} (HTTP {status}): {one_line(str(error))}")
    return error


__all__ = [
    "CODE_FILES",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_MODEL_NAME",
    "MODEL_CARD_TEMPLATE",
    "PushResult",
    "check_pushable",
    "connection_failure_reason",
    "default_license_text",
    "error_chain",
    "evaluation_results",
    "files_to_upload",
    "hub_id_or_none",
    "hub_offline",
    "is_connection_error",
    "one_line",
    "push_to_hub",
    "render_model_card",
    "required_code_files",
    "resolve_model",
    "retarget_model_card",
    "write_model_card",
]
