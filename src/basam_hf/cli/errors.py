"""What [`basam_hf.cli.main`] does around every command: paths checked before it runs, an expected failure said in one
line, and the log lines every run would show about something expected here dropped (or shortened)."""

import argparse
import contextlib
import logging
import os
import re
from pathlib import Path

# Arguments naming something on disk, checked before a command runs, so that a typo gives one line instead of a
# traceback or a message about Hub repo-id syntax.
LOCAL_PATH_ARGUMENTS = ("image", "checkpoint", "folder", "coco_annotations", "images")  # must exist
MODEL_ARGUMENTS = ("model", "source")  # a folder, `default`, or a Hub model id OWNER/NAME
DATA_ARGUMENTS = ("dataset", "val_dataset")  # a folder, or a Hub dataset id
_HUB_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HUB_DATASET_ID = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


class PathNotFoundError(FileNotFoundError):
    """A command-line path that does not exist (and is not a Hub id either)."""

    def __init__(self, path: str, hint: str = ""):
        super().__init__(f"no such file or folder: {path}{hint}")
        self.path = path


def _is_hub_id(value: str, pattern: re.Pattern) -> bool:
    return bool(pattern.fullmatch(value)) and ".." not in value and "--" not in value and not value.endswith(".")


def check_paths(args: argparse.Namespace) -> list[str]:
    """Raise [`PathNotFoundError`] for a path argument that names nothing; return the arguments that will be looked
    up on the Hub (for the message if it cannot be reached)."""
    hub_ids = []
    for name in LOCAL_PATH_ARGUMENTS + MODEL_ARGUMENTS + DATA_ARGUMENTS:
        value = getattr(args, name, None)
        if value is None or not isinstance(value, (str, os.PathLike)):
            continue
        value = str(value)
        if Path(value).expanduser().exists() or (name in MODEL_ARGUMENTS and value == "default"):
            continue
        if name in MODEL_ARGUMENTS and _is_hub_id(value, _HUB_MODEL_ID):
            hub_ids.append(value)
        elif name in DATA_ARGUMENTS and _is_hub_id(value, _HUB_DATASET_ID):
            hub_ids.append(value)
        elif name in MODEL_ARGUMENTS:
            raise PathNotFoundError(value, " (a Hub model is named OWNER/NAME)")
        else:
            raise PathNotFoundError(value)
    return hub_ids


def describe_error(error: BaseException, hub_ids: list[str] = ()) -> str | None:
    """The one-line message of an expected failure, or `None` for an unexpected one (a bug: keep the traceback)."""
    if isinstance(error, PathNotFoundError):
        return str(error)
    # huggingface_hub and basam_hf.hub: imported only after a failure, so that --help stays fast.
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    from ..hub import connection_failure_reason, error_chain, hub_offline, is_connection_error, one_line

    chain = error_chain(error)
    what = " / ".join(hub_ids)

    def caused_by(*classes: type[BaseException]) -> bool:
        return any(isinstance(item, classes) for item in chain)

    not_cached = caused_by(LocalEntryNotFoundError, OfflineModeIsEnabled)
    if hub_ids and (not_cached or is_connection_error(error)) and hub_offline():
        return (
            f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the Hub was not asked; "
            "unset HF_HUB_OFFLINE (with a network), or give a local folder"
        )
    if hub_ids and is_connection_error(error):
        return (
            f"cannot reach the Hugging Face Hub for {what} ({connection_failure_reason(error)}) and it is not in the "
            "local cache; check the network, or give a local folder"
        )
    if is_connection_error(error) and type(error).__module__ != "builtins":  # builtins: a message of basam_hf's
        return f"cannot reach the Hugging Face Hub ({connection_failure_reason(error)}); check the network"
    if caused_by(RepositoryNotFoundError):  # GatedRepoError included: it derives from RepositoryNotFoundError
        return (
            f"no such file or folder, and no Hub repo {what or 'of that name'} that this account may read "
            "(private or gated repos: log in with `hf auth login`)"
        )
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"no such file or folder: {error.filename}"
    expected = isinstance(error, (OSError, ValueError)) or any(
        type(item).__module__.split(".")[0] in ("httpx", "httpx2", "huggingface_hub", "requests") for item in chain
    )
    if not expected:
        return None
    return one_line(str(error)) or type(error).__name__


# ---------------------------------------------------------------------------------------------------------------------
# Log lines that every run would show about something expected here: dropped (or shortened) while a command runs.


class _LogFilter(logging.Filter):
    """Drops the records whose message contains `drop`; shortens the first record containing `once` to
    `once_note` and drops its repetitions."""

    def __init__(self, drop: tuple[str, ...] = (), once: str | None = None, once_note: str = ""):
        super().__init__()
        self.drop, self.once, self.once_note, self.seen = drop, once, once_note, False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(fragment in message for fragment in self.drop):
            return False
        if self.once is not None and self.once in message:
            if self.seen:
                return False
            self.seen = True
            record.msg, record.args = f"basam-hf: {message}{self.once_note}", ()
        return True


def _known_log_filters() -> dict[str, _LogFilter]:
    return {
        # Loading a SAM checkpoint into BaSamModel (convert-sam, finetune or evaluate of a SAM model) is the point
        # of those commands; every SAM weight is checked to be loaded (convert-sam) or loaded strictly.
        "transformers.configuration_utils": _LogFilter(
            drop=("You are using a model of type `sam` to instantiate a model of type `basam`",)
        ),
        # SAM ties its prompt encoder's positional embedding to the model's shared one: accelerate saves the tensor
        # once in each checkpoint, and loading ties it again (resuming is tested to equal an uninterrupted run).
        "accelerate.utils.other": _LogFilter(drop=("Removed shared tensor",)),
        # No network: huggingface_hub retries 5 times (about 25 s) with two lines per try; say it once.
        "huggingface_hub.utils._http": _LogFilter(
            drop=("Retrying in",),
            once="thrown while requesting",
            once_note=" (retrying for about 25 s; HF_HUB_OFFLINE=1 uses the local cache only)",
        ),
    }


@contextlib.contextmanager
def quiet_known_warnings():
    """Within: the log lines of [`_known_log_filters`] are dropped or shortened; every other line is untouched."""
    filters = _known_log_filters()
    for name, log_filter in filters.items():
        logging.getLogger(name).addFilter(log_filter)
    try:
        yield
    finally:
        for name, log_filter in filters.items():
            logging.getLogger(name).removeFilter(log_filter)
