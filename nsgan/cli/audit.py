"""`nsgan audit`: rank a training folder by the model's image score and list the suspects.

With --folds K (or the config's audit.folds) every image is scored out-of-fold: a comparator trained on
the other folds only, through the product's comparator trainer (nsgan/train/fold_comparator.py), scores
each fold (nsgan/evaluate/audit.py, audit_crossfit)."""

from __future__ import annotations

import argparse
import hashlib
import json
from functools import partial
from pathlib import Path

from nsgan.cli.model_config import config_for_model
from nsgan.cli.search_args import add_search_arguments, options_from_args
from nsgan.common.atomic import removed_if_left_empty
from nsgan.common.errors import ConfigError, NsganError
from nsgan.evaluate.audit import (CSV, SUSPECTS, audit, audit_crossfit, audit_folder, model_training_folder, plan_folds,
                                  shards_source_folder)
from nsgan.models.model_file import comparator_training_config, read_metadata
from nsgan.share.html_page import PAGE
from nsgan.train.config import TrainConfig
from nsgan.train.fold_comparator import train_fold


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model (.safetensors), a folder holding model.safetensors, "
                                                  "or a Hugging Face Hub repo id")
    p.add_argument("--data", required=True, help="the training images: a folder (searched recursively) or a shard "
                                                 "set's folder (its manifest names the images)")
    p.add_argument("--out", required=True, help="output folder: audit.csv, suspects.txt, index.html, masks/, audit.jsonl")
    p.add_argument("--top", type=float, default=None, metavar="PERCENT",
                   help="suspects = this share of the images, highest first (default: above the calibrated image "
                        "threshold; the top 5%% on an uncalibrated model or an out-of-fold audit)")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="out-of-fold: score each of K folds of the training folder with a comparator trained on the "
                        "others (default: the config's audit.folds; 0: the model's own C, in-sample)")
    p.add_argument("--fold-seed", type=int, default=None, help="seed of the fold assignment (default: audit.fold_seed)")
    p.add_argument("--fold-file", default=None, help="JSON {relative_path: fold} naming every image (default: audit.fold_file)")
    p.add_argument("--config", help="YAML config of the fold comparators (default: the config stored in the model file)")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out holding another audit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_search_arguments(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides of the fold comparators' config, e.g. comparator.kimg=2 audit.folds=3")


def _fold_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """The config the fold comparators train with: the model's own (or --config) with the overrides."""
    model = Path(args.model)
    model = model / "model.safetensors" if model.is_dir() else model
    if not model.is_file():
        raise ConfigError(f"--folds: {args.model} is not a model file here; an out-of-fold audit trains beside a local model")
    args.model = str(model)
    meta = read_metadata(model)
    # the folds retrain the model's own C: its settings, shards and seed, not those of the run that stored the config
    meta = {**meta, "config": comparator_training_config(meta)}
    return config_for_model(args, meta, "comparator", "tiles", has_encoder="encoder" in meta)


def _stored_folds(model: str) -> int:
    """audit.folds of the config stored in a local model file (0 when it has none, or the model is not a local file)."""
    path = Path(model) / "model.safetensors" if Path(model).is_dir() else Path(model)
    try:
        return int(((read_metadata(path).get("config") or {}).get("audit") or {}).get("folds") or 0)
    except Exception:  # a Hub id or a file that cannot tell: the plain audit, which reports its own errors
        return 0


def _wants_folds(args: argparse.Namespace) -> bool:
    """Out of fold when asked (--folds, --fold-file, fold overrides or --config), or by the model's stored audit.folds
    when --data is the folder its C trained on; any other folder is held-out for the model and it scores it itself."""
    if args.folds == 0:
        return False
    if args.folds or args.fold_file or args.overrides or args.config:
        return True
    return bool(_stored_folds(args.model)) and _is_training_folder(args)


def _is_training_folder(args: argparse.Namespace) -> bool:
    try:
        trained_on = model_training_folder(Path(args.model) / "model.safetensors" if Path(args.model).is_dir() else args.model)
        return trained_on is not None and trained_on == audit_folder(args.data).resolve()
    except NsganError:  # a folder that cannot be read: the plain audit reports it in its own words
        return False


def run(args: argparse.Namespace) -> int:
    cfg = None
    if _wants_folds(args):
        cfg, source = _fold_config(args)
        folds = cfg.audit.folds if args.folds is None else args.folds
        fold_file = args.fold_file or cfg.audit.fold_file or None
        if not folds and not fold_file:
            raise ConfigError(f"{source}: key 'audit.folds' is 0; pass --folds K (K ≥ 2) for an out-of-fold audit")
        # the folds retrain on the fold config's shards (the model's C's, or data.normal=... given here)
        root, trained_on = audit_folder(args.data), shards_source_folder(cfg.data.normal)
        if trained_on is None or trained_on != root.resolve():
            raise ConfigError(f"--folds: {root} is not the folder the comparator's shards were cut from ({trained_on or 'unknown'}); "
                              "cross-fitting retrains C on that folder's shards, so audit that folder")
        seed = cfg.audit.fold_seed if args.fold_seed is None else args.fold_seed
        assignment = plan_folds(root, folds, seed, fold_file)
        split = {"fold_file": str(fold_file)} if fold_file else {"fold_seed": seed}
        split["comparator_sha256"] = hashlib.sha256(json.dumps(cfg.to_dict()["comparator"], sort_keys=True).encode()).hexdigest()
    with removed_if_left_empty(args.out):
        if cfg is None:
            result = audit(args.model, args.data, args.out, top=args.top, overwrite=args.overwrite,
                           progress=not args.no_progress, options=options_from_args(args))
        else:
            result = audit_crossfit(args.model, args.data, args.out, assignment, partial(_train_one, args.model, cfg, source),
                                    top=args.top, overwrite=args.overwrite, progress=not args.no_progress,
                                    options=options_from_args(args), split=split)
    out = result.out
    print(f"audited {len(result.rows)} image(s) ({result.scored_now} scored now): {len(result.suspects)} suspect(s), "
          f"{result.rule}")
    if result.sample == "in-sample":
        print("  in-sample: the model's comparator was trained on these images (dirty ones rank low); "
              "--folds K scores them out-of-fold")
    for r in result.rows[:5]:
        print(f"  {r.score:.4g}  {r.path}" + (f"  (fold {r.fold})" if r.fold is not None else ""))
    print(f"ranking: {out / CSV}\nsuspects: {out / SUSPECTS}  (nsgan shards ... --abnormal-list {out / SUSPECTS})\n"
          f"page: {out / PAGE}")
    return 0


def _train_one(model: str, cfg: TrainConfig, source: str, fold: int, held: frozenset[str], fold_dir: Path) -> Path:
    print(f"fold {fold}: training a comparator without its {len(held)} held-out image(s) ({fold_dir})", flush=True)
    return train_fold(model, cfg, source, fold_dir, held)
