"""One fold of the cross-fitted audit: a comparator trained beside a model's frozen G and E on the other folds only.

Through the product's own comparator trainer (nsgan/train/comparator_loop.py) with the same config the
model's C was trained with: the held-out images' normal tiles are left out of C's tile stream by
their shard sample's `source` (nsgan/data/stream.py), so the shards are not cut again. FOLD/ holds:

- `model.safetensors`: a copy of the model with the fold's C in place of its own;
- `comparator/`: the comparator run (resumable state, metrics, `sources_seen.json`: every source image
  whose tiles C drew, beside the held-out list);
- `trained.json`: written last, what was trained (model digest, held-out digest, comparator config).
  With it, a rerun takes the fold as done; without it, a run stopped mid-fold resumes its state exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from nsgan.common.atomic import atomic_write, atomic_write_text
from nsgan.common.errors import ConfigError
from nsgan.data.folds import sources_seen
from nsgan.models.model_file import load_model
from nsgan.score.loading import file_sha256
from nsgan.train.common import make_accelerator, resolve_data, shutdown
from nsgan.train.comparator_loop import train_comparator
from nsgan.train.config import TrainConfig
from nsgan.train.phase_state import has_state

FOLD_MODEL = "model.safetensors"
TRAINED = "trained.json"
RUN = "comparator"


def _held_digest(names: frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8", "surrogateescape")).hexdigest()


def _record(model_sha: str, cfg: TrainConfig, held: frozenset[str]) -> dict:
    return {"model_sha256": model_sha, "held_out_sha256": _held_digest(held), "held_out_images": len(held),
            "comparator": cfg.to_dict()["comparator"], "seed": cfg.seed}


def fold_done(fold_dir: Path, model_sha: str, cfg: TrainConfig, held: frozenset[str]) -> bool:
    """Whether FOLD/ holds this fold's finished model (another model, split or config there is a ConfigError)."""
    path = fold_dir / TRAINED
    if not path.is_file() or not (fold_dir / FOLD_MODEL).is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = _record(model_sha, cfg, held)
    if {k: old.get(k) for k in want} != want:
        raise ConfigError(f"{path}: this fold was trained for another model, split or comparator config; "
                          "use --overwrite to start the audit again or another --out")
    return True


def train_fold(model_path: str | Path, cfg: TrainConfig, source: str, fold_dir: str | Path, held: frozenset[str]) -> Path:
    """FOLD/model.safetensors: `model_path`'s G and E with a C that never saw the `held` images (module docstring)."""
    model_path, fold_dir = Path(model_path), Path(fold_dir)
    model_sha = file_sha256(model_path)
    fold_model = fold_dir / FOLD_MODEL
    if fold_done(fold_dir, model_sha, cfg, held):
        return fold_model
    run_dir = fold_dir / RUN
    resume = has_state(run_dir)
    if not resume:  # a fresh fold: no half-started run folder in the way
        shutil.rmtree(run_dir, ignore_errors=True)
    if not resume or not fold_model.is_file():  # the model's copy, which the fold's C goes into
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(fold_model, lambda p: shutil.copyfile(model_path, p))
    normal, abnormal, channels = resolve_data(cfg, source)
    m = load_model(model_path)
    acc = make_accelerator(cfg, model_dir=fold_dir, source=source)
    try:
        train_comparator(cfg, m.generator, m.encoder, fold_model, run_dir, acc, normal, abnormal, channels, resume=resume,
                         exclude_sources=held)
    finally:
        shutdown(acc)
    seen = sources_seen(run_dir, held)
    atomic_write_text(fold_dir / TRAINED, json.dumps({**_record(model_sha, cfg, held), "images_seen": len(seen)}, indent=1) + "\n")
    return fold_model
