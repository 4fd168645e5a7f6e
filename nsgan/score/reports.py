"""What a user looks at: a downscaled heat overlay PNG and the JSON report of a scored image file.

The overlay is built from a block-reduced copy of image and map (mean of the image, max of the map,
so a one-pixel defect stays visible after downscaling); regions (nsgan/score/regions.py) are boxed on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from nsgan.common.atomic import atomic_write, atomic_write_json
from nsgan.common.stopwatch import StageClock
from nsgan.score.regions import Region
from nsgan.score.result import ScoreResult


class Downscaler:
    """Block-reduces a stream of row blocks by an integer factor (mean or max), keeping only a few rows."""

    def __init__(self, width: int, factor: int, reduce: str = "mean"):
        self.width, self.factor, self.reduce = width, factor, reduce
        self._carry: np.ndarray | None = None
        self._out: list[np.ndarray] = []

    def _reduce(self, rows: np.ndarray) -> np.ndarray:
        f = self.factor
        h, w = rows.shape[:2]
        wp = math.ceil(w / f) * f
        if wp != w:
            rows = np.concatenate([rows, np.repeat(rows[:, -1:], wp - w, axis=1)], axis=1)
        blocks = rows.reshape(h, wp // f, f, *rows.shape[2:])
        blocks = blocks.max(axis=(0, 2)) if self.reduce == "max" else blocks.mean(axis=(0, 2))
        return blocks[None].astype(np.float32)

    def add(self, rows: np.ndarray) -> None:
        rows = rows if self._carry is None else np.concatenate([self._carry, rows])
        f = self.factor
        full = (rows.shape[0] // f) * f
        for y in range(0, full, f):
            self._out.append(self._reduce(rows[y : y + f]))
        self._carry = rows[full:] if full < rows.shape[0] else None

    def result(self) -> np.ndarray:
        out = list(self._out)
        if self._carry is not None and self._carry.shape[0]:
            out.append(self._reduce(self._carry))
        return np.concatenate(out)


def overlay_factor(height: int, width: int, max_side: int) -> int:
    return max(1, math.ceil(max(height, width) / max_side))


OVERLAY_MIN_SIDE = 512


INFERNO_LUT_HEX = (  # matplotlib's "inferno" at 256 levels, RGB bytes: baked in, so scoring never imports matplotlib
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
)


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (skimage's find_boundaries(mode="inner"); the image edge is no boundary)."""
    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(2, 1), border_value=1)


def render_overlay(image: np.ndarray, amap: np.ndarray, regions: list[Region], factor: int, threshold: float) -> np.ndarray:
    """uint8 RGB: the downscaled image in gray/colour, heat colours where the map is high, regions boxed."""
    vmax = 2.0 * threshold if threshold > 0 else float(amap.max() or 1.0)
    level = (np.clip(amap / vmax, 0.0, 1.0) * 255).astype(np.uint8)
    lut = np.frombuffer(bytes.fromhex("".join(INFERNO_LUT_HEX)), np.uint8).reshape(256, 3).astype(np.float32) / 255
    alpha = (np.linspace(0.0, 0.65, 256, dtype=np.float32))[level][..., None]
    rgb = (1 - alpha) * image + alpha * lut[level]  # gray images broadcast to RGB here
    del alpha
    rgb[inner_boundary(amap > threshold)] = (0.0, 1.0, 1.0)
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    zoom = max(1, OVERLAY_MIN_SIDE // max(im.size))  # small images are enlarged so a person can see the defect
    if zoom > 1:
        im = im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for rank, r in enumerate(regions[:20], start=1):
        x0, y0, x1, y1 = r.bbox
        box = tuple(v * zoom for v in (x0 // factor - 1, y0 // factor - 1, (x1 - 1) // factor + 1, (y1 - 1) // factor + 1))
        draw.rectangle(box, outline=(0, 255, 0))
        draw.text((box[0], max(0, box[1] - 11)), str(rank), fill=(0, 255, 0))
    return np.asarray(im)


def write_overlay(path: str | Path, rgb: np.ndarray) -> None:
    atomic_write(Path(path), lambda p: Image.fromarray(rgb).save(p, format="PNG", compress_level=1))  # fast; a heat map PNG stays small


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_json(Path(path), data)


def timing_record(clock: StageClock, height: int, width: int, wall: float, backend: str, device: Any) -> dict[str, Any]:
    """Where one image's time went (stage seconds, exclusive), its wall time and megapixels per second."""
    mp = height * width / 1e6
    return {"seconds": clock.summary(wall), "wall_s": round(wall, 4), "megapixels": round(mp, 6),
            "mp_per_s": round(mp / wall, 4) if wall > 0 else None, "backend": backend, "device": str(device)}


def file_report(result: ScoreResult, source: str, settings: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The JSON report of a scored image file: the result, then what it was scored with (`settings`: model,
    its sha256, search, map settings, tiling), then the overlay; the caller adds the timing last."""
    return {**result.report(source), **settings, "overlay": overlay}
