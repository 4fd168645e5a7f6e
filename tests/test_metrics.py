"""Every figure against an independent computation (scikit-learn, or a plain per-threshold loop)."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from nsgan.common.errors import DataError
from nsgan.evaluate.metrics import (PixelMetrics, ScoreRange, auroc_per_type, best_f1, image_auroc,
                           image_roc_curve)


def _maps(seed, n=4, size=48):
    """Score maps with blob-shaped defect regions that score higher on average, plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        gt = np.zeros((size, size), bool)
        for _ in range(i % 3 + 1):  # 1-3 regions per image, some images with several
            cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(1, 5)
            yy, xx = np.mgrid[:size, :size]
            gt |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        score = rng.normal(0, 1, (size, size)) + 1.2 * gt * rng.uniform(0.3, 1.5)
        out.append((score.astype(np.float32), gt))
    return out


def _exact_aupro(maps, max_fpr=0.3, n_thr=1500):
    """MVTec AUPRO written plainly: threshold, count per region, integrate on a fine grid."""
    scores = np.concatenate([m.ravel() for m, _ in maps])
    gt = np.concatenate([g.ravel() for _, g in maps])
    region_masks = []  # (image index, region mask), 8-connected components as in MVTec AD
    for j, (_, g) in enumerate(maps):
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        region_masks += [(j, lab == r) for r in range(1, n + 1)]
    thresholds = np.quantile(scores, np.linspace(1, 0, n_thr))
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        fprs.append(((scores >= t) & ~gt).sum() / (~gt).sum())
        pros.append(np.mean([(maps[j][0][reg] >= t).mean() for j, reg in region_masks]))
    grid = np.linspace(0, max_fpr, 30001)
    return np.trapezoid(np.interp(grid, fprs, pros), grid) / max_fpr


def _pixel_metrics(maps, bins=1000):
    rng = ScoreRange()
    for m, _ in maps:
        rng.update(m)
    pm = PixelMetrics(rng.lo, rng.hi, bins=bins)
    for m, g in maps:
        pm.update(m, g)
    return pm


@pytest.mark.parametrize("seed", [0, 1])
def test_image_auroc_roc_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(0, 1, 300) + labels, 1)  # rounding makes many ties
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, thr = image_roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr) and np.allclose(thr[1:], sk_thr[1:])
    p, r, t = precision_recall_curve(labels, scores)
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    got_f1, got_thr = best_f1(scores, labels)
    assert got_f1 == pytest.approx(f1.max(), abs=1e-12)
    assert got_thr == pytest.approx(t[np.argmax(f1)])


def test_auroc_per_type_compares_each_type_with_good_only():
    rng = np.random.default_rng(3)
    types = np.array(["good"] * 40 + ["scratch"] * 15 + ["pit"] * 15)
    scores = rng.normal(0, 1, 70) + (types == "scratch") * 2.0 + (types == "pit") * 0.3
    got = auroc_per_type(scores, types)
    assert set(got) == {"scratch", "pit"}
    for kind in got:
        sel = (types == "good") | (types == kind)
        assert got[kind] == pytest.approx(roc_auc_score(types[sel] == kind, scores[sel]), abs=1e-12)
    assert got["scratch"] > got["pit"]


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_auroc_f1_and_aupro_within_binning_error(seed):
    maps = _maps(seed)
    pm = _pixel_metrics(maps)
    scores = np.concatenate([m.ravel() for m, _ in maps])
    gt = np.concatenate([g.ravel() for _, g in maps])
    assert pm.pixel_auroc() == pytest.approx(roc_auc_score(gt, scores), abs=2e-3)
    p, r, t = precision_recall_curve(gt, scores)
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    got_f1, got_thr = pm.f1_best()
    assert got_f1 == pytest.approx(f1.max(), abs=5e-3)
    assert got_thr == pytest.approx(t[np.argmax(f1)], abs=0.1)
    exact = _exact_aupro(maps)
    assert pm.aupro() == pytest.approx(exact, abs=5e-3)
    assert 0.1 < exact < 0.95  # the data is neither trivial nor hopeless


def test_aupro_differs_from_pixel_auroc_when_small_regions_are_missed():
    """One big region found, one small missed: AUPRO weighs regions, pixel AUROC pixels."""
    score = np.random.default_rng(0).uniform(0.1, 0.5, (64, 64)).astype(np.float32)
    gt = np.zeros((64, 64), bool)
    gt[5:35, 5:35] = True  # 900 px, scored high
    score[5:35, 5:35] = 1.0
    gt[50:52, 50:52] = True  # 4 px, scored below all the background
    score[50:52, 50:52] = 0.0
    pm = PixelMetrics(0.0, 1.0, bins=100)
    pm.update(score, gt)
    assert pm.pixel_auroc() > 0.99
    assert pm.aupro() == pytest.approx(0.5, abs=0.02)


def test_tiles_with_global_regions_equal_whole_map_and_merge_adds():
    (m, g), (m2, g2) = _maps(5, n=2, size=64)
    whole = PixelMetrics(-4, 6, bins=200)
    whole.update(m, g)
    lab = ndimage.label(g, structure=np.ones((3, 3)))[0]
    tiled = PixelMetrics(-4, 6, bins=200)
    for y in (0, 32):
        for x in (0, 32):
            sl = np.s_[y : y + 32, x : x + 32]
            tiled.update(m[sl], g[sl], regions=lab[sl], image_id="part-1")
    assert np.array_equal(whole.pos, tiled.pos) and np.array_equal(whole.neg, tiled.neg)
    assert tiled.aupro() == pytest.approx(whole.aupro(), abs=1e-12)
    other = PixelMetrics(-4, 6, bins=200)
    other.update(m2, g2)
    both = PixelMetrics(-4, 6, bins=200)
    both.update(m, g)
    both.update(m2, g2)
    whole.merge(other)
    assert whole.pixel_auroc() == pytest.approx(both.pixel_auroc(), abs=1e-12)
    assert whole.aupro() == pytest.approx(both.aupro(), abs=1e-12)


def test_scores_outside_the_range_are_still_counted():
    (m, g), = _maps(6, n=1)
    narrow = PixelMetrics(-0.5, 0.5, bins=50)
    narrow.update(m, g)
    assert narrow.pos.sum() == g.sum() and narrow.neg.sum() == (~g).sum()


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="both good and defective"):
        image_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(DataError, match="3 scores but 2 labels"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])
    pm = PixelMetrics(0, 1)
    with pytest.raises(DataError, match="differ in size"):
        pm.update(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(DataError, match="NaN"):
        pm.update(np.full((4, 4), np.nan), np.zeros((4, 4), bool))
    pm.update(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(DataError, match="need both defect and good pixels"):
        pm.pixel_auroc()
    with pytest.raises(DataError, match="not finite"):
        PixelMetrics(ScoreRange().lo, ScoreRange().hi)
