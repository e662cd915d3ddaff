"""Training checkpoints: atomic `checkpoint-STEP` folders, the latest of a run, and resume compatibility checks.

A checkpoint is written to a hidden `.tmp-` folder and renamed into place, so it is complete or absent, also after
Ctrl-C; old ones are renamed aside before deletion for the same reason.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
MODEL_CONFIG_FILE = "model_config.json"
# Settings that fix the sequence of computations: a resumed run must use the checkpoint's values.
RESUME_SETTINGS = (
    "train",
    "lora",
    "prompt",
    "jitter",
    "negatives",
    "train_sizes",
    "loss",
    "learning_rate",
    "weight_decay",
    "lr_step_epochs",
    "lr_gamma",
    "max_grad_norm",
    "batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "mixed_precision",
    "seed",
    "train_samples",
    "train_ids_sha256",
)
# Config entries that differ between equal models (where they were loaded from, library versions).
_VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype", "auto_map"}
)


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-STEP` folder name, or `None`."""
    name = Path(path).name
    suffix = name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run (`output_dir/checkpoints/checkpoint-STEP` with a trainer state), by step."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        path
        for path in root.iterdir()
        if path.is_dir() and checkpoint_step(path) is not None and (path / STATE_FILE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step, or `None`."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _move_aside(path: Path) -> Path:
    """Rename `path` to a hidden `.trash-` sibling (replacing a stale one) and return it."""
    trash = path.with_name(f".trash-{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    return trash


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished folder `source` to `target` with `os.replace` (same parent, so a rename). An existing
    `target` is first renamed aside and deleted afterwards, so `target` is never a mix of old and new files."""
    trash = _move_aside(target) if target.exists() else None
    os.replace(source, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def directory_replaced(target: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `target` (`.tmp-NAME`) to write into; when the block ends without an error it
    replaces `target` whole ([`replace_directory`]). After an error `target` is as it was (the temporary stays, for
    [`remove_stale_temporaries`])."""
    temporary = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    yield temporary
    replace_directory(temporary, target)


def _remove_directory(path: Path) -> None:
    """Rename, then delete: an interrupted deletion leaves a hidden folder, never a half-deleted checkpoint."""
    shutil.rmtree(_move_aside(path), ignore_errors=True)


def remove_stale_temporaries(root: Path) -> None:
    """Delete `.tmp-` / `.trash-` folders left by an interrupted save or deletion."""
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(path, ignore_errors=True)


def comparable_config(config: Any) -> dict[str, Any]:
    """A model config as flat `dotted.key -> value`, without entries that differ between equal models."""
    config_dict = config if isinstance(config, dict) else config.to_dict()
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in _VOLATILE_CONFIG_KEYS:
                    visit(f"{prefix}{key}.", item)
        else:
            flat[prefix[:-1]] = value

    visit("", config_dict)
    return flat


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def save_checkpoint(
    accelerator, output_dir: Path, step: int, trainer_state: dict, model_config: Any, keep_last: int | None
) -> Path:
    """Save the training state atomically as `output_dir/checkpoints/checkpoint-STEP`; keep the last `keep_last`.
    Called by every process (each saves its RNG state)."""
    root = output_dir / CHECKPOINTS_DIR
    target = root / f"{CHECKPOINT_PREFIX}{step}"
    temporary = root / f".tmp-{target.name}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_text = json.dumps(_json_roundtrip(trainer_state), indent=2, sort_keys=True) + "\n"
        (temporary / STATE_FILE).write_text(state_text, encoding="utf-8")
        config_text = json.dumps(_json_roundtrip(comparable_config(model_config)), indent=2, sort_keys=True) + "\n"
        (temporary / MODEL_CONFIG_FILE).write_text(config_text, encoding="utf-8")
        replace_directory(temporary, target)
        if keep_last is not None:
            for old in list_checkpoints(output_dir)[:-keep_last]:
                _remove_directory(old)
    accelerator.wait_for_everyone()
    return target


def resolve_resume(resume: bool | str | os.PathLike | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: `True` -> the latest of `output_dir` (`None` if there is none); a path -> that
    checkpoint, or the latest checkpoint of that run folder.

    Raises:
        ValueError: for a path that is neither.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"Cannot resume from {path}: it is neither a checkpoint nor a run folder with checkpoints.")
    return latest


def check_resume_compatible(checkpoint: Path, model_config: Any, settings: dict) -> dict:
    """The checkpoint's trainer state, after checking it was made by the same model and run settings.

    Raises:
        ValueError: naming the config entries or settings that differ.
    """
    state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    saved_config = json.loads((checkpoint / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    current_config = _json_roundtrip(comparable_config(model_config))
    differences = sorted(
        key for key in saved_config.keys() | current_config.keys() if saved_config.get(key) != current_config.get(key)
    )
    if differences:
        details = ", ".join(
            f"{key}: {saved_config.get(key)!r} vs {current_config.get(key)!r}" for key in differences[:8]
        )
        raise ValueError(
            f"Cannot resume from {checkpoint}: it was saved from a different model (checkpoint vs this run: "
            f"{details}{', ...' if len(differences) > 8 else ''}). Resume with the same model and BA settings, or "
            "use a new output folder."
        )
    saved_settings = state.get("settings", {})
    current_settings = _json_roundtrip(settings)
    changed = [key for key in RESUME_SETTINGS if saved_settings.get(key) != current_settings.get(key)]
    if changed:
        details = ", ".join(f"{key}: {saved_settings.get(key)!r} vs {current_settings.get(key)!r}" for key in changed)
        raise ValueError(
            f"Cannot resume from {checkpoint}: the run settings differ (checkpoint vs this run: {details}); a resumed "
            "run must repeat the interrupted one. Use a new output folder for new settings."
        )
    return state


__all__ = [
    "check_resume_compatible",
    "directory_replaced",
    "latest_checkpoint",
    "list_checkpoints",
    "remove_stale_temporaries",
    "replace_directory",
    "resolve_resume",
    "save_checkpoint",
]
