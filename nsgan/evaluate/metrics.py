"""Detection quality figures: image AUROC and best F1 (exact), pixel AUROC, AUPRO and F1 (binned).

Image scores are few, so image figures are exact. Pixel maps can be far larger than memory
(gigapixel parts scored tile by tile), so pixel figures come from per-threshold histograms over a
fixed score range: memory is O(bins + bins · regions), independent of the pixel count, and the
error is that of merging scores within one bin (1000 bins: well under 0.01 on AUROC/AUPRO).

Two-pass streaming, when the score range is not known in advance::

    rng = ScoreRange()
    for m, _ in maps(): rng.update(m)          # pass 1: min and max only
    pm = PixelMetrics(rng.lo, rng.hi)
    for m, gt in maps(): pm.update(m, gt)      # pass 2: histograms
    pm.pixel_auroc(), pm.aupro(), pm.f1_best()

Scores outside [lo, hi] are counted in the first/last bin, so counts stay right and only the
threshold resolution there is lost. Conventions follow scikit-learn: a pixel/image is predicted
defective when its score >= threshold; AUPRO is the MVTec AD one (regions = 8-connected components
of each ground-truth mask, overlap averaged over regions, integrated up to FPR 0.3 and divided by 0.3).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

import numpy as np
from skimage.measure import label as label_regions

from nsgan.common.errors import DataError

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

DEFAULT_BINS = 1000
AUPRO_MAX_FPR = 0.3
_instances = itertools.count()  # keeps automatic image ids of merged instances apart


# ---------------------------------------------------------------------------------------- images

def _image_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise DataError(f"metrics: {s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise DataError("metrics: image scores contain NaN or infinite values")
    if y.all() or not y.any():
        raise DataError("metrics: need both good and defective images (labels are all "
                        f"{'defective' if y.any() else 'good'})")
    return s, y


def image_auroc(scores, labels) -> float:
    """Exact AUROC (Mann-Whitney U with average ranks for ties); labels: 1/True = defective."""
    s, y = _image_arrays(scores, labels)
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    _, start, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    avg_rank = start + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(avg_rank, counts)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def image_roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) to (1, 1), for plotting."""
    s, y = _image_arrays(scores, labels)
    tp, fp, thr = _cumulative_at_distinct(s, y)
    return (np.concatenate([[0.0], fp / (~y).sum()]), np.concatenate([[0.0], tp / y.sum()]),
            np.concatenate([[np.inf], thr]))


def _cumulative_at_distinct(s: np.ndarray, y: np.ndarray):
    """TP and FP counts when thresholding at each distinct score, highest threshold first."""
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_desc))[0], len(s_desc) - 1]  # last index of each tie group
    tp = np.cumsum(y_desc)[last].astype(np.float64)
    fp = (last + 1) - tp
    return tp, fp, s_desc[last]


def best_f1(scores, labels) -> tuple[float, float]:
    """(best F1, threshold) over all thresholds; defective when score >= threshold."""
    s, y = _image_arrays(scores, labels)
    tp, fp, thr = _cumulative_at_distinct(s, y)
    f1 = 2 * tp / (tp + fp + y.sum())
    k = int(np.argmax(f1))
    return float(f1[k]), float(thr[k])


