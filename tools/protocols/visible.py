"""Protocol (v): texture photos with VISIBLE micro-defects made another way than nsgan's painter.

The textures protocol paints with the product's own painter, the same maker the comparator learns
from, and on gravel and grass its defects sit at the eye's limit, so every design ties there. This one
uses five other mechanisms (tools/protocols/visible_defects.py: foreign material cloned by Poisson
blending, stains, lit dents and bumps, chips, fibres). Each defect covers under 1% of its image's
pixels together with the others on it, and sits in a measured band: mean |change| in the mask at
least VISIBILITY_MIN times what another piece of the same material changes there and at least
CONTRAST_MIN of full scale, at most STRENGTH_MAX times over the binding bar; recorded per defect in
protocol.json. OUT/preview.png shows, for each family, clean | defective | outlined.

Layout as the textures protocol: train/good with round(ε · n_train) hidden defective images (listed in
protocol.json, never masked), train/defect labelled images with masks (mixed families, the held-out
family never among them), test/good and test/<family>/ (one family per image, every family, the
held-out one included) with masks. Normal material comes from the photo's top 3/4 for training and its
bottom quarter for test; the foreign family's material comes from the other photos, same part.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from nsgan import DataError, texture_image

from .common import CategoryWriter
from .visible_defects import CONTRAST_MIN, FAMILIES, MIN_BUDGET, STRENGTH_MAX, VISIBILITY_MIN, NoPlacement, make_defects

TEXTURES = ("brick", "grass", "gravel")  # the photos nsgan.texture_image serves offline
DEFAULT_HOLDOUT = "foreign"  # the mechanism furthest from the painter's: material of another photo
PREVIEW_PER_FAMILY = 2
CROPS = 8  # fresh crops tried for one defective image before giving up (NoPlacement)
VISIBILITY_RULE = ("visibility = mean |defective - clean| over the mask / mean |clean - clean shifted by t| over the "
                   "mask (t: 8 directions at the mask's extent, >= 8 px); contrast = mean |defective - clean| over "
                   "the mask; every defect has visibility >= min and contrast >= contrast_min, and strength = "
                   "min(visibility / min, contrast / contrast_min) <= strength_max")


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
    p.add_argument("--n-test-defect", type=int, default=30, help="defective test images, spread over the families")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated defect families")
    p.add_argument("--holdout", default=DEFAULT_HOLDOUT,
                   help="family never in train/defect (still in the hidden dirty normals and in test)")
    p.add_argument("--max-defects", type=int, default=2, help="defects per defective image: 1..this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> dict:
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    return build_visible(args.out, texture=args.texture, size=args.size, downscale=args.downscale,
                         epsilon=args.epsilon, n_train=args.n_train, n_abnormal=args.n_abnormal,
                         n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, families=families,
                         holdout=args.holdout, max_defects=args.max_defects, seed=args.seed, overwrite=args.overwrite)


def _material(texture, size, rng, part, downscale):
    """A normal (size, size, 1) image; with downscale N, an N·size crop block-averaged by N."""
    img = texture_image(texture, size * downscale, rng, part=part)
    if downscale == 1:
        return img
    return img.reshape(size, downscale, size, downscale, 1).mean(axis=(1, 3)).astype(np.float32)


def draw_defective(texture, size, rng, part, families, max_defects, downscale=1):
    """(clean, defective, mask, infos): a normal image of `part` with 1..max_defects defects of `families`.

    The foreign family takes its material from one of the other photos, from the same part of it, so
    test defects never show material training saw. A crop on which a defect cannot reach the band (about one
    defective image in a thousand on gravel, measured with narrower fibres) is replaced by a fresh one,
    up to CROPS times.
    """
    others = tuple(t for t in TEXTURES if t != texture)

    def foreign(side):
        name = others[int(rng.integers(len(others)))]
        return _material(name, side, rng, part, downscale)[:, :, 0], name

    for crop in range(CROPS):
        clean = _material(texture, size, rng, part, downscale)
        try:
            img, mask, infos = make_defects(clean, rng, families, int(rng.integers(1, max_defects + 1)), foreign=foreign)
        except NoPlacement:
            if crop == CROPS - 1:
                raise
            continue
        return clean, img, mask, infos


def _check(texture, size, downscale, epsilon, counts, families, holdout, max_defects):
    if texture not in TEXTURES:
        raise DataError(f"--texture: unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")
    if not 0 <= epsilon < 1:
        raise DataError(f"--epsilon must be in [0, 1), got {epsilon}")
    if downscale < 1:
        raise DataError(f"--downscale must be at least 1, got {downscale}")
    if max_defects < 1:
        raise DataError(f"--max-defects must be at least 1, got {max_defects}")
    for name, value in counts.items():
        if value < 0:
            raise DataError(f"--{name} must be at least 0, got {value}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise DataError(f"--families: unknown defect family(ies) {unknown or list(families)}; choose from {', '.join(FAMILIES)}")
    if holdout not in families:
        raise DataError(f"--holdout {holdout!r} is not among --families ({', '.join(families)})")
    if counts["n-abnormal"] and len(set(families)) < 2:
        raise DataError(f"--families {','.join(families)}: holding out {holdout!r} leaves no family for train/defect")
    budget = int(np.ceil(0.01 * size * size)) - 1
    if size < 1 or budget // max_defects < MIN_BUDGET:
        least = int(np.ceil(np.sqrt((MIN_BUDGET * max_defects + 1) / 0.01)))
        raise DataError(f"--size {size}: its 1% budget ({max(budget, 0)} px) leaves fewer than {MIN_BUDGET} px for each of "
                        f"--max-defects {max_defects} defects; use --size {least} or more")


def build_visible(out, *, texture="brick", size=128, downscale=1, epsilon=0.05, n_train=200, n_abnormal=20,
                  n_test_good=30, n_test_defect=30, families=FAMILIES, holdout=DEFAULT_HOLDOUT, max_defects=2,
                  seed=0, overwrite=False) -> dict:
    """Write the category folder; returns the protocol dict also written to protocol.json."""
    families = tuple(dict.fromkeys(families))
    _check(texture, size, downscale, epsilon, {"n-train": n_train, "n-abnormal": n_abnormal,
           "n-test-good": n_test_good, "n-test-defect": n_test_defect}, families, holdout, max_defects)
    trained = tuple(f for f in families if f != holdout)
    rng = np.random.default_rng(seed)

    def defective(part, families_here):
        return draw_defective(texture, size, rng, part, families_here, max_defects, downscale)

    every = []
    with CategoryWriter(out, overwrite) as writer:
        n_hidden = int(round(epsilon * n_train))
        hidden_at = set(rng.choice(n_train, n_hidden, replace=False).tolist())
        contaminated = []
        for k in range(n_train):
            if k in hidden_at:
                _, img, _, infos = defective("train", families)
                contaminated.append({"path": writer.image("train", "good", f"{k:05d}", img), "defects": infos})
                every += infos
            else:
                writer.image("train", "good", f"{k:05d}", _material(texture, size, rng, "train", downscale))
        labelled = []
        for k in range(n_abnormal):
            _, img, mask, infos = defective("train", trained)
            labelled.append({"path": writer.image("train", "defect", f"{k:05d}", img, mask),
                             "families": sorted({i["family"] for i in infos}), "defects": infos})
            every += infos
        for k in range(n_test_good):
            writer.image("test", "good", f"{k:05d}", _material(texture, size, rng, "test", downscale))
        tested, shown = [], {f: [] for f in families}
        for k in range(n_test_defect):
            family = families[k % len(families)]
            clean, img, mask, infos = defective("test", (family,))
            tested.append({"path": writer.image("test", family, f"{k:05d}", img, mask), "family": family,
                           "defects": infos})
            every += infos
            if len(shown[family]) < PREVIEW_PER_FAMILY:
                shown[family].append((clean, img, mask, min(i["visibility"] for i in infos)))
        preview = None
        if any(shown.values()):
            preview = "preview.png"
            write_preview(writer.tmp / preview, [(f"{texture} {f}", shown[f]) for f in families if shown[f]])
        return writer.finish({
            "protocol": "visible", "seed": seed, "texture": texture, "size": size, "downscale": downscale,
            "epsilon": epsilon, "n_train": n_train, "n_abnormal": n_abnormal, "n_test_good": n_test_good,
            "n_test_defect": n_test_defect, "families": list(families), "holdout": holdout,
            "trained_families": list(trained), "max_defects": max_defects, "pixel_masks": True,
            "max_mask_fraction": 0.01, "preview": preview,
            "visibility": {"rule": VISIBILITY_RULE, "min": VISIBILITY_MIN, "contrast_min": CONTRAST_MIN,
                           "strength_max": STRENGTH_MAX, "by_family": _summary(every, families)},
            "contaminated_train": contaminated, "labelled_train": labelled, "test_defects": tested,
        })


def _summary(infos, families) -> dict:
    """Per family: how many defects, and the lowest, median and highest visibility, contrast and area."""
    out = {}
    for f in families:
        mine = [i for i in infos if i["family"] == f]
        if mine:
            out[f] = {"n": len(mine)}
            for key, name in (("visibility", "visibility"), ("mean_abs_change", "contrast"), ("area", "area")):
                values = [i[key] for i in mine]
                out[f].update({f"{name}_min": min(values), f"{name}_median": round(statistics.median(values), 3),
                               f"{name}_max": max(values)})
    return out


# ------------------------------------------------------------------------------------ preview

def _grey(img: np.ndarray, zoom: int) -> np.ndarray:
    """(H, W) in [0, 1] as RGB uint8, each pixel a zoom x zoom block."""
    grey = (np.clip(np.kron(img, np.ones((zoom, zoom))), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


def write_preview(path, rows, zoom: int = 2) -> None:
    """A PNG grid to check "visible at a glance" on: one row per (label, examples), each example
    (clean, defective, mask, visibility) shown as clean | defective | defective with the mask's outer
    edge in red, zoomed `zoom`x, with its lowest visibility written on it."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_dilation

    strips = []
    for label, examples in rows:
        cells, texts = [], []
        for n, (clean, img, mask, vis) in enumerate(examples):
            big = np.kron(mask, np.ones((zoom, zoom), dtype=bool))
            outlined = _grey(img[:, :, 0], zoom)
            outlined[binary_dilation(big, iterations=2) & ~big] = (255, 0, 0)
            gap = np.full((outlined.shape[0], 8, 3), 255, dtype=np.uint8)
            cells.append(np.concatenate([_grey(clean[:, :, 0], zoom), _grey(img[:, :, 0], zoom), outlined, gap], axis=1))
            texts.append(f"{label}  V={vis:.2f}" if n == 0 else f"V={vis:.2f}")
        row = Image.fromarray(np.concatenate(cells, axis=1))
        draw = ImageDraw.Draw(row)
        for n, text in enumerate(texts):
            x = n * cells[0].shape[1]
            draw.rectangle((x + 2, 2, x + 8 + 6 * len(text), 14), fill=(0, 0, 0))
            draw.text((x + 4, 3), text, fill=(255, 255, 0))
        strips.append(np.asarray(row))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 6), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    Image.fromarray(np.concatenate(strips, axis=0)).save(path, format="PNG")
