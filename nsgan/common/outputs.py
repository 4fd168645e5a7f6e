"""Output files of a scored image and the checks made before any long work starts (score, evaluate, audit, pages)."""

from __future__ import annotations

import os
from pathlib import Path

from nsgan.common.errors import OutputError


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where `nsgan score` writes an image's map, overlay and report: <stem>.map.tif, .overlay.png, .json."""
    return {"map": out_dir / f"{stem}.map.tif", "overlay": out_dir / f"{stem}.overlay.png", "json": out_dir / f"{stem}.json"}


def check_outputs(outs: dict[str, Path], overwrite: bool) -> None:
    """OutputError for the first of `outs` that exists, unless `overwrite`."""
    if overwrite:
        return
    for p in outs.values():
        if p.exists():
            raise OutputError(f"{p}: exists (use --overwrite to replace it)")


def ensure_writable(out_dir: Path) -> None:
    """Create out_dir and prove a file can be written there, before any long work starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nsgan-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None
