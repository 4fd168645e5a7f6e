"""One training per run folder: an exclusive lock that names its holder and dies with it.

Two trainings writing the same run folder would interleave states, metrics and the exported
model. The main process of a run holds an flock on `RUN/.nsgan-train.lock` (which holds its pid
and host) for the whole run; a second training finds it taken and stops with one line naming
the holder. The kernel drops the lock when the holder exits, even by kill -9, so a stale lock
never blocks a resume.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nsgan.common.errors import OutputError

LOCK_NAME = ".nsgan-train.lock"


class RunLock:
    """`with RunLock(run_dir):` holds the run folder for this process (creates the folder if needed)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self.acquired = False  # stays True after release: this process held the folder

    def acquire(self) -> None:
        import fcntl  # POSIX only: deferred so that importing the training package works everywhere

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.run_dir}: cannot create the run folder ({exc.strerror or exc}); choose another run_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown pid"
            os.close(fd)
            raise OutputError(f"{self.run_dir}: another training ({holder}) is writing this run folder; "
                              "wait for it to end or choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        self.acquired = True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["RunLock", "LOCK_NAME"]
