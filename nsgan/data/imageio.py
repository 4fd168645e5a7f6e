"""Reading whole images of the formats factories use: PNG, JPEG, TIFF; 8/16 bit; gray or RGB.

Everything comes back as float32 in [0, 1], shape (H, W, C) with C = 1 or 3, so that the rest of
nsgan never cares about the file's bit depth. Region-wise reading of huge (Big)TIFFs lives in the
scoring side (`nsgan.data.bigimage`), which builds on the same conversions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from nsgan.common.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# A defect mask is named after its image plus this suffix (MVTec: 000.png -> 000_mask.png); shards,
# calibrate, evaluate and the protocol builders all use this one definition.
MASK_SUFFIX = "_mask"

# Pillow's single-channel (gray) modes and the largest value each holds, for scaling to [0, 1].
# "I" is how Pillow opens 16-bit PNGs; "F" holds float pixels already in [0, 1].
PIL_GRAY_MAX = {"1": 1, "L": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
PIL_GRAY_MODES = frozenset(PIL_GRAY_MAX)

# Images read whole (PNG, JPEG, and TIFF outside `nsgan score`) stop at this many pixels, set
# deliberately rather than left to Pillow's default: 2**28 pixels is 1 GiB per channel as float32,
# and a 100-byte PNG can claim 10**10. Gigapixel TIFFs are still scored: nsgan.data.bigimage reads them
# region by region and never comes here.
MAX_DECODE_PIXELS = 2**28


def check_pixel_count(path: str | Path, width: int, height: int) -> None:
    """DataError naming the file, the limit and the way out when an image is too big to read whole."""
    if width * height > MAX_DECODE_PIXELS:
        raise DataError(
            f"{path}: {width}×{height} pixels exceeds nsgan's pixel limit for reading an image whole "
            f"({MAX_DECODE_PIXELS} pixels); save it as a tiled TIFF, which `nsgan score` reads region by region"
        )


def list_images(root: str | Path) -> list[Path]:
    """All image files below `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def to_unit_float(arr: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
    """Convert an integer or float image array to float32 (H, W, C) in [0, 1].

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) (alpha is dropped). Raises DataError for
    anything else (a volume, 2 channels, an unsupported dtype), naming `source`.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"{source}: unsupported image shape {tuple(arr.shape)} (expected H×W, H×W×1 or H×W×3)")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[2] not in (1, 3):
        raise DataError(f"{source}: unsupported channel count {arr.shape[2]} (expected 1 or 3)")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"{source}: image contains NaN or infinite values")
        if out.size and (out.min() < 0.0 or out.max() > 1.0):
            raise DataError(f"{source}: float image values outside [0, 1]; scale them to [0, 1] or save 8/16-bit integers")
    else:
        raise DataError(f"{source}: unsupported pixel type {arr.dtype} (expected 8 or 16 bit, or float in [0, 1])")
    if not np.isfinite(out).all():
        raise DataError(f"{source}: image contains NaN or infinite values")
    return np.ascontiguousarray(out)


def read_raw(path: str | Path) -> np.ndarray:
    """The file's pixel array as stored (uint8/uint16/float), without conversion."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tf:
                page = tf.pages.first
                check_pixel_count(path, int(page.imagewidth), int(page.imagelength))
                arr = tf.asarray()
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
                arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF
        else:
            Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS  # Pillow's own check, at nsgan's limit
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
                    im = Image.open(path)
            except Image.DecompressionBombError:  # over twice the limit: Pillow refuses before nsgan can look
                raise DataError(f"{path}: more pixels than nsgan's pixel limit for reading an image whole ({MAX_DECODE_PIXELS} "
                                "pixels); save it as a tiled TIFF, which `nsgan score` reads region by region") from None
            with im:
                check_pixel_count(path, *im.size)
                im.load()
                if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr"):
                    im = im.convert("RGB")
                elif im.mode == "1":
                    im = im.convert("L")
                arr = np.asarray(im)
                if im.mode in ("I;16", "I;16B", "I;16L"):
                    arr = arr.astype(np.uint16)
                elif im.mode == "I":
                    # Pillow opens 16-bit PNGs as mode I (int32) holding 0..65535.
                    if arr.size and (arr.min() < 0 or arr.max() > 65535):
                        raise DataError(f"{path}: 32-bit integer image is not supported (expected 8 or 16 bit)")
                    arr = arr.astype(np.uint16)
    except DataError:
        raise
    except Exception as exc:  # Pillow/tifffile raise many types for broken files
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 (H, W, C) in [0, 1]; DataError names the file on failure."""
    return to_unit_float(read_raw(path), path)


def to_channels(img: np.ndarray, channels: int, source: str | Path = "<array>") -> np.ndarray:
    """Convert (H, W, C) float to `channels` (1 or 3): RGB→gray by luminance, gray→RGB by copy."""
    c = img.shape[2]
    if c == channels:
        return img
    if c == 3 and channels == 1:
        return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=2)
    raise DataError(f"{source}: cannot convert {c} channels to {channels}")


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write float (H, W, C) in [0, 1] (or uint8) as an 8-bit PNG."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    Image.fromarray(arr).save(path, format="PNG")
