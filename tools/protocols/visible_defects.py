"""Visible micro-defects made another way than the product's painter, with exact masks and a measured visibility.

The comparator C learns from nsgan's own painter (anti-aliased strokes and pits at 0.15-0.4 contrast,
Perlin blobs of displaced material). A detector must be judged on defects it never saw, made by other
mechanisms, that a person sees at a glance. Five families, each a different physical mechanism:

- `foreign`: material of ANOTHER texture photo, turned and scaled, cloned into an irregular region by
  Poisson (gradient-domain) blending (Pérez et al. 2003): inside the region the image takes the pasted
  material's gradients (times a gain) and meets the surrounding material without a seam;
- `stain`: a translucent deposit: the material pulled toward a dark or light colour by a smooth,
  low-frequency opacity field with a soft border and a darker tide line where the deposit dried;
- `dent`: a small height bump or dent lit from one side (Lambertian shading n·l of the relief), which
  darkens the slope facing away from the light and brightens the one facing it; the material stays;
- `chip`: material broken out: a jagged hole with a dark, nearly flat floor in its own shadow and a bright
  broken rim that catches the light;
- `fibre`: a hair or fibre lying on the surface: a cubic Bézier with a width that swells and tapers,
  slightly out of focus, with a faint halo, opaque bright or dark.

Every family renders a `share` field in [0, 1] (the share of the defect's full effect at each pixel);
the ground truth is share >= MASK_SHARE, holes filled, so a pixel outside the mask carries less than a
quarter of the effect (measured: at most ~0.2 of full scale next to the mask, under 0.08 two pixels
beyond it). Visibility is measured, not hoped for: each defect changes its pixels at least
VISIBILITY_MIN times as much as the texture itself would (`visibility`) and by at least CONTRAST_MIN of
full scale, and by no more than STRENGTH_MAX times the binding one of those two bars. Its amplitude is
raised or lowered into that band, and a geometry that cannot reach it is drawn again elsewhere (so a
defect tends to lie where it contrasts with what is around it).

Every function takes a `numpy.random.Generator`: the same state makes the same defects.
Bounding boxes are (x0, y0, x1, y1) with x1, y1 exclusive (Python slice bounds).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.ndimage import binary_dilation, binary_fill_holes, gaussian_filter
from scipy.sparse.linalg import spsolve

from nsgan import DataError

FAMILIES = ("foreign", "stain", "dent", "chip", "fibre")
MASK_SHARE = 0.25  # a pixel is defect where it carries at least this share of the defect's full effect
# See `visibility`. Chosen by looking at grids of every family on brick, gravel and grass at 128 px: at
# 2.0 a person sees every defect; 2.2 keeps a margin. At 2.5 grass rejects 5-15% of all placements (an
# opaque black or white change is only ~2.6x grass's own contrast), so the bar would pick placements.
VISIBILITY_MIN = 2.2
# And a contrast the eye sees without the texture's help: mean |change| over the mask, of full scale.
# A flat brick face has so little contrast of its own that 3x of it (~0.1) is seen only by looking for it.
CONTRAST_MIN = 0.2
# strength = min(visibility / VISIBILITY_MIN, mean |change| / CONTRAST_MIN) must lie in [1, STRENGTH_MAX]:
# both bars met, and no more than 1.5x over the binding one. Visible at a glance, not glaring: without a
# ceiling the first amplitude drawn reached visibility 6 (stains) to 48 on brick, where a blur filter
# found nearly all of them, while gravel and grass stayed at the bar; the band keeps the difficulty even.
STRENGTH_MAX = 1.5
_BISECTIONS = 12
MIN_AREA = 12  # pixels: a smaller mask is seen by no one
# Fewest pixels a defect may be given. Below ~40 px chips miss the bar in trials (their bright rim is
# then most of their pixels); at 46 px every family passed on every texture.
MIN_BUDGET = 45
_SHIFTS = 8  # offsets of the same material that set the reference change
_BOOST = 1.3  # amplitude factor per boost step
# Geometries tried per defect: on gravel and grass 8-40% of draws pass, a few crops far fewer (~3% for a
# white fibre on a crop of bright stones), and those raise NoPlacement for the builder to draw another.
_MAX_DRAWS = 150
_MARGIN = 3  # px kept between a defect (and the image border) and the next one


class NoPlacement(DataError):
    """No geometry of a family reached the visibility band on this image: another crop may well allow it
    (a white fibre has no room on a crop of bright stones), so a builder draws a new one."""


# A foreign patch: (side) -> (material of another photo, (side, side) float in [0, 1], its name)
Foreign = Callable[[int], tuple[np.ndarray, str]]


# ------------------------------------------------------------------------------------ visibility

def reference_change(clean: np.ndarray, mask: np.ndarray) -> float:
    """Mean |x − x moved by t| over the mask, over `_SHIFTS` offsets t in all directions: the change that
    another piece of the SAME material would make there. Offsets are at least the mask's extent (8 px
    or more), so the moved material never overlaps the original."""
    ys, xs = np.nonzero(mask)
    reach = max(8, int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    pad = np.pad(clean, reach, mode="reflect")
    h, w = clean.shape
    total = 0.0
    for k in range(_SHIFTS):
        dy = int(round(reach * math.sin(2 * math.pi * k / _SHIFTS)))
        dx = int(round(reach * math.cos(2 * math.pi * k / _SHIFTS)))
        moved = pad[reach + dy : reach + dy + h, reach + dx : reach + dx + w]
        total += float(np.abs(clean - moved)[mask].mean())
    return total / _SHIFTS


def visibility(clean: np.ndarray, defective: np.ndarray, mask: np.ndarray) -> float:
    """How many times more the defect changes its pixels than the texture itself would.

        visibility = mean_mask |defective − clean|  /  mean_mask |clean − clean moved by t|   (mean over t)

    The denominator is the local contrast of the material, measured the way the numerator is: what
    swapping in another piece of the same material changes at that place. A seamless paste of like
    material scores about 1. Unblurred on purpose: blurring away a busy texture's grain flattered faint
    stains on grass that no one could see (visual masking: the eye does not see through the grain).
    """
    clean = np.asarray(clean, dtype=np.float64)
    delta = float(np.abs(np.asarray(defective, dtype=np.float64) - clean)[mask].mean())
    return delta / max(reference_change(clean, mask), 1e-4)


# ------------------------------------------------------------------------------------ shapes

def _window(shape, cy, cx, reach):
    """Slices of the (H, W) image within `reach` of (cy, cx) and the pixel-centre grids there."""
    h, w = shape
    y0, y1 = max(0, int(math.floor(cy - reach))), min(h, int(math.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(math.floor(cx - reach))), min(w, int(math.ceil(cx + reach)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    return (slice(y0, y1), slice(x0, x1)), yy, xx


def _outline(rng, harmonics: int, roughness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random radial Fourier outline: R(θ) = r · (1 + Σ a_k cos(kθ + φ_k)), Σ|a_k| = roughness."""
    k = np.arange(2, 2 + harmonics)
    a = rng.uniform(0.3, 1.0, harmonics) / k ** 0.7
    a *= roughness / a.sum()
    return k, a, rng.uniform(0, 2 * np.pi, harmonics)


