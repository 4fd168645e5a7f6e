"""Protocol (d): Caltech-256 one-class (ALOCC / GPND protocol; the paper's Table 2, scored by F1).

N (1, 3 or 5) inlier categories are drawn from the first 250; each contributes its first 150
images (sorted by name). Outliers come from 257.clutter (from the other categories when the
copy has no clutter folder) so that the test set is exactly 50% outliers. Inliers are split into
train/good and test/good; round(ε · n_train) train/good images are swapped for unlabelled
outliers; a few more outliers form the labelled train/defect set. Image-level only (no masks).
The dataset cannot be downloaded here: point --root at a local copy (`NNN.name/*.jpg`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from nsgan import DataError, list_images, read_image, to_channels

from .common import CategoryWriter, take

PER_CATEGORY = 150
FIRST_CATEGORIES = 250
CLUTTER_ID = 257
_CATEGORY = re.compile(r"^(\d{3})\.(.+)$")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="category folder to write")
    p.add_argument("--root", required=True, help="local Caltech-256 folder holding NNN.name/ subfolders")
    p.add_argument("--inliers", type=int, default=1, help="number of inlier categories (1, 3, 5 in the paper)")
    p.add_argument("--categories", default=None, help="comma-separated inlier category ids instead of a random draw")
    p.add_argument("--train-fraction", type=float, default=0.8, help="share of inlier images used for training")
    p.add_argument("--epsilon", type=float, default=0.0, help="share of train/good swapped for unlabelled outliers")
    p.add_argument("--n-abnormal", type=int, default=20, help="labelled outliers for train/defect")
    p.add_argument("--size", type=int, default=64, help="centre-crop to square, then resize to this side")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> dict:
    cats = [int(c) for c in args.categories.split(",")] if args.categories else None
    return build_caltech(args.out, root=args.root, inliers=args.inliers, categories=cats,
                         train_fraction=args.train_fraction, epsilon=args.epsilon, n_abnormal=args.n_abnormal,
                         size=args.size, channels=args.channels, seed=args.seed, overwrite=args.overwrite)


def scan_categories(root: str | Path) -> dict[int, tuple[str, list[Path]]]:
    """{category id: (folder name, sorted image paths)} for every `NNN.name` folder under root."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a local Caltech-256 copy with NNN.name/ subfolders)")
    cats = {}
    for d in sorted(root.iterdir()):
        m = _CATEGORY.match(d.name)
        if d.is_dir() and m:
            images = list_images(d)
            if images:
                cats[int(m.group(1))] = (d.name, images)
    if not cats:
        raise DataError(f"{root}: no Caltech-256 category folders (NNN.name/ with images) found")
    return cats


def _load(path: Path, size: int, channels: int) -> np.ndarray | None:
    try:
        img = to_channels(read_image(path), channels, path)
    except DataError:
        return None
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = (img[top : top + s, left : left + s] * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(sq[:, :, 0] if channels == 1 else sq).resize((size, size), Image.BICUBIC)
    arr = np.asarray(pil)
    return arr[:, :, None] if arr.ndim == 2 else arr


def build_caltech(out, *, root, inliers=1, categories=None, train_fraction=0.8, epsilon=0.0, n_abnormal=20,
                  size=64, channels=3, seed=0, overwrite=False) -> dict:
    """Write the category folder; returns the protocol dict also written to protocol.json."""
    if not 0 <= epsilon < 1:
        raise DataError(f"--epsilon must be in [0, 1), got {epsilon}")
    if not 0 < train_fraction < 1:
        raise DataError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    cats = scan_categories(root)
    rng = np.random.default_rng(seed)
    candidates = [c for c in cats if c <= FIRST_CATEGORIES]
    if categories is None:
        if not 1 <= inliers <= len(candidates):
            raise DataError(f"--inliers {inliers}: {root} has {len(candidates)} usable categories (ids 1-{FIRST_CATEGORIES})")
        chosen = sorted(rng.choice(candidates, inliers, replace=False).tolist())
    else:
        missing = [c for c in categories if c not in candidates]
        if missing:
            raise DataError(f"--categories: {missing} not found among the categories 1-{FIRST_CATEGORIES} under {root}")
        chosen = sorted(categories)
    inlier_paths = [p for c in chosen for p in cats[c][1][:PER_CATEGORY]]
    if CLUTTER_ID in cats:
        outlier_source = "257.clutter"
        outlier_paths = list(cats[CLUTTER_ID][1])
    else:
        outlier_source = "other categories"
        outlier_paths = [p for c, (_, ps) in cats.items() if c not in chosen for p in ps[:PER_CATEGORY]]

    inlier_pool = [inlier_paths[i] for i in rng.permutation(len(inlier_paths))]
    outlier_pool = [outlier_paths[i] for i in rng.permutation(len(outlier_paths))]
    n_train = int(round(train_fraction * len(inlier_pool)))
    n_test = len(inlier_pool) - n_train
    if n_train < 1 or n_test < 1:
        raise DataError(f"Caltech-256: {len(inlier_pool)} inlier images cannot be split {train_fraction:.0%} train")
    n_hidden = int(round(epsilon * n_train))
    train_in = inlier_pool[: n_train - n_hidden]
    test_in = inlier_pool[n_train:]
    test_out = take(outlier_pool, n_test, "test outliers (50% of the test set)")
    hidden = take(outlier_pool, n_hidden, "contaminants in train/good")
    abnormal = take(outlier_pool, n_abnormal, "train/defect outliers")

    with CategoryWriter(out, overwrite) as writer:
        skipped = []

        def put(split, group, k, path):
            img = _load(path, size, channels)
            if img is None:
                skipped.append(str(path))
                return None
            return writer.image(split, group, f"{k:05d}_{path.stem}", img)

        train = [(p, False) for p in train_in] + [(p, True) for p in hidden]
        contaminated = []
        for k, j in enumerate(rng.permutation(len(train))):
            path, is_hidden = train[j]
            rel = put("train", "good", k, path)
            if is_hidden and rel:
                contaminated.append({"path": rel, "source": str(path)})
        for k, path in enumerate(abnormal):
            put("train", "defect", k, path)
        for k, path in enumerate(test_in):
            put("test", "good", k, path)
        for k, path in enumerate(test_out):
            put("test", "outlier", k, path)
        return writer.finish({
            "protocol": "caltech256", "seed": seed, "root": str(root), "inlier_categories": [cats[c][0] for c in chosen],
            "outlier_source": outlier_source, "per_category": PER_CATEGORY, "train_fraction": train_fraction,
            "epsilon": epsilon, "n_abnormal": n_abnormal, "size": size, "channels": channels, "pixel_masks": False,
            "skipped_unreadable": skipped, "contaminated_train": contaminated,
        })
