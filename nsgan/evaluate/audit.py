"""`nsgan audit`: rank a training folder by the model's own image score, so the dirty "normal" images
come first.

The paper's premise is that the normal training set hides defects; a trained model can point at
them. Every image of the folder (or of the folder behind a shard set, from its manifest) is scored
with the model's default scoring; small images share batches as in evaluate. OUT gets:

- `audit.jsonl`: one JSON row per image as it is scored (the first line names the model and settings).
  It is the run's memory: a stopped audit, run again, scores only the images not in it yet, and the
  same command on a grown folder scores only the new images. Another model or other settings are
  refused (--overwrite starts again).
- `audit.csv`: rank, path (relative to the folder), image score, the largest region's box and area.
- `suspects.txt`: the images above the model's calibrated image threshold, or the top `top` percent
  when asked for (and, on an uncalibrated model, by default): one relative path a line, the list
  `nsgan shards --abnormal-list` reads, so the suspects feed the γ penalty of the next training.
- `masks/`: for each image with a region, the map above the pixel threshold as a PNG mask at the
  image's relative path (`nsgan shards --abnormal-masks-from-audit OUT` uses them with the list).
- `thumbs/` and `index.html`: overlays highest first, a checkbox per image, and a button that saves
  the ticked names as a text file (no server; see nsgan.evaluate.audit_page).

In-sample or out-of-fold. A model scores the images it trained on in-sample: its C was taught that
their tiles are normal, so the dirty ones stay quiet (AUROC 0.82 where a clean model gets 0.99,
issue 27). `audit` (the model's own C) says in audit.json and on the page whether the folder is the
one the model trained on. `audit_crossfit` scores every image out-of-fold instead: the folder is
split into k folds (nsgan/data/folds.py), a comparator is trained on the other folds' images only
(a callable from the train side, nsgan/train/fold_comparator.py) and scores the held-out fold with
`audit` into OUT/folds/<i>/ (model, comparator run, its own audit.jsonl), so a stopped k-fold audit
resumes fold by fold. The pooled rows say which fold scored each image (`fold`, `raw_score`), and
the score is put on one scale first (see `fold_z`: a robust z, on the logit scale for probabilities).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from nsgan.common.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from nsgan.common.errors import ConfigError, DataError, OutputError
from nsgan.common.outputs import ensure_writable
from nsgan.data.folds import assign_folds, fold_digest, fold_z, held_out, read_fold_file
from nsgan.data.folds import images_folder as audit_folder
from nsgan.data.imageio import list_images, read_image
from nsgan.evaluate.audit_page import THUMBS, write_audit_page
from nsgan.evaluate.evaluation import image_progress
from nsgan.models.model_file import comparator_training_config, read_metadata
from nsgan.score.reports import overlay_factor, render_overlay
from nsgan.score.scorer import Scorer
from nsgan.share.html_page import check_page

ROWS = "audit.jsonl"
CSV = "audit.csv"
SUSPECTS = "suspects.txt"
SUMMARY = "audit.json"
MASKS = "masks"
DEFAULT_TOP = 5.0  # percent flagged on a model without a calibrated image threshold
THUMB_SIDE = 160
FORMAT = "nsgan-audit/1"


@dataclass
class AuditRow:
    """One audited image; `path` is relative to the audited folder (posix), as a list file names it."""

    id: int  # order scored: names its thumbnail
    path: str
    score: float
    regions: int
    box: list[int] | None  # the largest region's x0, y0, x1, y1 (end exclusive), None without regions
    area: int  # the largest region's pixels above the threshold
    shape: list[int]
    fold: int | None = None  # the fold whose held-out C scored it (out-of-fold audits only)
    raw_score: float | None = None  # that C's own image score, before `fold_z`

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        return {k: v for k, v in row.items() if not (k in ("fold", "raw_score") and v is None)}


@dataclass
class AuditResult:
    out: Path
    rows: list[AuditRow]  # highest score first
    suspects: list[str]
    rule: str  # how the suspects were chosen
    scored_now: int  # images scored by this call (the rest came from an earlier, stopped or smaller run)
    sample: str | None = None  # in-sample, held-out or out-of-fold, when known (the header's `sample`)


FOLDS = "folds"  # OUT/folds/<i>/: one fold's model, comparator run and audit (out-of-fold audits)
RESUME_KEYS = ("data", "model_sha256", "map_settings", "tiling", "crossfit")


def model_training_folder(model_path: str | Path | None) -> Path | None:
    """The normal-images folder a model's C trained on (comparator_training_config's data.normal → the shard
    manifest's inputs.normal), or None when the file or the shards do not say (a Hub model, moved shards)."""
    if model_path is None:
        return None
    try:  # C's own shards where it recorded them (`nsgan train-comparator` may have used others than the GAN)
        spec = comparator_training_config(read_metadata(model_path)).get("data", {}).get("normal")
    except Exception:  # a model file that cannot tell: the audit just does not say whether it is in-sample
        return None
    return shards_source_folder(spec)