def _star_coverage(shape, cy, cx, r, outline, supersample: int = 4) -> np.ndarray:
    """Anti-aliased (H, W) coverage of a star-shaped region (supersampled)."""
    k, a, phase = outline
    cov = np.zeros(shape, dtype=np.float64)
    win, yy, xx = _window(shape, cy, cx, r * (1 + a.sum()) + 1.5)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    acc = np.zeros(yy.shape)
    for oy in offs:
        for ox in offs:
            dy, dx = yy + oy - cy, xx + ox - cx
            theta = np.arctan2(dy, dx)
            radius = r * (1 + (a[:, None, None] * np.cos(k[:, None, None] * theta + phase[:, None, None])).sum(0))
            acc += np.hypot(dy, dx) <= radius
    cov[win] = acc / supersample ** 2
    return cov


def _centre(shape, rng, reach):
    h, w = shape
    lo = reach + _MARGIN
    if h - 1 - lo < lo or w - 1 - lo < lo:
        return None
    return rng.uniform(lo, h - 1 - lo), rng.uniform(lo, w - 1 - lo)


def _light(rng):
    """Unit light direction: azimuth uniform, 55-65° from the surface normal (raking light)."""
    phi, theta = rng.uniform(0, 2 * np.pi), math.radians(rng.uniform(55, 65))
    return np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])


