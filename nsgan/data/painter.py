"""Seeded painter of micro-defects (scratches, pits, cracks) on normal images.

The demo, the texture protocol and the tests need defective images whose ground truth is known
exactly. Real micro-defects are thin, low-contrast and cover well under 1% of a part's surface, so
the painter draws anti-aliased strokes and blobs whose contrast (0.15-0.4 of full scale) a person
sees but a coarse detector misses, and it enforces the area budget instead of hoping for it.

Every function takes a `numpy.random.Generator`: the same seed paints the same defects.
The mask marks pixels whose coverage by the defect is at least `MASK_COVERAGE`; anti-aliasing
touches a one-pixel rim around it with at most `MASK_COVERAGE * 0.4` of change.
Bounding boxes are (x0, y0, x1, y1) with x1, y1 exclusive (Python slice bounds).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter, grey_erosion

from nsgan.common.errors import DataError

KINDS = ("scratch", "pit", "crack")
MASK_COVERAGE = 0.25  # coverage at which a pixel counts as defect in the ground-truth mask
CONTRAST_RANGE = (0.15, 0.4)
_SAMPLE_STEP = 0.25  # spacing (px) of points along a stroke; distance error <= half of it
_MAX_TRIES = 12
_MIN_DEFECT_AREA = 5  # the smallest pit (radius 1) covers its centre and 4 neighbours


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise DataError(f"defect painter: expected an (H, W, C) image with C = 1 or 3, got shape {img.shape}")
    return img.astype(np.float32, copy=False)


def _area_limit(shape: tuple[int, int], max_area_frac: float) -> int:
    """Largest pixel count strictly below `max_area_frac` of the image."""
    total = shape[0] * shape[1]
    return max(0, math.ceil(max_area_frac * total) - 1)


def _resample(points: np.ndarray, step: float = _SAMPLE_STEP) -> np.ndarray:
    """Points every `step` px along a polyline, so the distance to them approximates the curve."""
    seg = np.diff(points, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    n = max(2, int(cum[-1] / step) + 1)
    t = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(t, cum, points[:, 0]), np.interp(t, cum, points[:, 1])], axis=1)


def _stroke_coverage(shape: tuple[int, int], strokes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Anti-aliased coverage (H, W) in [0, 1] of polylines with given widths.

    Coverage falls linearly from 1 at half the width to 0 half a pixel further, the usual
    box-filter approximation. Work is done in small windows around chunks of samples, so long
    strokes on large images stay cheap.
    """
    h, w = shape
    cov = np.zeros(shape, dtype=np.float32)
    for points, width in strokes:
        pts = _resample(points)
        reach = width / 2.0 + 0.5
        for i in range(0, len(pts), 64):
            chunk = pts[i : i + 64]
            x0 = max(0, int(math.floor(chunk[:, 0].min() - reach)))
            x1 = min(w, int(math.ceil(chunk[:, 0].max() + reach)) + 1)
            y0 = max(0, int(math.floor(chunk[:, 1].min() - reach)))
            y1 = min(h, int(math.ceil(chunk[:, 1].max() + reach)) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d2 = (xx[..., None] - chunk[:, 0]) ** 2 + (yy[..., None] - chunk[:, 1]) ** 2
            d = np.sqrt(d2.min(axis=-1))
            c = np.clip(reach - d, 0.0, 1.0).astype(np.float32)
            np.maximum(cov[y0:y1, x0:x1], c, out=cov[y0:y1, x0:x1])
    return cov


def _apply(img: np.ndarray, cov: np.ndarray, rng: np.random.Generator, contrast: float | None,
           sign: int | None) -> tuple[np.ndarray, int, float]:
    """Shift the image by ±contrast·coverage; the sign follows the local material's brightness."""
    support = cov > 0
    local = float(img[support].mean()) if support.any() else 0.5
    if sign is None:
        # Bright material more often gets a dark defect and vice versa, so the change is not clipped away.
        sign = -1 if rng.random() < local else 1
    if contrast is None:
        contrast = float(rng.uniform(*CONTRAST_RANGE))
    out = img + (sign * contrast) * cov[:, :, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32), sign, contrast


def _result(img, cov, rng, kind, contrast, sign, extra, blur=0.0):
    mask = cov >= MASK_COVERAGE  # the geometry: a blurred defect keeps the mask of its sharp drawing
    if blur > 0:
        cov = np.clip(gaussian_filter(cov, blur, mode="constant"), 0.0, 1.0).astype(np.float32)
        cov = np.where(mask, np.maximum(cov, MASK_COVERAGE), cov)  # every mask pixel still changes
    painted, sign, contrast = _apply(img, cov, rng, contrast, sign)
    ys, xs = np.nonzero(mask)
    if len(xs):
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    else:
        bbox = (0, 0, 0, 0)
    info = {"kind": kind, "bbox": bbox, "area": int(mask.sum()), "contrast": round(contrast, 4),
            "polarity": "bright" if sign > 0 else "dark", **extra}
    if blur > 0:
        info["blur"] = float(blur)
    return painted, mask, info


def _default_budget(img: np.ndarray) -> int:
    return max(1, _area_limit(img.shape[:2], 0.01))


def _random_point(shape, rng, margin=0.0):
    h, w = shape
    return np.array([rng.uniform(margin, w - 1 - margin), rng.uniform(margin, h - 1 - margin)])


def paint_scratch(img: np.ndarray, rng: np.random.Generator, max_area: int | None = None,
                  contrast: float | None = None, sign: int | None = None, blur: float = 0.0):
    """A thin (1-3 px) straight or gently curved scratch whose ends fade out.

    `max_area` (pixels of mask) sizes the scratch: length ≈ max_area / (width + 0.5).
    Returns (painted image, mask (H, W) bool, info dict).
    """
    img = _check_image(img)
    h, w = img.shape[:2]
    budget = _default_budget(img) if max_area is None else max_area
    width = float(rng.choice([1.0, 1.5, 2.0, 2.5, 3.0]))
    # Mask area ≈ (length + 1) · (width + 0.5): the band is width + 0.5 wide, the caps add one length.
    max_len = budget / (width + 0.5) - 1
    if max_len < 4:  # too small a budget for this width: fall back to the thinnest scratch
        width = 1.0
        max_len = max(1.0, budget / 1.5 - 1)
    length = min(max_len, float(rng.uniform(0.15, 0.6)) * min(h, w))
    length = max(length, min(max_len, 4.0))
    start = _random_point((h, w), rng)
    angle = rng.uniform(0, 2 * np.pi)
    end = start + length * np.array([np.cos(angle), np.sin(angle)])
    # Bend by a quadratic Bezier: the control point sits off the chord by up to 20% of its length.
    bend = rng.uniform(-0.2, 0.2) * length
    ctrl = (start + end) / 2 + bend * np.array([-np.sin(angle), np.cos(angle)])
    t = np.linspace(0, 1, max(8, int(length)))[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end
    cov = _stroke_coverage((h, w), [(curve, width)])
    # Fade the last 15% at each end to half strength: scratches rarely stop abruptly.
    fade = _end_fade((h, w), curve, length)
    cov = np.where(cov >= MASK_COVERAGE, np.maximum(cov * fade, MASK_COVERAGE), cov * fade)
    return _result(img, cov, rng, "scratch", contrast, sign, {"width": width, "length": round(length, 2)},
                   blur)


def _end_fade(shape, curve, length):
    """Per-pixel factor in [0.5, 1]: 1 in the middle of the stroke, 0.5 at its ends."""
    h, w = shape
    pts = _resample(curve, step=1.0)
    s = np.linspace(0.0, 1.0, len(pts))
    fade_pts = 0.5 + 0.5 * np.clip(np.minimum(s, 1 - s) / 0.15, 0.0, 1.0)
    xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    # Smallest factor per pixel along the path, then spread one pixel so the rim fades too.
    acc = np.ones(shape, dtype=np.float32)
    np.minimum.at(acc, (yi, xi), fade_pts.astype(np.float32))
    return grey_erosion(acc, size=(5, 5))


def paint_pit(img: np.ndarray, rng: np.random.Generator, max_area: int | None = None,
              contrast: float | None = None, sign: int | None = None, blur: float = 0.0):
    """A small round-ish pit (radius 1-4 px) with a soft edge, deepest at its centre.

    Returns (painted image, mask (H, W) bool, info dict).
    """
    img = _check_image(img)
    h, w = img.shape[:2]
    budget = _default_budget(img) if max_area is None else max_area
    r_max = min(4.0, math.sqrt(max(budget, 1) / math.pi))
    radius = float(rng.uniform(1.0, max(1.0, r_max)))
    aspect = float(rng.uniform(0.7, 1.0))
    theta = rng.uniform(0, np.pi)
    cx, cy = _random_point((h, w), rng, margin=min(radius, (min(h, w) - 1) / 2))
    reach = int(math.ceil(radius + 2))
    y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach + 2)
    x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / aspect
    d = np.hypot(u, v)
    edge = np.clip(radius + 0.5 - d, 0.0, 1.0)
    depth = 0.6 + 0.4 * np.clip(1 - d / (radius + 0.5), 0, 1)  # deeper in the middle
    cov = np.zeros((h, w), dtype=np.float32)
    cov[y0:y1, x0:x1] = np.where(edge >= MASK_COVERAGE, np.maximum(edge * depth, MASK_COVERAGE), edge * depth)
    return _result(img, cov, rng, "pit", contrast, sign, {"radius": round(radius, 2)}, blur)


def paint_crack(img: np.ndarray, rng: np.random.Generator, max_area: int | None = None,
                contrast: float | None = None, sign: int | None = None, blur: float = 0.0):
    """A thin crack: a jittery random walk that sometimes branches; dark by default.

    Returns (painted image, mask (H, W) bool, info dict).
    """
    img = _check_image(img)
    h, w = img.shape[:2]
    budget = _default_budget(img) if max_area is None else max_area
    width = float(rng.choice([1.0, 1.0, 1.5, 2.0]))
    max_len = max(1.0, budget / (width + 0.5) - 1)
    total_len = min(max_len, float(rng.uniform(0.2, 0.6)) * min(h, w))
    total_len = max(total_len, min(max_len, 4.0))
    main_len = total_len * float(rng.uniform(0.6, 0.85))
    paths = []
    start = _random_point((h, w), rng)
    main = _walk(start, rng.uniform(0, 2 * np.pi), main_len, rng, (h, w))
    paths.append(main)
    left = total_len - main_len
    while left >= 3 and len(main) > 2:
        origin = main[rng.integers(1, len(main) - 1)]
        heading = np.arctan2(*(main[-1] - main[0])[::-1]) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        blen = min(left, float(rng.uniform(0.3, 1.0)) * left + 3)
        paths.append(_walk(origin, heading, blen, rng, (h, w)))
        left -= blen
    cov = _stroke_coverage((h, w), [(p, width) for p in paths if len(p) >= 2])
    if sign is None:
        sign = -1 if rng.random() < 0.85 else 1  # cracks are shadows far more often than glints
    return _result(img, cov, rng, "crack", contrast, sign,
                   {"width": width, "length": round(total_len, 2), "branches": len(paths) - 1}, blur)


def _walk(start, heading, length, rng, shape):
    """Points of a 1-px-step random walk, stopped at the image border.

    The heading wiggles around its start value (a mean-reverting deviation, about ±0.4 rad), so
    long cracks keep a direction instead of curling into loops.
    """
    h, w = shape
    pts = [np.asarray(start, dtype=np.float64)]
    deviation = 0.0
    for _ in range(max(1, int(round(length)))):
        deviation = 0.95 * deviation + rng.normal(0.0, 0.12)
        nxt = pts[-1] + np.array([np.cos(heading + deviation), np.sin(heading + deviation)])
        if not (0 <= nxt[0] <= w - 1 and 0 <= nxt[1] <= h - 1):
            break
        pts.append(nxt)
    return np.array(pts)


PAINTERS = {"scratch": paint_scratch, "pit": paint_pit, "crack": paint_crack}


def paint_defects(img: np.ndarray, rng: np.random.Generator, kinds=KINDS, count: int = 1,
                  max_area_frac: float = 0.01):
    """Paint `count` defects of kinds drawn from `kinds`, their union under `max_area_frac` of the pixels.

    Each defect gets an equal share of what is left of the area budget; one that overshoots is
    redrawn smaller. Returns (painted float32 image, mask (H, W) bool, list of info dicts with
    kind, bbox (x0, y0, x1, y1; x1/y1 exclusive), area). Raises DataError when the image is too
    small to hold a defect within the budget.
    """
    img = _check_image(img)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in PAINTERS]
    if unknown or not kinds:
        raise DataError(f"defect painter: unknown defect kind(s) {unknown or kinds}; choose from {', '.join(KINDS)}")
    if count < 1:
        raise DataError(f"defect painter: count must be at least 1, got {count}")
    h, w = img.shape[:2]
    limit = _area_limit((h, w), max_area_frac)
    if limit < _MIN_DEFECT_AREA * count:
        raise DataError(f"defect painter: a {w}x{h} image cannot hold {count} defect(s) under "
                        f"{max_area_frac:.2%} of its pixels ({limit} px)")
    out = img.copy()
    mask = np.zeros((h, w), dtype=bool)
    infos = []
    for i in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        share = (limit - int(mask.sum())) // (count - i)
        for _ in range(_MAX_TRIES):
            painted, m, info = PAINTERS[kind](out, rng, max_area=share)
            if info["area"] > 0 and int((mask | m).sum()) <= limit:
                break
            share = max(_MIN_DEFECT_AREA, int(share * 0.7))
        else:
            raise DataError(f"defect painter: could not fit a {kind} in a {w}x{h} image within "
                            f"{max_area_frac:.2%} of its pixels")
        out, mask = painted, mask | m
        infos.append(info)
    return out, mask, infos
