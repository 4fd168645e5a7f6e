"""Writing files so that a kill, a crash or a full disk never leaves a half-written one in place.

Every file nsgan writes for a user goes through `atomic_write`: the content goes to a temporary
name in the same folder, is flushed to disk (fsync), renamed over the final name, and the folder's
entry is flushed too. A reader then sees either the old file or the complete new one, never a
mix, and after a power cut the rename itself is not lost. A failed write removes its temporary
file and raises OutputError naming the final path (or re-raises a non-OS error unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nsgan.common.errors import OutputError


def temp_name(path: Path) -> Path:
    """The temporary name `atomic_write` writes to: same folder, unique per process, never matched by `*.png` etc."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to write the file, then fsync it, rename it onto `path` and fsync the folder.

    `write` gets a temporary path without the final suffix: writers that guess the format from the
    name must be told the format. OSError (disk full, no permission, file size limit) becomes an
    OutputError naming `path`; any other exception is re-raised after the temporary file is removed.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(path.parent if str(path.parent) else ".")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


class removed_if_left_empty:
    """A context: if `folder` did not exist on entry and the block fails, remove it again (only if still empty).

    Commands create their output folder early (to prove it is writable); a failure before the first
    output must not leave an empty folder behind as if something had been written.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.existed = self.folder.exists()

    def __enter__(self) -> "removed_if_left_empty":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self.existed:
            try:
                self.folder.rmdir()
            except OSError:
                pass  # not empty (earlier outputs of this run stay) or already gone


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


__all__ = ["removed_if_left_empty", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_file", "fsync_dir", "temp_name"]
