"""Output folders: one rule for every command that writes (`segment`, `compare`, `evaluate`, `finetune`,
`convert-sam`, `convert-official`).

A command writes into a folder that is new or empty. With `--overwrite` (the user asking by name) it also writes into
a non-empty folder, but replaces only what an earlier run of the same command recorded there as its own, in the
folder's manifest ([`MANIFEST_FILE`]); a file of someone else's with a name the command writes stops it before any
work, and every other file (the input photo, the user's notes) is left as it is. Inputs are never written: an input
inside the output folder is never counted as the command's own.

Nothing heavy is imported: the command line checks its output folder before it loads a model.
"""

import fnmatch
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .references import DEFAULT_MODEL_NAME

MANIFEST_FILE = ".basam-hf-outputs.json"
# How many names a message lists before "and N more".
_SHOWN = 4


def write_json_atomically(path: str | os.PathLike, value) -> None:
    """`value` as indented JSON at `path`, written under a temporary name and renamed: complete or absent."""
    path = Path(path)
    partial = path.with_name(f".tmp-{path.name}")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def read_manifest(folder: str | os.PathLike) -> dict:
    """The folder's manifest (`{"command": ..., "files": [...]}`), or `{}` when it has none (or an unreadable one)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), list) else {}


def _same_path(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False


@dataclass
class OutputFolder:
    """An output folder checked by [`prepare_output`]: `earlier` are the entries (top-level names) an earlier run of
    `command` recorded and that are still there, `foreign` every other entry (never touched)."""

    path: Path
    command: str
    earlier: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def begin(self, clear: bool = True) -> list[str]:
        """With `clear`, remove the earlier run's entries (so the folder never mixes two runs). Returns the earlier
        run's entries: those removed (`clear`) or those this run reuses and may replace."""
        if clear:
            for name in self.earlier:
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink(missing_ok=True)
        return list(self.earlier)

    def finish(self) -> Path | None:
        """Record every entry of the folder that is not someone else's as this command's own (atomically); nothing
        when the command wrote nothing there."""
        own = sorted(
            entry.name
            for entry in self.path.iterdir()
            if entry.name not in self.foreign and entry.name != MANIFEST_FILE and not entry.name.startswith(".tmp-")
        )
        manifest = self.path / MANIFEST_FILE
        if not own and not manifest.exists():
            return None
        write_json_atomically(manifest, {"command": self.command, "files": own})
        return manifest


def prepare_output(
    folder: str | os.PathLike,
    command: str,
    *,
    overwrite: bool,
    names: Sequence[str] = ("*",),
    inputs: Iterable[str | os.PathLike | None] = (),
    resume: bool = False,
) -> OutputFolder:
    """Check that `command` may write into `folder`, before any work; nothing is written.

    Args:
        overwrite: the user passed `--overwrite`: a non-empty folder is accepted, and the earlier run's entries (its
            manifest) may be replaced.
        names: glob patterns of the top-level names `command` writes; an entry of someone else's matching one of them
            is refused even with `overwrite` (`("*",)`: the folder must hold nothing else, e.g. a model folder).
        inputs: the command's input paths: the output folder may not be one, and one inside it is never the
            command's own.
        resume: the command continues an earlier run in this folder (`finetune --resume`): accepted like
            `overwrite`, and the entries with the command's names are taken as that run's.

    Raises:
        ValueError: one line naming the folder, what is in the way and what to do.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"the output {path} is a file, not a folder: give a new or empty folder")
    inputs = [Path(item).expanduser() for item in inputs if item is not None and str(item) != DEFAULT_MODEL_NAME]
    for item in inputs:
        if item.exists() and _same_path(item, path):
            raise ValueError(f"the output folder {path} is this command's input: give another folder")
    if not path.is_dir():
        return OutputFolder(path, command)
    entries = sorted(entry.name for entry in path.iterdir() if entry.name != MANIFEST_FILE)
    manifest = read_manifest(path)
    own = set(manifest["files"]) if manifest.get("command") == command else set()
    own -= {item.name for item in inputs if _same_path(item.parent, path)}
    earlier = [name for name in entries if name in own]
    foreign = [name for name in entries if name not in own]
    if entries and not (overwrite or resume):
        what = f"the outputs of an earlier `basam-hf {command}` run" if not foreign else _listed(foreign)
        raise ValueError(
            f"the output folder {path} is not empty ({what}): choose a new folder, or pass --overwrite to replace "
            f"only what an earlier `basam-hf {command}` run wrote there"
        )
    clashes = [name for name in foreign if any(fnmatch.fnmatchcase(name, pattern) for pattern in names)]
    if resume:  # the user named this folder's run to continue (e.g. one from before manifests): its outputs are ours
        earlier, foreign = sorted(earlier + clashes), [name for name in foreign if name not in clashes]
    elif clashes:
        written = "writes a model folder" if tuple(names) == ("*",) else f"writes {_listed(list(names))}"
        raise ValueError(
            f"the output folder {path} holds {_listed(clashes)}, not written by an earlier `basam-hf {command}` run "
            f"({command} {written}): choose a new folder, or move them away"
        )
    return OutputFolder(path, command, earlier, foreign)


def describe_replaced(folder: OutputFolder, names: Sequence[str], verb: str = "replaced") -> str | None:
    """The line saying which earlier outputs a run replaced (or reuses), or `None` when there were none."""
    if not names:
        return None
    return f"basam-hf {folder.command}: --overwrite: {verb} the earlier run's {_listed(list(names))} in {folder.path}"


__all__ = [
    "MANIFEST_FILE",
    "OutputFolder",
    "describe_replaced",
    "prepare_output",
    "read_manifest",
    "write_json_atomically",
]
