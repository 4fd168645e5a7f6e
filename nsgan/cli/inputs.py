"""What `nsgan score --image` names: one image, a folder of images (recursive) or a .txt list, as (image, output stem) pairs."""

from __future__ import annotations

import os
from pathlib import Path

from nsgan.common.errors import DataError
from nsgan.data.imageio import IMAGE_SUFFIXES, list_images


def resolve_inputs(path: str | Path) -> list[tuple[Path, str]]:
    """(image, output stem) pairs for one image, a folder (recursive; sub-folders kept in the stem) or a .txt list."""
    path = Path(path)
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        pairs = [(p, str(p.relative_to(path).with_suffix("")).replace(os.sep, "__")) for p in images]
    elif path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"{path}: no such list file")
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        items = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
        if not items:
            raise DataError(f"{path}: the list file names no images")
        pairs = [(p, p.stem) for p in items]
    else:
        if not path.is_file():
            raise DataError(f"{path}: no such image, folder or list file")
        pairs = [(path, path.stem)]
    stems: dict[str, Path] = {}
    for p, s in pairs:  # a.png and a.tif, or x__y.png and x/y.png, would write the same <stem>.* outputs
        if s in stems:
            raise DataError(f"{path}: {stems[s]} and {p} would write the same outputs ({s}.*); "
                            "rename one or score them into different --out folders")
        stems[s] = p
    return pairs