def shards_source_folder(spec: Any) -> Path | None:
    """The normal-images folder a shard set (data.normal: its folder or the normal/ inside it) was cut from, per its
    manifest; None when the shards do not say."""
    if not isinstance(spec, str) or not spec:
        return None
    for where in (Path(spec), Path(spec).parent):
        if (where / "manifest.json").is_file():
            try:
                return audit_folder(where).resolve()
            except DataError:
                return None
    return None


def _header(scorer, root: Path, sample: str | None = None) -> dict[str, Any]:
    """The audit's settings; `sample` (in-sample, held-out, out-of-fold) when known, else from the model's
    stored config: in-sample when its shards were cut from this very folder (its C was taught these images)."""
    header = {"format": FORMAT, "data": str(root.resolve()), "model_sha256": scorer.model_sha256,
              "map_settings": scorer.map_settings(), "tiling": {"tile": scorer.tile, "stride": scorer.stride}}
    if sample is None:
        trained_on = model_training_folder(scorer.model_path)
        sample = None if trained_on is None else "in-sample" if trained_on == root.resolve() else "held-out"
    if sample is not None:
        header["sample"] = sample
    return header


def _read_rows(path: Path) -> tuple[dict | None, list[AuditRow]]:
    """(header, rows) of an audit.jsonl; a torn last line (a run killed mid-write) is dropped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as exc:
        raise OutputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not lines:
        return None, []
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise OutputError(f"{path}: not an audit file of nsgan (first line is not JSON); use --overwrite to start again") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise OutputError(f"{path}: not an audit file of nsgan; use --overwrite to start again")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        try:
            rows.append(AuditRow(**json.loads(line)))
        except (ValueError, TypeError):
            if k == len(lines):
                break  # the line a killed run was writing
            raise OutputError(f"{path}: line {k} is not an audit row; use --overwrite to start again") from None
    return header, rows


def _prepare_out(out: Path, header: dict, overwrite: bool) -> list[AuditRow]:
    """Rows an earlier run of the same audit left (resume), after checking OUT may be written."""
    rows_file = out / ROWS
    if rows_file.exists() and overwrite:
        rows_file.unlink()
        for sub in (THUMBS, MASKS, FOLDS):
            shutil.rmtree(out / sub, ignore_errors=True)
    if not rows_file.exists():
        for name in (CSV, SUSPECTS, SUMMARY):
            if (out / name).exists() and not overwrite:
                raise OutputError(f"{out / name}: exists and no audit.jsonl beside it (use --overwrite to replace it)")
    check_page(out, overwrite)
    ensure_writable(out)
    if not rows_file.exists():
        return []
    old, rows = _read_rows(rows_file)
    if old is None:
        return []
    for key in RESUME_KEYS:
        if old.get(key) != header.get(key):
            raise OutputError(f"{rows_file}: an audit of another {key.replace('_', ' ')} ({old.get(key)} here, "
                              f"{header.get(key)} now); use --overwrite to start again or another --out")
    return rows


def _largest(regions) -> tuple[list[int] | None, int]:
    if not regions:
        return None, 0
    r = max(regions, key=lambda r: r.area)
    return [int(v) for v in r.bbox], int(r.area)


def _thumb(path: Path, image: np.ndarray, result, dest: Path) -> None:
    """A small overlay JPEG of the image with its map and regions."""
    h, w = image.shape[:2]
    factor = overlay_factor(h, w, 2 * THUMB_SIDE)
    small = image[::factor, ::factor]
    amap = result.map[::factor, ::factor]
    rgb = render_overlay(small[..., :3] if small.shape[2] >= 3 else small[..., :1], amap, result.regions, factor,
                         float(result.thresholds["pixel"]))
    im = Image.fromarray(rgb)
    im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    atomic_write(dest, lambda p: im.save(p, format="JPEG", quality=80))


def _mask(result, dest: Path) -> None:
    m = (result.map > float(result.thresholds["pixel"])).astype(np.uint8) * 255
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda p: Image.fromarray(m).save(p, format="PNG"))


def choose_suspects(rows: list[AuditRow], image_threshold: float | None, top: float | None) -> tuple[list[AuditRow], str]:
    """The suspects among rows (sorted highest first) and the rule, said in words."""
    if top is not None:
        n = math.ceil(top / 100.0 * len(rows))
        return rows[:n], f"the top {top:g}% of {len(rows)} images by image score"
    if image_threshold is not None:
        return [r for r in rows if r.score > image_threshold], f"image score above the calibrated threshold {image_threshold:.4g}"
    n = math.ceil(DEFAULT_TOP / 100.0 * len(rows))
    return rows[:n], (f"the top {DEFAULT_TOP:g}% of {len(rows)} images by image score (the model has no calibrated "
                      "image threshold; `nsgan calibrate` sets one, --top chooses another share)")


def _write_outputs(out: Path, rows: list[AuditRow], suspects: list[AuditRow], rule: str, header: dict, skipped: int) -> None:
    flagged = {r.path for r in suspects}
    crossfit = "crossfit" in header  # out-of-fold: two more columns, which fold scored the image and its raw score
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "path", "score", "suspect", "regions", "box_x0", "box_y0", "box_x1", "box_y1", "region_area",
                *(["fold", "raw_score"] if crossfit else [])])
    for rank, r in enumerate(rows, start=1):
        box = r.box or ["", "", "", ""]
        extra = [r.fold, f"{r.raw_score:.6g}"] if crossfit else []
        w.writerow([rank, r.path, f"{r.score:.6g}", int(r.path in flagged), r.regions, *box, r.area, *extra])
    # surrogateescape: a file name that is not UTF-8 keeps its own bytes, so the row still names the file
    atomic_write_bytes(out / CSV, buf.getvalue().encode("utf-8", "surrogateescape"))
    atomic_write_bytes(out / SUSPECTS, "".join(f"{r.path}\n" for r in suspects).encode("utf-8", "surrogateescape"))
    atomic_write_text(out / SUMMARY, json.dumps({**header, "images": len(rows), "suspects": len(suspects),
                                                 "rule": rule, "skipped_images": skipped}, indent=1) + "\n")
    write_audit_page(out, rows, flagged, rule, header)


def _check_top(top: float | None) -> None:
    if top is not None and not (0.0 < float(top) <= 100.0):
        raise ConfigError(f"--top: {top} is not a percentage in (0, 100]")


def _folder_images(data: str | Path) -> tuple[Path, list[Path]]:
    root = audit_folder(data)
    images = list_images(root)
    if not images:
        raise DataError(f"{root}: no images in this folder")
    return root, images


def audit(model: str | Path | None, data: str | Path, out: str | Path, *, top: float | None = None,
          overwrite: bool = False, progress: bool = False, options=None, scorer=None, images: list[Path] | None = None,
          sample: str | None = None) -> AuditResult:
    """Score every image under `data` with `model` (or `scorer`) and write OUT's files (module docstring).

    `images`: only these images of the folder (one fold of a cross-fitted audit); `sample`: what the header says
    of the scores (default: in-sample or held-out from the model's stored config, when it tells; see _header).
    Resumes from OUT/audit.jsonl when an earlier run of the same model and settings left one. Raises
    DataError naming the folder or image, OutputError for OUT, ConfigError for `top`.
    """
    _check_top(top)
    root, found = _folder_images(data)
    images = found if images is None else list(images)
    out = Path(out)
    if scorer is None:
        scorer = Scorer.from_pretrained(model, options)
    header = _header(scorer, root, sample)
    rows = _prepare_out(out, header, overwrite)
    done = {r.path for r in rows}
    todo = [p for p in images if p.relative_to(root).as_posix() not in done]
    rows_file = out / ROWS
    (out / THUMBS).mkdir(exist_ok=True)
    next_id = max((r.id for r in rows), default=-1) + 1
    with open(rows_file, "a", encoding="utf-8", errors="surrogateescape") as fh:
        if not rows:
            fh.write(json.dumps(header) + "\n")
            fh.flush()
        prog, task = image_progress(progress, len(images), "audit")
        prog.update(task, completed=len(images) - len(todo))
        with prog:
            for path, res in zip(todo, scorer.score_all(todo)):
                rel = path.relative_to(root).as_posix()
                box, area = _largest(res.regions)
                row = AuditRow(next_id, rel, float(res.score), len(res.regions), box, area, [int(v) for v in res.shape])
                _thumb(path, read_image(path), res, out / THUMBS / f"{next_id}.jpg")
                if res.regions:
                    _mask(res, (out / MASKS / rel).with_suffix(".png"))
                fh.write(json.dumps(row.to_json()) + "\n")  # after its files: a row on disk has its thumbnail
                fh.flush()
                rows.append(row)
                next_id += 1
                prog.advance(task)
    present = {p.relative_to(root).as_posix() for p in images}
    kept = sorted((r for r in rows if r.path in present), key=lambda r: (-r.score, r.path))
    suspects, rule = choose_suspects(kept, scorer.calibration.image, top)
    _write_outputs(out, kept, suspects, rule, header, skipped=len(rows) - len(kept))
    return AuditResult(out, kept, [r.path for r in suspects], rule, len(todo), header.get("sample"))


# ------------------------------------------------------------------------------ out-of-fold


def _write_rows(out: Path, header: dict, rows: list[AuditRow]) -> None:
    text = "".join(json.dumps(x) + "\n" for x in [header, *(r.to_json() for r in rows)])
    atomic_write_bytes(out / ROWS, text.encode("utf-8", "surrogateescape"))


def _pool(out: Path, root: Path, folds: list[tuple[int, AuditResult]]) -> list[AuditRow]:
    """The folds' rows on one scale, highest first, with their thumbnails and masks copied into OUT."""
    pooled = []
    for fold, result in folds:
        scaled = fold_z(np.array([r.score for r in result.rows])) if result.rows else []
        pooled += [replace(r, score=float(z), fold=fold, raw_score=r.score) for r, z in zip(result.rows, scaled)]
    pooled.sort(key=lambda r: (-r.score, r.path))
    for sub in (THUMBS, MASKS):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / THUMBS).mkdir(parents=True)
    rows = []
    for new_id, r in enumerate(pooled):
        fold_dir = out / FOLDS / str(r.fold)
        thumb = fold_dir / THUMBS / f"{r.id}.jpg"
        if thumb.is_file():
            shutil.copyfile(thumb, out / THUMBS / f"{new_id}.jpg")
        mask = (fold_dir / MASKS / r.path).with_suffix(".png")
        if mask.is_file():
            dest = (out / MASKS / r.path).with_suffix(".png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mask, dest)
        rows.append(replace(r, id=new_id))
    return rows


def plan_folds(data: str | Path, folds: int, seed: int = 0, fold_file: str | Path | None = None) -> dict[str, int]:
    """{relative path: fold} for the folder behind `data`: from `fold_file`, else by hash (nsgan/data/folds.py)."""
    root, images = _folder_images(data)
    names = [p.relative_to(root).as_posix() for p in images]
    if fold_file:
        return read_fold_file(fold_file, names)
    return assign_folds(names, folds, seed, where="--folds")


def audit_crossfit(model: str | Path, data: str | Path, out: str | Path, assignment: dict[str, int],
                   train_fold: Callable[[int, frozenset[str], Path], Path], *, top: float | None = None,
                   overwrite: bool = False, progress: bool = False, options=None, split: dict | None = None) -> AuditResult:
    """Out-of-fold audit (module docstring): for each fold, `train_fold(fold, held-out names, OUT/folds/<fold>)`
    returns a model whose C never saw the held-out images, which then scores them; the folds' scores are pooled
    on one scale (`fold_z`). `assignment` comes from `plan_folds`; `split` says how it was made (for the header).

    A rerun reuses every finished fold (its model and its audit.jsonl) and continues; another model, split, map or
    comparator config is refused as `audit` refuses another model (--overwrite starts again).
    """
    _check_top(top)
    root, images = _folder_images(data)
    out = Path(out)
    base = Scorer.from_pretrained(model, options)
    k = max(assignment.values()) + 1
    header = {**_header(base, root, "out-of-fold"),
              "crossfit": {"folds": k, **(split or {}), "assignment_sha256": fold_digest(assignment)}}
    _prepare_out(out, header, overwrite)
    if not (out / ROWS).exists():
        _write_rows(out, header, [])  # the header first: a stopped run's rerun is checked against it
    by_name = {p.relative_to(root).as_posix(): p for p in images}
    results, scored_now = [], 0
    for fold in range(k):
        names = held_out(assignment, fold)
        fold_dir = out / FOLDS / str(fold)
        fold_model = train_fold(fold, frozenset(names), fold_dir)
        result = audit(fold_model, root, fold_dir, images=[by_name[n] for n in names], progress=progress, options=options,
                       sample="out-of-fold")
        results.append((fold, result))
        scored_now += result.scored_now
    rows = _pool(out, root, results)
    # the fold models' scores are on the pooled scale, not the model's calibrated one: suspects by share
    suspects, rule = choose_suspects(rows, None, top if top is not None else DEFAULT_TOP)
    rule += f", out-of-fold ({k} folds; scores are robust z-scores within the fold that scored the image)"
    _write_rows(out, header, rows)
    _write_outputs(out, rows, suspects, rule, header, skipped=0)
    return AuditResult(out, rows, [r.path for r in suspects], rule, scored_now, "out-of-fold")