def _contrasting(x: np.ndarray, region: np.ndarray, rng, dark: tuple, bright: tuple, dark_room: float = 1.0) -> float:
    """A dark or a light colour, whichever the surroundings of `region` hold less of.

    A dark stain in gravel's shadows or a light fibre among grass blades reads as more texture: the eye
    sees a defect by its difference from its surroundings. The ring 2-6 px around the region decides:
    the colour whose range lies further beyond the ring's 10th (dark) or 90th (light) percentile, the dark
    one only with `dark_room` times the room of the light one."""
    ring = binary_dilation(region, iterations=6) & ~binary_dilation(region, iterations=2)
    values = x[ring] if ring.any() else x.ravel()
    lo, hi = np.quantile(values, [0.1, 0.9])
    if lo - sum(dark) / 2 >= dark_room * (sum(bright) / 2 - hi):
        return float(rng.uniform(*dark))
    return float(rng.uniform(*bright))


# ------------------------------------------------------------------------------------ families
# Each `_draw_<family>(x, rng, area, foreign)` draws a geometry for a defect of about `area` mask pixels
# and returns (render, first amplitude, largest amplitude, details) or None when it does not fit;
# render(amplitude) -> (defective image, share in [0, 1]).

def _poisson_clone(target: np.ndarray, source: np.ndarray, region: np.ndarray, gain: float) -> np.ndarray:
    """Solve Δu = gain · Δsource on `region`, u = target outside it (discrete 4-neighbour Poisson)."""
    ys, xs = np.nonzero(region)
    index = -np.ones(region.shape, dtype=np.int64)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals = [np.arange(len(ys))], [np.arange(len(ys))], [np.full(len(ys), 4.0)]
    rhs = np.zeros(len(ys))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx  # the region never touches the border (placement margin)
        rhs += gain * (source[ys, xs] - source[ny, nx])
        inside = index[ny, nx] >= 0
        rows.append(np.nonzero(inside)[0])
        cols.append(index[ny, nx][inside])
        vals.append(-np.ones(int(inside.sum())))
        rhs[~inside] += target[ny, nx][~inside]
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(ys),) * 2)
    out = target.copy()
    out[ys, xs] = spsolve(a, rhs)
    return out


def _draw_foreign(x, rng, area, foreign):
    if foreign is None:
        raise DataError("visible defects: the foreign family needs material of another texture (foreign=None)")
    r = math.sqrt(area / math.pi)
    outline = _outline(rng, harmonics=4, roughness=rng.uniform(0.2, 0.4))
    centre = _centre(x.shape, rng, r * 1.4 + 1)
    if centre is None:
        return None
    cy, cx = centre
    region = binary_fill_holes(_star_coverage(x.shape, cy, cx, r, outline) >= 0.5)
    # The other photo's material, turned by any angle and scaled 0.6-1.6x, laid over the region.
    side = int(math.ceil(4 * r + 8))
    material, name = foreign(side)
    angle, scale = rng.uniform(0, 2 * np.pi), math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    matrix = np.array([[c, -s], [s, c]])
    win, yy, xx = _window(x.shape, cy, cx, 2 * r + 2)
    local = np.stack([yy - cy, xx - cx]).reshape(2, -1)
    coords = matrix @ local + (side - 1) / 2.0
    source = np.zeros_like(x)
    source[win] = _sample(material, coords).reshape(yy.shape)
    share = region.astype(np.float64)

    def render(gain):
        return _poisson_clone(x, source, region, gain), share

    return render, rng.uniform(1.4, 2.0), 8.0, {"source": name, "angle_deg": round(math.degrees(angle), 1),
                                                "scale": round(scale, 3)}


