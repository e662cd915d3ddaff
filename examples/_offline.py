"""The one place where the examples read their environment variables: every Hub id they use is only a default.

Each source can be replaced by a local folder, on the command line (`--model`, `--sam`, `--dataset`, `--repo-id`)
or, for all examples at once, with an environment variable (the flag wins over the variable, the variable over the
Hub id). This is how CI runs every example offline on tiny local models and data:

| variable | replaces | default |
|---|---|---|
| `BASAM_EXAMPLE_MODEL` | the BA-SAM model | `default`: the model embedded in basam-hf |
| `BASAM_EXAMPLE_SAM` | the SAM checkpoint to convert or fine-tune | `facebook/sam-vit-base` |
| `BASAM_EXAMPLE_DATASET` | the segmentation dataset | `nobg/DUTS` |
| `BASAM_EXAMPLE_REPO_ID` | the Hub repo pushed to (`user/name`) | none: give one to push |

`default` as a model name means the package's embedded model (`basam_hf.references.resolve_model`).
"""

import argparse
import os

from basam_hf.references import resolve_model

# kind -> (environment variable, Hub default)
SOURCES = {
    "model": ("BASAM_EXAMPLE_MODEL", "default"),
    "sam": ("BASAM_EXAMPLE_SAM", "facebook/sam-vit-base"),
    "dataset": ("BASAM_EXAMPLE_DATASET", "nobg/DUTS"),
    "repo_id": ("BASAM_EXAMPLE_REPO_ID", None),
}


def default_source(kind: str) -> str | None:
    """The default for `kind` (a key of `SOURCES`): its environment variable when set and not empty, else the Hub
    id (`None` for the repo to push to: there is no sensible default)."""
    variable, hub_default = SOURCES[kind]
    return os.environ.get(variable) or hub_default


def add_source_argument(parser: argparse.ArgumentParser, flag: str, kind: str, help: str) -> None:
    """Add `flag` defaulting to [`default_source`]`(kind)`; the help names the variable and the Hub default."""
    variable, hub_default = SOURCES[kind]
    parser.add_argument(
        flag, default=default_source(kind), help=f"{help} (default: ${variable}, else {hub_default or 'none'})"
    )


def model_path(name: str) -> str:
    """What `from_pretrained` loads for a model name: `default` becomes the embedded model's folder (raises
    `FileNotFoundError` when this installation has none); a Hub id or a folder is returned unchanged."""
    return resolve_model(name)
