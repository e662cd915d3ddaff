"""Model references: what `--model` / `from_pretrained` names (a Hub repo id, a local folder, or `default`, the
BA-SAM model embedded in the package) and what a local folder holds (a model, or a peft adapter).

Imports nothing heavy: the command line, the model cards and the Hub code all start here.
"""

import os
import sys
import threading
from pathlib import Path
from typing import NamedTuple

from .constants import ZERO_SHOT_BA

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


def is_local_path(name: str | os.PathLike | None) -> bool:
    """Whether `name` names an existing local file or folder (so it is not a Hub repo id for the card's metadata)."""
    return name is not None and Path(name).expanduser().exists()


def hub_id_or_none(name: str | os.PathLike | None) -> str | None:
    """`name` if it can be a Hub repo id (not a local path, not `default`), else `None`."""
    if name is None or is_local_path(name) or str(name) == DEFAULT_MODEL_NAME:
        return None
    return str(name)


# ---------------------------------------------------------------------------------------------------------------------
# The photo model: what `segment` and `demo` run without --model

# SAM ViT-B, loaded as BA-SAM with the zero-shot settings (constants.ZERO_SHOT_BA: at 1024 px it computes what SAM
# computes). Only the files transformers loads are downloaded: the repo also holds PyTorch and TensorFlow copies.
PHOTO_MODEL_ID = "facebook/sam-vit-base"
PHOTO_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json")
_PHOTO_MODEL_REQUIRED = PHOTO_MODEL_FILES[:2]  # a processor config is optional: SAM's processor is the fallback
# How long the reachability check may take: it asks for one file's metadata, which takes well under a second when the
# Hub answers; a stalled DNS lookup or proxy is cut off here instead of holding the command.
HUB_CHECK_SECONDS = 5.0
FALLBACK_NOTE = (
    f"{PHOTO_MODEL_ID} is not in the Hugging Face cache and the Hub {{reason}}, so this runs the embedded model, a "
    "small offline model for trying the package, `compare` and tests, not a photo segmenter. For SAM ViT-B (375 MB), "
    f"run once with a network, or `hf download {PHOTO_MODEL_ID} {' '.join(PHOTO_MODEL_FILES[:3])}`; `--model default` "
    "picks the embedded model without this note"
)


class ModelChoice(NamedTuple):
    """A model to run: `model` is what to load (a folder, a Hub repo id or `default`), `name` what the reports call
    it, `ba_settings` the BA settings it is loaded with (options given by the user go on top), and `note` one line
    for the user when the embedded model stands in for the photo model (else `None`)."""

    model: str
    name: str
    ba_settings: dict
    note: str | None = None

    def settings(self, overrides=None) -> dict:
        """The BA settings to load with: the choice's, with `overrides` (the options given) on top."""
        return {**self.ba_settings, **(overrides or {})}


def hub_cache_dir() -> str:
    """huggingface_hub's cache folder as the environment names it now (`HF_HUB_CACHE`, else `HF_HOME/hub`): its own
    constant is read once, at import."""
    from huggingface_hub import constants  # --help stays fast: huggingface_hub imports slowly

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str, files=_PHOTO_MODEL_REQUIRED) -> str | None:
    """The cached snapshot folder of `repo_id`'s main revision if it holds every one of `files`, else `None`."""
    from huggingface_hub import try_to_load_from_cache  # --help stays fast

    paths = [try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir()) for name in files]
    if not all(isinstance(path, str) for path in paths):  # None (not cached) or _CACHED_NO_EXIST
        return None
    return str(Path(paths[0]).parent)


def hub_offline() -> bool:
    """Whether huggingface_hub's offline mode is on (`HF_HUB_OFFLINE`, read now or at its import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants  # --help stays fast
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(repo_id: str, timeout: float = HUB_CHECK_SECONDS) -> bool:
    """Whether the Hub answers for `repo_id`'s `config.json` within `timeout` seconds (one request, no retries). It
    runs in a daemon thread so that a name lookup, which HTTP timeouts do not cover, cannot hold the caller longer."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url  # --help stays fast

    done, answered = threading.Event(), []

    def ask() -> None:
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)
            answered.append(True)
        except Exception:  # noqa: BLE001 - any failure (network, proxy, HTTP status) means: not reachable now
            pass
        finally:
            done.set()

    threading.Thread(target=ask, daemon=True).start()
    done.wait(timeout)
    return bool(answered)


def photo_model(timeout: float = HUB_CHECK_SECONDS) -> ModelChoice:
    """The model `segment` and `demo` run without `--model`: SAM ViT-B ([`PHOTO_MODEL_ID`]) from the Hugging Face
    cache, or downloaded (huggingface_hub's progress bar) when the Hub answers within `timeout` seconds and
    `HF_HUB_OFFLINE` is not set; else the embedded model, with a note saying so and how to get SAM ViT-B. Loaded with
    `constants.ZERO_SHOT_BA` (a pretrained SAM used zero-shot)."""
    folder = cached_snapshot(PHOTO_MODEL_ID)
    if folder is None:
        reason = "is not asked (HF_HUB_OFFLINE is set)" if hub_offline() else None
        if reason is None and not hub_reachable(PHOTO_MODEL_ID, timeout):
            reason = "could not be reached"
        if reason is not None:
            return ModelChoice(DEFAULT_MODEL_NAME, DEFAULT_MODEL_NAME, {}, FALLBACK_NOTE.format(reason=reason))
        from huggingface_hub import snapshot_download  # --help stays fast

        folder = snapshot_download(PHOTO_MODEL_ID, allow_patterns=list(PHOTO_MODEL_FILES), cache_dir=hub_cache_dir())
    return ModelChoice(str(folder), PHOTO_MODEL_ID, dict(ZERO_SHOT_BA))


def choose_model(name: str | os.PathLike | None) -> ModelChoice:
    """The model to run for `--model NAME`: `None` (not given) is [`photo_model`]; anything else, `default`
    included, is that model with its own settings, never replaced."""
    if name is None:
        return photo_model()
    return ModelChoice(str(name), str(name), {})


# A peft adapter folder (`finetune --train lora`, see basam_hf.lora).
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


def is_adapter_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a saved peft adapter (it has an `adapter_config.json`)."""
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file()


def print_model_note(command: str, choice: "ModelChoice") -> None:
    """The note of a [`ModelChoice`] (the embedded model stands in for the photo model) on stderr, printed once the
    command runs the model: a command refused before that says only why."""
    if choice.note:
        print(f"basam-hf {command}: note: {choice.note}", file=sys.stderr, flush=True)


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_MODEL_NAME",
    "HUB_CHECK_SECONDS",
    "ModelChoice",
    "PHOTO_MODEL_FILES",
    "PHOTO_MODEL_ID",
    "cached_snapshot",
    "choose_model",
    "hub_cache_dir",
    "hub_id_or_none",
    "hub_offline",
    "hub_reachable",
    "is_adapter_folder",
    "is_local_path",
    "photo_model",
    "print_model_note",
    "resolve_model",
]
