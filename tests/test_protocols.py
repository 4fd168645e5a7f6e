"""Each builder on tiny sizes: the MVTec-style layout, counts, masks, ε contamination, seeds."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not an installed package

from nsgan.common.errors import DataError, OutputError  # noqa: E402
from nsgan.data.imageio import read_image  # noqa: E402
from tools.protocols.__main__ import main  # noqa: E402
from tools.protocols.caltech import build_caltech  # noqa: E402
from tools.protocols.ir_mnist import build_ir_mnist  # noqa: E402
from tools.protocols.mnist import build_mnist  # noqa: E402
from tools.protocols.textures import build_textures  # noqa: E402


def _pngs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.png"))


def _count(folder, sub):
    return len(list((Path(folder) / sub).glob("*.png")))


def _check_masks(out, split="test", gt="ground_truth"):
    """Every non-good image under split/ has a same-size binary mask, and vice versa."""
    out = Path(out)
    images = [p for p in (out / split).rglob("*.png") if p.parent.name != "good"]
    masks = list((out / gt).rglob("*_mask.png"))
    assert len(images) == len(masks) > 0
    for img_path in images:
        mask_path = out / gt / img_path.parent.name / f"{img_path.stem}_mask.png"
        img, mask = read_image(img_path), read_image(mask_path)
        assert mask.shape[:2] == img.shape[:2]
        assert set(np.unique(mask)) <= {0.0, 1.0} and mask.any()
    return images


def _same_tree(a, b):
    assert _pngs(a) == _pngs(b)
    for rel in _pngs(a):
        assert np.array_equal(read_image(Path(a) / rel), read_image(Path(b) / rel)), rel


def test_mnist_layout_counts_contamination_and_seed(tmp_path):
    kw = dict(normal_digit=4, epsilon=0.2, n_train=20, n_abnormal=5, n_test_good=6, n_test_defect=9, seed=3)
    proto = build_mnist(tmp_path / "a", **kw)
    out = tmp_path / "a"
    assert _count(out, "train/good") == 20 and _count(out, "train/defect") == 5
    assert _count(out, "test/good") == 6
    assert sum(_count(out, f"test/digit_{d}") for d in range(10)) == 9 and _count(out, "test/digit_4") == 0
    assert len(proto["contaminated_train"]) == 4 and all(c["digit"] != 4 for c in proto["contaminated_train"])
    assert not (out / "ground_truth").exists()
    assert read_image(out / "train/good/00000.png").shape == (32, 32, 1)
    assert json.loads((out / "protocol.json").read_text())["counts"]["train/good"] == 20
    build_mnist(tmp_path / "b", **kw)
    _same_tree(out, tmp_path / "b")
    build_mnist(tmp_path / "c", **{**kw, "seed": 4})
    assert not np.array_equal(read_image(out / "test/good/00000.png"), read_image(tmp_path / "c/test/good/00000.png"))


def test_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10, dtype=np.uint8), 4)
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + np.array([40, 28, 28], ">u4").tobytes() + x.tobytes())
    (idx / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + np.array([40], ">u4").tobytes() + y.tobytes())
    build_mnist(tmp_path / "out", normal_digit=0, epsilon=0.5, n_train=2, n_abnormal=1, n_test_good=2,
                n_test_defect=3, size=28, idx=idx)
    imgs = [read_image(p) for p in (tmp_path / "out/test/good").glob("*.png")]
    assert any(np.array_equal((im[:, :, 0] * 255).round().astype(np.uint8), x[i]) for im in imgs for i in range(4))
    with pytest.raises(DataError, match="test/good: need 2, 1 left"):  # 4 zeros: 3 train, 1 left
        build_mnist(tmp_path / "o2", normal_digit=0, epsilon=0, n_train=3, n_test_good=2, idx=idx)


def test_ir_mnist_layout_masks_and_contamination(tmp_path):
    kw = dict(epsilon=0.25, n_train=4, n_abnormal=2, n_test_good=2, n_test_defect=3, seed=1)
    proto = build_ir_mnist(tmp_path / "a", **kw)
    out = tmp_path / "a"
    assert _count(out, "train/good") == 4 and _count(out, "test/good") == 2 and _count(out, "test/three") == 3
    assert read_image(out / "test/good/00000.png").shape == (308, 308, 1)
    _check_masks(out)
    _check_masks(out, "train", "ground_truth_train")
    assert len(proto["contaminated_train"]) == 1
    # A mask covers only '3' cells: each masked pixel lies in a 28-px cell of the puzzle.
    mask = read_image(out / "ground_truth/three/00000_mask.png")[:, :, 0] > 0
    cells = {(y // 28, x // 28) for y, x in zip(*np.nonzero(mask))}
    assert 1 <= len(cells) <= 3
    build_ir_mnist(tmp_path / "b", **kw)
    _same_tree(out, tmp_path / "b")


def test_textures_layout_masks_large_image_and_seed(tmp_path):
    kw = dict(texture="gravel", size=64, epsilon=0.25, n_train=8, n_abnormal=3, n_test_good=3,
              n_test_defect=6, large_size=300, large_defects=4, seed=2)
    proto = build_textures(tmp_path / "a", **kw)
    out = tmp_path / "a"
    assert _count(out, "train/good") == 8 and _count(out, "train/defect") == 3 and _count(out, "test/good") == 3
    assert [_count(out, f"test/{k}") for k in ("scratch", "pit", "crack")] == [2, 2, 2]
    for img_path in _check_masks(out) + _check_masks(out, "train", "ground_truth_train"):
        gt = "ground_truth_train" if "train" in img_path.parts else "ground_truth"
        mask = read_image(out / gt / img_path.parent.name / f"{img_path.stem}_mask.png")
        assert mask.mean() < 0.01
    assert len(proto["contaminated_train"]) == 2 and not (out / "ground_truth_train/good").exists()
    large = _check_masks(out / "large")
    assert read_image(large[0]).shape == (300, 300, 1) and _count(out / "large", "test/good") == 1
    build_textures(tmp_path / "b", **kw)
    _same_tree(out, tmp_path / "b")
    build_textures(tmp_path / "half", **{**kw, "downscale": 2, "large_size": 0})
    assert read_image(tmp_path / "half/test/good/00000.png").shape == (64, 64, 1)
    assert not (tmp_path / "half/large").exists()


def _fake_caltech(root, n_cats=4, per_cat=10, clutter=30):
    rng = np.random.default_rng(0)
    for c in range(1, n_cats + 1):
        d = root / f"{c:03d}.thing{c}"
        d.mkdir(parents=True)
        for i in range(per_cat):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / f"{c:03d}_{i:04d}.jpg")
    d = root / "257.clutter"
    d.mkdir()
    for i in range(clutter):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(d / f"257_{i:04d}.jpg")
    (root / "001.thing1" / "001_9999.jpg").write_bytes(b"not a jpeg")  # skipped and reported


def test_caltech_alocc_split_on_a_fake_tree(tmp_path):
    root = tmp_path / "caltech"
    _fake_caltech(root)
    proto = build_caltech(tmp_path / "a", root=root, inliers=3, train_fraction=0.8, epsilon=0.25,
                          n_abnormal=2, size=16, seed=5)
    out = tmp_path / "a"
    n_in = 3 * 10 + (1 if "001.thing1" in proto["inlier_categories"] else 0)
    n_train, skipped = round(0.8 * n_in), len(proto["skipped_unreadable"])
    assert skipped == (1 if "001.thing1" in proto["inlier_categories"] else 0)
    assert _count(out, "train/good") + _count(out, "test/good") + skipped == n_in
    # 50% outliers in test, from the clutter folder.
    assert _count(out, "test/outlier") == n_in - n_train and proto["outlier_source"] == "257.clutter"
    assert len(proto["contaminated_train"]) == round(0.25 * n_train) and _count(out, "train/defect") == 2
    assert read_image(out / "test/outlier" / next((out / "test/outlier").iterdir()).name).shape == (16, 16, 3)
    build_caltech(tmp_path / "b", root=root, inliers=3, train_fraction=0.8, epsilon=0.25, n_abnormal=2, size=16, seed=5)
    _same_tree(out, tmp_path / "b")


def test_caltech_missing_root_and_bad_categories(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        build_caltech(tmp_path / "o", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Caltech-256 category folders"):
        build_caltech(tmp_path / "o", root=tmp_path / "empty")
    _fake_caltech(tmp_path / "c", n_cats=2, per_cat=3, clutter=2)
    with pytest.raises(DataError, match=r"--categories: \[7\]"):
        build_caltech(tmp_path / "o", root=tmp_path / "c", categories=[7])
    with pytest.raises(DataError, match="test outliers"):
        build_caltech(tmp_path / "o", root=tmp_path / "c", categories=[1, 2], train_fraction=0.5)
    assert not (tmp_path / "o").exists()


def test_cli_refuses_to_overwrite_and_reports_one_line(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["mnist", "--out", str(out), "--n-train", "4", "--n-abnormal", "1", "--n-test-good", "2",
            "--n-test-defect", "2"]
    assert main(args) == 0
    assert main(args) == OutputError.exit_code
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "1"]) == 0
    assert json.loads((out / "protocol.json").read_text())["seed"] == 1
    assert main(["caltech", "--out", str(tmp_path / "c"), "--root", str(tmp_path / "none")]) == DataError.exit_code
    # A failure half-way (images too small for a defect under 1%) leaves no partial folder.
    assert main(["textures", "--out", str(tmp_path / "t"), "--size", "16", "--large-size", "0"]) == DataError.exit_code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