def auroc_per_type(scores, types: Sequence[str], good: str = "good") -> dict[str, float]:
    """Image AUROC of each defect type against the good images alone (MVTec's per-type breakdown)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(types, dtype=object).ravel()
    if s.shape != t.shape:
        raise DataError(f"metrics: {s.size} scores but {t.size} defect types")
    is_good = t == good
    if not is_good.any():
        raise DataError(f"metrics: no {good!r} images to compare the defect types against")
    out = {}
    for kind in sorted(set(t[~is_good].tolist())):
        sel = is_good | (t == kind)
        out[kind] = image_auroc(s[sel], t[sel] == kind)
    return out


# ---------------------------------------------------------------------------------------- pixels

class ScoreRange:
    """Pass 1 of two-pass streaming: the min and max of all pixel scores seen."""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, score_map) -> None:
        m = np.asarray(score_map)
        if m.size == 0:
            return
        lo, hi = float(np.min(m)), float(np.max(m))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError("metrics: score map contains NaN or infinite values")
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)


class PixelMetrics:
    """Binned pixel AUROC, AUPRO and best F1 over many score maps, in bounded memory.

    `lo`, `hi`: the score range the bins cover (from a ScoreRange pass, a calibration set, or a
    known bound such as [0, 1] for |x − G(z)| maps). `merge` adds another instance's counts, for
    evaluation split over processes.
    """

    def __init__(self, lo: float, hi: float, bins: int = DEFAULT_BINS):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(f"metrics: score range [{lo}, {hi}] is not finite (no maps seen in pass 1?)")
        if hi <= lo:
            hi = lo + 1e-6  # every score equal: one meaningful threshold
        if bins < 2:
            raise DataError(f"metrics: bins must be at least 2, got {bins}")
        self.lo, self.hi, self.bins = float(lo), float(hi), int(bins)
        self.pos = np.zeros(self.bins, dtype=np.int64)  # defect pixels per score bin
        self.neg = np.zeros(self.bins, dtype=np.int64)  # good pixels per score bin
        self._regions: dict[Hashable, np.ndarray] = {}  # region key -> its pixels per score bin
        self._images = 0
        self._uid = next(_instances)

    @property
    def thresholds(self) -> np.ndarray:
        """Threshold k (k = 0..bins) is the lower edge of bin k; bin `bins` means 'nothing'."""
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def _bin(self, score_map: np.ndarray) -> np.ndarray:
        scale = self.bins / (self.hi - self.lo)
        b = np.floor((score_map.astype(np.float64) - self.lo) * scale)
        return np.clip(b, 0, self.bins - 1).astype(np.int64)

    def update(self, score_map, gt_mask, regions=None, image_id: Hashable | None = None) -> None:
        """Add one map (or one tile of a map) with its ground truth.

        Whole maps: pass `score_map` (H, W) and `gt_mask` (H, W) bool; regions are found here.
        Tiles of one huge image: also pass `regions`, an int label array of the tile whose ids
        (>0) are the same across that image's tiles, and the same `image_id` for every tile, so a
        region cut by tile borders is still counted once.
        """
        m = np.asarray(score_map)
        gt = np.asarray(gt_mask)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[:, :, 0]
        if gt.ndim == 3 and gt.shape[2] == 1:
            gt = gt[:, :, 0]
        if m.shape != gt.shape:
            raise DataError(f"metrics: score map {m.shape} and mask {gt.shape} differ in size")
        if not np.isfinite(m).all():
            raise DataError("metrics: score map contains NaN or infinite values")
        gt = gt.astype(bool)
        b = self._bin(m)
        self.pos += np.bincount(b[gt], minlength=self.bins)
        self.neg += np.bincount(b[~gt], minlength=self.bins)
        if regions is None:
            regions = label_regions(gt, connectivity=2)
            image_id = ("auto", self._uid, self._images)
        else:
            regions = np.asarray(regions)
            if regions.shape != gt.shape or not np.array_equal(regions > 0, gt):
                raise DataError("metrics: region labels must be > 0 exactly on the mask pixels")
            if image_id is None:
                raise DataError("metrics: tiles with region labels need an image_id")
        self._images += 1
        ids = regions[gt]
        if ids.size:
            uniq, inv = np.unique(ids, return_inverse=True)
            hist = np.bincount(inv * self.bins + b[gt], minlength=len(uniq) * self.bins)
            for rid, h in zip(uniq.tolist(), hist.reshape(len(uniq), self.bins)):
                key = (image_id, rid)
                if key in self._regions:
                    self._regions[key] += h
                else:
                    self._regions[key] = h.astype(np.int64)

    def merge(self, other: PixelMetrics) -> None:
        """Add another instance's counts (same range and bins), e.g. from another process."""
        if (other.lo, other.hi, other.bins) != (self.lo, self.hi, self.bins):
            raise DataError("metrics: cannot merge pixel metrics with different score ranges or bins")
        self.pos += other.pos
        self.neg += other.neg
        for key, h in other._regions.items():
            self._regions[key] = self._regions.get(key, 0) + h
        self._images += other._images

    # Counts at threshold k (k = 0..bins): pixels in bins >= k are predicted defective.
    def _above(self, hist: np.ndarray) -> np.ndarray:
        return np.concatenate([np.cumsum(hist[::-1])[::-1], [0]]).astype(np.float64)

    def _need_both(self):
        if self.pos.sum() == 0 or self.neg.sum() == 0:
            raise DataError("metrics: pixel figures need both defect and good pixels "
                            f"(seen {int(self.pos.sum())} defect, {int(self.neg.sum())} good)")

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fpr, tpr, thresholds), fpr increasing from 0 to 1."""
        self._need_both()
        tpr = self._above(self.pos) / self.pos.sum()
        fpr = self._above(self.neg) / self.neg.sum()
        return fpr[::-1], tpr[::-1], self.thresholds[::-1]

    def pixel_auroc(self) -> float:
        fpr, tpr, _ = self.roc_curve()
        return float(_trapezoid(tpr, fpr))

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fpr, per-region overlap, thresholds), fpr increasing; overlap averaged over regions."""
        self._need_both()
        if not self._regions:
            raise DataError("metrics: AUPRO needs at least one defect region")
        hists = np.stack(list(self._regions.values())).astype(np.float64)
        area = hists.sum(axis=1, keepdims=True)
        overlap = np.concatenate([np.cumsum(hists[:, ::-1], axis=1)[:, ::-1], np.zeros((len(hists), 1))], axis=1)
        pro = (overlap / area).mean(axis=0)
        fpr = self._above(self.neg) / self.neg.sum()
        return fpr[::-1], pro[::-1], self.thresholds[::-1]

    def aupro(self, max_fpr: float = AUPRO_MAX_FPR) -> float:
        """Area under the PRO curve up to `max_fpr`, divided by `max_fpr` (1.0 is perfect)."""
        fpr, pro, _ = self.pro_curve()
        return _partial_area(fpr, pro, max_fpr) / max_fpr

    def f1_best(self) -> tuple[float, float]:
        """(best pixel F1, threshold): pixels with score >= threshold are called defective."""
        self._need_both()
        tp = self._above(self.pos)
        fp = self._above(self.neg)
        f1 = 2 * tp / (tp + fp + self.pos.sum())
        k = int(np.argmax(f1))
        return float(f1[k]), float(self.thresholds[k])

    def summary(self) -> dict:
        f1, thr = self.f1_best()
        return {"pixel_auroc": self.pixel_auroc(), "aupro": self.aupro(), "pixel_f1": f1,
                "pixel_f1_threshold": thr, "regions": len(self._regions),
                "bins": self.bins, "score_range": [self.lo, self.hi]}


