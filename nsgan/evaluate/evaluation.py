"""`nsgan evaluate`: score an MVTec-style category folder and report detection quality.

Input (tools/protocols writes it; MVTec AD has the same layout)::

    DATA/test/good/*.png  DATA/test/<defect type>/*.png  DATA/ground_truth/<type>/<name>_mask.png
    DATA/protocol.json    optional; "pixel_masks": false means image labels only

Everything is checked before the first image is searched (folders, masks present and of the
image's size, channels the model takes), so a mistake costs seconds, not an hour of scoring.

Pixel figures are streamed: each image's map goes to a temporary .npy while a ScoreRange tracks the
global min/max (pass 1); then maps and masks are read back one at a time into binned PixelMetrics
(pass 2). Memory holds one map, never all of them. Outputs in OUT: metrics.json, scores.csv,
roc.png, cases.png and index.html (all of them on one page, nsgan/share/html_page.py).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nsgan.common.atomic import atomic_write_bytes, atomic_write_text
from nsgan.common.errors import (  # printable: a non-UTF-8 file name is drawn as \xNN
    DataError,
    OutputError,
    printable,
)
from nsgan.common.outputs import ensure_writable
from nsgan.data.bigimage import open_image
from nsgan.data.imageio import IMAGE_SUFFIXES, MASK_SUFFIX, list_images, read_image
from nsgan.evaluate.metrics import (
    AUPRO_MAX_FPR,
    DEFAULT_BINS,
    PixelMetrics,
    ScoreRange,
    auroc_per_type,
    best_f1,
    image_auroc,
    image_roc_curve,
    metric_rows,
)
from nsgan.evaluate.page import write_evaluate_page
from nsgan.evaluate.plots import Case, plot_cases, plot_roc
from nsgan.score.options import ScoreOptions
from nsgan.score.scorer import Scorer

GOOD = "good"
OUTPUT_FILES = ("metrics.json", "scores.csv", "roc.png", "cases.png", "index.html")


@dataclass
class Item:
    """One test image: its path, label (True = defective), defect type and mask file (or None)."""

    path: Path
    defective: bool
    kind: str
    mask: Path | None = None


# ------------------------------------------------------------------------------ the folder

def _protocol_masks(data: Path) -> bool | None:
    """protocol.json's "pixel_masks" (None without a protocol.json)."""
    pj = data / "protocol.json"
    if not pj.is_file():
        return None
    try:
        value = json.loads(pj.read_text()).get("pixel_masks")
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{pj}: not a readable protocol file ({exc})") from None
    return None if value is None else bool(value)


def _mask_for(data: Path, kind: str, image: Path) -> Path | None:
    folder = data / "ground_truth" / kind
    for suffix in IMAGE_SUFFIXES:
        cand = folder / f"{image.stem}{MASK_SUFFIX}{suffix}"
        if cand.is_file():
            return cand
    return None


def collect(data: str | Path) -> tuple[list[Item], bool]:
    """The test images of a category folder and whether pixel masks are used; DataError on a bad folder."""
    data = Path(data)
    test = data / "test"
    if not test.is_dir():
        raise DataError(f"{test}: no test folder (expected test/good and test/<defect type>)")
    good_dir = test / GOOD
    goods = list_images(good_dir) if good_dir.is_dir() else []
    if not goods:
        raise DataError(f"{good_dir}: no good test images")
    kinds = sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != GOOD)
    defects = [(k, p) for k in kinds for p in list_images(test / k)]
    if not defects:
        raise DataError(f"{test}: no defective test images (no test/<defect type>/ folder with images)")
    declared = _protocol_masks(data)
    if declared is False:
        use_masks = False
    else:  # declared True, or no protocol.json: masks are expected as soon as any ground truth exists
        use_masks = bool(declared) or any((data / "ground_truth" / k).is_dir() for k in kinds)
    items = [Item(p, False, GOOD) for p in goods]
    for kind, path in defects:
        mask = None
        if use_masks:
            mask = _mask_for(data, kind, path)
            if mask is None:
                raise DataError(f"{path}: no mask {data / 'ground_truth' / kind / (path.stem + MASK_SUFFIX + '.png')}")
        items.append(Item(path, True, kind, mask))
    return items, use_masks


def _header(path: Path) -> tuple[int, int, int]:
    """(height, width, channels) from the file header, without decoding the pixels."""
    if path.suffix.lower() in (".tif", ".tiff"):
        with open_image(path) as src:
            h, w = src.shape
            return h, w, src.channels
    try:
        with Image.open(path) as im:
            w, h = im.size
            bands = len(im.getbands())
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    return h, w, 3 if bands >= 3 else 1


def check_items(items: list[Item], channels: int | None) -> None:
    """Every image has the model's channel count (None: any); every mask is of its image's size."""
    for it in items:
        h, w, c = _header(it.path)
        if channels is not None and c != channels:
            raise DataError(f"{it.path}: image has {c} channel(s), the model expects {channels}")
        if it.mask is not None:
            mh, mw, _ = _header(it.mask)
            if (mh, mw) != (h, w):
                raise DataError(f"{it.mask}: mask is {mw}x{mh}, its image {it.path.name} is {w}x{h}")


def read_mask(path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    if path is None:
        return np.zeros(shape, dtype=bool)
    m = read_image(path)
    return m.max(axis=2) > 0.5


# ------------------------------------------------------------------------------ the run

def _check_out(out: Path, overwrite: bool) -> None:
    if not overwrite:
        for name in OUTPUT_FILES:
            if (out / name).exists():
                raise OutputError(f"{out / name}: exists (use --overwrite to replace it)")
    ensure_writable(out)


def image_progress(enabled: bool, total: int, label: str = "evaluate"):
    """(Progress, task) counting images (evaluate, audit); a disabled Progress when not `enabled`."""
    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                    TimeRemainingColumn(), disable=not enabled)
    return prog, prog.add_task(label, total=total)


