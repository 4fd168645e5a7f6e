"""Protocol (c): real texture photos with painted micro-defects (scratches, pits, cracks).

Normal images are random crops of a photo bundled in scikit-image (nsgan.texture_image); defects come
from nsgan.paint_defects, under 1% of each image's pixels. round(ε · n_train) of train/good carry
unlabelled defects (listed in protocol.json, never masked). Labelled train/defect images carry
mixed kinds with masks; test/<kind>/ holds one kind per image, so the per-type breakdown is per
kind. Test material comes from a part of the photo training never sees. `large/` is a second
category folder with one full-size good and one full-size defective image (with mask), for
tiled scoring: `nsgan evaluate --data OUT/large`; it is cut from the whole photo (mirror-tiled
beyond 512 px), so it shares material with training: a check of tiling, not of generalisation.
"""

from __future__ import annotations

import argparse

import numpy as np

from nsgan import BLOB_KIND as BLOB
from nsgan import DEFECT_KINDS as KINDS
from nsgan import TEXTURES, DataError, paint_blob_image, paint_defects, texture_image

from .common import CategoryWriter


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="category folder to write")
    p.add_argument("--texture", default="brick", choices=TEXTURES)
    p.add_argument("--size", type=int, default=128, help="side of the training and test images")
    p.add_argument("--downscale", type=int, default=1,
                   help="view the photo at 1/N scale (block average) so a small image holds more of the pattern")
    p.add_argument("--epsilon", type=float, default=0.05, help="share of train/good images with unlabelled defects")
    p.add_argument("--n-train", type=int, default=200, help="train/good images, contaminated ones included")
    p.add_argument("--n-abnormal", type=int, default=20, help="labelled defective training images (with masks)")
    p.add_argument("--n-test-good", type=int, default=30)
    p.add_argument("--n-test-defect", type=int, default=30, help="defective test images, spread over the kinds")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated defect kinds")
    p.add_argument("--max-defects", type=int, default=2, help="defects per defective image: 1..this")
    p.add_argument("--large-size", type=int, default=1024, help="side of the full-size test images (0: none)")
    p.add_argument("--large-defects", type=int, default=8, help="defects on the full-size defective image")
    p.add_argument("--test-blobs", type=int, default=0,
                   help="test/blob/ images with one Perlin blob of displaced material each (a shape the painter never draws)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> dict:
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    return build_textures(args.out, texture=args.texture, size=args.size, downscale=args.downscale, epsilon=args.epsilon,
                          n_train=args.n_train, n_abnormal=args.n_abnormal, n_test_good=args.n_test_good,
                          n_test_defect=args.n_test_defect, kinds=kinds, max_defects=args.max_defects,
                          large_size=args.large_size, large_defects=args.large_defects, seed=args.seed,
                          overwrite=args.overwrite, n_test_blob=args.test_blobs)


def _info(infos):
    return [{k: v for k, v in i.items() if k in ("kind", "bbox", "area")} for i in infos]


def _material(texture, size, rng, part, downscale):
    """A normal image; with downscale N, an N·size crop block-averaged by N (defects are painted after)."""
    img = texture_image(texture, size * downscale, rng, part=part)
    if downscale == 1:
        return img
    return img.reshape(size, downscale, size, downscale, 1).mean(axis=(1, 3)).astype(np.float32)


def build_textures(out, *, texture="brick", size=128, downscale=1, epsilon=0.05, n_train=200, n_abnormal=20,
                   n_test_good=30, n_test_defect=30, kinds=KINDS, max_defects=2, large_size=1024,
                   large_defects=8, seed=0, overwrite=False, n_test_blob=0) -> dict:
    """Write the category folder; returns the protocol dict also written to protocol.json.

    `n_test_blob` test/blob/ images (one blob each, nsgan.paint_blob_image, fill shift or gain, under 1% of
    the pixels) are drawn after everything else, so the other folders are the same with or without them.
    """
    if not 0 <= epsilon < 1:
        raise DataError(f"--epsilon must be in [0, 1), got {epsilon}")
    if downscale < 1:
        raise DataError(f"--downscale must be at least 1, got {downscale}")
    if max_defects < 1:
        raise DataError(f"--max-defects must be at least 1, got {max_defects}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise DataError(f"--kinds: unknown defect kind(s) {unknown or list(kinds)}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)

    def defective(part, kinds_here, count=None):
        img = _material(texture, size, rng, part, downscale)
        n = count or int(rng.integers(1, max_defects + 1))
        return paint_defects(img, rng, kinds=kinds_here, count=n)

    with CategoryWriter(out, overwrite) as writer:
        n_hidden = int(round(epsilon * n_train))
        hidden_at = set(rng.choice(n_train, n_hidden, replace=False).tolist())
        contaminated = []
        for k in range(n_train):
            if k in hidden_at:
                img, _, infos = defective("train", kinds)
                contaminated.append({"path": writer.image("train", "good", f"{k:05d}", img), "defects": _info(infos)})
            else:
                writer.image("train", "good", f"{k:05d}", _material(texture, size, rng, "train", downscale))
        labelled = []
        for k in range(n_abnormal):
            img, mask, infos = defective("train", kinds)
            labelled.append({"path": writer.image("train", "defect", f"{k:05d}", img, mask),
                             "kinds": sorted({i["kind"] for i in infos})})
        for k in range(n_test_good):
            writer.image("test", "good", f"{k:05d}", _material(texture, size, rng, "test", downscale))
        for k in range(n_test_defect):
            kind = kinds[k % len(kinds)]
            img, mask, _ = defective("test", (kind,))
            writer.image("test", kind, f"{k:05d}", img, mask)
        large = None
        if large_size:
            # From the whole photo: a test strip mirror-tiled to full size would be mostly seams.
            good = _material(texture, large_size, rng, "all", downscale)
            writer.image("large/test", "good", "large_000", good)
            img, mask, infos = paint_defects(_material(texture, large_size, rng, "all", downscale), rng,
                                             kinds=kinds, count=large_defects)
            writer.image("large/test", "mixed", "large_000", img, mask)
            large = {"size": large_size, "defects": _info(infos), "mask_fraction": float(mask.mean()),
                     "material": "whole photo, mirror-tiled beyond its size; overlaps training material"}
        for k in range(n_test_blob):  # after every other draw: the folders above do not change
            img, mask, _ = paint_blob_image(_material(texture, size, rng, "test", downscale), rng, 0.01)
            writer.image("test", BLOB, f"{k:05d}", img, mask)
        return writer.finish({
            "protocol": "textures", "seed": seed, "texture": texture, "size": size, "downscale": downscale, "epsilon": epsilon,
            "n_train": n_train, "n_abnormal": n_abnormal, "n_test_good": n_test_good,
            "n_test_defect": n_test_defect, "kinds": list(kinds), "max_defects": max_defects,
            "pixel_masks": True, "large": large, "contaminated_train": contaminated,
            "labelled_train": labelled, "n_test_blob": n_test_blob,
        })