def _sample(img: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear samples of `img` at (2, N) row/column coordinates, mirrored at the border."""
    h, w = img.shape
    y = np.abs(coords[0]) % (2 * (h - 1))
    y = np.where(y > h - 1, 2 * (h - 1) - y, y)
    x = np.abs(coords[1]) % (2 * (w - 1))
    x = np.where(x > w - 1, 2 * (w - 1) - x, x)
    y0, x0 = np.minimum(np.floor(y).astype(int), h - 2), np.minimum(np.floor(x).astype(int), w - 2)
    fy, fx = y - y0, x - x0
    return ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x0 + 1]
            + fy * (1 - fx) * img[y0 + 1, x0] + fy * fx * img[y0 + 1, x0 + 1])


def _draw_stain(x, rng, area, foreign):
    r = math.sqrt(area / math.pi) * 0.75  # the soft border adds to the mask beyond the core
    centre = _centre(x.shape, rng, r * 1.4 + 3)
    if centre is None:
        return None
    cy, cx = centre
    cov = _star_coverage(x.shape, cy, cx, r, _outline(rng, harmonics=3, roughness=rng.uniform(0.15, 0.35)))
    win, yy, _ = _window(x.shape, cy, cx, 2 * r + 6)
    alpha = np.zeros_like(x)
    alpha[win] = gaussian_filter(cov[win], max(0.8, r / 4))
    alpha /= alpha.max()
    # Opacity that varies slowly across the deposit, and a tide line where its edge dried.
    field = np.zeros_like(x)
    noise = gaussian_filter(rng.normal(size=yy.shape), max(1.0, r / 2))
    field[win] = 0.7 + 0.3 * (noise - noise.min()) / max(float(np.ptp(noise)), 1e-9)
    share = np.clip(alpha * field + 0.5 * 4 * alpha * (1 - alpha) * (alpha > 0.05), 0.0, None)
    share /= share.max()
    colour = _contrasting(x, cov >= 0.5, rng, dark=(0.03, 0.15), bright=(0.85, 0.97))  # oil or dried salt

    def render(opacity):
        return x + opacity * share * (colour - x), share

    return render, rng.uniform(0.7, 0.8), 1.0, {"colour": round(float(colour), 3)}


def _draw_dent(x, rng, area, foreign):
    r = math.sqrt(area / math.pi)
    ra, rb = r * math.exp(rng.uniform(0, 0.35)), r * math.exp(-rng.uniform(0, 0.35))
    centre = _centre(x.shape, rng, max(ra, rb) + 1)
    if centre is None:
        return None
    cy, cx = centre
    psi, sign = rng.uniform(0, np.pi), (1.0 if rng.random() < 0.5 else -1.0)  # bump or dent
    win, yy, xx = _window(x.shape, cy, cx, max(ra, rb) + 2)
    u = (xx - cx) * math.cos(psi) + (yy - cy) * math.sin(psi)
    v = -(xx - cx) * math.sin(psi) + (yy - cy) * math.cos(psi)
    rho2 = (u / ra) ** 2 + (v / rb) ** 2
    bump = np.where(rho2 < 1, (1 - rho2) ** 2, 0.0)  # smooth at the rim; scaled to the asked peak slope
    gy, gx = np.gradient(bump)
    peak = max(float(np.hypot(gx, gy).max()), 1e-9)
    light = _light(rng)

    def render(slope):
        hx, hy = sign * slope * gx / peak, sign * slope * gy / peak
        shade = np.maximum(0.0, (-hx * light[0] - hy * light[1] + light[2]) / np.sqrt(1 + hx ** 2 + hy ** 2)) / light[2]
        out, share = x.copy(), np.zeros_like(x)
        out[win] = x[win] * shade  # Lambertian: the material's albedo times the relief's shading
        change = np.abs(shade - 1)
        share[win] = change / max(float(change.max()), 1e-9)
        return out, share

    return render, rng.uniform(0.5, 0.8), 3.0, {"relief": "bump" if sign > 0 else "dent",
                                                "light_azimuth_deg": round(math.degrees(math.atan2(light[1], light[0])), 1)}


def _draw_chip(x, rng, area, foreign):
    rim_w = rng.uniform(0.9, 1.3)
    r = max(2.0, math.sqrt(area / math.pi) - rim_w)  # the rim is part of the mask
    outline = _outline(rng, harmonics=7, roughness=rng.uniform(0.2, 0.35))
    centre = _centre(x.shape, rng, (r + rim_w) * 1.45 + 1)
    if centre is None:
        return None
    cy, cx = centre
    hole = _star_coverage(x.shape, cy, cx, r, outline)
    rim = np.clip(_star_coverage(x.shape, cy, cx, r + rim_w, outline) - hole, 0.0, 1.0)
    phi = rng.uniform(0, 2 * np.pi)
    win, yy, xx = _window(x.shape, cy, cx, (r + rim_w) * 1.5 + 2)
    along = ((xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)) / r  # toward the light
    floor, rim_value = np.zeros_like(x), np.zeros_like(x)
    # The floor lies in the shadow of the wall on the light's side; the broken rim catches the light.
    floor[win] = np.clip(rng.uniform(0.02, 0.07) + 0.04 * along + gaussian_filter(rng.normal(0, 0.02, yy.shape), 0.7), 0, 1)
    rim_value[win] = 0.9 + 0.1 * np.clip(np.cos(np.arctan2(yy - cy, xx - cx) - phi), 0, None)
    share = np.clip(hole + rim, 0.0, 1.0)

    def render(opacity):
        return x + opacity * (hole * (floor - x) + rim * (rim_value - x)), share

    return render, rng.uniform(0.8, 0.9), 1.0, {"rim_px": round(rim_w, 2)}


def _bezier(p, n=240):
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3]), t[:, 0]


def _draw_fibre(x, rng, area, foreign):
    w0 = rng.uniform(2.2, 3.2)
    # The mask (core plus the halo's inner part) measured ~0.53 x length x (w0 + 3): use the whole budget.
    length = max(6.0, area / (0.55 * (w0 + 3.0)))
    theta = rng.uniform(0, 2 * np.pi)
    d, n = np.array([math.cos(theta), math.sin(theta)]), np.array([-math.sin(theta), math.cos(theta)])
    centre = _centre(x.shape, rng, length * 0.75 + 4)
    if centre is None:
        return None
    mid = np.array([centre[1], centre[0]])  # (x, y)
    ctrl = np.stack([mid - d * length / 2, mid - d * length / 6 + n * length * rng.uniform(-0.4, 0.4),
                     mid + d * length / 6 + n * length * rng.uniform(-0.4, 0.4), mid + d * length / 2])
    pts, t = _bezier(ctrl)
    widths = w0 * (0.35 + 0.65 * np.sin(np.pi * t) ** 0.6)  # swells in the middle, tapers at the ends
    win, yy, xx = _window(x.shape, centre[0], centre[1], length * 0.75 + 6)
    core = np.zeros(yy.shape)
    for i in range(0, len(pts), 48):
        p, wd = pts[i : i + 48], widths[i : i + 48]
        dist = np.sqrt((xx[..., None] - p[:, 0]) ** 2 + (yy[..., None] - p[:, 1]) ** 2)
        np.maximum(core, np.clip(wd / 2 + 0.5 - dist, 0, 1).max(-1), out=core)
    focus = gaussian_filter(core, 0.5)
    halo = gaussian_filter(core, 1.5)
    share = np.zeros_like(x)
    share[win] = np.maximum(focus / focus.max(), 0.2 * halo / halo.max())
    # Thin dark lines are everywhere in textures (crevices, shadows, gaps between blades): dark fibres
    # only where the surroundings leave far more room below than above.
    colour = _contrasting(x[win], core >= 0.5, rng, dark=(0.0, 0.07), bright=(0.93, 1.0), dark_room=3.0)

    def render(opacity):
        return x + opacity * share * (colour - x), share

    return render, rng.uniform(0.75, 0.85), 1.0, {"colour": round(float(colour), 3), "width_px": round(w0, 2)}


_DRAW = {"foreign": _draw_foreign, "stain": _draw_stain, "dent": _draw_dent, "chip": _draw_chip, "fibre": _draw_fibre}


# ------------------------------------------------------------------------------------ placing

def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def make_defect(x: np.ndarray, family: str, rng: np.random.Generator, max_area: int, *,
                foreign: Foreign | None = None, keep_out: np.ndarray | None = None,
                reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """One defect of `family` on the (H, W) image `x`: (image, mask, info), mask area in [MIN_AREA, max_area],
    max_area >= MIN_BUDGET, strength (visibility against `reference`, default `x`, and contrast; see
    CONTRAST_MIN) in [1, STRENGTH_MAX].

    The amplitude grows by `_BOOST` until the strength reaches the band, and where the first amplitude
    already overshoots it (a flat brick face shows everything) it is lowered by bisection into it; a
    geometry that cannot land in the band is drawn again elsewhere. The mask never meets `keep_out`.
    """
    if family not in _DRAW:
        raise DataError(f"unknown defect family {family!r}; choose from {', '.join(FAMILIES)}")
    if max_area < MIN_BUDGET:
        raise DataError(f"a {x.shape[1]}x{x.shape[0]} image leaves {max_area} pixels per defect under the 1% "
                        f"budget, fewer than the {MIN_BUDGET} a visible defect needs; use a larger --size or fewer --max-defects")
    reference = x if reference is None else reference

    def attempt(render, amplitude):
        """(out, mask, strength, visibility, mean |change|), or a string saying why this amplitude cannot be used."""
        out, share = render(amplitude)
        out = np.clip(out, 0.0, 1.0)
        mask = binary_fill_holes(share >= MASK_SHARE)
        size = int(mask.sum())
        if size > max_area:
            return "large"
        if size < MIN_AREA or (keep_out is not None and (mask & keep_out).any()):
            return "misplaced"
        v = visibility(reference, reference + (out - x), mask)
        change = float(np.abs(out - x)[mask].mean())
        return out, mask, min(v / VISIBILITY_MIN, change / CONTRAST_MIN), v, change

    area = rng.uniform(0.55, 0.95) * max_area
    for draw in range(_MAX_DRAWS):
        drawn = _DRAW[family](x, rng, max(area, MIN_AREA), foreign)
        if drawn is None:
            area *= 0.85
            continue
        render, amplitude, largest, details = drawn
        found = None
        while True:  # up until the band is reached
            tried = attempt(render, amplitude)
            if isinstance(tried, str) or tried[2] >= 1 or amplitude >= largest:
                break
            amplitude = min(amplitude * _BOOST, largest)
        if tried == "large":
            area *= 0.85
            continue
        if isinstance(tried, str) or tried[2] < 1:
            continue
        if tried[2] <= STRENGTH_MAX:
            found = (amplitude, tried)
        else:  # overshoot: bisect the amplitude down into the band
            lo, hi = 0.0, amplitude
            for _ in range(_BISECTIONS):
                mid = (lo + hi) / 2
                tried = attempt(render, mid)
                if isinstance(tried, str) or tried[2] < 1:
                    lo = mid
                elif tried[2] > STRENGTH_MAX:
                    hi = mid
                else:
                    found = (mid, tried)
                    break
        if found is None:
            continue
        amplitude, (out, mask, strength, v, change) = found
        return out, mask, {"family": family, "bbox": _bbox(mask), "area": int(mask.sum()), "visibility": round(v, 3),
                           "mean_abs_change": round(change, 4), "strength": round(strength, 3),
                           "amplitude": round(float(amplitude), 3), "draws": draw + 1, **details}
    raise NoPlacement(f"no {family} defect reached visibility {VISIBILITY_MIN} and contrast {CONTRAST_MIN} in {_MAX_DRAWS} draws "
                    f"on a {x.shape[1]}x{x.shape[0]} image; use a larger --size or fewer --max-defects")


def make_defects(img: np.ndarray, rng: np.random.Generator, families=FAMILIES, count: int = 1,
                 max_area_frac: float = 0.01, foreign: Foreign | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """`count` defects, each of a family drawn from `families`, on (H, W, 1) `img`: (image, mask, infos).

    The union mask stays strictly below `max_area_frac` of the pixels; defects keep `_MARGIN` px apart,
    and each one's visibility is measured against the clean image.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 1:
        raise DataError(f"visible defects: expected an (H, W, 1) image, got shape {img.shape}")
    clean = img[:, :, 0].astype(np.float64)
    limit = max(0, math.ceil(max_area_frac * clean.size) - 1)
    x, mask, infos = clean.copy(), np.zeros(clean.shape, dtype=bool), []
    for k in range(count):
        family = families[int(rng.integers(len(families)))]
        budget = (limit - int(mask.sum())) // (count - k)
        keep_out = binary_dilation(mask, iterations=_MARGIN) if mask.any() else None
        x, m, info = make_defect(x, family, rng, budget, foreign=foreign, keep_out=keep_out, reference=clean)
        mask |= m
        infos.append(info)
    return x[:, :, None].astype(np.float32), mask, infos
