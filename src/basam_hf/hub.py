"""Pushing a model or LoRA adapter folder to the Hub, and Hub failures in one line. (Model references live in
`basam_hf.references` and model cards in `basam_hf.model_card`; their names stay importable from here.)

A pushed folder must load for people without basam-hf: [`push_to_hub`] refuses a folder whose `config.json` has no
`auto_map`, or that lacks `configuration_basam.py`, `modeling_basam.py` or a module they (or the processor's
`auto_map`) import, and it uploads exactly the files [`files_to_upload`] lists.
"""

import ast
import contextlib
import glob
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants

from .model_card import (  # noqa: F401 (re-exported: their home was this module)
    DEFAULT_LICENSE,
    MODEL_CARD_FILE,
    MODEL_CARD_TEMPLATE,
    default_license_text,
    evaluation_results,
    render_model_card,
    retarget_model_card,
    write_model_card,
)
from .references import (  # noqa: F401 (re-exported: their home was this module)
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_NAME,
    hub_id_or_none,
    hub_offline,
    is_adapter_folder,
    is_local_path,
    resolve_model,
)

# Nothing heavy at import (no torch, transformers, numpy): the command line reads the error helpers below after a
# failure.

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


def check_adapter_pushable(folder: str | os.PathLike) -> list[str]:
    """Check that an adapter folder names its base and has weights; return the files to upload. Warns when the base
    is a local folder: Hub users need it on the Hub too.

    Raises:
        ValueError: for an adapter without weights or without a base model reference.
    """
    folder = Path(folder)
    if not (folder / ADAPTER_WEIGHTS_FILE).is_file():
        raise ValueError(f"{folder} has an {ADAPTER_CONFIG_FILE} but no {ADAPTER_WEIGHTS_FILE}.")
    base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{folder / ADAPTER_CONFIG_FILE} names no base model: set base_model_name_or_path to the base's Hub id."
        )
    if is_local_path(base) or Path(base).is_absolute():
        warnings.warn(
            f"The adapter's base model is the local folder {base}: Hub users cannot load it. Push the base too "
            f"(basam-hf push {base} OWNER/NAME) and set base_model_name_or_path in {ADAPTER_CONFIG_FILE} to OWNER/NAME.",
            UserWarning,
            stacklevel=3,
        )
    return files_to_upload(folder)


def check_pushable(folder: str | os.PathLike) -> list[str]:
    """Check that `folder` would load for others; return the files to upload.

    Raises:
        ValueError: naming what is missing: `config.json` / its `auto_map`, code files, weights.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    if is_adapter_folder(folder):  # a LoRA adapter: it needs its base, not code files
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
    "check_adapter_pushable",
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