def evaluate(model: str | Path, data: str | Path, out: str | Path, options=None, *, overwrite: bool = False,
             bins: int = DEFAULT_BINS, n_cases: int = 2, progress: bool = False, scorer=None) -> dict:
    """Score every test image of `data` with `model`, write OUT's files, return the metrics dict."""
    data, out = Path(data), Path(out)
    items, use_masks = collect(data)
    _check_out(out, overwrite)
    options = options or ScoreOptions()
    if scorer is None:
        scorer = Scorer.from_file(model, options)
    check_items(items, scorer.channels)

    t0 = time.perf_counter()
    scores = np.zeros(len(items))
    rng = ScoreRange()
    tmp = Path(tempfile.mkdtemp(prefix=".nsgan-eval-", dir=out))
    try:
        prog, task = image_progress(progress, len(items))
        with prog:
            for i, res in enumerate(scorer.score_all([it.path for it in items])):  # small images share batches
                scores[i] = res.score
                rng.update(res.map)
                np.save(tmp / f"{i}.npy", res.map.astype(np.float32))  # pass 2 and the cases read it back
                prog.advance(task)
        search_s = time.perf_counter() - t0
        labels = np.array([it.defective for it in items])
        kinds = [it.kind for it in items]
        f1, thr = best_f1(scores, labels)
        metrics: dict = {
            "data": str(data), "model": str(model),
            "model_sha256": getattr(scorer, "model_sha256", None),
            "model_thresholds": _model_thresholds(scorer),
            "image": {"auroc": image_auroc(scores, labels), "f1": f1, "f1_threshold": thr,
                      "per_type_auroc": auroc_per_type(scores, kinds, good=GOOD),
                      "n_good": int((~labels).sum()), "n_defective": int(labels.sum())},
            "pixel": None,
            "search": scorer.options.search.to_dict(),
            "map_settings": scorer.map_settings(),
            "tiling": {"tile": scorer.tile, "stride": scorer.stride},
            "seconds": {"scoring": search_s},
        }
        pixel = None
        if use_masks:
            pixel = PixelMetrics(rng.lo, rng.hi, bins=bins)
            for i, it in enumerate(items):
                m = np.load(tmp / f"{i}.npy")
                pixel.update(m, read_mask(it.mask, m.shape))
            metrics["pixel"] = {**pixel.summary(), "aupro_max_fpr": AUPRO_MAX_FPR}
        metrics["seconds"]["total"] = time.perf_counter() - t0

        _write_scores(out / "scores.csv", items, scores, data)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        curves = {"image": (*image_roc_curve(scores, labels)[:2], metrics["image"]["auroc"])}
        if pixel is not None:
            fpr, tpr, _ = pixel.roc_curve()
            curves["pixel"] = (fpr, tpr, metrics["pixel"]["pixel_auroc"])
        plot_roc(out / "roc.png", curves, AUPRO_MAX_FPR if pixel is not None else None, title=f"ROC: {data.name}")
        plot_cases(out / "cases.png", _cases(items, scores, tmp, n_cases), title=f"{data.name}: best and worst cases")
        write_evaluate_page(out)  # last: the page shows the files above
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics


def _model_thresholds(scorer) -> dict:
    """The model's calibrated image and pixel thresholds (those it has), for the record: evaluate uses neither."""
    cal = scorer.calibration
    return {k: v for k, v in (("image", cal.image), ("pixel", cal.pixel)) if v is not None}


def _write_scores(path: Path, items: list[Item], scores: np.ndarray, data: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "defect_type", "score"])
    for it, s in zip(items, scores):
        w.writerow([it.path.relative_to(data).as_posix(), int(it.defective), it.kind, f"{s:.6g}"])
    # surrogateescape: a file name that is not UTF-8 goes into the CSV as its own bytes, so the row names the file
    atomic_write_bytes(path, buf.getvalue().encode("utf-8", "surrogateescape"))


def pick_cases(scores: np.ndarray, labels: np.ndarray, n: int) -> list[tuple[int, str]]:
    """(index, why) of the n best and n worst cases of each label.

    Best: defective images scored highest, good images scored lowest. Worst: the reverse, the
    misses and false alarms one looks at first.
    """
    out = []
    for label, name in ((True, "defective"), (False, "good")):
        idx = np.nonzero(labels == label)[0]
        order = idx[np.argsort(scores[idx], kind="mergesort")]
        if label:
            order = order[::-1]  # highest score first is best for a defect
        best, worst = order[:n].tolist(), order[::-1][:n].tolist()
        out += [(i, f"best {name}") for i in best]
        out += [(i, f"worst {name}") for i in worst if i not in best]
    return out


def _cases(items: list[Item], scores: np.ndarray, tmp: Path, n: int):
    labels = np.array([it.defective for it in items])
    cases = []
    for i, why in pick_cases(scores, labels, n):
        it = items[i]
        m = np.load(tmp / f"{i}.npy")
        mask = read_mask(it.mask, m.shape) if it.mask is not None else None

        cases.append(Case(printable(f"{why}: {it.kind}/{it.path.name} score {scores[i]:.4g}"), read_image(it.path), m, mask))
    return cases


# ------------------------------------------------------------------------------ summary


def summary_table(metrics: dict):
    t = Table(title=f"nsgan evaluate: {metrics['data']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for figure, value in metric_rows(metrics):
        t.add_row(figure, value)
    return t


