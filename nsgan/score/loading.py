"""Where a model to score comes from: a `.safetensors` file, a folder holding `model.safetensors` (a run
folder, a downloaded repo) or a Hugging Face Hub repo id, and the file's sha256 the reports name."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from nsgan import __version__
from nsgan.common.errors import ModelError

MODEL_FILE = "model.safetensors"  # what a model folder (run folder, Hub repo) holds
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (model files can be large). OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_pretrained(ref: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """(model file, name for messages) for a model file, a folder holding model.safetensors, or a Hub repo id."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise ModelError(f"{path}: folder holds no {MODEL_FILE}; pass the model file itself, or the folder `nsgan train` "
                             "wrote it into")
        return path / MODEL_FILE, str(path / MODEL_FILE)
    if path.is_file():
        return path, text
    local = isinstance(ref, Path) or text.endswith(".safetensors") or path.is_absolute() or text.startswith((".", "~")) \
        or "\\" in text or text.count("/") > 1
    if local or not _REPO_ID.fullmatch(text):
        raise ModelError(f"{text}: no such model file or folder")
    return _hub_download(text, revision, cache_dir), text


def _hub_download(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    """model.safetensors (and README.md, the card, if there is one) of a Hub model repo, from the cache or the Hub."""
    try:  # deferred: only a Hub repo id needs huggingface_hub, and an install without it still loads local files
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise ModelError(f"{repo_id}: no such model file or folder; loading from the Hugging Face Hub needs huggingface_hub "
                         "(pip install huggingface_hub)") from None

    not_local = f"{repo_id}: no such model file or folder"
    get = dict(revision=revision, cache_dir=str(cache_dir) if cache_dir is not None else None, library_name="nsgan", library_version=__version__)
    try:
        path = hf_hub_download(repo_id, MODEL_FILE, **get)
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        how = ("offline mode (HF_HUB_OFFLINE) is on" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub could not be reached")
        raise ModelError(f"{not_local}, and as a Hub repo id it is not in the Hugging Face cache {cache} while {how}; "
                         "download it once online, or point HF_HUB_CACHE at a cache that holds it") from None
    except RevisionNotFoundError:
        raise ModelError(f"{repo_id}: the Hugging Face Hub repo has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{not_local}, and no such model repo on the Hugging Face Hub (or it is private: log in with "
                         "`hf auth login`)") from None
    except EntryNotFoundError:
        raise ModelError(f"{repo_id}: the Hugging Face Hub repo holds no {MODEL_FILE}") from None
    except HFValidationError:
        raise ModelError(f"{not_local}, and not a valid Hugging Face Hub repo id") from None
    except OSError as exc:  # network errors, HTTP errors, a cache that cannot be written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{not_local}, and as a Hub repo id its {MODEL_FILE} cannot be fetched ({first})") from None
    try:  # the model card travels with it into the cache (the Hub shows it); a repo without one still loads
        hf_hub_download(repo_id, "README.md", **get)
    except (EntryNotFoundError, OSError, ValueError):
        pass
    return Path(path)
