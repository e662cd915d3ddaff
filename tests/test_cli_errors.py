"""basam_hf.cli.describe_error on huggingface_hub's own exception classes (and subclasses of them, which class-name
matching would miss)."""

import httpx
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from basam_hf.cli import describe_error


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/owner/name"))


class _RenamedNotFound(RepositoryNotFoundError):
    """A subclass a newer huggingface_hub could raise: still a missing repo."""


@pytest.mark.parametrize(
    "error",
    [
        RepositoryNotFoundError("404", response=_response(404)),
        GatedRepoError("403", response=_response(403)),
        _RenamedNotFound("404", response=_response(404)),
    ],
    ids=["not-found", "gated", "subclass"],
)
def test_missing_or_gated_repos_name_the_repo_and_how_to_log_in(error):
    wrapped = OSError("owner/name is not a local folder")
    wrapped.__cause__ = error
    for raised in (error, wrapped):
        message = describe_error(raised, ["owner/name"])
        assert message.startswith("no such file or folder, and no Hub repo owner/name that this account may read")
        assert "hf auth login" in message


@pytest.mark.parametrize("error", [LocalEntryNotFoundError("not cached"), OfflineModeIsEnabled("offline")])
def test_not_cached_while_offline_says_so(error, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = describe_error(error, ["owner/name"])
    assert message.startswith("owner/name is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
