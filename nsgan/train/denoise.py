"""Training C through the noise (issue 27): the normal images an out-of-fold comparator finds defective are left
out of the final C's normal side (`comparator.denoise: exclude`; `auto`, the default, does so where the folds
can be cut, see `auto_skip`).

The paper's premise is that the "normal" folder hides defects; a C trained on all of it learns their tiles as
normal. Before the final C, the folder's images are split into `comparator.denoise_folds` folds
(nsgan/data/folds.py, by hash of the path and the run's seed); for each fold a comparator is trained through
the product trainer on the other folds' normal images only (`comparator.denoise_kimg`, the rest of the
comparator config as is), and scores its held-out images with the product's default image score (nsgan.score's
Scorer). Each fold's scores become robust z-scores within the fold, on the logit scale when the scores are
probabilities (nsgan/data/folds.py's `fold_z`, the one pooling the out-of-fold audit uses too); every image above `comparator.denoise_z` is a suspect, and the final C never draws its normal
tiles (ShardStream's `exclude`), as SoftPatch denoises before the detector learns (here with hard weights).

RUN/comparator/denoise/ holds, so a stopped run resumes without retraining finished folds:

- `folds/<i>/model.safetensors` (the model with fold i's C), `folds/<i>/comparator/` (its run: state,
  `sources_seen.json`), `folds/<i>/scores.json` (written last: the held-out images' raw scores and what
  was trained; with it the fold is done, without it a stopped fold resumes its state exactly);
- `suspects.txt`: the excluded images, one path a line relative to the image folder (the list
  `nsgan shards --abnormal-list` reads, so they can also feed the γ penalty);
- `denoise.json`: the record (k, threshold, fold kimg, each image's fold, raw score and z).

This module trains nothing itself: the comparator loop hands it `train_fold` (no import of the loop here).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nsgan.common.atomic import atomic_write, atomic_write_text
from nsgan.common.errors import ConfigError, DataError
from nsgan.data.folds import assign_folds, fold_digest, fold_z, held_out, images_folder, sources_seen
from nsgan.data.imageio import list_images
from nsgan.score.scorer import Scorer
from nsgan.train.config import TrainConfig
from nsgan.train.phase_state import has_state

DENOISE = "denoise"  # in the comparator run folder
FOLDS = "folds"
FOLD_MODEL = "model.safetensors"
FOLD_RUN = "comparator"
SCORES = "scores.json"
SUSPECTS = "suspects.txt"
RECORD = "denoise.json"
# comparator.denoise auto cuts folds only when each holds at least this many images: a fold's robust z (median and
# MAD of its scores) from fewer ranks by noise, and a fold C trained without a large share of a small folder learns little
MIN_FOLD_IMAGES = 8

# train_fold(fold config, fold model file, fold run folder, held-out names): C trained into that file without them
TrainFold = Callable[[TrainConfig, Path, Path, frozenset], object]


@dataclass(frozen=True)
class Denoised:
    excluded: frozenset[str]  # source names (relative paths) the final C must not draw normal tiles from
    record: dict  # what the model file's comparator metadata and the card keep


def wants_denoise(cfg: TrainConfig) -> bool:
    return cfg.comparator.denoise != "none"


def auto_skip(cfg: TrainConfig, names: list[str] | None) -> str | None:
    """Why `comparator.denoise: auto` trains no folds over these images (None: the shards name no images), or None."""
    if cfg.comparator.denoise != "auto":
        return None
    if names is None:
        return "no shard manifest names the images the normal shards were cut from"
    k = cfg.comparator.denoise_folds
    if len(names) < k * MIN_FOLD_IMAGES:
        return (f"{len(names)} normal images: {k} folds need at least {MIN_FOLD_IMAGES} each "
                f"({k * MIN_FOLD_IMAGES})")
    return None


def _skipped(cfg: TrainConfig, reason: str, is_main: bool) -> Denoised:
    """An auto denoise that does not run: nothing left out, C trained as with none, and why (log, model file, card)."""
    if is_main:
        print(f"nsgan train-comparator: comparator.denoise auto trains no folds: {reason}; C learns from every "
              "normal image (as comparator.denoise=none)", flush=True)
    return Denoised(frozenset(), {"mode": cfg.comparator.denoise, "skipped": reason, "excluded_images": 0, "excluded": []})


def started(run_dir: Path) -> bool:
    """Whether the comparator run folder holds denoise work (folds trained or begun)."""
    d = Path(run_dir) / DENOISE
    return d.is_dir() and any(d.iterdir())


def fold_kimg(cfg: TrainConfig) -> float:
    """A fold C trains `denoise_kimg`, never longer than the final C: folds only rank, the final C draws the map."""
    return min(cfg.comparator.denoise_kimg, cfg.comparator.kimg)


def fold_config(cfg: TrainConfig) -> TrainConfig:
    """A fold comparator's config: the run's comparator settings at `denoise_kimg`, itself not denoised."""
    f = copy.deepcopy(cfg)
    f.comparator.kimg, f.comparator.denoise = fold_kimg(cfg), "none"
    return f


def normal_images(normal_shards: list[str]) -> tuple[Path, list[str]]:
    """The folder the normal shards were cut from (their manifest's inputs.normal) and its images' relative paths."""
    for shard in normal_shards:
        for where in (Path(shard).parent, Path(shard).parent.parent):
            if (where / "manifest.json").is_file():
                root = images_folder(where)
                return root, [p.relative_to(root).as_posix() for p in list_images(root)]
    raise DataError(f"{normal_shards[0] if normal_shards else 'data.normal'}: comparator.denoise needs the images the normal "
                    "shards were cut from, but no shard manifest (manifest.json) is beside them")


def _key(cfg: TrainConfig, basis: str, assignment: dict[str, int]) -> dict:
    """What a fold's training depends on (not denoise_z: the threshold acts on the pooled scores only)."""
    comparator = {k: v for k, v in fold_config(cfg).to_dict()["comparator"].items() if k != "denoise_z"}
    return {"basis_digest": basis, "assignment_sha256": fold_digest(assignment), "comparator": comparator, "seed": cfg.seed}


def _done(path: Path, key: dict) -> dict | None:
    """A fold's scores.json when it is this fold's (another model, split or config there is a ConfigError)."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if old.get("key") != key:
        raise ConfigError(f"{path}: this denoise fold was trained for another model, split or comparator config; "
                          "use a new run folder")
    return old


def _score(model: Path, images: list[Path]) -> list[float]:
    scorer = Scorer.from_pretrained(model)
    return [float(r.score) for r in scorer.score_all(images)]


def denoise_normals(cfg: TrainConfig, normal_shards: list[str], run_dir: Path, model_path: Path, basis: str,
                    train_fold: TrainFold, is_main: bool = True, wait: Callable[[], None] = lambda: None) -> Denoised:
    """Train (or reuse) the fold comparators in RUN/denoise/, score their held-out images, return what to exclude
    (with `auto`, nothing where the folds cannot be cut: `auto_skip`).

    `model_path`: the model file whose G and E the folds train beside (copied into each fold); `basis`: its G and E
    digest, which keys the folds (the final C, written into the same file later, does not make them stale).
    Every process trains the folds (the trainer is multi-process); the main one scores and writes, the others wait."""
    c = cfg.comparator
    out = Path(run_dir) / DENOISE
    try:
        root, names = normal_images(normal_shards)
    except DataError:
        if c.denoise != "auto":
            raise
        root, names = None, None
    reason = auto_skip(cfg, names)
    if reason is not None:
        return _skipped(cfg, reason, is_main)
    assignment = assign_folds(names, c.denoise_folds, cfg.seed, where="comparator.denoise_folds")
    key = _key(cfg, basis, assignment)
    fcfg = fold_config(cfg)
    raw: dict[str, tuple[int, float]] = {}
    for fold in range(c.denoise_folds):
        held = held_out(assignment, fold)
        fold_dir = out / FOLDS / str(fold)
        done = _done(fold_dir / SCORES, key)
        if done is None:
            run, fold_model = fold_dir / FOLD_RUN, fold_dir / FOLD_MODEL
            resume = has_state(run)
            if is_main and not resume:  # a fresh fold: no half-started run in the way, a fresh copy of the model
                shutil.rmtree(run, ignore_errors=True)
                fold_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(fold_model, lambda p: shutil.copyfile(model_path, p))
            wait()
            train_fold(fcfg, fold_model, run, frozenset(held))
            if is_main:
                seen = sources_seen(run, held)
                scores = _score(fold_model, [root / n for n in held])
                done = {"key": key, "held_out": held, "scores": scores, "images_seen": len(seen)}
                atomic_write_text(fold_dir / SCORES, json.dumps(done, indent=1) + "\n")
            wait()
            done = json.loads((fold_dir / SCORES).read_text(encoding="utf-8"))
        raw.update({n: (fold, s) for n, s in zip(done["held_out"], done["scores"])})
    return _pool(cfg, out, root, raw, is_main, wait)


def _pool(cfg: TrainConfig, out: Path, root: Path, raw: dict[str, tuple[int, float]], is_main: bool,
          wait: Callable[[], None]) -> Denoised:
    """The folds' scores as robust z-scores within their fold; the images above the threshold are the suspects."""
    c = cfg.comparator
    rows = []
    for fold in range(c.denoise_folds):
        mine = sorted(n for n, (f, _) in raw.items() if f == fold)
        z = fold_z(np.array([raw[n][1] for n in mine])) if mine else []
        rows += [{"path": n, "fold": fold, "raw_score": raw[n][1], "z": float(v)} for n, v in zip(mine, z)]
    rows.sort(key=lambda r: (-r["z"], r["path"]))
    excluded = [r["path"] for r in rows if r["z"] > c.denoise_z]
    record = {"mode": c.denoise, "folds": c.denoise_folds, "z": c.denoise_z, "fold_kimg": fold_kimg(cfg), "fold_seed": cfg.seed,
              "images": len(rows), "excluded_images": len(excluded), "excluded": excluded,
              "list_file": str(out / SUSPECTS), "images_folder": str(root)}
    if is_main:
        atomic_write_text(out / SUSPECTS, "".join(f"{n}\n" for n in excluded))
        atomic_write_text(out / RECORD, json.dumps({**record, "rows": rows}, indent=1) + "\n")
    wait()
    return Denoised(frozenset(excluded), record)