def _partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [0, x_max]; y interpolated linearly at x_max."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    if xs[-1] < x_max:
        j = int(np.searchsorted(x, x_max, side="right"))  # first point beyond x_max
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.append(xs, x_max), np.append(ys, y_at)
    return float(_trapezoid(ys, xs))


def metric_rows(metrics: dict) -> list[tuple[str, str]]:
    """(figure, value) pairs of the summary, for the printed table and the HTML page."""
    im = metrics["image"]
    rows = [("images (good / defective)", f"{im['n_good']} / {im['n_defective']}"),
            ("image AUROC", f"{im['auroc']:.4f}"),
            ("image F1 (best threshold)", f"{im['f1']:.4f} @ {im['f1_threshold']:.4g}")]
    rows += [(f"  AUROC {kind}", f"{auc:.4f}") for kind, auc in im["per_type_auroc"].items()]
    px = metrics["pixel"]
    if px is None:
        rows.append(("pixel figures", "no masks (image labels only)"))
    else:
        rows += [("pixel AUROC", f"{px['pixel_auroc']:.4f}"),
                 (f"AUPRO (FPR ≤ {px['aupro_max_fpr']:g})", f"{px['aupro']:.4f}"),
                 ("pixel F1 (best threshold)", f"{px['pixel_f1']:.4f} @ {px['pixel_f1_threshold']:.4g}")]
    rows.append(("scoring time", f"{metrics['seconds']['scoring']:.1f} s"))
    return rows
